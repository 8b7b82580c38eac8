package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pgoutpost/pgoutpost/fkresync"
	"github.com/pgoutpost/pgoutpost/registry"
)

var resyncFKsCommand = command{
	name:    "resync-fks",
	summary: "resolve user rows whose foreign key points at a missing synced row [--dry-run]",
	run:     runResyncFKs,
}

func runResyncFKs(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	fs := newFlagSet(e, "resync-fks", `resync-fks [--dry-run] [--delete-protect TABLE]... [--null-protect TABLE]... [--skip TABLE]...

After an initial copy or a manual resync of the system tables, finds the rows
of user (not synced) tables whose foreign key points at a synced row that no
longer exists, and resolves each by the relation's on_delete rule: CASCADE
deletes the row and its dependents as Django would, SET_NULL, SET_DEFAULT and
SET(v) update the foreign key. Rows of PROTECT, RESTRICT and DO_NOTHING
relations (and of relations without a rule) are left and reported, unless
their table is named by --delete-protect or --null-protect. References
between synced tables are never changed: they are the master's.

Each batch of one relation is one transaction; progress goes to the log
(stderr), the summary to stdout: per relation, the rows found, deleted,
updated and left, with examples and the reason rows were left.

Exit codes: 0 when no hanging row is left (with --dry-run: would be left),
1 when some are, 2 for bad usage or configuration.

TABLE is schema.table, or a table of schema public; repeat a flag or separate
names by commas.

`+overridesHelp(), &g)
	dryRun := fs.Bool("dry-run", false, "count the hanging rows per relation in a read-only transaction and change nothing")
	deleteProtect, nullProtect, skip := new(listFlag), new(listFlag), new(listFlag)
	fs.Var(deleteProtect, "delete-protect", "delete this table's rows that PROTECT, RESTRICT or DO_NOTHING would leave (with their CASCADE dependents)")
	fs.Var(nullProtect, "null-protect", "set this table's foreign keys that PROTECT, RESTRICT or DO_NOTHING would leave to NULL")
	fs.Var(skip, "skip", "leave out relations from or to this table")
	batchSize := fs.Int("batch-size", fkresync.DefaultBatchSize, "hanging rows resolved per transaction")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *batchSize < 1 {
		return usagef("--batch-size %d: want at least 1", *batchSize)
	}
	opts := fkresync.Options{DryRun: *dryRun, BatchSize: *batchSize}
	for _, l := range []struct {
		flag  string
		names []string
		dst   *[]registry.TableName
	}{{"--delete-protect", *deleteProtect, &opts.DeleteProtect}, {"--null-protect", *nullProtect, &opts.NullProtect}, {"--skip", *skip, &opts.Skip}} {
		for _, s := range l.names {
			n, err := registry.ParseTableName(strings.TrimSpace(s))
			if err != nil {
				return usagef("%s: %v", l.flag, err)
			}
			*l.dst = append(*l.dst, n)
		}
	}

	s, err := openRepl(ctx, e, &g, "resync-fks", "")
	if err != nil {
		return err
	}
	defer s.close()
	reg, err := s.registry(ctx)
	if err != nil {
		return err
	}
	opts.Logger = s.logger
	rep, err := fkresync.Run(ctx, s.conn, reg, opts)
	if errors.Is(err, fkresync.ErrUnknownTable) || errors.Is(err, fkresync.ErrBadOption) {
		return usagef("%v", err)
	}
	if rep == nil {
		return err
	}
	if werr := rep.Write(e.stdout); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	if left := rep.Left(); left > 0 {
		names := make([]string, 0)
		for _, t := range rep.LeftTables() {
			names = append(names, t.String())
		}
		verb := "left"
		if *dryRun {
			verb = "would be left"
		}
		return fmt.Errorf("%d hanging row(s) %s in %s (see above why): rerun with --delete-protect TABLE to delete them or --null-protect TABLE to set their foreign key to NULL, or fix them by hand",
			left, verb, strings.Join(names, ", "))
	}
	return nil
}
