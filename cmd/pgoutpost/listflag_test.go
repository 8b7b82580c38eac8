package main

import (
	"slices"
	"testing"
)

func TestListFlag(t *testing.T) {
	var l listFlag
	for _, v := range []string{`a, b`, `public."x,y"`, `"s.q"."say ""hi"", then"`, `c`} {
		if err := l.Set(v); err != nil {
			t.Fatalf("Set(%s): %v", v, err)
		}
	}
	want := []string{"a", "b", `public."x,y"`, `"s.q"."say ""hi"", then"`, "c"}
	if !slices.Equal(l, want) {
		t.Errorf("values %q, want %q", []string(l), want)
	}
	for _, bad := range []string{`a,,b`, `"open`, ` `} {
		var l listFlag
		if err := l.Set(bad); err == nil {
			t.Errorf("Set(%q) = %q, want an error", bad, []string(l))
		}
	}
}
