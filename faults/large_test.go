//go:build faults

package faults

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

var (
	flagLargeUnits = flag.Int("faults.large.units", 500000, "BenchmarkLargeTransaction: units deleted by the master transaction (each with a marker: two delete entries)")
	flagLargeTxn   = flag.Int("faults.large.txn", 0, "BenchmarkLargeTransaction: the sidecar's queue.large_transaction (its default when 0; a value above twice -faults.large.units holds the whole transaction in memory)")
)

// BenchmarkLargeTransaction measures the sidecar's peak memory (its
// process's maximum resident set) and time for one master transaction that
// deletes -faults.large.units units and their markers (a delete model too:
// two queue entries a unit), one unit in ten with a report on the slave (a
// user row, cascading). The sidecar runs as its own process; the figures
// are whole-process figures:
//
//	make bench-large                     # 500,000 units: 1,000,000 entries
//	make bench-large LARGE_UNITS=5000000 # 10,000,000 entries
//
// It fails unless the slave ends with no unit, marker or report left,
// each unit deleted exactly once (a delete log on the slave), and the queue
// empty without a dead letter.
func BenchmarkLargeTransaction(b *testing.B) {
	for range b.N {
		benchLarge(b, *flagLargeUnits, *flagLargeTxn)
	}
}

func benchLarge(b *testing.B, n, largeTxn int) {
	b.StopTimer()
	ctx := context.Background()
	e := newEnv(b, "large")
	e.slaveCfg = e.writeConfig(b, configValues{
		Environment: e.name, Role: "slave", DSN: e.slave.DSN,
		Master: e.master.ConnInfo(), NATS: e.nats.URL(), Listen: e.listen, LargeTxn: largeTxn,
	})
	for _, args := range [][]string{
		{"validate", "--config", e.masterConfig},
		{"publication", "create", "--config", e.masterConfig},
		{"queue", "install", "--config", e.masterConfig},
		{"publication", "update", "--config", e.masterConfig},
	} {
		e.cli(b, args...)
	}
	start := time.Now()
	conn, err := pgx.Connect(ctx, e.master.DSN)
	if err != nil {
		b.Fatal(err)
	}
	for _, q := range []string{
		"SET pgoutpost.skip_queue = on",
		"INSERT INTO shop_category VALUES (1, 'c')",
		"INSERT INTO shop_unit SELECT g, 'u', 1 FROM generate_series(1, $1::int) g",
		"INSERT INTO shop_marker SELECT g, g, 'm' FROM generate_series(1, $1::int) g",
	} {
		var args []any
		if strings.Contains(q, "$1") {
			args = []any{n}
		}
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			b.Fatalf("seed the master: %s: %v", q, err)
		}
	}
	conn.Close(ctx)
	e.setupSlave(b)
	sconn, err := pgx.Connect(ctx, e.slave.DSN)
	if err != nil {
		b.Fatal(err)
	}
	for _, q := range []string{"INSERT INTO app_report (id, unit_id, title) SELECT g, g, 'r' FROM generate_series(1, $1::int, 10) g", "ANALYZE"} {
		var args []any
		if strings.Contains(q, "$1") {
			args = []any{n}
		}
		if _, err := sconn.Exec(ctx, q, args...); err != nil {
			b.Fatalf("seed the slave: %s: %v", q, err)
		}
	}
	sconn.Close(ctx)
	b.Logf("set up %d units in %s", n, time.Since(start).Round(time.Second))

	sc := e.startSidecar(b)
	if why := ready(ctx, e.listen, time.Minute); why != "" {
		b.Fatalf("the sidecar is not ready within a minute: %s", why)
	}
	// One master transaction: the markers (a delete model too) and the
	// units, as Django's CASCADE deletes them.
	start = time.Now()
	mconn, err := pgx.Connect(ctx, e.master.DSN)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := mconn.Exec(ctx, "WITH m AS (DELETE FROM shop_marker) DELETE FROM shop_unit"); err != nil {
		b.Fatalf("the master's delete: %v", err)
	}
	mconn.Close(ctx)
	b.Logf("master deleted %d units and %d markers in one transaction in %s", n, n, time.Since(start).Round(time.Second))

	b.StartTimer()
	slave := pgtest.Pool(b, e.slave.DSN)
	deadline := time.Now().Add(2 * time.Hour)
	for {
		// Cheap probes (index scans that stop at the first row): a
		// count of millions of rows every second would slow the slave.
		var units, queued bool
		err := slave.QueryRow(ctx, `SELECT EXISTS (SELECT FROM shop_unit ORDER BY id LIMIT 1),
  EXISTS (SELECT FROM pgoutpost.delete_queue ORDER BY id LIMIT 1) OR EXISTS (SELECT FROM pgoutpost.denormalize_queue ORDER BY id LIMIT 1)`).Scan(&units, &queued)
		if err != nil {
			b.Fatal(err)
		}
		if !units && !queued {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("units left %v, queue entries left %v on the slave after two hours", units, queued)
		}
		time.Sleep(2 * time.Second)
	}
	b.StopTimer()
	elapsed := time.Since(start)

	peakBytes, ru := sc.stopMeasured(b)
	var markers, reports, deletes, twice, dead int64
	err = slave.QueryRow(ctx, `SELECT (SELECT count(*) FROM shop_marker), (SELECT count(*) FROM app_report),
  (SELECT count(*) FROM faults_deleted WHERE tbl = 'shop_unit'),
  (SELECT count(*) FROM (SELECT id FROM faults_deleted WHERE tbl = 'shop_unit' GROUP BY id HAVING count(*) > 1) d),
  (SELECT count(*) FROM pgoutpost.dead_letter)`).Scan(&markers, &reports, &deletes, &twice, &dead)
	if err != nil {
		b.Fatal(err)
	}
	if markers != 0 || reports != 0 || deletes != int64(n) || twice != 0 || dead != 0 {
		b.Fatalf("on the slave: %d markers and %d reports left, %d unit deletes for %d units, %d units deleted twice, %d dead letters",
			markers, reports, deletes, n, twice, dead)
	}
	peak := float64(peakBytes) / (1 << 20)
	b.ReportMetric(float64(2*n), "entries")
	b.ReportMetric(peak, "peak-RSS-MiB")
	b.ReportMetric(float64(2*n)/elapsed.Seconds(), "entries/s")
	fmt.Printf("FIGURES large transaction: %d entries (%d units, %d markers), large_transaction=%d: slave caught up in %s (%.0f entries/s from the master's commit), sidecar peak RSS %.0f MiB, CPU user %.1fs system %.1fs\n",
		2*n, n, n, largeTxn, elapsed.Round(time.Second), float64(2*n)/elapsed.Seconds(), peak,
		time.Duration(ru.Utime.Nano()).Seconds(), time.Duration(ru.Stime.Nano()).Seconds())
}
