package main

import (
	"context"
	"fmt"

	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

var queueInstallCommand = command{
	name:    "queue install",
	summary: "create the queue tables; master: queue triggers, slave: local queue publication [--dry-run]",
	run:     runQueueInstall,
}

func runQueueInstall(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	fs := newFlagSet(e, "queue install", `queue install [--dry-run] [--sql]

Creates schema pgoutpost with delete_queue, denormalize_queue and dead_letter.
On the master (role: master) it puts statement-level triggers on every delete
model (DELETE and TRUNCATE -> delete_queue) and denormalize model (also
INSERT and UPDATE -> denormalize_queue), and drops the ones of models that are
no longer configured. On a slave it creates the tables, an index on xid on
each queue (the sidecar's drain reads whole transactions by it), the local
publication of the queue tables (sidecar.publication) and nothing else.
Everything happens in one transaction; a second run changes nothing. Run it
again after upgrading pgoutpost.

A session with SET pgoutpost.skip_queue = on writes no queue rows: deletes it
makes never reach the slaves. Use it only for maintenance and test fixtures.`, &g)
	dryRun := fs.Bool("dry-run", false, "print the plan and change nothing")
	withSQL := fs.Bool("sql", false, "print the SQL of each step too")
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := openRepl(ctx, e, &g, "queue install", "")
	if err != nil {
		return err
	}
	defer s.close()
	opts := queue.InstallOptions{Role: s.cfg.Role, Publication: s.cfg.Sidecar.Publication, SeedQueues: s.cfg.Queue.SeedQueues}
	if s.cfg.Role == registry.RoleMaster {
		var reg *registry.Registry
		if reg, err = s.registry(ctx); err != nil {
			return err
		}
		opts.Registry = reg
	}
	plan, err := queue.Install(ctx, s.conn, opts, *dryRun)
	if err != nil {
		return fmt.Errorf("install the queue on the %s: %w", s.cfg.Role, err)
	}
	return writePlan(e, plan, *dryRun, *withSQL)
}

// writePlan prints what a queue or guard command did, or with dryRun would do.
func writePlan(e *env, plan queue.Plan, dryRun, withSQL bool) error {
	if len(plan) == 0 {
		fmt.Fprintln(e.stdout, "nothing to do: the database is as configured")
		return nil
	}
	if err := plan.Write(e.stdout, withSQL); err != nil {
		return err
	}
	if dryRun {
		fmt.Fprintf(e.stdout, "dry run: %d change(s) planned, nothing changed\n", len(plan))
	} else {
		fmt.Fprintf(e.stdout, "applied %d change(s) in one transaction\n", len(plan))
	}
	return nil
}
