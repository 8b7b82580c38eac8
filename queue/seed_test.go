package queue

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// seedTables are django-logical-replication's queue tables as its
// migrations create them, and the content types of the reference schema.
const seedTables = `
INSERT INTO django_content_type (id, app_label, model) VALUES (1, 'catalog', 'unit'), (2, 'catalog', 'outcome'), (3, 'userapp', 'report');
CREATE TABLE logical_replication_deletequeue (
  id uuid PRIMARY KEY, object_pk text NOT NULL,
  content_type_id integer NOT NULL REFERENCES django_content_type (id) DEFERRABLE INITIALLY DEFERRED,
  created_at timestamptz NOT NULL);
CREATE TABLE logical_replication_denormalizequeue (LIKE logical_replication_deletequeue INCLUDING ALL);
`

func TestSeedQueues(t *testing.T) {
	ctx := context.Background()
	s := newSlave(t)
	srv := pgtest.NATS(t)
	snk := connectSink(t, srv)
	pgtest.Exec(t, s.db.DSN, unitFixture+seedTables+`
INSERT INTO catalog_outcome (id, name) VALUES (1, 'a');
INSERT INTO logical_replication_deletequeue (id, object_pk, content_type_id, created_at) VALUES
  ('00000000-0000-4000-8000-000000000001', '3', 1, '2026-01-01 00:00:01+00'),  -- protected (marker 30, report 300)
  ('00000000-0000-4000-8000-000000000002', '1', 1, '2026-01-01 00:00:02+00'),
  ('00000000-0000-4000-8000-000000000003', '100', 3, '2026-01-01 00:00:03+00'), -- a user table
  ('00000000-0000-4000-8000-000000000004', 'x', 1, '2026-01-01 00:00:04+00');   -- a bad key
INSERT INTO logical_replication_denormalizequeue (id, object_pk, content_type_id, created_at) VALUES
  ('00000000-0000-4000-8000-000000000005', '1', 2, '2026-01-01 00:00:05+00');`)
	// Oldest first, across both tables, is what the package's cron did not do.
	p := s.publisher(snk, ProcessorOptions{SeedQueues: true})
	txns, err := p.Pending(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tx := range txns {
		if len(tx.Entries) != 1 {
			t.Fatalf("a seed Txn with %d entries", len(tx.Entries))
		}
		ids = append(ids, tx.Entries[0].ID[len(tx.Entries[0].ID)-1:])
	}
	if got := strings.Join(ids, ","); got != "1,2,3,4,5" {
		t.Fatalf("pending seed entries %s, want 1,2,3,4,5", got)
	}
	apply(t, p, txns...)

	if n := count(t, s.pool, "SELECT count(*) FROM catalog_unit WHERE id = 1"); n != 0 {
		t.Error("unit 1 not deleted")
	}
	if n := count(t, s.pool, "SELECT count(*) FROM logical_replication_deletequeue") + count(t, s.pool, "SELECT count(*) FROM logical_replication_denormalizequeue"); n != 0 {
		t.Errorf("%d seed rows left", n)
	}
	dl := deadLetters(t, s.pool)
	for id, want := range map[string]string{
		"00000000-0000-4000-8000-000000000001": "protected",
		"00000000-0000-4000-8000-000000000003": "not a delete model",
		"00000000-0000-4000-8000-000000000004": "malformed key",
	} {
		if !strings.Contains(dl[id], want) {
			t.Errorf("dead letter %s: %q, want %q", id, dl[id], want)
		}
	}
	if len(dl) != 3 {
		t.Errorf("dead letters: %v", dl)
	}
	msgs := published(t, snk)
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	ev := decode(t, msgs[0])
	if ev.Op != event.OpUpsert || ev.Table != "public.catalog_outcome" || string(ev.PK) != `{"id":1}` || string(ev.Row) != `{"id": 1, "name": "a"}` ||
		!ev.CommittedAt.Equal(time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)) {
		t.Errorf("seed event %+v", ev)
	}
	if id := msgs[0].Header.Get(event.HeaderMsgID); id != testSystemID+":"+testEnv+":public.logical_replication_denormalizequeue:00000000-0000-4000-8000-000000000005" {
		t.Errorf("Nats-Msg-Id %s", id)
	}

	// The user fixes the protected unit's data; retry puts the seed row back.
	pgtest.Exec(t, s.db.DSN, "UPDATE userapp_report SET marker_id = NULL")
	if n, err := Retry(ctx, s.pool, []string{"00000000-0000-4000-8000-000000000001"}, false); err != nil || n != 1 {
		t.Fatalf("Retry: %d, %v", n, err)
	}
	txns, err = p.Pending(ctx, 100)
	if err != nil || len(txns) != 1 {
		t.Fatalf("pending after retry: %v, %v", txns, err)
	}
	apply(t, p, txns...)
	if n := count(t, s.pool, "SELECT count(*) FROM catalog_unit WHERE id = 3"); n != 0 {
		t.Error("unit 3 not deleted after retry")
	}
}

