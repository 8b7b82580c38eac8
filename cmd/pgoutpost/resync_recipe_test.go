package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// recipeMaster are the master's rows; recipeSlave are the rows of an
// environment that kept its own copy of the system tables (some equal to the
// master's, some changed, some the master never had) and user rows pointing
// at them by every kind of rule.
const (
	recipeMaster = `
INSERT INTO django_content_type VALUES (1, 'catalog', 'unit'), (2, 'userapp', 'report');
INSERT INTO auth_permission VALUES (1, 'Can add unit', 1, 'add_unit');
INSERT INTO catalog_category VALUES (1, 'c1'), (2, 'c2'), (-1, 'filtered out');
INSERT INTO catalog_unit VALUES (1, 'u1', 1), (2, 'u2', 2), (4, 'u4 of the master', 1);
INSERT INTO catalog_marker VALUES (1, 'm1', 1);
INSERT INTO catalog_gene VALUES (1, 'BRCA1'), (3, 'EGFR');
INSERT INTO catalog_outcome VALUES (1, 'o1');
INSERT INTO catalog_artist VALUES (1, 'a1');
`
	recipeSlave = `
INSERT INTO django_content_type VALUES (1, 'catalog', 'unit'), (2, 'userapp', 'report'), (3, 'userapp', 'legacy');
INSERT INTO auth_permission VALUES (1, 'Can add unit', 1, 'add_unit'), (2, 'Can do legacy', 3, 'legacy');
INSERT INTO catalog_category VALUES (1, 'c1'), (2, 'c2 of the slave'), (3, 'slave only');
INSERT INTO catalog_unit VALUES (1, 'u1', 1), (2, 'u2 of the slave', 1), (3, 'u3 slave only', 3);
INSERT INTO catalog_marker VALUES (1, 'm1', 1), (2, 'm2 slave only', 3);
INSERT INTO catalog_gene VALUES (1, 'BRCA1'), (2, 'TP53');
INSERT INTO catalog_outcome VALUES (1, 'o1'), (2, 'o2');
INSERT INTO catalog_artist VALUES (1, 'a1'), (2, 'a2');
INSERT INTO userapp_report (id, title, marker_id, outcome_id, unit_id) VALUES
	(1, 'keeps', 1, 1, 1), (2, 'on a changed unit', NULL, NULL, 2), (3, 'unit gone', NULL, NULL, 3),
	(4, 'outcome gone', NULL, 2, 1), (5, 'marker gone', 2, NULL, 1);
INSERT INTO userapp_reportline (id, text, gene_id, report_id) VALUES
	(1, 'keeps', 'BRCA1', 1), (2, 'gene gone', 'TP53', 1), (3, 'of r3', 'BRCA1', 3);
INSERT INTO userapp_album VALUES (1, 'keeps', 1), (2, 'artist gone', 2);
INSERT INTO userapp_taggeditem (id, object_id, label, content_type_id) VALUES (1, 1, 'keeps', 2), (2, 1, 'type gone', 3);
`
)

