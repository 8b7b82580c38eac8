package queue

import (
	"context"
	"fmt"
	"testing"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// A master transaction of more than LargeTxn entries comes out of Pending as
// a large Txn, its entries left in the tables; Apply deletes its delete
// entries with their cascade and outbox, publishes its denormalize entries in
// queue order, a page at a time, and dequeues everything. The outbox rows
// carry a negative xid: they never pass for the master transaction's.
func TestLargeTransactionFromTheTables(t *testing.T) {
	ctx := context.Background()
	s := newSlave(t)
	srv := pgtest.NATS(t)
	snk := connectSink(t, srv)
	pgtest.Exec(t, s.db.DSN, `
INSERT INTO catalog_category (id, name) VALUES (1, 'c');
INSERT INTO catalog_unit (id, name, category_id) SELECT g, 'u', 1 FROM generate_series(1, 40) g;
INSERT INTO catalog_marker (id, name, unit_id) SELECT g, 'm', g FROM generate_series(1, 40) g;
INSERT INTO userapp_report (id, title, unit_id) SELECT g, 'r', g FROM generate_series(1, 40) g;
INSERT INTO catalog_outcome (id, name) SELECT g, 'o' || g FROM generate_series(1, 30) g;`)
	p := s.publisher(snk, ProcessorOptions{BatchSize: 7, LargeTxn: 20})

	// Transaction 5: 30 unit deletes, 10 outcome deletes and 25 outcome
	// updates; transaction 6, small: one unit. Outcome 26–30 are deleted
	// in 5 and updated too (their rows are gone when published).
	var updates []Entry
	for i := 1; i <= 30; i++ {
		del(t, s.pool, 5, "catalog_unit", i)
	}
	for i := 21; i <= 30; i++ {
		del(t, s.pool, 5, "catalog_outcome", i)
	}
	for i := 6; i <= 30; i++ {
		updates = append(updates, enqueue(t, s.pool, registry.DenormalizeQueue, 5, "public.catalog_outcome", fmt.Sprintf(`{"id": %d}`, i), OpUpdate))
	}
	small := del(t, s.pool, 6, "catalog_unit", 40)

	txns, err := p.Pending(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(txns) != 2 || !txns[0].Large || txns[0].Xid != 5 || txns[0].Count != 65 || len(txns[0].Entries) != 0 ||
		txns[1].Large || len(txns[1].Entries) != 1 || txns[1].Entries[0].ID != small.ID {
		t.Fatalf("pending: %+v, want the large transaction 5 (65 entries, none read) and the small 6", txns)
	}
	apply(t, p, txns...)

	for q, want := range map[string]int64{
		"SELECT count(*) FROM catalog_unit":                                    9, // 31–39
		"SELECT count(*) FROM catalog_marker":                                  9,
		"SELECT count(*) FROM userapp_report":                                  9,
		"SELECT count(*) FROM catalog_outcome":                                 20,
		"SELECT count(*) FROM pgoutpost.delete_queue":                          0,
		"SELECT count(*) FROM pgoutpost.dead_letter":                           0,
		"SELECT count(*) FROM pgoutpost.denormalize_queue WHERE op = 'delete'": 10, // the outbox, not yet streamed back
		"SELECT count(*) FROM pgoutpost.denormalize_queue WHERE xid >= 0":      0,
	} {
		if got := count(t, s.pool, q); got != want {
			t.Errorf("%s = %d, want %d", q, got, want)
		}
	}
	msgs := published(t, snk)
	if len(msgs) != len(updates) {
		t.Fatalf("%d events published, want %d", len(msgs), len(updates))
	}
	for i, m := range msgs {
		ev := decode(t, m)
		if ev.QueueID != updates[i].ID || ev.Op != event.OpUpdate {
			t.Errorf("event %d: %s %s, want the update %s (queue order)", i, ev.Op, ev.QueueID, updates[i].ID)
		}
		if deleted := i >= 15; deleted != (len(ev.Row) == 0) {
			t.Errorf("event %d of outcome %s: row %s", i, ev.PK, ev.Row)
		}
	}
	if n := s.obs.get("delete public.catalog_unit applied"); n != 31 {
		t.Errorf("applied unit entries: %d (%v)", n, s.obs.results)
	}
	if n := s.obs.get("denormalize public.catalog_outcome published"); n != 25 {
		t.Errorf("published entries: %d (%v)", n, s.obs.results)
	}
	// Handed over again (a crash before the acknowledgement): nothing is
	// done twice.
	apply(t, p, Txn{Large: true, Xid: 5, Count: 65})
	if n := len(published(t, snk)); n != len(updates) {
		t.Errorf("after a replay the stream holds %d events, want %d", n, len(updates))
	}
	if n := count(t, s.pool, "SELECT count(*) FROM pgoutpost.denormalize_queue"); n != 10 {
		t.Errorf("after a replay %d outbox rows, want 10", n)
	}
}
