package sidecar_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/consumer"
	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/replication"
)

// latencyRows is the number of denormalize rows the paced updates cycle
// through.
const latencyRows = 1000

// BenchmarkCommitToConsumer measures the time from a master commit to the
// receipt of its event by a JetStream consumer, through the whole pipeline:
// master trigger, subscription to the slave, the sidecar's stream, the
// processor (row read, publish, ack, dequeue) and the consumer. Updates of a
// denormalize model are paced on the master at each rate for a few seconds,
// in transactions every 10 ms; every change is one event, whose committed_at
// is its master commit time. Run with -benchtime=1x:
//
//	go test ./sidecar -run '^$' -bench CommitToConsumer -benchtime=1x
func BenchmarkCommitToConsumer(b *testing.B) {
	for _, rate := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("%d_per_s", rate), func(b *testing.B) {
			for range b.N {
				latencyRun(b, rate, benchDuration(b))
			}
		})
	}
}

// benchDuration is how long the updates are paced: 10 s, or
// PGOUTPOST_BENCH_SECONDS.
func benchDuration(b *testing.B) time.Duration {
	if v := os.Getenv("PGOUTPOST_BENCH_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("PGOUTPOST_BENCH_SECONDS=%q: want a positive number", v)
		}
		return time.Duration(n) * time.Second
	}
	return 10 * time.Second
}

// latencies records receive time minus commit time per event.
type latencies struct {
	mu    sync.Mutex
	from  time.Time // events committed before are the setup's
	all   []time.Duration
	count int       // events handled, the setup's included
	last  time.Time // the latest commit time seen
	// lastAt is when the latest measured event was received.
	lastAt time.Time
}

func (l *latencies) handle(_ context.Context, ev event.Event) error {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count++
	if ev.CommittedAt.Before(l.from) {
		return nil
	}
	l.all = append(l.all, now.Sub(ev.CommittedAt))
	l.lastAt = now
	if ev.CommittedAt.After(l.last) {
		l.last = ev.CommittedAt
	}
	return nil
}

func (l *latencies) handled() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count
}

func (l *latencies) n() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

func latencyRun(b *testing.B, rate int, d time.Duration) {
	r := measureLatency(b, rate, d, nil)
	b.ReportMetric(r.p50, "p50_ms")
	b.ReportMetric(r.p99, "p99_ms")
	b.ReportMetric(r.max, "max_ms")
	b.ReportMetric(r.changesPerSec, "changes/s")
	b.ReportMetric(0, "ns/op")
}

// latencyResult is what one measureLatency run found: commit-to-consumer
// percentiles in milliseconds, the rate the master produced changes at and
// the rate events reached the consumer at (from the first measured commit
// to the last event's receipt).
type latencyResult struct {
	p50, p99, max               float64
	changesPerSec, eventsPerSec float64
}

// measureLatency paces rate changes a second for d through a new master,
// slave and sidecar (tune, when set, adjusts the environment before the
// sidecar starts) and measures each event's commit-to-consumer time.
func measureLatency(b *testing.B, rate int, d time.Duration, tune func(*e2e)) latencyResult {
	b.StopTimer()
	e := newE2E(b)
	if tune != nil {
		tune(e)
	}
	ctx := testCtx(b, 5*time.Minute)
	// The slave's apply worker commits asynchronously by default (the
	// subscription's synchronous_commit = off), and a walsender decodes only
	// flushed WAL: each applied transaction would wait for the WAL writer,
	// up to wal_writer_delay (200 ms), before the sidecar sees it.
	names, err := replication.NewNames("pgoutpost", "", e.slave.Name)
	if err != nil {
		b.Fatal(err)
	}
	for _, sub := range names.SubscriptionNames() {
		exec(b, e.spool, "ALTER SUBSCRIPTION "+pgx.Identifier{sub}.Sanitize()+" SET (synchronous_commit = on)")
	}
	exec(b, e.mpool, "INSERT INTO outcome SELECT g, 'v0' FROM generate_series(1, $1::int) g", latencyRows)
	synced(b, e.spool, latencyRows, "SELECT count(*) FROM outcome")

	e.start(b, b, nil) // creates the JetStream stream
	nc, err := nats.Connect(e.url())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	lat := &latencies{from: time.Now().Add(time.Hour)}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- consumer.Run(cctx, js, consumer.Options{Env: e.env, Durable: "bench",
			MaxAckPending: 20000, Logger: testLogger(b)}, lat.handle)
	}()
	defer func() {
		cancel()
		<-done
	}()
	// The setup's events go through first, so that they do not queue
	// ahead of the measured ones.
	deadline := time.Now().Add(2 * time.Minute)
	for lat.handled() < latencyRows && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	synced(b, e.spool, 0, "SELECT count(*) FROM pgoutpost.denormalize_queue")

	// Pace: one transaction every tick, updating perTick rows.
	const tick = 10 * time.Millisecond
	perTick := rate * int(tick) / int(time.Second)
	ticks := int(d / tick)
	conn, err := e.mpool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	// The test clusters commit asynchronously (synchronous_commit = off);
	// a production master commits synchronously, and its walsender sends
	// only flushed WAL.
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		b.Fatal(err)
	}
	lat.mu.Lock()
	lat.from = time.Now()
	lat.mu.Unlock()
	b.StartTimer()
	start := time.Now()
	next := 0
	ids := make([]int32, perTick)
	for i := range ticks {
		if wait := time.Until(start.Add(time.Duration(i) * tick)); wait > 0 {
			time.Sleep(wait)
		}
		for j := range ids {
			ids[j] = int32(next%latencyRows) + 1
			next++
		}
		if _, err := conn.Exec(ctx, "UPDATE outcome SET name = 'v' || $2::int WHERE id = ANY($1)", ids, i+1); err != nil {
			b.Fatal(err)
		}
	}
	produced := time.Since(start)
	committed := time.Now() // every update committed before
	want := ticks * perTick
	deadline = time.Now().Add(2 * time.Minute)
	for lat.n() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	lat.mu.Lock()
	all := slices.Clone(lat.all)
	lat.mu.Unlock()
	if os.Getenv("PGOUTPOST_BENCH_TRACE") != "" {
		for i := 0; i < len(all); i += len(all) / 40 {
			fmt.Fprintf(os.Stderr, "event %d: %s\n", i, all[i])
		}
	}
	if len(all) < want {
		b.Fatalf("%d of %d events received within two minutes (handled %d; queued on the slave %d, dead letters %d, stream holds %d)", len(all), want,
			lat.count, queryInt(b, e.spool, "SELECT count(*) FROM pgoutpost.denormalize_queue"),
			queryInt(b, e.spool, "SELECT count(*) FROM pgoutpost.dead_letter"), streamMsgs(b, js))
	}
	if lat.last.After(committed) {
		b.Fatalf("an event says it committed at %s, after the last update had returned (%s): committed_at is not the master's commit time", lat.last, committed)
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds()) / 1000
	}
	return latencyResult{
		p50: pct(0.50), p99: pct(0.99), max: float64(all[len(all)-1].Microseconds()) / 1000,
		changesPerSec: float64(want) / produced.Seconds(),
		eventsPerSec:  float64(want) / lat.lastAt.Sub(start).Seconds(),
	}
}
