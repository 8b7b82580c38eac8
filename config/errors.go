package config

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong with a configuration, located by file, line and
// key where they are known.
type Problem struct {
	File string
	Line int    // 0 when unknown
	Key  string // key path such as models[2].kind, "" for the whole file
	// Env is the PGOUTPOST_* variable the value came from, if it did.
	Env string
	Msg string
}

func (p *Problem) Error() string {
	var b strings.Builder
	switch {
	case p.Env != "":
		fmt.Fprintf(&b, "%s: ", p.Env)
	case p.File != "" && p.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", p.File, p.Line)
	case p.File != "":
		fmt.Fprintf(&b, "%s: ", p.File)
	}
	if p.Key != "" {
		fmt.Fprintf(&b, "%s: ", p.Key)
	}
	b.WriteString(p.Msg)
	return b.String()
}

// InvalidError is an invalid configuration: every problem, one per line. It
// unwraps to its problems (as errors.Join would) and makes the CLI exit with 2.
type InvalidError struct {
	Problems []error
}

func (e *InvalidError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Error()
	}
	return "invalid configuration:\n" + strings.Join(msgs, "\n")
}

// Unwrap returns the problems.
func (e *InvalidError) Unwrap() []error { return e.Problems }

// ExitCode is 2, the exit code of an invalid configuration.
func (e *InvalidError) ExitCode() int { return 2 }
