package event

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func sample() Event {
	return Event{
		Env:         "staging",
		Table:       "public.shop_outcome",
		Op:          OpUpdate,
		PK:          json.RawMessage(`{"id":9007199254740993}`),
		QueueID:     "0192f3b4-7c1e-7a4e-9a51-3f0c2d9e8b11",
		CommittedAt: time.Date(2026, 11, 24, 15, 37, 1, 123456000, time.FixedZone("CET", 3600)),
		Row:         json.RawMessage(` {"id":9007199254740993,"name":"won"} `),
	}
}

func TestEncodeDecode(t *testing.T) {
	b, err := Encode(sample())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":1,"env":"staging","table":"public.shop_outcome","op":"update","pk":{"id":9007199254740993},` +
		`"queue_id":"0192f3b4-7c1e-7a4e-9a51-3f0c2d9e8b11","committed_at":"2026-11-24T14:37:01.123456Z",` +
		`"row":{"id":9007199254740993,"name":"won"}}`
	if string(b) != want {
		t.Fatalf("body\n got %s\nwant %s", b, want)
	}
	e, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	var pk struct{ ID int64 }
	if err := e.DecodePK(&pk); err != nil || pk.ID != 9007199254740993 {
		t.Fatalf("pk %v, %v: bigint must survive exactly", pk, err)
	}
	if !e.CommittedAt.Equal(sample().CommittedAt) || e.Schema() != "public" || e.Name() != "shop_outcome" {
		t.Fatalf("decoded %+v", e)
	}
}

