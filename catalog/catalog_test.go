package catalog_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/catalog"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

// seedQueues are django-logical-replication's queue tables.
const seedQueues = `
CREATE TABLE logical_replication_deletequeue (id uuid PRIMARY KEY, object_pk text NOT NULL, content_type_id int NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE logical_replication_denormalizequeue (LIKE logical_replication_deletequeue INCLUDING ALL);
`

// slave is a fresh slave database with pgoutpost's queue tables.
func slave(t *testing.T) (*pgtest.DB, *pgxpool.Pool) {
	t.Helper()
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pool := pgtest.Pool(t, db.DSN)
	if _, err := queue.Install(context.Background(), pool, queue.InstallOptions{Role: registry.RoleSlave}, false); err != nil {
		t.Fatalf("install: %v", err)
	}
	return db, pool
}

// enqueue inserts n delete entries, as the subscription would.
func enqueue(t *testing.T, dsn string, n int) {
	t.Helper()
	pgtest.Exec(t, dsn, `INSERT INTO pgoutpost.delete_queue (table_name, pk, op, xid)
		SELECT 'public.unit', pg_catalog.jsonb_build_object('id', i), 'delete', 1 FROM generate_series(1, $1) i`, n)
}

// deadLetter adds a dead letter of queue q.
func deadLetter(t *testing.T, dsn string, q registry.Queue) {
	t.Helper()
	pgtest.Exec(t, dsn, `INSERT INTO pgoutpost.dead_letter (queue, entry_id, entry, error)
		VALUES ($1, gen_random_uuid(), '{}', 'test')`, q)
}

