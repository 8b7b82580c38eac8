package queue

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/internal/netdelay"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/internal/rowwise"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/sink"
)

var (
	benchEntries = flag.Int("queue.entries", 2000, "delete entries per run of BenchmarkApplyDeleteEntries")
	benchBatch   = flag.Int("queue.batch", DefaultBatchSize, "ProcessorOptions.BatchSize in BenchmarkApplyDeleteEntries")
	benchTxnSize = flag.Int("queue.txn-size", 1, "delete entries per master transaction in BenchmarkApplyDeleteEntries")
	benchLatency = flag.Duration("queue.latency", 0, "delay added to each message to the database in BenchmarkApplyDeleteEntries, as a network would")
	benchFK      = flag.String("queue.fk-checks", "database", "BenchmarkApplyDeleteEntries: who checks the foreign keys, database or batch (cascade.BatchReferenceChecks)")
	benchDjango  = flag.Bool("queue.django", false, "BenchmarkApplyDeleteEntries: also time the seed's cron with Django's own .delete() (testdata/seed_cron.py; a python3 with Django and psycopg2 in PGOUTPOST_PYTHON, as scripts/ensure-django --postgres prints)")
)

// BenchmarkApplyDeleteEntries applies delete-queue entries of the reference
// schema's catalog_unit, each cascading to 10 user rows over two levels (2
// reports with 4 lines each), first with the Processor, fed in pages of
// -queue.batch entries by its Pending as the sidecar's drain at start does
// with a backlog, then row at a time as the seed package's cron did (per
// entry one transaction: dequeue, select the referencing rows level by
// level, delete them one by one) and, with -queue.django, by the seed's cron
// itself: Django's own .delete() per entry (testdata/seed_cron.py). Each of
// -benchtime Nx rounds runs them one after the other on the same entries, so
// that a change in the machine's speed hits all of them; it reports the
// median of the rounds' rates and of their ratios, and the Processor's peak
// heap. With -queue.latency every message to the database is delayed, as
// over a network (internal/netdelay).
//
//	go test ./queue -run '^$' -bench ApplyDeleteEntries -benchtime 1x -queue.entries 100000 [-queue.fk-checks batch]
//	PGOUTPOST_PYTHON=$(scripts/ensure-django --postgres) go test ./queue -run '^$' -bench ApplyDeleteEntries -benchtime 5x -queue.entries 5000 -queue.batch 2000 -queue.django
func BenchmarkApplyDeleteEntries(b *testing.B) {
	n, batch, per := *benchEntries, *benchBatch, *benchTxnSize
	ctx := context.Background()
	db, pool, plain := benchSlave(b, *benchLatency)
	reg := djangoRegistry(b, pool)
	var engineOpts []cascade.Option
	if batchChecks(b) {
		engineOpts = append(engineOpts, cascade.BatchReferenceChecks())
	}
	p := NewProcessor(pool, reg, NewEngine(reg, engineOpts...), nil, ProcessorOptions{BatchSize: batch, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})

	var procRates, rowRates, djangoRates, rowRatios, djangoRatios []float64
	var peakMB, growthMB float64
	for b.Loop() {
		b.StopTimer()
		loadUnitEntries(b, pool, n, per)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base, peak := ms.HeapAlloc, ms.HeapAlloc
		b.StartTimer()
		start := time.Now()
		applied := 0
		for page := range pages(b, p, batch) {
			done, err := p.Apply(ctx, page)
			if err != nil || done != len(page) {
				b.Fatalf("Apply: %d of %d, %v", done, len(page), err)
			}
			for _, tx := range page {
				applied += len(tx.Entries)
			}
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
		procRate := float64(applied) / time.Since(start).Seconds()
		b.StopTimer()
		checkAllDeleted(b, pool, n)
		peakMB, growthMB = float64(peak)/(1<<20), float64(peak-base)/(1<<20)

		pgtest.Exec(b, db.DSN, "VACUUM ANALYZE")
		loadUnitEntries(b, pool, n, per)
		b.StartTimer()
		start = time.Now()
		applied = 0
		for page := range pages(b, p, batch) {
			for _, tx := range page {
				for _, e := range tx.Entries {
					if err := applyRowAtATime(ctx, plain, reg, e); err != nil {
						b.Fatalf("row at a time, entry %s: %v", e.PK, err)
					}
					applied++
				}
			}
		}
		rowRate := float64(applied) / time.Since(start).Seconds()
		b.StopTimer()
		checkAllDeleted(b, pool, n)
		pgtest.Exec(b, db.DSN, "VACUUM ANALYZE")
		procRates, rowRates, rowRatios = append(procRates, procRate), append(rowRates, rowRate), append(rowRatios, procRate/rowRate)
		round := fmt.Sprintf("round %d: processor %.0f entries/s, row at a time %.0f (%.1fx)", len(procRates), procRate, rowRate, procRate/rowRate)
		if *benchDjango {
			loadUnitEntries(b, pool, n, per)
			djangoRate := seedCron(b, plain, n)
			checkAllDeleted(b, pool, n)
			pgtest.Exec(b, db.DSN, "VACUUM ANALYZE")
			djangoRates, djangoRatios = append(djangoRates, djangoRate), append(djangoRatios, procRate/djangoRate)
			round += fmt.Sprintf(", Django's .delete() %.0f (%.1fx)", djangoRate, procRate/djangoRate)
		}
		b.Log(round)
		b.StartTimer()
	}
	procRate, rowRate, rowRatio := median(procRates), median(rowRates), median(rowRatios)
	b.ReportMetric(procRate, "processor-entries/s")
	b.ReportMetric(rowRate, "rowwise-entries/s")
	b.ReportMetric(rowRatio, "ratio")
	b.ReportMetric(peakMB, "peak-heap-MB")
	b.ReportMetric(growthMB, "heap-growth-MB")
	django := ""
	if *benchDjango {
		djangoRate, djangoRatio := median(djangoRates), median(djangoRatios)
		b.ReportMetric(djangoRate, "django-entries/s")
		b.ReportMetric(djangoRatio, "ratio-to-django")
		django = fmt.Sprintf(", the seed's cron with Django's .delete() %.0f entries/s, ratio %.1fx (rounds %.1f–%.1fx)",
			djangoRate, djangoRatio, slices.Min(djangoRatios), slices.Max(djangoRatios))
	}
	b.Logf("%d entries (%d per master transaction), batch %d, added latency %v, fk checks %s, median of %d rounds: processor %.0f entries/s, row at a time %.0f entries/s, ratio %.1fx%s, peak heap %.1f MB (+%.1f MB)",
		n, per, batch, *benchLatency, *benchFK, len(procRates), procRate, rowRate, rowRatio, django, peakMB, growthMB)
}

// median returns the median of xs (the mean of the middle two for an even
// count).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// seedCron runs testdata/seed_cron.py, the seed's cron with Django's own
// .delete(), over the n entries waiting in the database of pool (connecting
// as pool does) and returns its rate.
func seedCron(b *testing.B, pool *pgxpool.Pool, n int) float64 {
	b.Helper()
	python := os.Getenv("PGOUTPOST_PYTHON")
	if python == "" {
		b.Fatal("-queue.django needs a python3 with Django and psycopg2 in PGOUTPOST_PYTHON: PGOUTPOST_PYTHON=$(scripts/ensure-django --postgres)")
	}
	cfg := pool.Config().ConnConfig
	out, err := exec.Command(python, "testdata/seed_cron.py", cfg.Host, fmt.Sprint(cfg.Port), cfg.User, cfg.Database).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		b.Fatalf("testdata/seed_cron.py: %v\n%s", err, stderr)
	}
	var applied int
	var seconds float64
	if _, err := fmt.Sscan(string(out), &applied, &seconds); err != nil || applied != n {
		b.Fatalf("testdata/seed_cron.py printed %q, want %d entries and the seconds they took", out, n)
	}
	return float64(applied) / seconds
}

