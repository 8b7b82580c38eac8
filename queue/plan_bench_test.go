package queue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// BenchmarkLookupAsQueueGrows times one batch's lookup (stillQueued) and
// dequeue (in a transaction rolled back) on a delete queue that was small
// when the pool's prepared statements were first planned and has grown
// since, the way a bulk load grows it under a running sidecar. With
// ConfigurePool (custom plans) the time per batch stays the same at every
// size; with PostgreSQL's default, the generic plan chosen on the small
// queue (a sequential scan) stays and the time grows with the queue.
//
//	go test -run '^$' -bench BenchmarkLookupAsQueueGrows ./queue
func BenchmarkLookupAsQueueGrows(b *testing.B) {
	const batch = 500
	for _, mode := range []struct {
		name      string
		configure func(*pgxpool.Config)
	}{
		{"custom_plans", ConfigurePool},
		{"postgres_default", func(*pgxpool.Config) {}},
	} {
		for _, size := range []int{1000, 100000} {
			b.Run(fmt.Sprintf("%s/queue=%d", mode.name, size), func(b *testing.B) {
				ctx := context.Background()
				db := pgtest.NewDB(b, pgtest.Slave(b))
				setup := pgtest.Pool(b, db.DSN)
				if _, err := Install(ctx, setup, InstallOptions{Role: registry.RoleSlave}, false); err != nil {
					b.Fatal(err)
				}
				cfg, err := pgxpool.ParseConfig(db.DSN)
				if err != nil {
					b.Fatal(err)
				}
				cfg.MaxConns = 1 // one session: its statement cache is the one measured
				mode.configure(cfg)
				pool, err := pgxpool.NewWithConfig(ctx, cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer pool.Close()
				p := &Processor{db: pool}

				grow := func(n, keep int) []*item {
					b.Helper()
					rows, err := setup.Query(ctx, `INSERT INTO pgoutpost.delete_queue (table_name, pk, op, xid)
SELECT 'public.t', pg_catalog.jsonb_build_object('id', i), 'delete', i FROM generate_series(1, $1) AS i RETURNING id::text`, n)
					if err != nil {
						b.Fatal(err)
					}
					var items []*item
					for rows.Next() {
						var id string
						if err := rows.Scan(&id); err != nil {
							b.Fatal(err)
						}
						if len(items) < keep {
							items = append(items, &item{e: &Entry{Queue: registry.DeleteQueue, ID: id}})
						}
					}
					if rows.Close(); rows.Err() != nil {
						b.Fatal(rows.Err())
					}
					return items
				}
				round := func(items []*item) {
					present, err := p.stillQueued(ctx, items)
					if err != nil || len(present) != len(items) {
						b.Fatalf("lookup found %d of %d: %v", len(present), len(items), err)
					}
					tx, err := pool.Begin(ctx)
					if err != nil {
						b.Fatal(err)
					}
					gone, err := dequeue(ctx, tx, items)
					_ = tx.Rollback(ctx)
					if err != nil || len(gone) != len(items) {
						b.Fatalf("dequeue took %d of %d: %v", len(gone), len(items), err)
					}
				}
				// Plan on an all but empty queue, as a sidecar does when it
				// starts on an idle slave: past five runs PostgreSQL may
				// settle on a generic plan, which for a table of a few rows
				// is a sequential scan.
				few := grow(5, 5)
				pgtest.Exec(b, db.DSN, "ANALYZE pgoutpost.delete_queue")
				for range 10 {
					round(few)
				}
				// The bulk load, before autovacuum's ANALYZE (whose
				// invalidation would make PostgreSQL plan again); then a
				// full batch of its entries.
				items := grow(size, batch)
				b.ResetTimer()
				start := time.Now()
				for range b.N {
					round(items)
				}
				b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N)/1000, "ms/batch")
			})
		}
	}
}
