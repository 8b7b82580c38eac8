package cascade

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pgoutpost/pgoutpost/registry"
)

// Key is the primary key of one row: one value per primary-key column, in the
// order of Table.PrimaryKey, each in PostgreSQL's text form ("5", "x",
// "2f1c…-uuid"). The server parses the text as the column's own type, so the
// Go side never needs to know the types.
type Key []string

func (k Key) String() string { return "(" + strings.Join(k, ",") + ")" }

// ID is the key as a map key. The separator cannot occur in PostgreSQL text.
func (k Key) ID() string { return strings.Join(k, "\x00") }

// KeyFromJSON decodes a primary key given as a JSON object of column to value,
// e.g. {"id": 5} or {"a": 1, "b": "x"}, as the delete queue stores it. Every
// primary-key column must be present and non-null, and no other key may be.
// Numbers keep their exact digits, strings their text, booleans become
// true/false.
func KeyFromJSON(t *registry.Table, doc []byte) (Key, error) {
	if len(t.PrimaryKey) == 0 {
		return nil, fmt.Errorf("decode key of %s: %w", t.Name, ErrNoPrimaryKey)
	}
	if k, ok := flatKey(t.PrimaryKey, doc); ok {
		return k, nil
	}
	return decodeKey(t, doc)
}

// decodeKey is KeyFromJSON by encoding/json: the reference that flatKey
// must agree with, and the path for every document flatKey leaves alone,
// errors included, so that they are worded in one place.
func decodeKey(t *registry.Table, doc []byte) (Key, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode key %s of %s: %w: %v", doc, t.Name, ErrBadKey, err)
	}
	if m == nil {
		return nil, fmt.Errorf("decode key %s of %s: %w: not an object", doc, t.Name, ErrBadKey)
	}
	if len(m) != len(t.PrimaryKey) {
		return nil, fmt.Errorf("decode key %s of %s: %w: want the columns %s", doc, t.Name, ErrBadKey, strings.Join(t.PrimaryKey, ", "))
	}
	k := make(Key, len(t.PrimaryKey))
	for i, col := range t.PrimaryKey {
		v, ok := m[col]
		if !ok {
			return nil, fmt.Errorf("decode key %s of %s: %w: column %s missing", doc, t.Name, ErrBadKey, col)
		}
		switch v := v.(type) {
		case string:
			k[i] = v
		case json.Number:
			k[i] = v.String()
		case bool:
			k[i] = fmt.Sprint(v)
		default:
			return nil, fmt.Errorf("decode key %s of %s: %w: column %s is %T, want a string or number", doc, t.Name, ErrBadKey, col, v)
		}
	}
	return k, nil
}

// flatKey reads doc without encoding/json when it is the common case: one
// JSON object holding each of cols exactly once, with values that are
// numbers, booleans or strings without escapes — what the queue triggers'
// jsonb_build_object writes for integer, text and uuid keys. It returns
// false for anything else (escapes, nested values, nulls, other or repeated
// names, malformed input), which decodeKey then reads or refuses. It agrees
// with decodeKey on every document it accepts (FuzzKeyFromJSON); the drain
// decodes one key per queue entry, and encoding/json's reflection made that
// a tenth of its Go time.
func flatKey(cols []string, doc []byte) (Key, bool) {
	if len(cols) > 64 {
		return nil, false
	}
	k := make(Key, len(cols))
	var found uint64
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return nil, false
	}
	for {
		i = skipSpace(doc, i+1)
		name, end, ok := plainString(doc, i)
		if !ok {
			return nil, false
		}
		i = skipSpace(doc, end)
		if i >= len(doc) || doc[i] != ':' {
			return nil, false
		}
		i = skipSpace(doc, i+1)
		var v []byte
		switch {
		case i >= len(doc):
			return nil, false
		case doc[i] == '"':
			v, end, ok = plainString(doc, i)
		case doc[i] == 't' && bytes.HasPrefix(doc[i:], []byte("true")):
			v, end, ok = doc[i:i+4], i+4, true
		case doc[i] == 'f' && bytes.HasPrefix(doc[i:], []byte("false")):
			v, end, ok = doc[i:i+5], i+5, true
		default:
			end, ok = number(doc, i)
			if ok {
				v = doc[i:end]
			}
		}
		if !ok {
			return nil, false
		}
		col := -1
		for j, c := range cols {
			if c == string(name) {
				col = j
				break
			}
		}
		if col < 0 || found&(1<<col) != 0 {
			return nil, false
		}
		found |= 1 << col
		k[col] = string(v)
		i = skipSpace(doc, end)
		if i >= len(doc) {
			return nil, false
		}
		if doc[i] == '}' {
			break
		}
		if doc[i] != ',' {
			return nil, false
		}
	}
	if skipSpace(doc, i+1) != len(doc) || found != 1<<len(cols)-1 {
		return nil, false
	}
	return k, true
}

// skipSpace returns the index of the first byte from i on that is not JSON
// white space.
func skipSpace(doc []byte, i int) int {
	for i < len(doc) && (doc[i] == ' ' || doc[i] == '\t' || doc[i] == '\n' || doc[i] == '\r') {
		i++
	}
	return i
}

// plainString reads the JSON string that starts at doc[i] when it has no
// escape, no control character and only valid UTF-8 (encoding/json would
// change such text); it returns the text and the index after the closing
// quote.
func plainString(doc []byte, i int) ([]byte, int, bool) {
	if i >= len(doc) || doc[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(doc); j++ {
		switch c := doc[j]; {
		case c == '"':
			s := doc[i+1 : j]
			return s, j + 1, utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// number returns the index after the JSON number that starts at doc[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func number(doc []byte, i int) (int, bool) {
	digits := func(i int) int {
		for i < len(doc) && doc[i] >= '0' && doc[i] <= '9' {
			i++
		}
		return i
	}
	if i < len(doc) && doc[i] == '-' {
		i++
	}
	switch {
	case i < len(doc) && doc[i] == '0':
		i++
	case i < len(doc) && doc[i] >= '1' && doc[i] <= '9':
		i = digits(i)
	default:
		return 0, false
	}
	if i < len(doc) && doc[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(doc) && (doc[i] == 'e' || doc[i] == 'E') {
		i++
		if i < len(doc) && (doc[i] == '+' || doc[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}

// KeysFromJSON decodes several keys with KeyFromJSON.
func KeysFromJSON(t *registry.Table, docs ...[]byte) ([]Key, error) {
	keys := make([]Key, 0, len(docs))
	for _, d := range docs {
		k, err := KeyFromJSON(t, d)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// arrayLiteral writes values as a PostgreSQL array literal with every element
// quoted, e.g. {"1","x \"y\""}. Sent as a text-format parameter, the server
// parses it as an array of whatever type the statement gives the parameter.
func arrayLiteral(vals []string) string {
	n := 2
	for _, v := range vals {
		n += len(v) + 3
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteByte('{')
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for j := 0; j < len(v); j++ {
			if c := v[j]; c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(v[j])
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}
