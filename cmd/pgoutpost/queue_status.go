package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

var queueStatusCommand = command{
	name:    "queue status",
	summary: "show queue depths, oldest entries and dead letters of a slave [--json]",
	run:     runQueueStatus,
}

func runQueueStatus(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	fs := newFlagSet(e, "queue status", `queue status [--json] [--latest N]

Shows, on a slave, how many entries wait in each queue table, the age of the
oldest, how many entries are in dead_letter, and the latest dead letters with
their reasons. With queue.seed_queues, django-logical-replication's queue
tables are shown too.`, &g)
	asJSON := fs.Bool("json", false, "print JSON")
	latest := fs.Int("latest", 20, "how many of the latest dead letters to show")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *latest < 0 {
		return usagef("--latest %d: want 0 or more", *latest)
	}
	s, err := openRepl(ctx, e, &g, "queue status", registry.RoleSlave)
	if err != nil {
		return err
	}
	defer s.close()
	st, err := queue.ReadStatus(ctx, s.conn, s.cfg.Queue.SeedQueues, *latest)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "QUEUE\tTABLE\tPENDING\tOLDEST\tDEAD LETTERS")
	for _, q := range st.Queues {
		oldest := "-"
		if q.Pending > 0 {
			oldest = q.OldestAge.Round(time.Second).String()
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d\n", q.Queue, q.Table, q.Pending, oldest, q.DeadLetters)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(st.DeadLetters) == 0 {
		return nil
	}
	fmt.Fprintf(e.stdout, "\nLatest dead letters (pgoutpost queue retry --id ID puts one back):\n")
	for _, d := range st.DeadLetters {
		fmt.Fprintf(e.stdout, "%s  %s  %s %s %s (attempts %d, failed %s)\n    %s\n", d.EntryID, d.Queue, printable(d.Op), printable(d.Table), printable(d.PK),
			d.Attempts, d.FailedAt.UTC().Format(time.RFC3339), strings.ReplaceAll(printable(d.Error, '\n'), "\n", "\n    "))
	}
	return nil
}

// printable escapes the control characters of s (but those in keep), as the
// logs do: a queue row's text must not move the cursor, colour the
// terminal or start a line that looks like pgoutpost's own.
func printable(s string, keep ...rune) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case slices.Contains(keep, r):
			b.WriteRune(r)
		case r == utf8.RuneError, unicode.IsControl(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
