package sidecar_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/replication"
	"github.com/pgoutpost/pgoutpost/sidecar"
)

// The tests of this file show the ordering guarantee: the sidecar never acts
// on a queue entry before the slave holds the rows of its master transaction
// and of every earlier one, whatever holds the slave's apply back (a bulk
// load, an apply error, a table in its initial copy), and no entry is left
// behind when its signal is lost (a slot dropped while running, a
// transaction the stream delivered but the processor skipped). Each ends
// with the slave's synced tables equal to the master's and counts lost and
// duplicated work.

// bulkRows is the size of the bulk loads: enough to keep the slave's apply
// worker busy for a while after the master committed.
const bulkRows = 300000

// sameRows fails unless table holds the same rows on the master and the slave.
func sameRows(t testing.TB, e *e2e, table string) {
	t.Helper()
	q := "SELECT coalesce(string_agg(t::text, ';' ORDER BY t::text), '') FROM " + table + " t"
	var m, s string
	ctx := testCtx(t, time.Minute)
	if err := e.mpool.QueryRow(ctx, q).Scan(&m); err != nil {
		t.Fatal(err)
	}
	if err := e.spool.QueryRow(ctx, q).Scan(&s); err != nil {
		t.Fatal(err)
	}
	if m != s {
		t.Errorf("%s differs: master %.300q, slave %.300q", table, m, s)
	}
}

// settle waits until the slave applied everything the master committed and
// the sidecar emptied the queue tables, with no dead letter.
func settle(t testing.TB, e *e2e) {
	t.Helper()
	// A marker row committed last on the master arrives last on the slave.
	marker := time.Now().UnixNano() % 1000000000
	exec(t, e.mpool, "INSERT INTO bulk VALUES ($1, 'settle')", -marker)
	pgtest.Eventually(t, "the slave to apply the master's last transaction", func() bool {
		return queryInt(t, e.spool, "SELECT count(*) FROM bulk WHERE id = $1", -marker) == 1
	})
	pgtest.Eventually(t, "the queue tables to be empty", func() bool {
		return queryInt(t, e.spool, "SELECT (SELECT count(*) FROM pgoutpost.delete_queue) + (SELECT count(*) FROM pgoutpost.denormalize_queue)") == 0
	})
	exec(t, e.mpool, "DELETE FROM bulk WHERE id = $1", -marker)
	pgtest.Eventually(t, "the marker's delete", func() bool {
		return queryInt(t, e.spool, "SELECT count(*) FROM bulk WHERE id = $1", -marker) == 0
	})
	if n := queryInt(t, e.spool, "SELECT count(*) FROM pgoutpost.dead_letter"); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}

// TestOrderBulkLoadThenDeletes: a bulk load on the master, then units and
// their markers created and, in later transactions, deleted. The deletes
// queue behind the bulk load on the slave; none is lost or applied twice.
func TestOrderBulkLoadThenDeletes(t *testing.T) {
	e := newE2E(t)
	e.start(t, t, nil)
	exec(t, e.mpool, "INSERT INTO bulk SELECT g, repeat('x', 40) FROM generate_series(1, $1::int) g", bulkRows)
	deleteAfterBulkLoad(t, e)
}

// TestOrderParallelApply is TestOrderBulkLoadThenDeletes with the slave's
// subscription applying large transactions in parallel apply workers
// (streaming = parallel, 16+; the default from 18): the bulk load is applied
// by one while the deletes queue behind it.
func TestOrderParallelApply(t *testing.T) {
	e := newE2E(t)
	var version int
	if err := e.spool.QueryRow(testCtx(t, time.Minute), "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version < 160000 {
		t.Skipf("parallel apply needs PostgreSQL 16 or newer; these tests run on %d", version/10000)
	}
	names, err := replication.NewNames("pgoutpost", "", e.slave.Name)
	if err != nil {
		t.Fatal(err)
	}
	exec(t, e.spool, "ALTER SUBSCRIPTION "+pgx.Identifier{names.Subs[0].Name}.Sanitize()+" SET (streaming = parallel)")
	e.start(t, t, nil)
	// Seen while the bulk load is applied: a parallel apply worker.
	var parallel atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			var n int
			if e.spool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_subscription WHERE leader_pid IS NOT NULL").Scan(&n) == nil && n > 0 {
				parallel.Store(true)
				return
			}
			time.Sleep(5 * time.Millisecond) // samples a state that may come and go unseen between polls
		}
	}()
	exec(t, e.mpool, "INSERT INTO bulk SELECT g, repeat('x', 40) FROM generate_series(1, $1::int) g", bulkRows)
	deleteAfterBulkLoad(t, e)
	if !parallel.Load() {
		t.Errorf("no parallel apply worker was seen: the bulk load was not applied in parallel")
	}
}

