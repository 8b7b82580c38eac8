package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func runCLI(t testing.TB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestDispatch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{"help lists commands", []string{"--help"}, exitOK, "version", ""},
		{"no command is usage", nil, exitUsage, "", "Commands:"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "", `unknown command "frobnicate"`},
		{"a group word lists its subcommands", []string{"queue"}, exitUsage, "", `"queue" needs a subcommand: pgoutpost queue install, pgoutpost queue expire, pgoutpost queue status, pgoutpost queue retry`},
		{"an unknown subcommand too", []string{"queue", "nope"}, exitUsage, "", "pgoutpost queue retry"},
		{"version", []string{"version"}, exitOK, "pgoutpost ", ""},
		{"--version", []string{"--version"}, exitOK, "pgoutpost ", ""},
		{"bad flag is usage", []string{"version", "--nope"}, exitUsage, "", "unknown flag: --nope"},
		{"command help", []string{"version", "--help"}, exitOK, "Usage: pgoutpost version", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tc.code, errs)
			}
			if !strings.Contains(out, tc.inStdout) {
				t.Errorf("stdout %q lacks %q", out, tc.inStdout)
			}
			if !strings.Contains(errs, tc.inStderr) {
				t.Errorf("stderr %q lacks %q", errs, tc.inStderr)
			}
		})
	}
}