// TestResyncRecipes runs docs/deploy.md's recipes for a slave whose synced
// tables hold rows of their own, on the reference Django schema: an
// environment that joins the master's replication, and then the resync of
// the same slave once it drifted. After each, the slave's synced tables equal
// the master's, user rows pointing at rows the master has are kept, resync-fks
// resolves the others by their rule, and the subscription streams.
func TestResyncRecipes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	master, slave, reg, _ := djangoPair(t, ctx, recipeMaster, recipeSlave)
	mpool, spool := pgtest.Pool(t, master.DSN), pgtest.Pool(t, slave.DSN)
	sub := "pgoutpost_" + slave.Name
	t.Cleanup(func() {
		if code, out, errs := runCLI(t, "subscription", "drop", "--config", exampleConfig); code != exitOK {
			t.Errorf("subscription drop: exit %d\n%s%s", code, out, errs)
		}
	})
	// The guard stays installed throughout: the script passes it.
	mustRun(t, "guard", "install", "--all", "--config", exampleConfig)

	script := filepath.Join(t.TempDir(), "delete.sql")
	if err := os.WriteFile(script, []byte(mustRun(t, "print-delete-sql", "--config", exampleConfig)), 0o600); err != nil {
		t.Fatal(err)
	}
	userRows := func() map[string]string {
		m := map[string]string{}
		for _, tb := range []string{"userapp_report", "userapp_reportline", "userapp_album", "userapp_taggeditem"} {
			m[tb] = tableRows(t, spool, tb)
		}
		return m
	}
	expectUserRows := func(t *testing.T, want map[string]string) {
		t.Helper()
		got := userRows()
		for tb, w := range want {
			if got[tb] != w {
				t.Errorf("%s: %s\nwant: %s", tb, got[tb], w)
			}
		}
	}
	resyncFKs := func(t *testing.T, wantCode int, args ...string) string {
		t.Helper()
		code, out, errs := runCLI(t, append([]string{"resync-fks", "--config", exampleConfig}, args...)...)
		if code != wantCode {
			t.Fatalf("resync-fks %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, out, errs)
		}
		return out + errs
	}

	t.Run("without the replica role the delete fails on the user rows", func(t *testing.T) {
		sql, err := os.ReadFile(script)
		if err != nil {
			t.Fatal(err)
		}
		var kept []string
		for _, l := range strings.Split(string(sql), "\n") {
			if !strings.Contains(l, "session_replication_role = replica;") {
				kept = append(kept, l)
			}
		}
		// Django's foreign keys are deferred: the failure comes at COMMIT.
		out, err := psqlRun(t, slave, strings.Replace(strings.Join(kept, "\n"), "BEGIN;", "BEGIN; SET CONSTRAINTS ALL DEFERRED;", 1))
		if err == nil || !strings.Contains(out, "violates foreign key constraint") {
			t.Fatalf("psql: %v, want a foreign key violation:\n%s", err, out)
		}
		if got := tableRows(t, spool, "catalog_artist"); got != "(1,a1) (2,a2)" {
			t.Errorf("catalog_artist = %s: the failed script changed it", got)
		}
	})

	t.Run("an environment with its own rows joins", func(t *testing.T) {
		if out, err := psqlFile(t, slave, script); err != nil {
			t.Fatalf("the delete script: %v\n%s", err, out)
		}
		if got := tableRows(t, spool, "catalog_unit"); got != "" {
			t.Fatalf("catalog_unit after the delete script: %s", got)
		}
		if got := tableRows(t, spool, "userapp_album"); got != "(1,keeps,1) (2,\"artist gone\",2)" {
			t.Fatalf("userapp_album after the delete script: %s", got)
		}
		mustRun(t, "subscription", "create", "--config", exampleConfig)
		mustRun(t, "subscription", "update", "--wait", "--timeout", "2m", "--config", exampleConfig)
		expectSynced(t, reg, mpool, spool)

		out := resyncFKs(t, exitFailure)
		for _, want := range []string{
			"public.userapp_report(unit_id) -> public.catalog_unit(id) [CASCADE]: 1 hanging, deleted 1",
			"public.userapp_report(marker_id) -> public.catalog_marker(id) [PROTECT]: 1 hanging",
			"1 hanging row(s) left in public.userapp_report",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("resync-fks output lacks %q:\n%s", want, out)
			}
		}
		expectUserRows(t, map[string]string{
			"userapp_report":     `(1,keeps,1,1,1) (2,"on a changed unit",,,2) (4,"outcome gone",,,1) (5,"marker gone",2,,1)`,
			"userapp_reportline": `(1,keeps,BRCA1,1) (2,"gene gone",,1)`,
			"userapp_album":      `(1,keeps,1)`,
			"userapp_taggeditem": `(1,1,keeps,2)`,
		})
		// PROTECT leaves report 5 until it is named.
		resyncFKs(t, exitOK, "--delete-protect", "userapp_report")
		expectUserRows(t, map[string]string{
			"userapp_report": `(1,keeps,1,1,1) (2,"on a changed unit",,,2) (4,"outcome gone",,,1)`,
		})
		pgtest.Exec(t, master.DSN, "INSERT INTO catalog_category VALUES (10, 'after the join')")
		waitRows(t, spool, "catalog_category", "(1,c1) (10,\"after the join\") (2,c2)")
	})

	t.Run("a drifted slave resyncs keeping its subscription", func(t *testing.T) {
		// The slave drifted: a changed row, a row the master does not have,
		// a row lost that a user row still points at.
		pgtest.Exec(t, slave.DSN, `BEGIN; SET LOCAL session_replication_role = replica;
			UPDATE catalog_unit SET name = 'drifted' WHERE id = 1;
			INSERT INTO catalog_gene VALUES (7, 'DRIFT');
			DELETE FROM catalog_outcome WHERE id = 1;
			COMMIT;
			INSERT INTO userapp_reportline VALUES (4, 'on the drift gene', 'DRIFT', 1)`)

		pgtest.Exec(t, slave.DSN, "ALTER SUBSCRIPTION "+sub+" SET PUBLICATION pgoutpost_queue")
		// The queue stays subscribed: a delete on the master meanwhile reaches the slave's queue.
		pgtest.Exec(t, master.DSN, "DELETE FROM catalog_gene WHERE id = 3; INSERT INTO catalog_unit VALUES (5, 'u5 meanwhile', 1)")
		pgtest.Eventually(t, "the gene's delete_queue row on the slave", func() bool {
			var n int
			if err := spool.QueryRow(ctx, "SELECT count(*) FROM pgoutpost.delete_queue WHERE table_name = 'public.catalog_gene'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 1
		})
		if out, err := psqlFile(t, slave, script); err != nil {
			t.Fatalf("the delete script: %v\n%s", err, out)
		}
		mustRun(t, "subscription", "update", "--wait", "--timeout", "2m", "--config", exampleConfig)
		expectSynced(t, reg, mpool, spool)
		resyncFKs(t, exitOK)
		expectUserRows(t, map[string]string{
			"userapp_report":     `(1,keeps,1,1,1) (2,"on a changed unit",,,2) (4,"outcome gone",,,1)`,
			"userapp_reportline": `(1,keeps,BRCA1,1) (2,"gene gone",,1) (4,"on the drift gene",,1)`,
			"userapp_album":      `(1,keeps,1)`,
		})
		pgtest.Exec(t, master.DSN, "INSERT INTO catalog_category VALUES (11, 'after the resync')")
		waitRows(t, spool, "catalog_category", "(1,c1) (10,\"after the join\") (11,\"after the resync\") (2,c2)")
	})

	t.Run("a slave stuck in its initial copy resyncs", func(t *testing.T) {
		// Subscribed again without emptying its tables, as the issue did.
		mustRun(t, "subscription", "drop", "--config", exampleConfig)
		pgtest.Exec(t, slave.DSN, `BEGIN; SET LOCAL session_replication_role = replica;
			INSERT INTO catalog_artist VALUES (2, 'a2 again');
			COMMIT;
			INSERT INTO userapp_album VALUES (3, 'artist gone again', 2)`)
		mustRun(t, "subscription", "create", "--config", exampleConfig)
		code, out, errs := runCLI(t, "subscription", "update", "--wait", "--timeout", "2m", "--config", exampleConfig)
		if code == exitOK || !strings.Contains(errs, "stuck in copying data") {
			t.Fatalf("subscription update --wait on a slave that holds rows: exit %d, want it stuck in copying data\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
		pgtest.Exec(t, slave.DSN, "ALTER SUBSCRIPTION "+sub+" SET PUBLICATION pgoutpost_queue")
		if out, err := psqlFile(t, slave, script); err != nil {
			t.Fatalf("the delete script: %v\n%s", err, out)
		}
		mustRun(t, "subscription", "update", "--wait", "--timeout", "2m", "--config", exampleConfig)
		expectSynced(t, reg, mpool, spool)
		resyncFKs(t, exitOK)
		expectUserRows(t, map[string]string{"userapp_album": `(1,keeps,1)`})
		pgtest.Exec(t, master.DSN, "INSERT INTO catalog_category VALUES (12, 'after the stuck copy')")
		waitRows(t, spool, "catalog_category", "(1,c1) (10,\"after the join\") (11,\"after the resync\") (12,\"after the stuck copy\") (2,c2)")
		var slots int
		if err := mpool.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database() AND slot_name <> $1", sub).Scan(&slots); err != nil || slots != 0 {
			t.Errorf("the master keeps %d other slot(s) (%v): the stuck copies' slots must be gone", slots, err)
		}
	})
}

// expectSynced compares every synced table of the slave with the master's
// rows that its row filter passes.
func expectSynced(t *testing.T, reg *registry.Registry, mpool, spool *pgxpool.Pool) {
	t.Helper()
	for _, tb := range reg.Tables {
		if !tb.Kind.IsSynced() || tb.Name.Schema == registry.QueueSchema {
			continue
		}
		want := tableRowsWhere(t, mpool, tb.Name.Sanitize(), tb.RowFilter)
		if got := tableRows(t, spool, tb.Name.Sanitize()); got != want {
			t.Errorf("%s on the slave: %s\nthe master's: %s", tb.Name, got, want)
		}
	}
}

func tableRowsWhere(t *testing.T, pool *pgxpool.Pool, table, filter string) string {
	t.Helper()
	where := ""
	if filter != "" {
		where = " WHERE " + filter
	}
	var s string
	err := pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(r::text, ' ' ORDER BY r::text), '') FROM `+table+` AS r`+where).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func waitRows(t *testing.T, pool *pgxpool.Pool, table, want string) {
	t.Helper()
	pgtest.Eventually(t, table+" = "+want, func() bool { return tableRows(t, pool, table) == want })
}

// psqlFile runs a script file on db as docs/deploy.md says.
func psqlFile(t testing.TB, db *pgtest.DB, file string) (string, error) {
	t.Helper()
	out, err := exec.Command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db.ConnInfo(), "-f", file).CombinedOutput()
	return string(out), err
}

func psqlRun(t *testing.T, db *pgtest.DB, sql string) (string, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "script.sql")
	if err := os.WriteFile(file, []byte(sql), 0o600); err != nil {
		t.Fatal(err)
	}
	return psqlFile(t, db, file)
}
