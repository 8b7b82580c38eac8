package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

// joinUnits is how many units both environments hold before the join.
const joinUnits = 100000

// TestSubscriptionJoin joins an existing environment — its own copy of the
// system tables, some rows missing, some extra, some different, and user rows
// pointing at them — to the master without emptying anything, while a writer
// changes the master and a reader polls the slave. A PROTECT on a row the
// master lacks stops the first attempt with nothing done; after it is
// resolved, the join merges, user rows follow their on_delete rules, the
// slave's synced tables end equal to the master's, and the subscription
// streams.
func TestSubscriptionJoin(t *testing.T) {
	common := fmt.Sprintf(`
		INSERT INTO django_content_type VALUES (1, 'catalog', 'unit'), (2, 'userapp', 'report');
		INSERT INTO catalog_artist VALUES (1, 'a1');
		INSERT INTO catalog_unit SELECT i, 'u' || i, 1 FROM generate_series(1, %d) AS i WHERE i NOT IN (5, 6);`, joinUnits)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// The slave's own copy: category 1 differs, units 5 and 6 are missing,
	// 7 differs, 900001 and 900002 are extra, so are marker 2, outcome 3
	// and content type 3; its user rows point at all kinds.
	master, slave, _, _ := djangoPair(t, ctx, `
		INSERT INTO catalog_category VALUES (1, 'visible'), (-1, 'filtered out');`+common+`
		INSERT INTO catalog_unit VALUES (5, 'u5', 1), (6, 'u6', 1);
		UPDATE catalog_unit SET name = 'renamed' WHERE id = 7;
		INSERT INTO catalog_marker VALUES (1, 'm1', 1);
		INSERT INTO catalog_outcome VALUES (1, 'o1'), (2, 'o2')`, `
		INSERT INTO catalog_category VALUES (1, 'old name');`+common+`
		INSERT INTO catalog_unit VALUES (900001, 'extra', 1), (900002, 'extra', 1);
		INSERT INTO django_content_type VALUES (3, 'catalog', 'gone');
		INSERT INTO catalog_marker VALUES (1, 'm1', 1), (2, 'extra', 900001);
		INSERT INTO catalog_outcome VALUES (1, 'o1'), (3, 'extra');
		INSERT INTO userapp_report VALUES (1, 'kept', 1, 1, 1), (2, 'outcome gone', NULL, 3, 1), (3, 'unit gone', NULL, NULL, 900001),
			(4, 'protects marker 2', 2, NULL, 1);
		INSERT INTO userapp_comment VALUES (1, 'on an extra unit', NULL, 900002), (2, 'kept', NULL, 8)`)
	mpool, spool := pgtest.Pool(t, master.DSN), pgtest.Pool(t, slave.DSN)
	env := strings.ReplaceAll(slave.Name, "_", "-")
	t.Cleanup(func() { runCLI(t, "subscription", "drop", "--config", exampleConfig) })

	slots := func() int {
		var n int
		if err := mpool.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '%' || $1", strings.ReplaceAll(env, "-", "_")).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	fingerprint := func() string {
		var s string
		if err := spool.QueryRow(ctx, `SELECT (SELECT string_agg(id || name, ',' ORDER BY id) FROM catalog_unit WHERE id IN (5, 6, 7, 900001))
			|| '|' || (SELECT count(*) FROM userapp_report) || '|' || (SELECT name FROM catalog_category WHERE id = 1)`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := fingerprint()

	// A dry run, and then the join itself, stop at the PROTECT of a marker
	// the master lacks, with nothing done.
	for _, args := range [][]string{{"--join", "--dry-run"}, {"--join"}} {
		code, out, errs := runCLI(t, append(append([]string{"subscription", "create"}, args...), "--config", exampleConfig)...)
		if code == exitOK || !strings.Contains(errs, "public.userapp_report(4) references public.catalog_marker(2) through marker_id (PROTECT)") {
			t.Fatalf("subscription create %v over a protected row: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errs)
		}
		if got := fingerprint(); got != before || slots() != 0 {
			t.Fatalf("subscription create %v failed but changed the slave (%q, was %q) or left %d slot(s) on the master", args, got, before, slots())
		}
	}
	pgtest.Exec(t, slave.DSN, "DELETE FROM userapp_report WHERE id = 4")
	before = fingerprint()

	// A dry run reports what the join will do, and changes nothing.
	out := mustRun(t, "subscription", "create", "--join", "--dry-run", "--config", exampleConfig)
	for _, want := range []string{
		"would merge public.catalog_unit: 2 inserted, 1 updated, 2 deleted (master has 100000)",
		"would merge public.catalog_category: 0 inserted, 1 updated, 0 deleted (master has 1)",
		"would merge public.catalog_marker: 0 inserted, 0 updated, 1 deleted",
		"cascade: DELETE 1 row(s) of public.userapp_report",
		"cascade: SET_NULL 1 row(s) of public.userapp_report",
		"not created (--dry-run)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	if got := fingerprint(); got != before || slots() != 0 {
		t.Fatalf("the dry run changed the slave (%q, was %q) or left %d slot(s) on the master", got, before, slots())
	}

	// join runs the join while a writer changes the master and a reader
	// polls the slave, and checks the reader never saw a synced table empty.
	// The writer's ids start at from.
	join := func(from int) {
		t.Helper()
		var stop atomic.Bool
		var wg sync.WaitGroup
		var writes, emptyReads, reads atomic.Int64
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				err := pgx.BeginFunc(ctx, mpool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, "INSERT INTO catalog_unit VALUES ($1, 'new', 1)", from+i); err != nil {
						return err
					}
					if _, err := tx.Exec(ctx, "UPDATE catalog_unit SET name = 'w' || $1::int WHERE id = $2", from+i, 10+i%100); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, "UPDATE catalog_outcome SET name = 'o' || $1::int WHERE id = 2", from+i)
					return err
				})
				if err != nil {
					t.Errorf("writer: %v", err)
					return
				}
				writes.Add(1)
			}
		}()
		go func() {
			defer wg.Done()
			for !stop.Load() {
				var units, categories int
				if err := spool.QueryRow(ctx, "SELECT (SELECT count(*) FROM catalog_unit), (SELECT count(*) FROM catalog_category)").Scan(&units, &categories); err != nil {
					t.Errorf("reader: %v", err)
					return
				}
				reads.Add(1)
				if units == 0 || categories == 0 {
					emptyReads.Add(1)
				}
			}
		}()
		pgtest.Eventually(t, "the writer and the reader to start", func() bool { return writes.Load() > 5 && reads.Load() > 5 })
		out := mustRun(t, "subscription", "create", "--join", "--config", exampleConfig)
		n := writes.Load()
		pgtest.Eventually(t, "more writes after the join", func() bool { return writes.Load() > n+20 })
		stop.Store(true)
		wg.Wait()
		if !strings.Contains(out, "created on the merged tables") {
			t.Errorf("join output:\n%s", out)
		}
		if n := emptyReads.Load(); n > 0 {
			t.Errorf("a reader saw a synced table empty %d times in %d reads", n, reads.Load())
		}
	}
	join(joinUnits + 1000)

	// The slave catches up and equals the master, table by table.
	equal := func() {
		t.Helper()
		for _, tbl := range []struct{ name, rows string }{
			{"catalog_unit", ""}, {"catalog_category", "SELECT id, name FROM catalog_category WHERE id > 0"}, {"catalog_marker", ""},
			{"catalog_outcome", ""}, {"catalog_artist", ""}, {"django_content_type", ""}, {"catalog_outcome_sub_outcomes", ""}, {"auth_permission", ""},
		} {
			rows := tbl.rows
			if rows == "" {
				rows = "SELECT * FROM " + tbl.name
			}
			q := "SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM (" + rows + ") AS t"
			var want string
			if err := mpool.QueryRow(ctx, q).Scan(&want); err != nil {
				t.Fatal(err)
			}
			pgtest.Eventually(t, tbl.name+" on the slave to equal the master's", func() bool {
				var got string
				if err := spool.QueryRow(ctx, q).Scan(&got); err != nil {
					t.Fatal(err)
				}
				return got == want
			})
		}
	}
	equal()

	// User rows followed the on_delete rules of the rows the master lacked.
	for _, c := range []struct{ sql, want string }{
		{"SELECT string_agg(id || ':' || coalesce(outcome_id::text, 'null'), ',' ORDER BY id) FROM userapp_report", "1:1,2:null"}, // 3 cascaded, 2 set null
		{"SELECT string_agg(id::text, ',' ORDER BY id) FROM userapp_comment", "2"},                                                // 1 cascaded
		{"SELECT string_agg(op || ':' || pk::text, ',' ORDER BY op, pk::text) FROM pgoutpost.denormalize_queue WHERE xid < 0",
			`delete:{"id": 3},insert:{"id": 2}`}, // the merge's own events for the denormalize model
	} {
		var got string
		if err := spool.QueryRow(ctx, c.sql).Scan(&got); err != nil || got != c.want {
			t.Errorf("%s = %q, %v; want %q", c.sql, got, err, c.want)
		}
	}

	// The subscription streams the queue too: a master delete of a delete
	// model arrives as a queue row.
	pgtest.Exec(t, master.DSN, "INSERT INTO catalog_marker VALUES (3, 'm3', 1)")
	pgtest.Exec(t, master.DSN, "DELETE FROM catalog_marker WHERE id = 3")
	pgtest.Eventually(t, "the marker's delete_queue row on the slave", func() bool {
		var n int
		if err := spool.QueryRow(ctx, "SELECT count(*) FROM pgoutpost.delete_queue WHERE table_name = 'public.catalog_marker' AND pk = '{\"id\": 3}'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	if slots() != 1 {
		t.Errorf("%d slots of this slave on the master, want its subscription's", slots())
	}

	// The sidecar applies it: the slave's marker goes, with its cascade.
	sidecarCfg := filepath.Join(t.TempDir(), "sidecar.yaml")
	example, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sidecarCfg, []byte(strings.Replace(string(example), "slot: pgoutpost_sidecar", "slot: "+slave.Name, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopRun := context.WithCancel(ctx)
	var runOut, runErr pgtest.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(rctx, []string{"run", "--config", sidecarCfg, "--sink", "log", "--listen", addr}, &runOut, &runErr)
	}()
	pgtest.Eventually(t, "the sidecar to apply the marker's delete", func() bool {
		var n int
		if err := spool.QueryRow(ctx, "SELECT (SELECT count(*) FROM catalog_marker WHERE id = 3) + (SELECT count(*) FROM pgoutpost.delete_queue)").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	stopRun()
	if code := <-done; code != exitOK {
		t.Errorf("run: exit %d\n%s", code, runErr.String())
	}

	// A resync: the slave drifts while its subscription is dropped and the
	// master goes on; drop, join again under the same writer and reader, and
	// it equals the master again.
	mustRun(t, "subscription", "drop", "--config", exampleConfig)
	pgtest.Exec(t, master.DSN, "UPDATE catalog_unit SET name = 'after the drop' WHERE id = 20; INSERT INTO catalog_unit VALUES (990000, 'master only', 1)")
	pgtest.Exec(t, slave.DSN, "UPDATE catalog_unit SET name = 'drifted' WHERE id = 21; INSERT INTO catalog_unit VALUES (990001, 'slave only', 1)")
	join(joinUnits + 500000)
	equal()
	pgtest.Exec(t, master.DSN, "INSERT INTO catalog_unit VALUES (990002, 'streamed', 1)")
	pgtest.Eventually(t, "a master insert after the second join on the slave", func() bool {
		var n int
		if err := spool.QueryRow(ctx, "SELECT count(*) FROM catalog_unit WHERE id = 990002").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
}
