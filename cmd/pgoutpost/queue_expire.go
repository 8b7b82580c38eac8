package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

var queueExpireCommand = command{
	name:    "queue expire",
	summary: "delete master queue rows older than queue.*_expire_after [--dry-run]",
	run:     runQueueExpire,
}

func runQueueExpire(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	fs := newFlagSet(e, "queue expire", `queue expire [--dry-run] [--batch-size N]

Deletes, on the master, the rows of delete_queue older than
queue.delete_expire_after and of denormalize_queue older than
queue.denormalize_expire_after (0, the default, keeps a queue forever), in
batches. A row's age is when it was written. The queue publication publishes
inserts only, so these deletes never reach the slaves.`, &g)
	dryRun := fs.Bool("dry-run", false, "count the rows that would be deleted; delete nothing")
	batch := fs.Int("batch-size", queue.DefaultExpireBatch, "rows deleted per statement")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *batch <= 0 {
		return usagef("--batch-size %d: want a positive number", *batch)
	}
	s, err := openRepl(ctx, e, &g, "queue expire", registry.RoleMaster)
	if err != nil {
		return err
	}
	defer s.close()
	for _, q := range []struct {
		table registry.TableName
		after time.Duration
		key   string
	}{
		{registry.DeleteQueue.Table(), s.cfg.Queue.DeleteExpireAfter, "queue.delete_expire_after"},
		{registry.DenormalizeQueue.Table(), s.cfg.Queue.DenormalizeExpireAfter, "queue.denormalize_expire_after"},
	} {
		if q.after <= 0 {
			fmt.Fprintf(e.stdout, "%s: kept (%s is 0)\n", q.table, q.key)
			continue
		}
		n, err := queue.Expire(ctx, s.conn, q.table, q.after, *batch, *dryRun)
		if err != nil {
			return err
		}
		verb := "deleted"
		if *dryRun {
			verb = "would delete"
		}
		fmt.Fprintf(e.stdout, "%s: %s %d row(s) older than %s\n", q.table, verb, n, q.after)
	}
	return nil
}