func TestEntryFromRow(t *testing.T) {
	e, err := EntryFromRow(registry.DeleteQueue.Table(), map[string]string{"id": "01a20e5d-5d81-7e9b-9c04-2dbe0479d897", "table_name": "public.catalog_unit",
		"pk": `{"id": 1}`, "op": "delete", "xid": "745", "created_at": "2026-11-24 16:05:01.123456+00"})
	if err != nil || e.Queue != registry.DeleteQueue || e.Xid != 745 || string(e.PK) != `{"id": 1}` ||
		!e.CreatedAt.Equal(time.Date(2026, 11, 24, 16, 5, 1, 123456000, time.UTC)) {
		t.Errorf("EntryFromRow: %+v, %v", e, err)
	}
	e, err = EntryFromRow(registry.SeedDenormalizeQueue.Table(), map[string]string{"id": "00000000-0000-4000-8000-000000000005", "object_pk": "7",
		"content_type_id": "2", "created_at": "2026-01-01 02:00:05+02"})
	if err != nil || e.Queue != registry.SeedDenormalizeQueue || e.Op != OpUpsert || e.ContentTypeID != 2 || e.ObjectPK != "7" ||
		!e.CreatedAt.Equal(time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)) {
		t.Errorf("EntryFromRow (seed): %+v, %v", e, err)
	}
	if _, err := EntryFromRow(registry.TableName{Schema: "public", Name: "x"}, nil); err == nil {
		t.Error("EntryFromRow of a non-queue table: no error")
	}
}

func TestInstallSeedQueuesPublication(t *testing.T) {
	ctx := context.Background()
	s := newSlave(t)
	if _, err := Install(ctx, s.pool, InstallOptions{Role: registry.RoleSlave, SeedQueues: true}, false); err == nil || !strings.Contains(err.Error(), "logical_replication_deletequeue") {
		t.Errorf("install with seed queues but without their tables: %v", err)
	}
	pgtest.Exec(t, s.db.DSN, seedTables)
	if _, err := Install(ctx, s.pool, InstallOptions{Role: registry.RoleSlave, SeedQueues: true}, false); err != nil {
		t.Fatal(err)
	}
	var tables string
	if err := s.pool.QueryRow(ctx, "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY 1) FROM pg_publication_tables WHERE pubname = $1",
		DefaultLocalPublication).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if want := "pgoutpost.delete_queue,pgoutpost.denormalize_queue,public.logical_replication_deletequeue,public.logical_replication_denormalizequeue"; tables != want {
		t.Errorf("publication tables %s, want %s", tables, want)
	}
	if p, err := Install(ctx, s.pool, InstallOptions{Role: registry.RoleSlave, SeedQueues: true}, false); err != nil || len(p) != 0 {
		t.Errorf("second install: %v, %v", p, err)
	}
}
