package sidecar_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

// TestSidecarSlotInvalidatedWhileRunning invalidates the sidecar's slot while
// it runs: with NATS down the sidecar holds its flush position behind an
// unpublished event, and the slave removes WAL the slot still needs. The
// sidecar must recreate the slot, recover every entry from the queue tables
// exactly once and keep running.
func TestSidecarSlotInvalidatedWhileRunning(t *testing.T) {
	e := newE2E(t)
	r := e.start(t, t, nil)
	ev, _ := e.consume(t)

	exec(t, e.mpool, "INSERT INTO unit SELECT g, 'u' || g FROM generate_series(1, 3) g")
	synced(t, e.spool, 3, "SELECT count(*) FROM unit")
	exec(t, e.mpool, "INSERT INTO outcome VALUES (1, 'a')")
	pgtest.Eventually(t, "the insert event", func() bool { return len(ev.of(1)) == 1 })
	exec(t, e.mpool, "DELETE FROM unit WHERE id = 1")
	synced(t, e.spool, 0, "SELECT count(*) FROM unit WHERE id = 1")

	// The setting is cluster-wide: reset it at the end.
	exec(t, e.spool, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
	exec(t, e.spool, "SELECT pg_reload_conf()")
	t.Cleanup(func() {
		exec(t, e.spool, "ALTER SYSTEM RESET max_slot_wal_keep_size")
		exec(t, e.spool, "SELECT pg_reload_conf()")
	})

	e.nats.Stop()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = e.nats.Restart()
		}
	})
	exec(t, e.mpool, "UPDATE outcome SET name = 'held' WHERE id = 1")
	synced(t, e.spool, 1, "SELECT count(*) FROM pgoutpost.denormalize_queue")
	exec(t, e.mpool, "DELETE FROM unit WHERE id = 2")

	// The sidecar may recreate the slot before the loop sees it lost: a
	// slot starting at or after from (past the held entry) was recreated.
	from := queryText(t, e.spool, "SELECT pg_current_wal_lsn()::text")
	exec(t, e.spool, "CREATE TABLE filler (n int)")
	for i := 0; ; i++ {
		if queryInt(t, e.spool, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1
			AND (wal_status = 'lost' OR restart_lsn >= $2::pg_lsn)`, e.slot, from) == 1 {
			break
		}
		if i == 30 {
			t.Fatal("the slot was not invalidated")
		}
		exec(t, e.spool, "INSERT INTO filler SELECT generate_series(1, 20000)")
		exec(t, e.spool, "SELECT pg_switch_wal()")
		exec(t, e.spool, "CHECKPOINT")
	}
	select {
	case <-r.done:
		t.Fatalf("the sidecar stopped: %v", r.err)
	default:
	}

	if err := e.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	synced(t, e.spool, 1, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND wal_status <> 'lost'", e.slot)
	synced(t, e.spool, 0, "SELECT count(*) FROM unit WHERE id = 2")
	synced(t, e.spool, 0, "SELECT count(*) FROM pgoutpost.denormalize_queue")
	pgtest.Eventually(t, "the event held during the outage", func() bool { return len(ev.of(1)) == 2 })

	// The new slot is followed.
	exec(t, e.mpool, "DELETE FROM unit WHERE id = 3")
	exec(t, e.mpool, "DELETE FROM outcome WHERE id = 1")
	synced(t, e.spool, 0, "SELECT count(*) FROM unit WHERE id = 3")
	pgtest.Eventually(t, "the delete event", func() bool { return len(ev.of(1)) == 3 })
	synced(t, e.spool, 0, "SELECT count(*) FROM pgoutpost.delete_queue")

	select {
	case <-r.done:
		t.Fatalf("the sidecar stopped: %v", r.err)
	default:
	}
	if n := queryInt(t, e.spool, "SELECT count(*) FROM (SELECT unit_id FROM deleted_log GROUP BY unit_id HAVING count(*) > 1) d"); n != 0 {
		t.Errorf("%d units were deleted more than once", n)
	}
	if n := queryInt(t, e.spool, "SELECT count(*) FROM deleted_log"); n != 3 {
		t.Errorf("deleted_log has %d rows, want 3", n)
	}
	if d := ev.duplicates(); len(d) > 0 {
		t.Errorf("events received twice: %v", d)
	}
	if n := len(ev.of(1)); n != 3 {
		t.Errorf("%d events of outcome 1, want 3", n)
	}
}

// TestSidecarRefusesASlotOfAnotherPlugin: a slot of the sidecar's name made
// with another output plugin is not the sidecar's; Run stops naming it
// instead of retrying forever.
func TestSidecarRefusesASlotOfAnotherPlugin(t *testing.T) {
	e := newE2E(t)
	exec(t, e.spool, "SELECT pg_create_logical_replication_slot($1, 'test_decoding')", e.slot)
	r := e.start(t, t, nil)
	select {
	case <-r.done:
	case <-time.After(time.Minute):
		t.Fatal("Run did not stop on a slot of another plugin")
	}
	if r.err == nil || !strings.Contains(r.err.Error(), "not a logical pgoutput slot") {
		t.Errorf("Run = %v, want it to name the slot as not pgoutput", r.err)
	}
}