// loadUnitEntries creates units 1..n (rowwise.LoadUnits) and a delete-queue
// entry per unit, per entries to a master transaction.
// benchSlave returns a new database of the slave cluster with the reference
// schema and the slave's queues, a pool to it configured as the sidecar's
// (ConfigurePool) and a plain one, as another program would open (the
// baselines'); messages to both are delayed by latency (none when 0).
func benchSlave(b *testing.B, latency time.Duration) (db *pgtest.DB, sidecar, plain *pgxpool.Pool) {
	b.Helper()
	db = pgtest.NewDB(b, pgtest.Slave(b))
	pgtest.LoadDjangoSchema(b, db)
	dsn := db.DSN
	if latency > 0 {
		dsn = netdelay.DSN(b, dsn, latency)
	}
	// As the sidecar's pool is: ConfigurePool's custom plans.
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		b.Fatal(err)
	}
	ConfigurePool(cfg)
	sidecar, err = pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sidecar.Close)
	if _, err := Install(context.Background(), sidecar, InstallOptions{Role: registry.RoleSlave}, false); err != nil {
		b.Fatal(err)
	}
	return db, sidecar, pgtest.Pool(b, dsn)
}

// batchChecks reads -queue.fk-checks: true for batch, false for database.
func batchChecks(b *testing.B) bool {
	switch *benchFK {
	case "database":
		return false
	case "batch":
		return true
	}
	b.Fatalf("-queue.fk-checks %q: want database or batch", *benchFK)
	return false
}

