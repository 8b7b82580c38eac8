package queue

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// TestSnapshot publishes a denormalize model's rows as snapshot events: in key
// order, from one view, with ids that stay the same for an unchanged row and
// change with the row, and the 1970 committed_at of a slave that does not
// track commit timestamps (these clusters do not).
func TestSnapshot(t *testing.T) {
	s := newSlave(t)
	srv := pgtest.NATS(t)
	snk := connectSink(t, srv)
	ctx := context.Background()
	pgtest.Exec(t, s.db.DSN, "INSERT INTO catalog_outcome (id, name) SELECT i, 'o' || i FROM generate_series(1, 25) AS i")
	tbl := s.reg.Table(registry.TableName{Schema: "public", Name: "catalog_outcome"})
	var progress []SnapshotProgress
	opts := SnapshotOptions{Env: testEnv, SystemID: testSystemID, BatchSize: 10,
		Progress: func(p SnapshotProgress) { progress = append(progress, p) }}
	n, err := Snapshot(ctx, s.pool, snk, tbl, opts)
	if err != nil || n != 25 {
		t.Fatalf("Snapshot = %d, %v; want 25", n, err)
	}
	if len(progress) != 3 || progress[2].Published != 25 || progress[0].Total != 25 {
		t.Errorf("progress %+v, want three batches of a 25-row total", progress)
	}
	msgs := published(t, snk)
	if len(msgs) != 25 {
		t.Fatalf("stream holds %d events, want 25", len(msgs))
	}
	first := map[string]string{} // pk → queue_id
	for i, m := range msgs {
		e := decode(t, m)
		var pk struct{ ID int }
		if err := e.DecodePK(&pk); err != nil || pk.ID != i+1 {
			t.Fatalf("event %d: pk %s, want id %d in key order", i, e.PK, i+1)
		}
		var row struct{ Name string }
		if err := e.DecodeRow(&row); err != nil || row.Name != fmt.Sprintf("o%d", i+1) {
			t.Errorf("event %d: row %s", i, e.Row)
		}
		if e.Op != event.OpSnapshot || e.Env != testEnv || e.Table != "public.catalog_outcome" || !e.CommittedAt.Equal(time.Unix(0, 0)) {
			t.Errorf("event %d: %+v", i, e)
		}
		if id := m.Header.Get(event.HeaderMsgID); id != event.MsgID(testSystemID, testEnv, "snapshot:public.catalog_outcome", e.QueueID) {
			t.Errorf("event %d: Nats-Msg-Id %s", i, id)
		}
		first[string(e.PK)] = e.QueueID
	}

	// Again, after one row changed and with a condition: the unchanged
	// rows keep their ids (and JetStream drops them as duplicates), the
	// changed one gets a new one.
	pgtest.Exec(t, s.db.DSN, "UPDATE catalog_outcome SET name = 'changed' WHERE id = 3")
	opts.Progress = nil
	opts.Where = "id <= 5"
	if n, err := Snapshot(ctx, s.pool, snk, tbl, opts); err != nil || n != 5 {
		t.Fatalf("second Snapshot = %d, %v; want 5", n, err)
	}
	msgs = published(t, snk)
	if len(msgs) != 26 {
		t.Fatalf("stream holds %d events after the second run, want 26 (one changed row)", len(msgs))
	}
	last := decode(t, msgs[25])
	if string(last.PK) != `{"id": 3}` || last.QueueID == first[`{"id": 3}`] || !strings.Contains(string(last.Row), "changed") {
		t.Errorf("the changed row's new event: %+v", last)
	}
	if n, err := SnapshotCount(ctx, s.pool, tbl, "id > 20"); err != nil || n != 5 {
		t.Errorf("SnapshotCount = %d, %v; want 5", n, err)
	}

	// Only denormalize models have events; a bad condition is an error.
	if _, err := Snapshot(ctx, s.pool, snk, s.reg.Table(registry.TableName{Schema: "public", Name: "catalog_unit"}), opts); err == nil {
		t.Error("a snapshot of a delete model")
	}
	opts.Where = "no_such_column = 1"
	if _, err := Snapshot(ctx, s.pool, snk, tbl, opts); err == nil || !strings.Contains(err.Error(), "no_such_column") {
		t.Errorf("bad condition: %v", err)
	}
}
