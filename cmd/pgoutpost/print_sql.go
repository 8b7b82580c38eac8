package main

import (
	"context"
	"fmt"

	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/replication"
)

var printDeleteSQLCommand = command{
	name:    "print-delete-sql",
	summary: "print the script that empties the synced tables of a slave, keeping user rows (resync)",
	run:     runPrintDeleteSQL,
}

var printDumpCommand = command{
	name:    "print-dump-system-tables",
	summary: "print the pg_dump command that dumps exactly the synced tables of the master",
	run:     runPrintDump,
}

func runPrintDeleteSQL(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	fs := newFlagSet(e, "print-delete-sql", `print-delete-sql

Prints a script that empties the synced tables of this slave in one
transaction, referencing tables first, past the write guard and with
session_replication_role = replica, so that the user rows pointing at them
stay (hanging until the subscription's initial copy brings their rows back).
Run it as it is (psql -v ON_ERROR_STOP=1 -f), then subscription create or
update --wait, then resync-fks for the user rows whose row the master does
not have; docs/deploy.md has the recipes. The replica role needs a superuser,
or on PostgreSQL 15 and newer GRANT SET ON PARAMETER
session_replication_role. It executes nothing itself.`, &g)
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := openRepl(ctx, e, &g, "print-delete-sql", "")
	if err != nil {
		return err
	}
	defer s.close()
	reg, err := s.registry(ctx)
	if err != nil {
		return err
	}
	fmt.Fprint(e.stdout, replication.DeleteSQL(reg, s.names))
	return nil
}

func runPrintDump(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	var mf masterFlags
	fs := newFlagSet(e, "print-dump-system-tables", `print-dump-system-tables [--data-only | --schema-only]

Prints the pg_dump command that dumps exactly the master's synced tables:
--schema-only for a new slave, --data-only for the rows alone (a slave's
resync takes its rows from the subscription's copy, not from a dump). On a slave it connects to the master through master: or
the conninfo flags. The password is never part of the command; pg_dump reads
it from PGPASSWORD or ~/.pgpass.

pg_dump refuses a server of a newer major version than its own: the command
names a pg_dump at least as new as the master (the PATH's, else one installed
beside other versions, such as /usr/lib/postgresql/17/bin/pg_dump), or says
which version is needed when this machine has none.`, &g)
	dataOnly := fs.Bool("data-only", false, "dump rows only")
	schemaOnly := fs.Bool("schema-only", false, "dump table definitions only (a new slave)")
	mf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	mode := replication.DumpAll
	switch {
	case *dataOnly && *schemaOnly:
		return usagef("--data-only and --schema-only exclude each other")
	case *dataOnly:
		mode = replication.DumpData
	case *schemaOnly:
		mode = replication.DumpSchema
	}
	s, err := openRepl(ctx, e, &g, "print-dump-system-tables", "")
	if err != nil {
		return err
	}
	defer s.close()
	reg, err := s.registry(ctx)
	if err != nil {
		return err
	}
	// On the master its own database is the one to dump; on a slave, the master.
	var conninfo string
	if s.cfg.Role == registry.RoleMaster && mf == (masterFlags{}) {
		if conninfo, err = s.cfg.Database.Resolve(ctx, ""); err != nil {
			return &replConfigError{fmt.Sprintf("database: %v", err)}
		}
	} else if conninfo, err = mf.resolve(ctx, s.cfg); err != nil {
		return err
	}
	// pg_dump refuses a server newer than itself: name one that can dump
	// this master, or say which version is needed.
	major, err := replication.MasterMajor(ctx, conninfo)
	if err != nil {
		return err
	}
	d, err := replication.FindPgDump(ctx, major)
	if err != nil {
		fmt.Fprintf(e.stderr, "warning: %v\n", err)
	}
	cmd, err := replication.DumpCommand(reg, conninfo, mode, d.Path)
	if err != nil {
		return err
	}
	if d.Path == "" {
		fmt.Fprintf(e.stdout, "# Needs pg_dump %d or newer (the master runs PostgreSQL %d); none was found on this machine.\n", major, major)
	}
	fmt.Fprintln(e.stdout, "# The password is not shown: pg_dump reads it from PGPASSWORD or ~/.pgpass.")
	fmt.Fprintln(e.stdout, cmd)
	return nil
}