func loadUnitEntries(tb testing.TB, pool *pgxpool.Pool, n, per int) {
	tb.Helper()
	ctx := context.Background()
	if err := rowwise.LoadUnits(ctx, pool, n); err != nil {
		tb.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO pgoutpost.delete_queue (table_name, pk, xid)
SELECT 'public.catalog_unit', jsonb_build_object('id', u), 1000 + (u - 1) / $2::int FROM generate_series(1, $1::int) AS u ORDER BY u;
`, n, per); err != nil {
		tb.Fatalf("queue the units: %v", err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE pgoutpost.delete_queue"); err != nil {
		tb.Fatal(err)
	}
}

func checkAllDeleted(tb testing.TB, pool *pgxpool.Pool, n int) {
	tb.Helper()
	var units, lines, queued int64
	if err := pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM catalog_unit), (SELECT count(*) FROM userapp_reportline),
  (SELECT count(*) FROM pgoutpost.delete_queue)`).Scan(&units, &lines, &queued); err != nil {
		tb.Fatal(err)
	}
	if units+lines+queued != 0 {
		tb.Fatalf("after %d entries: %d units, %d lines, %d queue entries left", n, units, lines, queued)
	}
}

// pages reads the waiting entries through p.Pending, about size entries at a
// time grouped into master transactions, as the sidecar's drain at start
// does with a backlog; the caller applies each page before the next is read.
// Only one page is in memory at a time.
func pages(tb testing.TB, p *Processor, size int) func(func([]Txn) bool) {
	return func(yield func([]Txn) bool) {
		for {
			txns, err := p.Pending(context.Background(), size)
			if err != nil {
				tb.Fatal(err)
			}
			if len(txns) == 0 || !yield(txns) {
				return
			}
		}
	}
}

// applyRowAtATime is the baseline, what a cron calling Django's .delete() on
// one queue row at a time does, in one transaction per entry: dequeue the
// entry, then delete its row as rowwise.Delete does.
func applyRowAtATime(ctx context.Context, pool *pgxpool.Pool, reg *registry.Registry, e Entry) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	var pk string
	err = tx.QueryRow(ctx, "DELETE FROM pgoutpost.delete_queue WHERE id = $1::text::uuid RETURNING pk->>'id'", e.ID).Scan(&pk)
	if err == pgx.ErrNoRows {
		return nil
	}
	if err != nil {
		return err
	}
	var id int64
	if _, err := fmt.Sscan(pk, &id); err != nil {
		return err
	}
	if _, err := rowwise.Delete(ctx, tx, reg, registry.TableName{Schema: "public", Name: "catalog_unit"}, id); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// BenchmarkDeleteFloor is the floor under BenchmarkApplyDeleteEntries: the
