package cascade

import (
	"errors"
	"slices"
	"testing"

	"github.com/pgoutpost/pgoutpost/registry"
)

func TestKeyFromJSON(t *testing.T) {
	one := &registry.Table{Name: registry.TableName{Schema: "public", Name: "unit"}, PrimaryKey: []string{"id"}}
	two := &registry.Table{Name: registry.TableName{Schema: "public", Name: "pair"}, PrimaryKey: []string{"a", "b"}}
	cases := []struct {
		table *registry.Table
		doc   string
		want  Key // nil: ErrBadKey
		flat  bool
	}{
		{one, `{"id": 5}`, Key{"5"}, true},
		{one, " {\"id\":-12.5e+3}\n", Key{"-12.5e+3"}, true},
		{one, `{"id": "2f1c6a9e-0000-7000-8000-000000000001"}`, Key{"2f1c6a9e-0000-7000-8000-000000000001"}, true},
		{one, `{"id": true}`, Key{"true"}, true},
		{one, `{"id": "héllo"}`, Key{"héllo"}, true},
		{two, `{"b": "x", "a": 1}`, Key{"1", "x"}, true},
		// Left to encoding/json, which reads or refuses them.
		{one, `{"id": "a\"b"}`, Key{`a"b`}, false},
		{one, `{"\u0069d": 7}`, Key{"7"}, false},
		{one, `{"id": 5} trailing`, Key{"5"}, false},
		{one, `{"id": 1, "id": 2}`, Key{"2"}, false},
		{one, `{"id": null}`, nil, false},
		{one, `{"id": [1]}`, nil, false},
		{one, `{"id": 01}`, nil, false},
		{one, `{"id": 1.}`, nil, false},
		{one, `{"ID": 1}`, nil, false},
		{one, `{}`, nil, false},
		{one, `[1]`, nil, false},
		{one, `null`, nil, false},
		{one, ``, nil, false},
		{two, `{"a": 1}`, nil, false},
		{two, `{"a": 1, "b": "x", "c": 2}`, nil, false},
	}
	for _, c := range cases {
		got, err := KeyFromJSON(c.table, []byte(c.doc))
		if c.want == nil {
			if !errors.Is(err, ErrBadKey) {
				t.Errorf("KeyFromJSON(%s) = %q, %v; want ErrBadKey", c.doc, got, err)
			}
		} else if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("KeyFromJSON(%s) = %q, %v; want %q", c.doc, got, err, c.want)
		}
		if _, ok := flatKey(c.table.PrimaryKey, []byte(c.doc)); ok != c.flat {
			t.Errorf("flatKey(%s) took it: %v, want %v", c.doc, ok, c.flat)
		}
	}
}

// FuzzKeyFromJSON checks that the fast path and encoding/json agree on
// every document the fast path accepts.
func FuzzKeyFromJSON(f *testing.F) {
	for _, s := range []string{`{"id": 5}`, `{"a": 1, "b": "x"}`, `{"b":"y","a":-0.5E-2}`, `{"a": true, "b": false}`, `{"a":"\u00e9","b":1}`, ` { "a" : 1 , "b" : "" } `} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, doc string, pair bool) {
		table := &registry.Table{Name: registry.TableName{Schema: "public", Name: "t"}, PrimaryKey: []string{"id"}}
		if pair {
			table.PrimaryKey = []string{"a", "b"}
		}
		k, ok := flatKey(table.PrimaryKey, []byte(doc))
		if !ok {
			return
		}
		want, err := decodeKey(table, []byte(doc))
		if err != nil || !slices.Equal(k, want) {
			t.Fatalf("flatKey(%q) = %q; encoding/json gives %q, %v", doc, k, want, err)
		}
	})
}

// BenchmarkKeyFromJSON decodes a queue entry's key as the drain does, by the
// fast path and by encoding/json.
func BenchmarkKeyFromJSON(b *testing.B) {
	t := &registry.Table{Name: registry.TableName{Schema: "public", Name: "unit"}, PrimaryKey: []string{"id"}}
	doc := []byte(`{"id": 123456}`)
	b.Run("flat", func(b *testing.B) {
		for b.Loop() {
			if _, err := KeyFromJSON(t, doc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeKey(t, doc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
