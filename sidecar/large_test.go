package sidecar_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/sidecar"
)

// largeSeen wraps the processor and counts the large transactions handed to it.
type largeSeen struct {
	sidecar.Processor
	large atomic.Int64
}

func (l *largeSeen) Apply(ctx context.Context, txns []queue.Txn) (int, error) {
	for _, t := range txns {
		if t.Large {
			l.large.Add(1)
		}
	}
	return l.Processor.Apply(ctx, txns)
}

// TestLargeMasterTransaction: one master transaction deletes 1,500 units
// (their markers and the slave's reports cascading) and updates 500
// outcomes, with the sidecar's large_transaction at 200. It reaches the
// processor as a large transaction (its entries stay in the queue tables),
// first through the stream, then, written while the sidecar is stopped,
// through the drain at start. The slave ends equal to the master, each unit
// deleted once, each update published once.
func TestLargeMasterTransaction(t *testing.T) {
	e := newE2E(t)
	exec(t, e.mpool, "INSERT INTO unit SELECT g, 'u' || g FROM generate_series(1, 3000) g")
	exec(t, e.mpool, "INSERT INTO marker SELECT g, g, 'm' FROM generate_series(1, 3000) g")
	exec(t, e.mpool, "INSERT INTO outcome SELECT g, 'o' FROM generate_series(1, 1000) g")
	synced(t, e.spool, 3000, "SELECT count(*) FROM marker")
	exec(t, e.spool, "INSERT INTO report (unit_id) SELECT g FROM generate_series(1, 3000) g")

	e.largeTxn = 200 // the drain's
	var seen *largeSeen
	start := func() *running {
		return e.start(t, t, func(o *sidecar.Options) {
			o.LargeTxn = 200
			seen = &largeSeen{Processor: o.Processor}
			o.Processor = seen
		})
	}
	massDelete := func(lo, hi int) {
		exec(t, e.mpool, `WITH m AS (DELETE FROM marker WHERE unit_id BETWEEN $1 AND $2),
  o AS (UPDATE outcome SET name = 'changed' WHERE id BETWEEN $1 / 3 + 1 AND $1 / 3 + 500)
DELETE FROM unit WHERE id BETWEEN $1 AND $2`, lo, hi)
	}
	var ev *events
	top := t
	check := func(t *testing.T, deleted, events int64) {
		settle(t, e)
		for _, table := range []string{"unit", "marker", "outcome"} {
			sameRows(t, e, table)
		}
		if got := queryInt(t, e.spool, "SELECT count(*) FROM deleted_log"); got != deleted {
			t.Errorf("%d unit deletes on the slave, want %d", got, deleted)
		}
		if dup := queryInt(t, e.spool, "SELECT count(*) FROM (SELECT unit_id FROM deleted_log GROUP BY 1 HAVING count(*) > 1) d"); dup != 0 {
			t.Errorf("%d units deleted twice", dup)
		}
		if left := queryInt(t, e.spool, "SELECT count(*) FROM report WHERE unit_id NOT IN (SELECT id FROM unit)"); left != 0 {
			t.Errorf("%d reports of deleted units left", left)
		}
		pgtest.Eventually(t, "the events", func() bool { return int64(ev.count()) >= events })
		if n := ev.count(); int64(n) != events {
			t.Errorf("%d events, want %d", n, events)
		}
		if dup := ev.duplicates(); len(dup) > 0 {
			t.Errorf("%d events received twice", len(dup))
		}
		if seen.large.Load() == 0 {
			t.Errorf("no large transaction reached the processor")
		}
	}

	t.Run("through the stream", func(t *testing.T) {
		r := start()
		ev, _ = e.consume(top) // once the sidecar made the stream; for both parts
		massDelete(1, 1500)
		check(t, 1500, 1500) // the 1,000 outcomes' inserts, 500 updates
		r.stop()
		<-r.done
	})
	t.Run("through the drain", func(t *testing.T) {
		massDelete(1501, 3000)
		// The slave holds the whole transaction's entries before the
		// sidecar starts.
		synced(t, e.spool, 3000, "SELECT count(*) FROM pgoutpost.delete_queue") // units and markers
		start()
		check(t, 3000, 2000)
	})
}
