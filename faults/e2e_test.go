//go:build faults

package faults

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/consumer"
	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

var (
	flagE2ERows = flag.Int("faults.e2e.rows", 100000, "BenchmarkEndToEnd: single-row updates of the denormalize model (and as many of the bare table)")
	flagE2ETxn  = flag.Int("faults.e2e.txn", 10, "BenchmarkEndToEnd: updates a master transaction")
	flagE2ERate = flag.Int("faults.e2e.rate", 0, "BenchmarkEndToEnd: updates of the denormalize model a second; 0 writes as fast as the master can")
	flagE2ERuns = flag.Int("faults.e2e.runs", 1, "BenchmarkEndToEnd: runs, each on fresh databases, NATS and sidecar, with its own FIGURES")
	flagE2EBare = flag.Int("faults.e2e.bare", 10, "BenchmarkEndToEnd: one transaction on each twin of the model (bare, replicated) per this many on the model (1: the same workload on all three)")
)

// e2eOutcomes is how many rows of each table the updates cycle through.
const e2eOutcomes = 10000

// The denormalize model has two twins with the same columns and indexes and
// no pgoutpost trigger: the bare table, on the master only and in no
// publication, and the replicated twin, a system model (published, copied to
// the slave and kept in sync by its subscription, as any synced table).
// Against the bare table the model's rate shows what syncing the table with
// pgoutpost costs the master; against the replicated twin, what pgoutpost's
// trigger and queue rows add to native replication of the same table.
const (
	e2eTwin = "CREATE TABLE e2e_outcome_twin (LIKE shop_outcome INCLUDING ALL)"
	e2eBare = `CREATE TABLE e2e_outcome_bare (LIKE shop_outcome INCLUDING ALL);
INSERT INTO e2e_outcome_bare SELECT * FROM shop_outcome;
INSERT INTO e2e_outcome_twin SELECT * FROM shop_outcome;
ANALYZE shop_outcome, e2e_outcome_bare, e2e_outcome_twin;`
	e2eUpdateModel = "UPDATE shop_outcome SET score = score + 1 WHERE id = $1"
	e2eUpdateBare  = "UPDATE e2e_outcome_bare SET score = score + 1 WHERE id = $1"
	e2eUpdateTwin  = "UPDATE e2e_outcome_twin SET score = score + 1 WHERE id = $1"
)

// BenchmarkEndToEnd runs the whole pipeline on real clusters: master
// triggers, the subscriptions to the slave, the sidecar (pgoutpost run, its
// own process), JetStream and a durable consumer. The master makes
// -faults.e2e.rows single-row UPDATEs of a denormalize model in
// transactions of -faults.e2e.txn, as fast as it can or paced at
// -faults.e2e.rate a second. Every -faults.e2e.bare-th transaction is run
// on each of the table's twins too (see e2eTwin), in an order that rotates,
// so that the write rates with and without pgoutpost's triggers are
// measured side by side under the same load; a sample rather than the whole
// workload again, so that the model's updates stay the master's load and a
// paced run keeps its pace. Each run prints a FIGURES block:
//
//	make bench-e2e                     # 100,000 updates, full speed
//	make bench-e2e RATE=2000 RUNS=5
//
// A write rate is the rows over the time spent in that table's
// transactions (sending them to COMMIT returned), so it is the master's
// capacity in paced runs too. The latency is the consumer's receipt minus
// the event's committed_at, the master's commit time (one machine, one
// clock). CPU-seconds are read from /proc: the master's walsenders (the
// pids in pg_stat_replication) and every process of the slave's cluster,
// reaped ones included; the sidecar's peak RSS is its process's VmHWM, read
// just before it is stopped. A run fails when an update's event does not reach the
// consumer; duplicates (a queue_id in two stream messages) are counted.
func BenchmarkEndToEnd(b *testing.B) {
	if *flagE2ETxn <= 0 || *flagE2ETxn > e2eOutcomes || *flagE2ERows < *flagE2ETxn || *flagE2ERate < 0 || *flagE2EBare <= 0 {
		b.Fatalf("-faults.e2e.txn must be in 1..%d, -faults.e2e.rows at least that, -faults.e2e.rate not negative, -faults.e2e.bare positive", e2eOutcomes)
	}
	for run := 1; run <= *flagE2ERuns; run++ {
		// A sub-benchmark a run: its databases, subscriptions and sidecar
		// are gone before the next run starts.
		b.Run(fmt.Sprintf("run_%d", run), func(b *testing.B) {
			for range b.N {
				benchE2E(b, run)
			}
		})
	}
}