func TestDeleteHasNoRow(t *testing.T) {
	e := sample()
	e.Op, e.Row = OpDelete, nil
	b, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"row"`) {
		t.Fatalf("delete body has a row: %s", b)
	}
	d, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.DecodeRow(&struct{}{}); !errors.Is(err, ErrNoRow) {
		t.Fatalf("DecodeRow of delete: %v, want ErrNoRow", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, c := range []struct {
		name, body string
		want       error
	}{
		{"not json", `{`, ErrInvalid},
		{"no version", `{"env":"x"}`, ErrInvalid},
		{"future version", `{"v":2,"env":"x"}`, ErrUnsupportedVersion},
		{"unknown op", `{"v":1,"env":"e","table":"s.t","op":"merge","pk":{"id":1},"queue_id":"q","committed_at":"2026-01-01T00:00:00Z"}`, ErrInvalid},
		{"pk not object", `{"v":1,"env":"e","table":"s.t","op":"insert","pk":1,"queue_id":"q","committed_at":"2026-01-01T00:00:00Z"}`, ErrInvalid},
		{"table without schema", `{"v":1,"env":"e","table":"t","op":"insert","pk":{"id":1},"queue_id":"q","committed_at":"2026-01-01T00:00:00Z"}`, ErrInvalid},
		{"delete with row", `{"v":1,"env":"e","table":"s.t","op":"delete","pk":{"id":1},"queue_id":"q","committed_at":"2026-01-01T00:00:00Z","row":{"id":1}}`, ErrInvalid},
		{"missing commit time", `{"v":1,"env":"e","table":"s.t","op":"upsert","pk":{"id":1},"queue_id":"q"}`, ErrInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Decode([]byte(c.body)); !errors.Is(err, c.want) {
				t.Fatalf("Decode: %v, want %v", err, c.want)
			}
		})
	}
}

func TestDecodeIgnoresUnknownFields(t *testing.T) {
	body := `{"v":1,"env":"e","table":"s.t","op":"upsert","pk":{"id":1},"queue_id":"q","committed_at":"2026-01-01T00:00:00.5Z","row":null,"later":true}`
	e, err := Decode([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if e.HasRow() || e.Op != OpUpsert {
		t.Fatalf("decoded %+v", e)
	}
}

func TestSubject(t *testing.T) {
	for _, c := range []struct {
		name, prefix, env, schema, table, want string
	}{
		{"plain", "", "staging", "public", "shop_outcome", "pgoutpost.staging.denormalize.public.shop_outcome"},
		{"multi-token prefix", "acme.cdc", "prod-eu", "public", "t", "acme.cdc.prod-eu.denormalize.public.t"},
		{"dot and space escaped", "", "staging", "my.schema", "my table", "pgoutpost.staging.denormalize.my%2Eschema.my%20table"},
		{"wildcards escaped", "", "a*b", "s", "t>u%", "pgoutpost.a%2Ab.denormalize.s.t%3Eu%25"},
		{"non-ascii kept", "", "e", "public", "tëst", "pgoutpost.e.denormalize.public.tëst"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Subject(c.prefix, c.env, c.schema, c.table)
			if err != nil || got != c.want {
				t.Fatalf("Subject = %q, %v; want %q", got, err, c.want)
			}
		})
	}
	for _, p := range []string{"a..b", "a.*", "a b", ">", ".a"} {
		if _, err := Subject(p, "e", "s", "t"); !errors.Is(err, ErrSubject) {
			t.Errorf("prefix %q: %v, want ErrSubject", p, err)
		}
	}
	if _, err := Subject("", "", "s", "t"); !errors.Is(err, ErrSubject) {
		t.Errorf("empty env: %v, want ErrSubject", err)
	}
}

func TestTokenRoundTrip(t *testing.T) {
	for _, name := range []string{"", "plain_name", "a.b", "*", ">", "%", "%41", "tab\there", "x y.z*>%", "ünï", "\x7f"} {
		tok := Token(name)
		if strings.ContainsAny(tok, ".*> \t") || tok == "" {
			t.Errorf("Token(%q) = %q is not a subject token", name, tok)
		}
		back, err := ParseToken(tok)
		if err != nil || back != name {
			t.Errorf("ParseToken(Token(%q)) = %q, %v", name, back, err)
		}
	}
}

func FuzzToken(f *testing.F) {
	f.Add("a.b c")
	f.Fuzz(func(t *testing.T, name string) {
		tok := Token(name)
		if strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Fatalf("Token(%q) = %q", name, tok)
		}
		if back, err := ParseToken(tok); err != nil || back != name {
			t.Fatalf("round trip of %q: %q, %v", name, back, err)
		}
	})
}

func TestEncodeMatchesEncodingJSON(t *testing.T) {
	for _, e := range []Event{sample(), func() Event {
		e := sample()
		e.Env, e.Table, e.QueueID = "<ü\"\\\n>&", "s.\"t\"", "\x01"
		e.Op, e.Row = OpDelete, nil
		return e
	}()} {
		e.V = Version
		got, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		e.CommittedAt = e.CommittedAt.UTC()
		e.Row = json.RawMessage(strings.TrimSpace(string(e.Row)))
		if len(e.Row) == 0 {
			e.Row = nil
		}
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("Encode\n got %s\nwant %s", got, want)
		}
	}
}

// FuzzDecode: Decode never panics, and what it accepts encodes and decodes
// back to the same event.
func FuzzDecode(f *testing.F) {
	b, _ := Encode(sample())
	f.Add(b)
	f.Add([]byte(`{"v":1,"env":"e","table":"s.t","op":"delete","pk":{"id":1},"queue_id":"q","committed_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"v":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data)
		if err != nil {
			return
		}
		b, err := Encode(e)
		if err != nil {
			t.Fatalf("Encode of a decoded event: %v\n%s", err, data)
		}
		e2, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode of an encoded event: %v\n%s", err, b)
		}
		b2, err := Encode(e2)
		if err != nil || string(b2) != string(b) {
			t.Fatalf("round trip changed the body:\n%s\n%s", b, b2)
		}
	})
}

func TestAfter(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	a := Event{CommittedAt: t0, QueueID: "0192f3b4-7c1e-7a4e-9a51-3f0c2d9e8b11"}
	later := Event{CommittedAt: t0.Add(time.Microsecond), QueueID: "0192f3b4-0000-7a4e-9a51-3f0c2d9e8b11"}
	sameTxn := Event{CommittedAt: t0, QueueID: "0192f3b4-7c1e-7a4e-9a51-3f0c2d9e8b12"}
	for _, c := range []struct {
		name string
		e, o Event
		want bool
	}{
		{"a later commit, whatever its id", later, a, true},
		{"an earlier commit", a, later, false},
		{"a later entry of the same transaction", sameTxn, a, true},
		{"an earlier entry of the same transaction", a, sameTxn, false},
		{"a copy of the same event", a, a, false},
		{"the same instant in another zone", Event{CommittedAt: t0.In(time.FixedZone("X", 3600)), QueueID: a.QueueID}, a, false},
	} {
		if got := c.e.After(c.o); got != c.want {
			t.Errorf("%s: After = %v, want %v", c.name, got, c.want)
		}
	}
}