// deleteAfterBulkLoad creates units and their markers and, in later
// transactions, deletes them; the slave ends equal to the master, each unit
// deleted once.
func deleteAfterBulkLoad(t *testing.T, e *e2e) {
	t.Helper()
	for i := 1; i <= 20; i++ {
		exec(t, e.mpool, "WITH u AS (INSERT INTO unit VALUES ($1, 'u')) INSERT INTO marker VALUES ($1, $1, 'm')", 1000+i)
	}
	for i := 1; i <= 20; i++ {
		if i%2 == 0 { // as Django's CASCADE: the marker, then the unit, in one transaction
			exec(t, e.mpool, "WITH m AS (DELETE FROM marker WHERE id = $1) DELETE FROM unit WHERE id = $1", 1000+i)
		} else { // the marker first, the unit in a later transaction
			exec(t, e.mpool, "DELETE FROM marker WHERE id = $1", 1000+i)
			exec(t, e.mpool, "DELETE FROM unit WHERE id = $1", 1000+i)
		}
	}
	settle(t, e)
	for _, table := range []string{"unit", "marker"} {
		sameRows(t, e, table)
	}
	if n := queryInt(t, e.spool, "SELECT count(*) FROM bulk"); n != bulkRows {
		t.Errorf("slave bulk rows %d, want %d", n, bulkRows)
	}
	// Each unit deleted once on the slave (deleted_log), none lost.
	if lost := queryInt(t, e.spool, "SELECT count(*) FROM generate_series(1001, 1020) g WHERE g NOT IN (SELECT unit_id FROM deleted_log)"); lost != 0 {
		t.Errorf("%d unit deletes lost", lost)
	}
	if dup := queryInt(t, e.spool, "SELECT count(*) FROM (SELECT unit_id FROM deleted_log GROUP BY 1 HAVING count(*) > 1) d"); dup != 0 {
		t.Errorf("%d units deleted twice", dup)
	}
}

// TestOrderBulkLoadThenUpdates: a bulk load, then two updates of each of 20
// denormalize rows. Every event carries the row at least as new as the change
// that queued it, and the last event of each row carries the master's final row.
func TestOrderBulkLoadThenUpdates(t *testing.T) {
	e := newE2E(t)
	e.start(t, t, nil)
	ev, _ := e.consume(t)
	exec(t, e.mpool, "INSERT INTO outcome SELECT g, 'v0' FROM generate_series(1, 20) g")
	exec(t, e.mpool, "INSERT INTO bulk SELECT g, repeat('x', 40) FROM generate_series(1, $1::int) g", bulkRows)
	for v := 1; v <= 2; v++ {
		for id := 1; id <= 20; id++ {
			exec(t, e.mpool, "UPDATE outcome SET name = 'v' || $1::int WHERE id = $2", v, id)
		}
	}
	settle(t, e)
	pgtest.Eventually(t, "three events of each outcome", func() bool {
		for id := 1; id <= 20; id++ {
			if len(ev.of(id)) < 3 {
				return false
			}
		}
		return true
	})
	for id := 1; id <= 20; id++ {
		got := ev.of(id)
		// Events may be redelivered, never reordered per row here (one
		// consumer); order them by queue id: the i-th change wrote version i.
		seen := map[string]bool{}
		i := 0
		for _, x := range got {
			if seen[x.QueueID] {
				continue
			}
			seen[x.QueueID] = true
			var row struct{ Name string }
			if err := x.DecodeRow(&row); err != nil {
				t.Fatalf("outcome %d: event %s: %v", id, x.QueueID, err)
			}
			v, _ := strconv.Atoi(strings.TrimPrefix(row.Name, "v"))
			if v < i {
				t.Errorf("outcome %d: event %d carries %s, older than its own change v%d (stale)", id, i, row.Name, i)
			}
			i++
		}
		if i != 3 {
			t.Errorf("outcome %d: %d distinct events, want 3: %v", id, i, names(got))
		}
		var last struct{ Name string }
		if err := got[len(got)-1].DecodeRow(&last); err != nil || last.Name != "v2" {
			t.Errorf("outcome %d: last event carries %q (%v), the master holds v2", id, last.Name, err)
		}
	}
	sameRows(t, e, "outcome")
}