func TestReadSettings(t *testing.T) {
	_, pool := slave(t)
	s, err := catalog.ReadSettings(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	if !s.LogicalWAL() || s.MaxReplicationSlots < 1 || s.MaxWalSenders < 1 {
		t.Errorf("settings %+v, want wal_level logical and slots and senders (pgtest's clusters)", s)
	}
	if (catalog.Settings{WalLevel: "replica"}).LogicalWAL() {
		t.Error("wal_level replica counted as logical")
	}
}

func TestSlots(t *testing.T) {
	ctx := context.Background()
	db, pool := slave(t)
	other := pgtest.NewDB(t, db.Cluster)
	for _, s := range []struct{ dsn, name string }{{db.DSN, "catalog_here"}, {other.DSN, "catalog_there"}} {
		pgtest.Exec(t, s.dsn, "SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')", s.name)
		t.Cleanup(func() { pgtest.Exec(t, s.dsn, "SELECT pg_catalog.pg_drop_replication_slot($1)", s.name) })
	}

	t.Run("a slot of this database", func(t *testing.T) {
		s, ok, err := catalog.FindSlot(ctx, pool, "catalog_here")
		if err != nil || !ok {
			t.Fatalf("FindSlot: ok %v, err %v", ok, err)
		}
		if s.Plugin != "pgoutput" || s.Database != db.Name || s.Active || s.ActivePID != 0 || s.Holder != "" ||
			s.WalStatus == "" || s.LagBytes == nil || s.RetainedBytes == nil {
			t.Errorf("slot %+v, want an inactive pgoutput slot of %s with its lag", s, db.Name)
		}
	})
	t.Run("a slot of another database is not this one's", func(t *testing.T) {
		if s, ok, err := catalog.FindSlot(ctx, pool, "catalog_there"); err != nil || ok {
			t.Errorf("FindSlot: %+v, ok %v, err %v; want none", s, ok, err)
		}
	})
	t.Run("no slot", func(t *testing.T) {
		if s, ok, err := catalog.FindSlot(ctx, pool, "catalog_nowhere"); err != nil || ok {
			t.Errorf("FindSlot: %+v, ok %v, err %v; want none", s, ok, err)
		}
	})
	t.Run("every slot of the server", func(t *testing.T) {
		slots, err := catalog.Slots(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range slots {
			names = append(names, s.Name)
		}
		if !slices.Contains(names, "catalog_here") || !slices.Contains(names, "catalog_there") || !slices.IsSorted(names) {
			t.Errorf("slots %v, want both test slots, by name", names)
		}
	})
}

// Depths counts a queue up to its limit (the sidecar's probe must not read a
// backlog of millions of rows every few seconds) and finds the oldest entry.
func TestDepthsCountUpToTheLimit(t *testing.T) {
	ctx := context.Background()
	db, pool := slave(t)
	enqueue(t, db.DSN, 5)
	pgtest.Exec(t, db.DSN, "UPDATE pgoutpost.delete_queue SET created_at = now() - interval '1 hour' WHERE id = (SELECT id FROM pgoutpost.delete_queue ORDER BY id LIMIT 1)")
	for _, c := range []struct{ limit, want int }{{0, 5}, {3, 3}, {10, 5}} {
		ds, err := catalog.Depths(ctx, pool, false, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 2 || ds[0].Queue != registry.DeleteQueue || ds[0].Pending != int64(c.want) {
			t.Errorf("limit %d: depths %+v, want %d delete entries", c.limit, ds, c.want)
			continue
		}
		if ds[0].OldestAge < 59*time.Minute || ds[0].OldestAge > 2*time.Hour {
			t.Errorf("limit %d: oldest age %s, want the first entry's hour", c.limit, ds[0].OldestAge)
		}
	}
}

// The seed queues are counted when asked for and their tables exist, the
// oldest entry by created_at; dead letters are counted per queue, and in all.
func TestDepthsSeedQueues(t *testing.T) {
	ctx := context.Background()
	db, pool := slave(t)
	enqueue(t, db.DSN, 2)
	deadLetter(t, db.DSN, registry.DeleteQueue)

	ds, err := catalog.Depths(ctx, pool, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 {
		t.Errorf("without seed tables: depths %+v, want pgoutpost's two queues", ds)
	}

	pgtest.Exec(t, db.DSN, seedQueues)
	pgtest.Exec(t, db.DSN, `INSERT INTO logical_replication_deletequeue (id, object_pk, content_type_id, created_at) VALUES
		(gen_random_uuid(), '1', 1, now() - interval '2 hours'), (gen_random_uuid(), '2', 1, now())`)
	deadLetter(t, db.DSN, registry.SeedDeleteQueue)
	deadLetter(t, db.DSN, registry.SeedDeleteQueue)
	deadLetter(t, db.DSN, "a_queue_whose_table_is_gone")

	ds, err = catalog.Depths(ctx, pool, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 {
		t.Errorf("seed not asked for: depths %+v, want pgoutpost's two queues", ds)
	}
	ds, err = catalog.Depths(ctx, pool, true, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		queue         registry.Queue
		pending, dead int64
	}{{registry.DeleteQueue, 1, 1}, {registry.DenormalizeQueue, 0, 0}, {registry.SeedDeleteQueue, 1, 2}, {registry.SeedDenormalizeQueue, 0, 0}}
	if len(ds) != len(want) {
		t.Fatalf("depths %+v, want %d queues", ds, len(want))
	}
	for i, w := range want {
		if d := ds[i]; d.Queue != w.queue || d.Pending != w.pending || d.DeadLetters != w.dead {
			t.Errorf("depth %d: %+v, want queue %s, %d pending (limit 1), %d dead letters", i, d, w.queue, w.pending, w.dead)
		}
	}
	if age := ds[2].OldestAge; age < 119*time.Minute || age > 3*time.Hour {
		t.Errorf("seed delete queue: oldest age %s, want its first entry's two hours", age)
	}
	n, err := catalog.DeadLetters(ctx, pool)
	if err != nil || n != 4 {
		t.Errorf("DeadLetters = %d, %v; want 4, those of a queue without a table included", n, err)
	}
}