func benchE2E(b *testing.B, run int) {
	b.StopTimer()
	rows, txn, rate, every := *flagE2ERows, *flagE2ETxn, *flagE2ERate, *flagE2EBare
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	e := newEnv(b, "e2e")
	pgtest.Exec(b, e.master.DSN, e2eTwin)
	pgtest.Exec(b, e.slave.DSN, e2eTwin)
	e.masterConfig = e.writeConfig(b, configValues{Environment: "master", Role: "master", DSN: e.master.DSN, Twin: true})
	e.slaveValues.Twin = true
	e.slaveCfg = e.writeConfig(b, e.slaveValues)
	e.setupMaster(b, ctx, 0, e2eOutcomes)
	pgtest.Exec(b, e.master.DSN, e2eBare)
	e.setupSlave(b)
	sc := e.startSidecar(b)
	if why := ready(ctx, e.listen, time.Minute); why != "" {
		b.Fatalf("the sidecar is not ready within a minute: %s", why)
	}

	nc, err := nats.Connect(e.nats.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	opts := consumer.Options{Env: e.name, Durable: "e2e", MaxAckPending: 20000}
	c, err := e2eConsumer(ctx, js, opts)
	if err != nil {
		b.Fatal(err)
	}
	got := &e2eReceived{seqs: map[uint64]bool{}, queueIDs: map[string]int{}}
	cctx, cstop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { consumeMsgs(cctx, c, opts, got.record) })
	defer wg.Wait()
	defer cstop()

	master := pgtest.Pool(b, e.master.DSN)
	slave := pgtest.Pool(b, e.slave.DSN)
	// The master's walsenders: the slave's subscription workers (named
	// after their subscriptions).
	var senderNames []string
	senders := func() []int {
		r, err := master.Query(ctx, "SELECT pid, application_name FROM pg_stat_replication ORDER BY application_name")
		if err != nil {
			b.Fatal(err)
		}
		var pids []int
		senderNames = senderNames[:0]
		for r.Next() {
			var pid int32
			var name string
			if err := r.Scan(&pid, &name); err != nil {
				b.Fatal(err)
			}
			pids, senderNames = append(pids, int(pid)), append(senderNames, name)
		}
		if err := r.Err(); err != nil {
			b.Fatal(err)
		}
		return pids
	}
	slaveCPU := func() time.Duration {
		d, err := clusterCPU(e.slave.Cluster.DataDir)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	conn, err := pgx.Connect(ctx, e.master.DSN)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	// The test clusters commit asynchronously; a production master commits
	// synchronously, and its walsenders send only flushed WAL.
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		b.Fatal(err)
	}

	sendersBefore, slaveBefore := cpuOf(senders()), slaveCPU()
	b.StartTimer()
	start := time.Now()
	var inModel, inBare, inTwin time.Duration // time spent in each table's transactions
	var sampledRows int                       // rows written to each twin
	ids := make([]int64, txn)
	ntx := rows / txn
	for k := range ntx {
		if rate > 0 {
			time.Sleep(time.Until(start.Add(time.Duration(k) * time.Duration(txn) * time.Second / time.Duration(rate))))
		}
		for j := range ids {
			ids[j] = int64((k*txn+j)%e2eOutcomes) + 1
		}
		// A sampled transaction runs on the model and its twins in an
		// order that rotates, so that none always follows another's commit.
		tables := []*time.Duration{&inModel}
		if k%every == 0 {
			tables = []*time.Duration{&inModel, &inBare, &inTwin}
			r := k / every % 3
			tables = append(tables[r:], tables[:r]...)
			sampledRows += txn
		}
		for _, in := range tables {
			sql := e2eUpdateModel
			switch in {
			case &inBare:
				sql = e2eUpdateBare
			case &inTwin:
				sql = e2eUpdateTwin
			}
			d, err := e2eTxn(ctx, conn, sql, ids)
			if err != nil {
				b.Fatalf("master transaction %d (%s): %v", k, sql, err)
			}
			*in += d
		}
	}
	written := time.Now()
	want := ntx * txn

	// Every event, or no progress for two minutes; then the queue empty
	// and the consumer caught up: nothing more is coming.
	last, lastAt := -1, time.Now()
	for n := got.distinct(); n < want; n = got.distinct() {
		if n != last {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) > 2*time.Minute {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var queued bool
		if err := slave.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pgoutpost.denormalize_queue)").Scan(&queued); err != nil {
			b.Fatal(err)
		}
		if !queued && caughtUp(ctx, js, opts) {
			break
		}
	}
	b.StopTimer()
	sendersCPU := cpuSince(sendersBefore, cpuOf(senders()))
	slaveUsed := slaveCPU() - slaveBefore
	cstop()
	wg.Wait()
	peakBytes, ru := sc.stopMeasured(b)
	var dead int
	if err := slave.QueryRow(ctx, "SELECT count(*) FROM pgoutpost.dead_letter").Scan(&dead); err != nil {
		b.Fatal(err)
	}

	got.mu.Lock()
	defer got.mu.Unlock()
	lat := got.latencies
	lost := want - len(got.queueIDs)
	if lost > 0 || got.others > 0 || len(lat) == 0 {
		b.Fatalf("of %d updates, %d events lost (%d received, %d not updates of public.shop_outcome, %d dead letters on the slave)",
			want, lost, len(lat), got.others, dead)
	}
	if got.lastCommit.After(written) {
		b.Fatalf("an event says it committed at %s, after the last update had returned (%s): committed_at is not the master's commit time", got.lastCommit, written)
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	p50, p99, maxLat := ms(lat[len(lat)*50/100]), ms(lat[min(len(lat)-1, len(lat)*99/100)]), ms(lat[len(lat)-1])
	bareRate, twinRate, modelRate := float64(sampledRows)/inBare.Seconds(), float64(sampledRows)/inTwin.Seconds(), float64(want)/inModel.Seconds()
	eventsRate := float64(len(lat)) / got.lastAt.Sub(start).Seconds()
	peak := float64(peakBytes) / (1 << 20)
	b.ReportMetric(modelRate, "model-rows/s")
	b.ReportMetric(bareRate, "bare-rows/s")
	b.ReportMetric(twinRate, "replicated-rows/s")
	b.ReportMetric(eventsRate, "events/s")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(peak, "peak-RSS-MiB")

	pace := "full speed"
	if rate > 0 {
		pace = fmt.Sprintf("paced at %d rows/s", rate)
	}
	fmt.Printf("FIGURES end-to-end run %d/%d: %d single-row updates in %d-row transactions, %s: written in %s (%.0f rows/s), plus %d rows on each twin\n",
		run, *flagE2ERuns, want, txn, pace, written.Sub(start).Round(10*time.Millisecond), float64(want)/written.Sub(start).Seconds(), sampledRows)
	fmt.Printf("FIGURES   master write rate (rows over time in their transactions): bare %.0f rows/s, replicated without triggers %.0f rows/s, with triggers %.0f rows/s; ratio to bare %.2f, to replicated %.2f\n",
		bareRate, twinRate, modelRate, modelRate/bareRate, modelRate/twinRate)
	fmt.Printf("FIGURES   consumer: %d events (lost %d, duplicated %d, redelivered %d), %.0f events/s; commit-to-consumer p50 %.1f ms, p99 %.1f ms, max %.1f ms (committed %.1f s into the run)\n",
		len(lat), lost, got.duplicated, got.redelivered, eventsRate, p50, p99, maxLat, got.worstAt.Sub(start).Seconds())
	fmt.Printf("FIGURES   CPU-seconds: master walsenders %.1f (%s), slave cluster %.1f, sidecar %.1f (user %.1f, system %.1f); sidecar peak RSS %.0f MiB\n",
		sendersCPU.Seconds(), strings.Join(senderNames, ", "), slaveUsed.Seconds(),
		time.Duration(ru.Utime.Nano()+ru.Stime.Nano()).Seconds(),
		time.Duration(ru.Utime.Nano()).Seconds(), time.Duration(ru.Stime.Nano()).Seconds(), peak)
}