// TestOrderApplyErrorHoldsEntries is the documented deploy order gone wrong:
// the master has a column the slave lacks, so the slave's apply stops on the
// master's next change of that table. A marker moves from unit 7 to unit 8 and
// unit 7 is deleted behind it: the sidecar must not cascade unit 7 while the
// slave still has the marker under it. After the slave's migration everything
// applies in order and the marker survives, as on the master.
func TestOrderApplyErrorHoldsEntries(t *testing.T) {
	e := newE2E(t)
	r := e.start(t, t, nil)
	exec(t, e.mpool, "INSERT INTO unit VALUES (7, 'seven'), (8, 'eight'); INSERT INTO marker VALUES (1, 7, 'm')")
	settle(t, e)

	exec(t, e.mpool, "ALTER TABLE marker ADD COLUMN extra text")
	exec(t, e.mpool, "UPDATE marker SET unit_id = 8, extra = 'moved' WHERE id = 1")
	exec(t, e.mpool, "DELETE FROM unit WHERE id = 7")
	const applyErrors = "SELECT coalesce(sum(apply_error_count), 0) FROM pg_stat_subscription_stats"
	pgtest.Eventually(t, "the slave's apply worker to fail on the missing column", func() bool {
		return queryInt(t, e.spool, applyErrors) > 0
	})
	// Held: the delete stays queued on the master's side of the slave's one
	// subscription, behind the marker's move. The apply worker starting over
	// and failing again shows it came back to the move and no further.
	failed := queryInt(t, e.spool, applyErrors)
	pgtest.Eventually(t, "the slave's apply worker to fail again on the marker's move", func() bool {
		return queryInt(t, e.spool, applyErrors) > failed
	})
	if n := queryInt(t, e.spool, "SELECT count(*) FROM marker WHERE id = 1 AND unit_id = 7"); n != 1 {
		t.Fatalf("marker 1 under unit 7 on the slave: %d rows, want 1 (nothing applied past the error)", n)
	}
	if n := queryInt(t, e.spool, "SELECT count(*) FROM unit WHERE id = 7"); n != 1 {
		t.Fatalf("unit 7 deleted on the slave before the marker moved away")
	}
	if code, body := r.get(t, "/readyz"); code != 200 && !strings.Contains(body, "lag") && !strings.Contains(body, "stream") {
		t.Logf("readyz while held: %d %s", code, body)
	}

	exec(t, e.spool, "ALTER TABLE marker ADD COLUMN extra text") // the slave's migration
	settle(t, e)
	for _, table := range []string{"unit", "marker"} {
		sameRows(t, e, table)
	}
	if n := queryInt(t, e.spool, "SELECT count(*) FROM deleted_log WHERE unit_id = 7"); n != 1 {
		t.Errorf("unit 7 deleted %d times on the slave", n)
	}
}

