package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure
	exitUsage   = 2 // bad usage or invalid configuration
)

// defaultConfigPath is where the configuration is read from unless --config or
// PGOUTPOST_CONFIG says otherwise.
const defaultConfigPath = "./sidecar.yaml"

// command is one subcommand. Commands with subcommands of their own (registry
// show, queue install) are named with a space.
type command struct {
	name    string
	summary string
	// run parses args with its own flag set (see newFlagSet) and does the work.
	run func(ctx context.Context, env *env, args []string) error
}

// commands lists every subcommand; each lives in its own file.
var commands = []command{
	versionCommand,
	validateCommand,
	registryShowCommand,
	publicationCreateCommand,
	publicationUpdateCommand,
	subscriptionCreateCommand,
	subscriptionUpdateCommand,
	subscriptionDropCommand,
	printDeleteSQLCommand,
	printDumpCommand,
	statusCommand,
	queueInstallCommand,
	queueExpireCommand,
	queueStatusCommand,
	queueRetryCommand,
	eventsReplayCommand,
	guardInstallCommand,
	guardRemoveCommand,
	resyncFKsCommand,
	runCommand,
}

// env is what a command gets from the program: its output streams.
type env struct {
	stdout, stderr io.Writer
}

// usageError is a bad invocation: exit code 2, with the command's usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitCoder lets an error choose the exit code (invalid configuration: 2).
type exitCoder interface{ ExitCode() int }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		printUsage(stderr) // a usage error: the usage goes where errors go
		return exitUsage
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout)
		return exitOK
	}
	if args[0] == "--version" {
		args[0] = "version"
	}
	cmd, rest, ok := lookup(args)
	if !ok {
		if subs := subcommands(args[0]); len(subs) > 0 {
			fmt.Fprintf(stderr, "pgoutpost: %q needs a subcommand: pgoutpost %s\n", args[0], strings.Join(subs, ", pgoutpost "))
			return exitUsage
		}
		fmt.Fprintf(stderr, "pgoutpost: unknown command %q\n\n", commandWords(args))
		printUsage(stderr)
		return exitUsage
	}
	err := cmd.run(ctx, e, rest)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, pflag.ErrHelp):
		return exitOK
	}
	fmt.Fprintf(stderr, "pgoutpost %s: %v\n", cmd.name, err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "Run 'pgoutpost %s --help' for usage.\n", cmd.name)
		return exitUsage
	}
	var ec exitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return exitFailure
}

// lookup finds the longest command name that prefixes args.
func lookup(args []string) (command, []string, bool) {
	if len(args) >= 2 {
		for _, c := range commands {
			if c.name == args[0]+" "+args[1] {
				return c, args[2:], true
			}
		}
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c, args[1:], true
		}
	}
	return command{}, nil, false
}

// commandWords returns the words of args that name a command: two when the
// first is a command group ("queue"), else one.
func commandWords(args []string) string {
	if len(args) > 1 && len(subcommands(args[0])) > 0 {
		return args[0] + " " + args[1]
	}
	return args[0]
}

// subcommands lists the commands of group ("queue install", ...), in the
// order of commands; none when group is no group.
func subcommands(group string) []string {
	var out []string
	for _, c := range commands {
		if strings.HasPrefix(c.name, group+" ") {
			out = append(out, c.name)
		}
	}
	return out
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, `pgoutpost keeps chosen PostgreSQL tables in sync from a master environment to
slave environments and runs next to each slave database to propagate deletes
with Django on_delete semantics and publish denormalization events to NATS.

Usage:
  pgoutpost <command> [flags]

Commands:`)
	cs := append([]command(nil), commands...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		fmt.Fprintf(w, "  %-28s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, `
Every command takes --config (default ./sidecar.yaml, env PGOUTPOST_CONFIG),
--log-level and --log-format. Run 'pgoutpost <command> --help' for its flags.
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid configuration.`)
}

// globalFlags are the flags every command takes.
type globalFlags struct {
	config    string
	logLevel  string
	logFormat string
}

// newFlagSet returns a command's flag set with the global flags registered in
// g and a usage message that starts with synopsis.
func newFlagSet(e *env, name, synopsis string, g *globalFlags) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(e.stdout, "Usage: pgoutpost %s\n\nFlags:\n%s", synopsis, fs.FlagUsages())
	}
	if g != nil {
		fs.StringVar(&g.config, "config", envOr("PGOUTPOST_CONFIG", defaultConfigPath), "configuration file (env PGOUTPOST_CONFIG)")
		fs.StringVar(&g.logLevel, "log-level", envOr("PGOUTPOST_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env PGOUTPOST_LOG_LEVEL)")
		fs.StringVar(&g.logFormat, "log-format", envOr("PGOUTPOST_LOG_FORMAT", "text"), "log format: text or json (env PGOUTPOST_LOG_FORMAT)")
	}
	return fs
}

// parse parses args, turning flag errors into usage errors.
func parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	// No command takes arguments besides its flags: a stray word is more
	// likely a mistyped flag or subcommand than something to ignore.
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// logger builds the logger the global flags ask for; logs go to stderr so
// that a command's output on stdout stays machine-readable.
func (g *globalFlags) logger(e *env) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", g.logFormat)
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}
