package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

const queueCLISchema = `
CREATE TABLE cat (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE unit (id int PRIMARY KEY, name text);
CREATE TABLE outcome (id int PRIMARY KEY, name text);
CREATE TABLE note (id int PRIMARY KEY, body text);
`

const queueCLIConfig = `environment: %s
role: %s
database:
  dsn: %q
master:
  dsn: %q
contrib_system_tables: false
queue:
  delete_expire_after: 24h
models:
  - name: public.cat
    kind: system
  - name: public.unit
    kind: delete
  - name: public.outcome
    kind: denormalize
    on_truncate: refuse
`

// writeQueueConfig writes a configuration for the database dsn; a slave's
// master connection is never used by these commands and points at dsn too.
func writeQueueConfig(t *testing.T, env, role, dsn string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), role+".yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(queueCLIConfig, env, role, dsn, dsn)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// triggerCatalog lists the non-internal triggers and the functions of
// schema pgoutpost with their oids and xmins: any DDL changes it.
func triggerCatalog(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(x, E'\n' ORDER BY x), '') FROM (
		SELECT format('trigger %s %s %s %s', tgrelid::regclass, tgname, oid, xmin) FROM pg_trigger WHERE NOT tgisinternal
		UNION ALL SELECT format('function %s %s %s', oid::regprocedure, oid, xmin) FROM pg_proc WHERE pronamespace::regnamespace::text = 'pgoutpost'
		UNION ALL SELECT format('class %s %s %s', oid::regclass, oid, xmin) FROM pg_class WHERE relnamespace::regnamespace::text = 'pgoutpost'
		UNION ALL SELECT format('publication %s %s %s', pubname, oid, xmin) FROM pg_publication) s(x)`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestQueueCommands(t *testing.T) {
	ctx := context.Background()
	master := pgtest.NewDB(t, pgtest.Master(t))
	slave := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.Exec(t, master.DSN, queueCLISchema)
	pgtest.Exec(t, slave.DSN, queueCLISchema)
	mpool, spool := pgtest.Pool(t, master.DSN), pgtest.Pool(t, slave.DSN)
	mcfg := writeQueueConfig(t, "prod", "master", master.DSN)
	scfg := writeQueueConfig(t, "staging", "slave", slave.DSN)

	t.Run("master install: dry run, run, run again", func(t *testing.T) {
		before := triggerCatalog(t, mpool)
		out := mustRun(t, "queue", "install", "--dry-run", "--sql", "--config", mcfg)
		for _, want := range []string{"create table pgoutpost.delete_queue", "create trigger pgoutpost_queue_delete on public.unit",
			"create trigger pgoutpost_queue_update on public.outcome", "CREATE TRIGGER pgoutpost_queue_truncate BEFORE TRUNCATE ON public.outcome",
			"queue_refuse_truncate", "dry run:"} {
			if !strings.Contains(out, want) {
				t.Errorf("dry run output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "public.cat") {
			t.Errorf("a system table got queue triggers:\n%s", out)
		}
		if after := triggerCatalog(t, mpool); after != before {
			t.Errorf("dry run changed the catalog:\n%s\n->\n%s", before, after)
		}
		out = mustRun(t, "queue", "install", "--config", mcfg)
		if !strings.Contains(out, "applied") {
			t.Errorf("install output:\n%s", out)
		}
		before = triggerCatalog(t, mpool)
		if out := mustRun(t, "queue", "install", "--config", mcfg); !strings.Contains(out, "nothing to do") {
			t.Errorf("second install:\n%s", out)
		}
		if after := triggerCatalog(t, mpool); after != before {
			t.Errorf("second install changed the catalog:\n%s\n->\n%s", before, after)
		}
		pgtest.Exec(t, master.DSN, "INSERT INTO unit VALUES (1, 'a'); DELETE FROM unit")
		var n int
		if err := mpool.QueryRow(ctx, "SELECT count(*) FROM pgoutpost.delete_queue WHERE table_name = 'public.unit'").Scan(&n); err != nil || n != 1 {
			t.Errorf("delete_queue rows for the delete: %d (err %v), want 1", n, err)
		}
		code, _, errs := runCLI(t, "guard", "install", "--all", "--config", mcfg)
		if code != exitUsage || !strings.Contains(errs, "slave") {
			t.Errorf("guard install on the master: exit %d, stderr %q; want a usage error", code, errs)
		}
	})

	t.Run("slave install", func(t *testing.T) {
		out := mustRun(t, "queue", "install", "--config", scfg)
		if !strings.Contains(out, "create publication pgoutpost_local_queue") || strings.Contains(out, "trigger") {
			t.Errorf("slave install output:\n%s", out)
		}
		if out := mustRun(t, "queue", "install", "--config", scfg); !strings.Contains(out, "nothing to do") {
			t.Errorf("second slave install:\n%s", out)
		}
	})

	t.Run("guard install --all and remove", func(t *testing.T) {
		out := mustRun(t, "guard", "install", "--all", "--config", scfg)
		for _, want := range []string{"on public.cat", "on public.unit", "on public.outcome"} {
			if !strings.Contains(out, want) {
				t.Errorf("guard install output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "public.note") {
			t.Errorf("guard put on a user table:\n%s", out)
		}
		if _, err := spool.Exec(ctx, "INSERT INTO unit VALUES (5, 'local')"); err == nil || !strings.Contains(err.Error(), "public.unit") {
			t.Errorf("insert into a guarded table: err = %v, want a refusal naming public.unit", err)
		}
		if _, err := spool.Exec(ctx, "INSERT INTO note VALUES (1, 'mine')"); err != nil {
			t.Errorf("insert into a user table: %v", err)
		}
		if out := mustRun(t, "guard", "install", "--table", "public.unit", "--config", scfg); !strings.Contains(out, "nothing to do") {
			t.Errorf("second guard install:\n%s", out)
		}
		out = mustRun(t, "guard", "remove", "--table", "public.unit", "--config", scfg)
		if !strings.Contains(out, "drop trigger pgoutpost_guard on public.unit") {
			t.Errorf("guard remove output:\n%s", out)
		}
		if _, err := spool.Exec(ctx, "INSERT INTO unit VALUES (5, 'local')"); err != nil {
			t.Errorf("insert after guard remove: %v", err)
		}
		mustRun(t, "guard", "remove", "--all", "--config", scfg)
		if _, err := spool.Exec(ctx, "INSERT INTO cat VALUES (5, 'local')"); err != nil {
			t.Errorf("insert after guard remove --all: %v", err)
		}
		// A name with a comma and a quote, as SQL writes it: the list flag
		// splits only outside double quotes.
		if _, err := spool.Exec(ctx, `CREATE TABLE "odd, ""name""" (id int PRIMARY KEY)`); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "guard", "install", "--table", `public."odd, ""name""",public.cat`, "--config", scfg)
		if _, err := spool.Exec(ctx, `INSERT INTO "odd, ""name""" VALUES (1)`); err == nil {
			t.Errorf("insert into the guarded table with a comma and quotes in its name succeeded")
		}
		mustRun(t, "guard", "remove", "--table", `public."odd, ""name"""`, "--table", "public.cat", "--config", scfg)
		if _, err := spool.Exec(ctx, `INSERT INTO "odd, ""name""" VALUES (1)`); err != nil {
			t.Errorf("insert after its guard's removal: %v", err)
		}
		code, _, errs := runCLI(t, "guard", "install", "--config", scfg)
		if code != exitUsage || !strings.Contains(errs, "--table or --all") {
			t.Errorf("guard install without tables: exit %d, stderr %q", code, errs)
		}
	})

	t.Run("expire", func(t *testing.T) {
		out := mustRun(t, "queue", "expire", "--dry-run", "--config", mcfg)
		if !strings.Contains(out, "pgoutpost.delete_queue: would delete 0 row(s) older than 24h0m0s") ||
			!strings.Contains(out, "pgoutpost.denormalize_queue: kept (queue.denormalize_expire_after is 0)") {
			t.Errorf("expire dry run:\n%s", out)
		}
		if out := mustRun(t, "queue", "expire", "--config", mcfg); !strings.Contains(out, "pgoutpost.delete_queue: deleted 0 row(s)") {
			t.Errorf("expire:\n%s", out)
		}
		code, _, errs := runCLI(t, "queue", "expire", "--config", scfg)
		if code != exitUsage || !strings.Contains(errs, "master") {
			t.Errorf("expire on a slave: exit %d, stderr %q; want a usage error", code, errs)
		}
	})
}