// TestOrderTableCopiedWhileRunning publishes a delete model with rows while
// the sidecar runs, and deletes some of its rows during the initial copy:
// /readyz names the table while it is copied, entries wait, and once the
// copy is done the deletes apply.
func TestOrderTableCopiedWhileRunning(t *testing.T) {
	e := newE2E(t)
	r := e.start(t, t, nil)
	names, err := replication.NewNames("pgoutpost", "", e.slave.Name)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 3*time.Minute)
	// Take late out of the publication (as if its model were new) and fill it.
	exec(t, e.mpool, "ALTER PUBLICATION "+names.Delete.Name+" DROP TABLE late")
	if _, err := replication.UpdateSubscriptions(ctx, e.spool, names, e.master.ConnInfo()); err != nil {
		t.Fatal(err)
	}
	exec(t, e.mpool, "INSERT INTO late SELECT g, repeat('y', 40) FROM generate_series(1, $1::int) g", bulkRows)
	exec(t, e.mpool, "ALTER PUBLICATION "+names.Delete.Name+" ADD TABLE late")
	if _, err := replication.UpdateSubscriptions(ctx, e.spool, names, e.master.ConnInfo()); err != nil {
		t.Fatal(err)
	}
	// Deletes of its rows, and of a unit, while it is copied.
	exec(t, e.mpool, "DELETE FROM late WHERE id <= 10")
	exec(t, e.mpool, "INSERT INTO unit VALUES (3, 'three')")
	exec(t, e.mpool, "DELETE FROM unit WHERE id = 3")
	sawCopying := false
	pgtest.Eventually(t, "the copy of late to finish", func() bool {
		if _, body := r.get(t, "/readyz"); strings.Contains(body, "copying: public.late") {
			sawCopying = true
		}
		return queryInt(t, e.spool, "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'") == 0
	})
	if !sawCopying && queryInt(t, e.spool, "SELECT count(*) FROM late") > 0 {
		t.Log("the copy finished before /readyz was asked")
	}
	settle(t, e)
	sameRows(t, e, "late")
	sameRows(t, e, "unit")
	if n := queryInt(t, e.spool, "SELECT count(*) FROM late WHERE id <= 10"); n != 0 {
		t.Errorf("%d deleted rows of late left on the slave", n)
	}
}

// TestOrderSlotDroppedWhileRunning drops the sidecar's slot while it runs and
// commits an entry while there is no slot (a transaction left open on the
// slave holds the new slot's creation back): the sidecar recreates the slot,
// drains the queue tables and applies the entry without a restart.
func TestOrderSlotDroppedWhileRunning(t *testing.T) {
	e := newE2E(t)
	r := e.start(t, t, nil)
	exec(t, e.mpool, "INSERT INTO unit VALUES (5, 'five')")
	settle(t, e)
	ctx := testCtx(t, 2*time.Minute)

	// An open transaction with an xid: creating a logical slot waits for it.
	blocker, err := e.spool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(context.Background()) //nolint:errcheck
	if _, err := blocker.Exec(ctx, "INSERT INTO deleted_log VALUES (-1)"); err != nil {
		t.Fatal(err)
	}
	dropSlot(t, e.spool, e.slot)
	exec(t, e.mpool, "DELETE FROM unit WHERE id = 5")
	pgtest.Eventually(t, "the entry in the slave's queue table", func() bool {
		return queryInt(t, e.spool, "SELECT count(*) FROM pgoutpost.delete_queue") == 1 ||
			queryInt(t, e.spool, "SELECT count(*) FROM unit WHERE id = 5") == 0
	})
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	settle(t, e)
	sameRows(t, e, "unit")
	if n := queryInt(t, e.spool, "SELECT count(*) FROM deleted_log WHERE unit_id = 5"); n != 1 {
		t.Errorf("unit 5 deleted %d times", n)
	}
	if _, body := r.get(t, "/metrics"); !strings.Contains(body, "pgoutpost_slot_recoveries_total 1") {
		t.Errorf("metrics do not count one slot recovery:\n%s", grepLines(body, "recoveries"))
	}
}

// dropSlot terminates the walsender of slot and drops it, retrying while the
// sidecar's stream reconnects.
func dropSlot(t testing.TB, pool *pgxpool.Pool, slot string) {
	t.Helper()
	pgtest.Eventually(t, "slot "+slot+" dropped", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = pool.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", slot)
		_, err := pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot)
		return err == nil
	})
}

