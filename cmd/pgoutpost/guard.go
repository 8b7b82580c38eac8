package main

import (
	"context"
	"fmt"

	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

var guardInstallCommand = command{
	name:    "guard install",
	summary: "slave: refuse ordinary writes to synced tables (--table schema.table ... | --all) [--dry-run]",
	run:     func(ctx context.Context, e *env, args []string) error { return runGuard(ctx, e, args, true) },
}

var guardRemoveCommand = command{
	name:    "guard remove",
	summary: "slave: lift the write guard (--table schema.table ... | --all) [--dry-run]",
	run:     func(ctx context.Context, e *env, args []string) error { return runGuard(ctx, e, args, false) },
}

const guardHelp = `

The guard is a trigger on each guarded table of a slave that makes an INSERT,
UPDATE, DELETE or TRUNCATE from an ordinary session fail with an error naming
the table: a row written on a slave into a synced table would conflict with
the master's rows and can stop replication. The subscription's apply worker
(session_replication_role = replica) and pgoutpost's own cascade
transactions still write. A session that must write on purpose (a resync)
can SET pgoutpost.cascade = on first. --all means every synced table of the configuration
(system, delete and denormalize models) for install, every guarded table for
remove.`

func runGuard(ctx context.Context, e *env, args []string, install bool) error {
	var g globalFlags
	name := "guard remove"
	if install {
		name = "guard install"
	}
	fs := newFlagSet(e, name, name+" (--table schema.table ... | --all) [--dry-run]"+guardHelp, &g)
	tables := new(listFlag)
	fs.Var(tables, "table", `a table to guard or unguard (schema.table as written, a part holding a dot, comma or quote double-quoted: public."a,b"; repeat or separate with commas)`)
	all := fs.Bool("all", false, "every synced table (install) or every guarded table (remove)")
	dryRun := fs.Bool("dry-run", false, "print the plan and change nothing")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *all == (len(*tables) > 0) {
		return usagef("give either --table or --all")
	}
	var names []registry.TableName
	for _, t := range *tables {
		n, err := registry.ParseTableName(t)
		if err != nil {
			return usagef("--table: %v", err)
		}
		names = append(names, n)
	}
	s, err := openRepl(ctx, e, &g, name, registry.RoleSlave)
	if err != nil {
		return err
	}
	defer s.close()
	var plan queue.Plan
	if install {
		if *all {
			// Only the list of synced tables is needed: registry problems
			// are validate's business, not a reason to leave tables open.
			reg, err := s.loadRegistry(ctx)
			if err != nil {
				return err
			}
			for _, t := range reg.Tables {
				if t.Kind.IsSynced() {
					names = append(names, t.Name)
				}
			}
			if len(names) == 0 {
				fmt.Fprintln(e.stdout, "no synced tables in the configuration: nothing to guard")
				return nil
			}
		}
		plan, err = queue.InstallGuard(ctx, s.conn, names, *dryRun)
	} else {
		plan, err = queue.RemoveGuard(ctx, s.conn, names, *dryRun) // nil names: every guarded table
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return writePlan(e, plan, *dryRun, false)
}
