package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

var flagJoinUnits = flag.Int("join.units", 100000, "BenchmarkJoinAgainstEmptyCopy: units (a synced delete model) on both sides")

// BenchmarkJoinAgainstEmptyCopy brings the same slave — its own copy of
// -join.units units, one in a hundred different, missing or extra — to the
// master's rows two ways, each on fresh databases: subscription create
// --join, and the seed's recipe (the delete script, subscription create and
// update --wait, resync-fks). It reports each one's time and the master's
// work for it (rows and blocks its backends read, from pg_stat_database),
// and how long the slave's units table was empty to a reader.
//
//	go test -run '^$' -bench BenchmarkJoinAgainstEmptyCopy -benchtime 1x ./cmd/pgoutpost
func BenchmarkJoinAgainstEmptyCopy(b *testing.B) {
	n := *flagJoinUnits
	masterSQL := fmt.Sprintf(`INSERT INTO catalog_category VALUES (1, 'c');
		INSERT INTO catalog_unit SELECT i, 'u' || i, 1 FROM generate_series(1, %d) AS i`, n)
	slaveSQL := fmt.Sprintf(`INSERT INTO catalog_category VALUES (1, 'c');
		INSERT INTO catalog_unit SELECT i, CASE WHEN i %% 100 = 1 THEN 'drifted' ELSE 'u' || i END, 1
			FROM generate_series(1, %d) AS i WHERE i %% 100 <> 2;
		INSERT INTO catalog_unit SELECT %d + i, 'extra', 1 FROM generate_series(1, %d / 100) AS i;
		INSERT INTO userapp_comment SELECT i, 'c', NULL, i FROM generate_series(1, %d, 10) AS i WHERE i %% 100 <> 2`, n, n, n, n)
	for _, way := range []struct {
		name string
		do   func(b *testing.B, slave *pgtest.DB)
	}{
		{"join", func(b *testing.B, _ *pgtest.DB) {
			mustRun(b, "subscription", "create", "--join", "--config", exampleConfig)
		}},
		{"empty_and_copy", func(b *testing.B, slave *pgtest.DB) {
			script := filepath.Join(b.TempDir(), "delete.sql")
			if err := os.WriteFile(script, []byte(mustRun(b, "print-delete-sql", "--config", exampleConfig)), 0o600); err != nil {
				b.Fatal(err)
			}
			if out, err := psqlFile(b, slave, script); err != nil {
				b.Fatalf("delete script: %v\n%s", err, out)
			}
			mustRun(b, "subscription", "create", "--config", exampleConfig)
			mustRun(b, "subscription", "update", "--wait", "--timeout", "10m", "--config", exampleConfig)
			runCLI(b, "resync-fks", "--config", exampleConfig) // exit 1 when rows are left: counted, not an error here
		}},
	} {
		b.Run(way.name, func(b *testing.B) {
			for range b.N {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
				master, slave, _, _ := djangoPair(b, ctx, masterSQL, slaveSQL)
				mpool, spool := pgtest.Pool(b, master.DSN), pgtest.Pool(b, slave.DSN)
				b.Cleanup(func() { runCLI(b, "subscription", "drop", "--config", exampleConfig) })
				before := masterWork(b, ctx, mpool)
				stop := watchEmpty(ctx, spool)
				start := time.Now()
				way.do(b, slave)
				elapsed := time.Since(start)
				empty := stop()
				after := masterWork(b, ctx, mpool)
				var units int64
				if err := spool.QueryRow(ctx, "SELECT count(*) FROM catalog_unit").Scan(&units); err != nil || units != int64(n) {
					b.Fatalf("the slave holds %d units, want %d: %v", units, n, err)
				}
				b.ReportMetric(elapsed.Seconds(), "s")
				b.ReportMetric(float64(after.tuples-before.tuples), "master-rows-read")
				b.ReportMetric(float64(after.blocks-before.blocks), "master-blocks")
				b.ReportMetric(empty.Seconds(), "s-units-empty")
				fmt.Printf("FIGURES %s: %d units: %.1fs, master read %d rows and %d blocks, the slave's units table empty for %.1fs\n",
					way.name, n, elapsed.Seconds(), after.tuples-before.tuples, after.blocks-before.blocks, empty.Seconds())
				runCLI(b, "subscription", "drop", "--config", exampleConfig)
				cancel()
			}
		})
	}
}

type work struct{ tuples, blocks int64 }

// masterWork reads what the master's backends have read so far.
func masterWork(b *testing.B, ctx context.Context, mpool *pgxpool.Pool) work {
	b.Helper()
	var w work
	if _, err := mpool.Exec(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
		b.Fatal(err)
	}
	if err := mpool.QueryRow(ctx, `SELECT tup_returned + tup_fetched, blks_read + blks_hit FROM pg_stat_database WHERE datname = current_database()`).Scan(&w.tuples, &w.blocks); err != nil {
		b.Fatal(err)
	}
	return w
}

// watchEmpty polls the slave's units table until stop is called, which
// returns how long it was seen empty.
func watchEmpty(ctx context.Context, spool *pgxpool.Pool) (stop func() time.Duration) {
	done := make(chan time.Duration)
	quit := make(chan struct{})
	go func() {
		var empty time.Duration
		last := time.Now()
		for {
			select {
			case <-quit:
				done <- empty
				return
			default:
			}
			var rows bool
			err := spool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM catalog_unit)").Scan(&rows)
			now := time.Now()
			if err == nil && !rows {
				empty += now.Sub(last)
			}
			last = now
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return func() time.Duration { close(quit); return <-done }
}
