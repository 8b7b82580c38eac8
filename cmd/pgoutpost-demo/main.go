// Command pgoutpost-demo starts a master and a slave PostgreSQL cluster in a
// temporary directory and an in-process NATS server, and shows what
// pgoutpost does: it runs the setup commands and the sidecar of a pgoutpost
// binary as a user would, then changes rows on the master and shows what
// happens on the slave and on NATS. `make demo` builds pgoutpost and runs it:
//
//	go run ./cmd/pgoutpost-demo --pgoutpost bin/pgoutpost
//
// It is a program of its own so that the pgoutpost binary carries neither the
// NATS server nor the cluster launcher.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the demo failed or was interrupted
	exitUsage   = 2 // bad usage, or no pgoutpost binary
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("pgoutpost-demo", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("pgoutpost", "pgoutpost", "the pgoutpost binary to run (make build puts it in bin/); a bare name is looked up in PATH")
	fs.Usage = func() {
		fmt.Fprintf(stdout, `Usage: pgoutpost-demo [--pgoutpost path]

Starts a master and a slave PostgreSQL cluster in a temporary directory and an
in-process NATS server, installs a small Django-like schema, runs the setup
commands (queue install, publication create/update, subscription
create/update), starts the sidecar and then changes rows on the master,
showing what happens on the slave and on NATS. Everything is removed on exit,
also on Ctrl-C. Needs the PostgreSQL server binaries (initdb, pg_ctl) and a
pgoutpost binary; make demo builds one and runs the demo with it.

Flags:
%s`, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, "pgoutpost-demo:", err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pgoutpost-demo: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	path, err := exec.LookPath(*bin)
	if err != nil {
		fmt.Fprintf(stderr, "pgoutpost-demo: no pgoutpost binary: %v\nBuild one with 'make build' and pass --pgoutpost bin/pgoutpost, or run 'make demo'.\n", err)
		return exitUsage
	}
	if err := runDemo(ctx, path, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "pgoutpost-demo:", err)
		return exitFailure
	}
	return exitOK
}

// runDemo runs the demo with the pgoutpost binary at bin and removes
// everything it started, whatever happened.
func runDemo(ctx context.Context, bin string, stdout, stderr io.Writer) error {
	d := &demo{stdout: stdout, stderr: stderr, bin: bin, start: time.Now()}
	defer d.cleanup()
	err := d.run(ctx)
	if err != nil && ctx.Err() != nil {
		d.say("interrupted; cleaning up")
	}
	return err
}