// e2eTxn runs one master transaction of single-row updates in one round
// trip (a batch is one implicit transaction) and returns how long it took
// to COMMIT.
func e2eTxn(ctx context.Context, conn *pgx.Conn, sql string, ids []int64) (time.Duration, error) {
	var batch pgx.Batch
	for _, id := range ids {
		batch.Queue(sql, id)
	}
	start := time.Now()
	err := conn.SendBatch(ctx, &batch).Close()
	return time.Since(start), err
}

// e2eConsumer creates the durable consumer once the sidecar has made the
// stream.
func e2eConsumer(ctx context.Context, js jetstream.JetStream, opts consumer.Options) (jetstream.Consumer, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := consumer.Consumer(ctx, js, opts)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// e2eReceived is what the benchmark's consumer handled, by stream sequence:
// a redelivery of a stream message is not a duplicate, a second stream
// message with the same queue_id is.
type e2eReceived struct {
	mu          sync.Mutex
	seqs        map[uint64]bool
	queueIDs    map[string]int
	latencies   []time.Duration // receipt minus committed_at, a stream message each
	lastAt      time.Time       // the latest receipt
	lastCommit  time.Time       // the latest committed_at
	worst       time.Duration   // the longest latency
	worstAt     time.Time       // and that event's committed_at
	duplicated  int
	redelivered int
	others      int // events that are no update of the model
}

func (r *e2eReceived) record(m jetstream.Msg, ev event.Event, at time.Time) error {
	md, err := m.Metadata()
	if err != nil {
		return err // nak: handled again later
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seqs[md.Sequence.Stream] {
		r.redelivered++
		return nil
	}
	r.seqs[md.Sequence.Stream] = true
	if ev.Table != "public.shop_outcome" || ev.Op != event.OpUpdate {
		r.others++
		return nil
	}
	r.queueIDs[ev.QueueID]++
	if r.queueIDs[ev.QueueID] > 1 {
		r.duplicated++
	}
	d := at.Sub(ev.CommittedAt)
	r.latencies = append(r.latencies, d)
	if d > r.worst {
		r.worst, r.worstAt = d, ev.CommittedAt
	}
	r.lastAt = at
	if ev.CommittedAt.After(r.lastCommit) {
		r.lastCommit = ev.CommittedAt
	}
	return nil
}

// distinct is the number of distinct queue_ids received.
func (r *e2eReceived) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queueIDs)
}