func grepLines(text, word string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// skipper is a processor that reports the first transaction with a delete
// entry as done without doing it: a signal lost by a bug.
type skipper struct {
	sidecar.Processor
	skipped atomic.Bool
}

func (s *skipper) Apply(ctx context.Context, txns []queue.Txn) (int, error) {
	if len(txns) == 1 && len(txns[0].Entries) > 0 && txns[0].Entries[0].Queue == registry.DeleteQueue && s.skipped.CompareAndSwap(false, true) {
		return 1, nil
	}
	return s.Processor.Apply(ctx, txns)
}

// TestSweepHealsAMissedEntry: the stream delivered an entry, the processor
// lost it; the periodic sweep finds it in the queue table, applies it and
// counts it.
func TestSweepHealsAMissedEntry(t *testing.T) {
	e := newE2E(t)
	var skip *skipper
	r := e.start(t, t, func(o *sidecar.Options) {
		skip = &skipper{Processor: o.Processor}
		o.Processor = skip
		o.SweepInterval = 300 * time.Millisecond
	})
	exec(t, e.mpool, "INSERT INTO unit VALUES (9, 'nine')")
	synced(t, e.spool, 1, "SELECT count(*) FROM unit WHERE id = 9")
	exec(t, e.mpool, "DELETE FROM unit WHERE id = 9")
	synced(t, e.spool, 0, "SELECT count(*) FROM unit WHERE id = 9")
	if !skip.skipped.Load() {
		t.Fatal("the entry was not skipped: the test shows nothing")
	}
	settle(t, e)
	sameRows(t, e, "unit")
	if _, body := r.get(t, "/metrics"); !strings.Contains(body, "pgoutpost_queue_swept_entries_total 1") {
		t.Errorf("metrics do not count one swept entry:\n%s", grepLines(body, "swept"))
	}
}

// TestPermissionErrorIsRetried: the sidecar's role lacks DELETE on a table
// the cascade needs. That is no entry's fault: the entry is not
// dead-lettered, /readyz says why nothing is applied, and once the
// privilege is granted the entry is applied.
func TestPermissionErrorIsRetried(t *testing.T) {
	e := newE2E(t)
	role := "lim_" + e.slave.Name
	ident := pgx.Identifier{role}.Sanitize()
	dsn := pgtest.Role(t, e.slave, role, "")
	for _, g := range []string{
		"GRANT USAGE ON SCHEMA pgoutpost TO " + ident,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgoutpost TO " + ident,
		"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO " + ident, // no DELETE
		"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgoutpost TO " + ident,
	} {
		exec(t, e.spool, g)
	}
	e.procDB = sidecarPool(t, dsn)
	r := e.start(t, t, nil)

	exec(t, e.mpool, "INSERT INTO unit VALUES (4, 'four')")
	synced(t, e.spool, 1, "SELECT count(*) FROM unit WHERE id = 4")
	exec(t, e.mpool, "DELETE FROM unit WHERE id = 4")
	pgtest.Eventually(t, "/readyz to name the permission error", func() bool {
		_, body := r.get(t, "/readyz")
		return strings.Contains(body, "apply: ") && strings.Contains(body, "permission denied")
	})
	if n := queryInt(t, e.spool, "SELECT count(*) FROM pgoutpost.dead_letter"); n != 0 {
		t.Fatalf("%d dead letters for a missing privilege", n)
	}
	if n := queryInt(t, e.spool, "SELECT count(*) FROM unit WHERE id = 4"); n != 1 {
		t.Fatalf("unit 4: %d rows while the sidecar may not delete it", n)
	}
	exec(t, e.spool, "GRANT DELETE ON ALL TABLES IN SCHEMA public TO "+ident)
	synced(t, e.spool, 0, "SELECT count(*) FROM unit WHERE id = 4")
	settle(t, e)
	sameRows(t, e, "unit")
	pgtest.Eventually(t, "/readyz to drop the apply error", func() bool {
		_, body := r.get(t, "/readyz")
		return !strings.Contains(body, "apply: ")
	})
}

// TestSecondSidecarNamesTheHolder: a second sidecar on the same slot is not
// ready, and /readyz names the connection that holds the slot.
func TestSecondSidecarNamesTheHolder(t *testing.T) {
	e := newE2E(t)
	first := e.start(t, t, nil)
	pgtest.Eventually(t, "the first sidecar to be ready", func() bool { code, _ := first.get(t, "/readyz"); return code == 200 })
	second := e.start(t, t, nil)
	pgtest.Eventually(t, "the second sidecar to name the slot's holder", func() bool {
		code, body := second.get(t, "/readyz")
		return code == 503 && strings.Contains(body, "is held by another connection (server PID")
	})
	if code, body := first.get(t, "/readyz"); code != 200 {
		t.Errorf("the first sidecar: %d %s", code, body)
	}
}
