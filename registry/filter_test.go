package registry

import (
	"errors"
	"testing"
)

func TestCheckFilter(t *testing.T) {
	for _, tc := range []struct {
		name, filter string
		ok           bool
	}{
		{"comparison", "id > 0", true},
		{"nested parentheses and a string", "(status IN ('a', 'b)')) AND NOT (name = 'x''y')", true},
		{"quoted identifier with a parenthesis", `"odd)name" IS NOT NULL`, true},
		{"escape string with a backslash-quote", `name <> E'it\'s ) ; --'`, true},
		{"closes pgoutpost's parenthesis and adds a statement", "true); COMMIT; DROP TABLE victim; --", false},
		{"closes pgoutpost's parenthesis and adds a table", "true), TABLE victim WHERE (true", false},
		{"a statement separator alone", "true; DROP TABLE victim", false},
		{"a comment", "true /* x */", false},
		{"a backslash in a plain string", `name <> 'a\' OR true`, false},
		{"dollar quoting", "name = $$x$$", false},
		{"unterminated string", "name = 'x", false},
		{"open parenthesis", "(true", false},
		{"empty", "  ", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckFilter(tc.filter)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckFilter(%q) = %v, want ok=%v", tc.filter, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrFilterSyntax) {
				t.Errorf("error %v does not wrap ErrFilterSyntax", err)
			}
		})
	}
}

// FuzzCheckFilter: an accepted filter is balanced, so that wrapped in
// pgoutpost's parentheses it stays inside them: followed by a ")" it is
// refused, and wrapped in "(…)" it is still accepted.
func FuzzCheckFilter(f *testing.F) {
	for _, s := range []string{"id > 0", "true); DROP TABLE x; --", "E'\\''", `"a""b"`, "(a)) OR ((b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckFilter(s) != nil {
			return
		}
		if CheckFilter(s+")") == nil {
			t.Fatalf("accepted %q, whose ) would close pgoutpost's parenthesis", s)
		}
		if err := CheckFilter("(" + s + ")"); err != nil {
			t.Fatalf("accepted %q but not (%s): %v", s, s, err)
		}
	})
}
