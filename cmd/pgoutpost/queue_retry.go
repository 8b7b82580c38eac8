package main

import (
	"context"
	"fmt"

	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

var queueRetryCommand = command{
	name:    "queue retry",
	summary: "put dead letters back into their queues [--id ID ... | --all]",
	run:     runQueueRetry,
}

func runQueueRetry(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	fs := newFlagSet(e, "queue retry", `queue retry --id ID [--id ID ...] | --all

Puts dead letters back into their queue tables on a slave, each with its
original id, and removes them from dead_letter, in one transaction. The
running sidecar sees the re-inserted rows through its stream and applies them
again; one that fails again returns to dead_letter with its attempts counted.
Fix what the reason names first (pgoutpost queue status shows it). An ID is
the entry id (or the dead letter's own id).`, &g)
	ids := fs.StringArray("id", nil, "an entry id to put back (repeatable)")
	all := fs.Bool("all", false, "put every dead letter back")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *all == (len(*ids) > 0) {
		return usagef("give --id ID (one or more) or --all, not both")
	}
	s, err := openRepl(ctx, e, &g, "queue retry", registry.RoleSlave)
	if err != nil {
		return err
	}
	defer s.close()
	n, err := queue.Retry(ctx, s.conn, *ids, *all)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "put %d dead letter(s) back into their queues\n", n)
	return nil
}