// same entries and rows, deleted by the fewest statements that know the
// schema in advance, without a look at any other relation. Per -queue.batch
// entries, in one transaction: the queue rows (dequeued in id order), then
// the report lines, the reports and the units, each one DELETE of the whole
// batch. With -queue.fk-checks database PostgreSQL's own foreign-key
// triggers check every deleted row, as they do for the Processor by default;
// with batch none runs (session_replication_role = replica), which is less
// than the Processor's batch checks do. No drain that deletes these rows
// with SQL on this server can be faster, so the rate bounds what any drain
// with the same checks can reach here.
//
//	go test ./queue -run '^$' -bench DeleteFloor -benchtime 1x -queue.entries 5000 [-queue.fk-checks batch]
func BenchmarkDeleteFloor(b *testing.B) {
	n, batch := *benchEntries, *benchBatch
	ctx := context.Background()
	// Not the sidecar's pool: the floor may use whatever plans the server
	// picks, so that no drain can beat it.
	db, _, pool := benchSlave(b, 0)
	replica := batchChecks(b)
	var rates []float64
	for b.Loop() {
		b.StopTimer()
		loadUnitEntries(b, pool, n, 1)
		b.StartTimer()
		start := time.Now()
		for done := 0; done < n; {
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if replica {
					if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
						return err
					}
				}
				rows, _ := tx.Query(ctx, `DELETE FROM pgoutpost.delete_queue WHERE id IN (SELECT id FROM pgoutpost.delete_queue ORDER BY id LIMIT $1)
RETURNING (pk->>'id')::bigint`, batch)
				units, err := pgx.CollectRows(rows, pgx.RowTo[int64])
				if err != nil {
					return fmt.Errorf("dequeue: %w", err)
				}
				if len(units) == 0 {
					return fmt.Errorf("the queue is empty after %d of %d entries", done, n)
				}
				done += len(units)
				for _, sql := range []string{
					"DELETE FROM userapp_reportline l USING userapp_report r WHERE l.report_id = r.id AND r.unit_id = ANY($1::bigint[])",
					"DELETE FROM userapp_report WHERE unit_id = ANY($1::bigint[])",
					"DELETE FROM catalog_unit WHERE id = ANY($1::bigint[])",
				} {
					if _, err := tx.Exec(ctx, sql, units); err != nil {
						return fmt.Errorf("%s: %w", sql, err)
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		rates = append(rates, float64(n)/time.Since(start).Seconds())
		b.StopTimer()
		checkAllDeleted(b, pool, n)
		pgtest.Exec(b, db.DSN, "VACUUM ANALYZE")
		b.StartTimer()
	}
	rate := median(rates)
	b.ReportMetric(rate, "floor-entries/s")
	b.Logf("%d entries, %d a transaction, fk checks %s, median of %d rounds: the rows' set deletes %.0f entries/s (rounds %.0f–%.0f)",
		n, batch, *benchFK, len(rates), rate, slices.Min(rates), slices.Max(rates))
}

// BenchmarkApplyDenormalizeEntries publishes denormalize entries of
// catalog_outcome (one per master transaction) through the Processor to an
// in-process NATS server and reports entries per second, end to end: read
// the rows, publish, wait for the acks, dequeue.
//
//	go test ./queue -run '^$' -bench ApplyDenormalizeEntries -benchtime 1x -queue.entries 100000
func BenchmarkApplyDenormalizeEntries(b *testing.B) {
	n, batch := *benchEntries, *benchBatch
	ctx := context.Background()
	_, pool, _ := benchSlave(b, 0)
	reg := djangoRegistry(b, pool)
	srv := pgtest.NATS(b)
	snk, err := sink.Connect(ctx, sink.Options{URL: srv.URL(), Env: "bench", CreateStream: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer snk.Close()
	p := NewProcessor(pool, reg, nil, snk, ProcessorOptions{Env: "bench", SystemID: "1", BatchSize: batch, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var rate float64
	for range b.N {
		b.StopTimer()
		for _, sql := range []string{
			"TRUNCATE catalog_outcome CASCADE",
			"INSERT INTO catalog_outcome (id, name) SELECT o, 'outcome ' || o FROM generate_series(1, $1::int) AS o",
			`INSERT INTO pgoutpost.denormalize_queue (table_name, pk, op, xid) SELECT 'public.catalog_outcome', jsonb_build_object('id', o), 'update', o
  FROM generate_series(1, $1::int) AS o ORDER BY o`,
		} {
			args := []any{n}
			if !strings.Contains(sql, "$1") {
				args = nil
			}
			if _, err := pool.Exec(ctx, sql, args...); err != nil {
				b.Fatalf("%s: %v", sql, err)
			}
		}
		b.StartTimer()
		start := time.Now()
		for {
			txns, err := p.Pending(ctx, batch)
			if err != nil {
				b.Fatal(err)
			}
			if len(txns) == 0 {
				break
			}
			if done, err := p.Apply(ctx, txns); err != nil || done != len(txns) {
				b.Fatalf("Apply: %d of %d, %v", done, len(txns), err)
			}
		}
		rate = float64(n) / time.Since(start).Seconds()
	}
	b.ReportMetric(rate, "entries/s")
	b.Logf("%d denormalize entries, batch %d: %.0f entries/s", n, batch, rate)
}
