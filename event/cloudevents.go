package event

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// CloudEvents binary content mode (CloudEvents 1.0, NATS protocol binding):
// besides its own headers, every event carries its CloudEvents attributes as
// ce- headers, and its body — the v1 body, unchanged — is the CloudEvent's
// data. A CloudEvents SDK reads pgoutpost's events as CloudEvents; a v1
// consumer ignores the extra headers.
const (
	CESpecVersion = "1.0"
	// CETypePrefix starts ce-type, which ends with the event's op:
	// pgoutpost.denormalize.insert, …update, …delete, …upsert.
	CETypePrefix = "pgoutpost.denormalize."
	// CEContentType is the data's media type: the v1 body is JSON.
	CEContentType = "application/json"
)

// CloudEvents header names. content-type is the name the Go SDK's NATS
// bindings read the data's media type from; the binding names it
// ce-datacontenttype, so both are set.
const (
	HeaderCESpecVersion     = "ce-specversion"
	HeaderCEID              = "ce-id"
	HeaderCESource          = "ce-source"
	HeaderCEType            = "ce-type"
	HeaderCETime            = "ce-time"
	HeaderCESubject         = "ce-subject"
	HeaderCEDataContentType = "ce-datacontenttype"
	HeaderContentType       = "content-type"
)

// CloudEventHeaders returns ev's CloudEvents attributes as NATS headers,
// each value percent-encoded as the binding says:
//
//	ce-specversion      1.0
//	ce-id               the queue id (the same for every copy of one event)
//	ce-source           /pgoutpost/<env>: with ce-id unique per published event
//	ce-type             pgoutpost.denormalize.<op>
//	ce-time             the master's commit time, RFC 3339 (UTC)
//	ce-subject          <schema.table>/<key value>[/<key value>…]
//	ce-datacontenttype  application/json (also as content-type)
//
// The subject's key values are the primary key's, in the order of the pk
// object, strings as they are and other JSON values as JSON.
func CloudEventHeaders(ev Event) (map[string]string, error) {
	subject, err := ceSubject(ev)
	if err != nil {
		return nil, err
	}
	attrs := map[string]string{
		HeaderCESpecVersion:     CESpecVersion,
		HeaderCEID:              ev.QueueID,
		HeaderCESource:          "/pgoutpost/" + url.PathEscape(ev.Env),
		HeaderCEType:            CETypePrefix + string(ev.Op),
		HeaderCETime:            ev.CommittedAt.UTC().Format(time.RFC3339Nano),
		HeaderCESubject:         subject,
		HeaderCEDataContentType: CEContentType,
		HeaderContentType:       CEContentType,
	}
	for k, v := range attrs {
		attrs[k] = percentEncode(v)
	}
	return attrs, nil
}

// ceSubject is the table and the key values, slash-separated.
func ceSubject(ev Event) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(ev.PK))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", fmt.Errorf("cloudevents subject of %s: pk is not a JSON object", ev.Table)
	}
	var b strings.Builder
	b.WriteString(ev.Table)
	for dec.More() {
		if _, err := dec.Token(); err != nil { // the column name
			return "", fmt.Errorf("cloudevents subject of %s: %w", ev.Table, err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", fmt.Errorf("cloudevents subject of %s: %w", ev.Table, err)
		}
		b.WriteByte('/')
		var s string
		if v[0] == '"' && json.Unmarshal(v, &s) == nil {
			b.WriteString(s)
		} else {
			b.Write(v)
		}
	}
	return b.String(), nil
}

// percentEncode encodes what the binding says a header value must not hold
// as it is: space, '"', '%' and every byte outside printable ASCII (so each
// byte of a multi-byte UTF-8 character), as %XX.
func percentEncode(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if mustPercent(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !mustPercent(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func mustPercent(c byte) bool { return c <= ' ' || c >= 0x7f || c == '"' || c == '%' }
