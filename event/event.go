package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Version is the version of the body this package encodes and decodes. Fields
// may be added within a version; a change of meaning takes a new version.
const Version = 1

// Op is the kind of change an event reports.
type Op string

// The operations. OpUpsert comes from the queue of django-logical-replication,
// whose rows do not say whether the row was inserted or updated. OpSnapshot is
// a row as it is, published by `pgoutpost events replay` for consumers that
// rebuild; it says nothing about how the row got there.
const (
	OpInsert   Op = "insert"
	OpUpdate   Op = "update"
	OpDelete   Op = "delete"
	OpUpsert   Op = "upsert"
	OpSnapshot Op = "snapshot"
)

// Valid reports whether op is one of the known operations.
func (op Op) Valid() bool {
	switch op {
	case OpInsert, OpUpdate, OpDelete, OpUpsert, OpSnapshot:
		return true
	}
	return false
}

// Event is the body of a denormalize event.
//
// PK and Row are kept as raw JSON: the sidecar takes them from the database as
// they are (no float rounding of bigints), and a consumer decodes them into
// its own types with DecodePK and DecodeRow.
type Event struct {
	V     int    `json:"v"`
	Env   string `json:"env"`   // the environment that published it
	Table string `json:"table"` // "schema.table", split at the first '.'
	Op    Op     `json:"op"`
	// PK is a JSON object of primary-key column → value.
	PK json.RawMessage `json:"pk"`
	// QueueID is the uuid of the queue entry the event was published for.
	QueueID string `json:"queue_id"`
	// CommittedAt is the commit time of the master transaction.
	CommittedAt time.Time `json:"committed_at"`
	// Row is the row as the slave held it when the event was published, a
	// JSON object. It is absent for deletes, and also when the row was gone
	// from the slave by then (its delete event follows).
	Row json.RawMessage `json:"row,omitempty"`
}

// After reports whether e reports a later change of its row than o: a later
// master commit, or within one master transaction a later queue entry
// (pgoutpost's queue ids are UUIDv7s, in statement order within a
// transaction). Two transactions that change one row commit one after the
// other, so their commit times are in that order too. The tie-break means
// nothing for ids that are not UUIDv7s: the seed's queues (random uuids,
// committed_at from created_at) and snapshot events (a hash); two such
// events of one row with the same committed_at are ordered arbitrarily.
//
// Events of one row are published in commit order, but a consumer can see
// them out of order: with MaxAckPending > 1 a failed event is redelivered
// after later ones, and instances sharing a durable consumer work in
// parallel. Such a consumer keeps, per row, the newest event it applied and
// skips one that is not After it. Copies of one event (the same QueueID) are
// not After each other.
func (e Event) After(o Event) bool {
	if !e.CommittedAt.Equal(o.CommittedAt) {
		return e.CommittedAt.After(o.CommittedAt)
	}
	return e.QueueID > o.QueueID
}

// Schema is the schema part of Table.
func (e Event) Schema() string { s, _, _ := strings.Cut(e.Table, "."); return s }

// Name is the table-name part of Table (without the schema).
func (e Event) Name() string { _, n, _ := strings.Cut(e.Table, "."); return n }

// DecodePK unmarshals the primary key into v, typically a struct with json tags
// or a map.
func (e Event) DecodePK(v any) error {
	if err := json.Unmarshal(e.PK, v); err != nil {
		return fmt.Errorf("decode pk of %s event: %w", e.Table, err)
	}
	return nil
}

// DecodeRow unmarshals the row into v. It returns ErrNoRow when the event has
// none (deletes).
func (e Event) DecodeRow(v any) error {
	if !e.HasRow() {
		return ErrNoRow
	}
	if err := json.Unmarshal(e.Row, v); err != nil {
		return fmt.Errorf("decode row of %s event: %w", e.Table, err)
	}
	return nil
}

// HasRow reports whether the event carries a row.
func (e Event) HasRow() bool {
	r := bytes.TrimSpace(e.Row)
	return len(r) > 0 && !bytes.Equal(r, []byte("null"))
}

// Validate checks the event against the contract and returns every problem.
func (e Event) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...))
	}
	if e.V != Version {
		bad("v is %d, want %d", e.V, Version)
	}
	if e.Env == "" {
		bad("env is empty")
	}
	if s, n, ok := strings.Cut(e.Table, "."); !ok || s == "" || n == "" {
		bad("table %q is not schema.table", e.Table)
	}
	if !e.Op.Valid() {
		bad("op %q is not insert, update, delete, upsert or snapshot", e.Op)
	}
	if !isObject(e.PK) {
		bad("pk is not a JSON object")
	}
	if e.QueueID == "" {
		bad("queue_id is empty")
	}
	if e.CommittedAt.IsZero() {
		bad("committed_at is missing")
	}
	if e.HasRow() {
		if e.Op == OpDelete {
			bad("a delete event carries a row")
		} else if !isObject(e.Row) {
			bad("row is not a JSON object")
		}
	}
	return errors.Join(errs...)
}

// isObject checks the brackets of a JSON object, not its whole syntax: pk and
// row come from PostgreSQL's jsonb on the publishing side, where a full
// parse of every row would cost more than the publish itself; Decode parses
// the whole body anyway.
func isObject(raw json.RawMessage) bool {
	r := bytes.TrimSpace(raw)
	return len(r) >= 2 && r[0] == '{' && r[len(r)-1] == '}'
}

// Encode validates e and returns its JSON body. A zero V is taken as Version;
// CommittedAt is written in UTC, RFC 3339 with fractions of a second. PK and
// Row are copied as they are (not re-indented); they must be valid JSON
// objects, of which Encode checks only the outer brackets.
func Encode(e Event) ([]byte, error) {
	if e.V == 0 {
		e.V = Version
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	pk := bytes.TrimSpace(e.PK)
	row := bytes.TrimSpace(e.Row)
	b := make([]byte, 0, 160+len(e.Env)+len(e.Table)+len(e.QueueID)+len(pk)+len(row))
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(e.V), 10)
	b = append(b, `,"env":`...)
	b = appendString(b, e.Env)
	b = append(b, `,"table":`...)
	b = appendString(b, e.Table)
	b = append(b, `,"op":`...)
	b = appendString(b, string(e.Op))
	b = append(b, `,"pk":`...)
	b = append(b, pk...)
	b = append(b, `,"queue_id":`...)
	b = appendString(b, e.QueueID)
	b = append(b, `,"committed_at":"`...)
	b = e.CommittedAt.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if e.HasRow() {
		b = append(b, `,"row":`...)
		b = append(b, row...)
	}
	return append(b, '}'), nil
}

// appendString appends s as a JSON string, quickly for the plain ASCII of
// names and uuids, through encoding/json for anything else.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Decode parses an event body. Unknown fields are ignored (fields may be added
// within a version); an unknown version gives ErrUnsupportedVersion, a body
// that breaks the contract an error wrapping ErrInvalid.
func Decode(data []byte) (Event, error) {
	var head struct {
		V *int `json:"v"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if head.V == nil {
		return Event{}, fmt.Errorf("%w: no \"v\"", ErrInvalid)
	}
	if *head.V != Version {
		return Event{}, fmt.Errorf("%w: v %d (this build knows %d)", ErrUnsupportedVersion, *head.V, Version)
	}
	var e Event
	if err := json.Unmarshal(data, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if !e.HasRow() {
		e.Row = nil
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	// Validate checks only the brackets of pk and row; Unmarshal has checked
	// their syntax.
	return e, nil
}
