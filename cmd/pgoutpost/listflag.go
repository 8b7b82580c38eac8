package main

import (
	"fmt"
	"strings"
)

// listFlag is a repeatable flag whose values may also be separated by
// commas. Unlike pflag's StringSlice (CSV) it splits only on commas outside
// double quotes and keeps the quotes, so a table is named as SQL writes it:
// --table 'public."A, b"'.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Type() string { return "list" }

func (l *listFlag) Set(v string) error {
	quoted := false
	start := 0
	for i := 0; i < len(v); i++ {
		switch {
		case v[i] == '"':
			quoted = !quoted // "" inside quotes toggles twice: still quoted
		case v[i] == ',' && !quoted:
			if err := l.add(v[start:i], v); err != nil {
				return err
			}
			start = i + 1
		}
	}
	if quoted {
		return fmt.Errorf("unclosed double quote in %q", v)
	}
	return l.add(v[start:], v)
}

func (l *listFlag) add(item, whole string) error {
	item = strings.TrimSpace(item)
	if item == "" {
		return fmt.Errorf("empty name in %q", whole)
	}
	*l = append(*l, item)
	return nil
}
