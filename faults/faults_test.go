//go:build faults

package faults

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/consumer"
	"github.com/pgoutpost/pgoutpost/internal/pgcluster"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/sink"
)

var (
	flagSeed      = flag.Uint64("faults.seed", 0, "random seed (0: one drawn from the clock, printed)")
	flagChanges   = flag.Int("faults.changes", 20000, "master row changes (queue entries) the workload makes")
	flagKills     = flag.Int("faults.kills", 20, "how many times the sidecar is killed with SIGKILL")
	flagProtected = flag.Int("faults.protected", 5, "PROTECT conflicts planted (each must end as exactly one dead letter)")
	flagDuration  = flag.Duration("faults.duration", 90*time.Second, "how long the workload is spread over")
	flagDrain     = flag.Duration("faults.drain", 4*time.Minute, "bound of the wait for the queues to drain after the workload")
	flagFKChecks  = flag.String("faults.fk-checks", "", "the sidecar's queue.fk_checks (database or batch); by default TestFaults runs with database and TestFaultsLeaderStop with batch")
)

// fault is one scheduled fault, at an offset from the workload's start.
type fault struct {
	at   time.Duration
	kind string // "kill", "slave restart", "nats stop", "leader stop", "bulk load", "apply error", "slot drop"
}

// schedule draws the faults. On a JetStream cluster the NATS fault is two
// stops of the stream's leader instead of a stop of the one server.
func schedule(rng *rand.Rand, d time.Duration, kills int, cluster bool) []fault {
	at := func() time.Duration { return d/20 + time.Duration(rng.Int64N(int64(d*9/10))) }
	var fs []fault
	for range kills {
		fs = append(fs, fault{at(), "kill"})
	}
	if cluster {
		fs = append(fs, fault{at(), "leader stop"}, fault{at(), "leader stop"})
	} else {
		fs = append(fs, fault{at(), "nats stop"})
	}
	fs = append(fs, fault{at(), "slave restart"},
		fault{at(), "bulk load"}, fault{at(), "bulk load"}, fault{at(), "apply error"}, fault{at(), "slot drop"})
	slices.SortFunc(fs, func(a, b fault) int { return cmp.Compare(a.at, b.at) })
	return fs
}

func TestFaults(t *testing.T) { runFaults(t, false) }

// TestFaultsLeaderStop is TestFaults on a three-node JetStream cluster with
// an R3 stream, whose leader is stopped twice during the workload. Its
// sidecar checks foreign keys in batches (queue.fk_checks: batch), so the
// suite holds both ways of checking to the same count of lost and
// duplicated work.
func TestFaultsLeaderStop(t *testing.T) { runFaults(t, true) }

func runFaults(t *testing.T, cluster bool) {
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun: go test -tags faults -count=1 -timeout 20m ./faults/... -args -faults.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	ctx, cancel := context.WithTimeout(context.Background(), 18*time.Minute)
	defer cancel()

	e := newEnv(t, "faults")
	if cluster {
		e = newClusterEnv(t, "faults")
	}
	fkChecks := *flagFKChecks
	if fkChecks == "" {
		fkChecks = "database"
		if cluster {
			fkChecks = "batch"
		}
	}
	t.Logf("queue.fk_checks: %s", fkChecks)
	e.slaveValues.FKChecks = fkChecks
	e.slaveCfg = e.writeConfig(t, e.slaveValues)
	m := newModel(rng, *flagChanges, *flagProtected)
	e.setupMaster(t, ctx, int(m.units), int(m.outcomes))
	e.setupSlave(t)
	seedSlave(t, ctx, e.slave.DSN, m)
	t.Logf("seeded: %d units with %d markers each, %d outcomes; slave: %d reports, %d notes, %d keepers",
		m.units, markersPerUnit, m.outcomes, len(m.reports), len(m.notes), len(m.keepers))

	sc := e.startSidecar(t)
	waitReady(t, ctx, e.listen)

	nc, err := nats.Connect(e.natsURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	copts := consumer.Options{
		Env: e.name, Durable: "faults", AckWait: 5 * time.Second, RetryMin: 100 * time.Millisecond,
	}
	got := &received{bySeq: map[uint64]delivery{}}
	cctx, cstop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = consume(cctx, js, copts, got) })
	defer wg.Wait()
	defer cstop()

	// The workload and the faults, side by side.
	mpool := pgtest.Pool(t, e.master.DSN)
	faults := schedule(rng, *flagDuration, *flagKills, cluster)
	pauses := make([]time.Duration, len(faults))
	for i := range pauses {
		pauses[i] = 100*time.Millisecond + time.Duration(rng.Int64N(int64(1900*time.Millisecond)))
	}
	start := time.Now()
	var workErr, faultErr error
	var slaveHangs, bulks, leaderStops int
	var workDone time.Duration
	var fwg sync.WaitGroup
	fwg.Go(func() {
		defer func() { workDone = time.Since(start) }()
		for {
			tx := m.next(*flagChanges)
			if tx == nil {
				return
			}
			if err := apply(ctx, mpool, tx); err != nil {
				workErr = fmt.Errorf("master transaction %d: %w", m.txs, err)
				return
			}
			due := start.Add(time.Duration(float64(*flagDuration) * float64(m.changes) / float64(*flagChanges)))
			time.Sleep(time.Until(due))
		}
	})
	fwg.Go(func() {
		for i, f := range faults {
			time.Sleep(time.Until(start.Add(f.at)))
			switch f.kind {
			case "kill":
				if !sc.kill() {
					t.Logf("%6.1fs the sidecar had already exited", time.Since(start).Seconds())
				}
				time.Sleep(pauses[i])
				if err := sc.start(); err != nil {
					faultErr = err
					return
				}
			case "slave restart":
				readyBefore(sc, e.listen)
				hung, err := restartSlave(ctx, e.slave.Cluster, sc)
				if err != nil {
					faultErr = fmt.Errorf("restart the slave: %w", err)
					return
				}
				if hung {
					slaveHangs++
					t.Logf("the slave's fast shutdown hung while the sidecar ran; it completed once the sidecar was killed")
				}
			case "nats stop":
				readyBefore(sc, e.listen)
				e.nats.Stop()
				time.Sleep(2*time.Second + pauses[i])
				if err := e.nats.Restart(); err != nil {
					faultErr = fmt.Errorf("restart nats: %w", err)
					return
				}
			case "leader stop":
				readyBefore(sc, e.listen)
				leader, err := e.cluster.WaitStreamLeader(sink.DefaultStream, time.Minute)
				if err != nil {
					faultErr = err
					return
				}
				e.cluster.Stop(leader)
				leaderStops++
				if _, err := e.cluster.WaitStreamLeader(sink.DefaultStream, time.Minute, leader); err != nil {
					faultErr = fmt.Errorf("after stopping the leader: %w", err)
					return
				}
				time.Sleep(pauses[i])
				if err := e.cluster.Restart(leader); err != nil {
					faultErr = fmt.Errorf("restart the stopped leader: %w", err)
					return
				}
				if err := e.cluster.WaitFormed(time.Minute); err != nil {
					faultErr = fmt.Errorf("after restarting the stopped leader: %w", err)
					return
				}
			case "bulk load":
				// A big master transaction keeps the slave's apply busy: the
				// entries behind it wait for it, in order.
				bulks++
				if _, err := mpool.Exec(ctx, "INSERT INTO shop_bulk SELECT g, repeat('x', 40) FROM generate_series($1::bigint, $1::bigint + $2 - 1) g",
					int64(bulks)*10_000_000, bulkRows); err != nil {
					faultErr = fmt.Errorf("bulk load: %w", err)
					return
				}
			case "apply error":
				// The master migrates first (the documented deploy order):
				// the slave's apply stops on the new column, with the
				// entries behind it, until the slave migrates too.
				if err := applyError(ctx, e, 3*time.Second+pauses[i]); err != nil {
					faultErr = fmt.Errorf("apply error: %w", err)
					return
				}
			case "slot drop":
				readyBefore(sc, e.listen)
				if err := dropSidecarSlot(ctx, e.slave.DSN); err != nil {
					faultErr = fmt.Errorf("drop the sidecar's slot: %w", err)
					return
				}
			}
			t.Logf("%6.1fs %s", time.Since(start).Seconds(), f.kind)
		}
	})
	fwg.Wait()
	if err := errors.Join(workErr, faultErr); err != nil {
		t.Fatal(err)
	}
	t.Logf("workload done in %.1fs: %d changes in %d transactions (%d unit deletes, %d marker deletes, %d outcome updates, %d outcome deletes statements); faults done at %.1fs",
		workDone.Seconds(), m.changes, m.txs, m.opCount[deleteUnits], m.opCount[deleteMarkers],
		m.opCount[updateOutcomes], m.opCount[deleteOutcomes], time.Since(start).Seconds())

	// Drain: wait until the checks pass and the consumer has caught up, or
	// until the bound; then report what is still wrong.
	spool := pgtest.Pool(t, e.slave.DSN)
	deadline := time.Now().Add(*flagDrain)
	var r *result
	for {
		if err := sc.ensure(); err != nil {
			t.Fatal(err)
		}
		r = check(ctx, mpool, spool, m, got)
		if r.err == nil && len(r.problems) == 0 && caughtUp(ctx, js, copts) || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	drained := time.Since(start) - workDone
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := sc.stop(time.Minute); err != nil {
		t.Error(err)
	}
	for _, p := range r.problems {
		t.Error(p)
	}
	// The suite restarts a sidecar that exited as a supervisor would, so
	// that the checks above still say what was lost, but the sidecar is to
	// ride out every outage here without exiting.
	for _, u := range sc.unexpected {
		t.Errorf("the sidecar exited on its own (the suite restarted it): %s", u)
	}
	if slaveHangs > 0 {
		t.Errorf("the slave's fast shutdown hung while the sidecar ran (%d times)", slaveHangs)
	}
	redrained, restartsWithWork := drainedAtStart(sc.log)
	got.mu.Lock()
	handled, redeliveries := got.handled, got.redeliveries
	got.mu.Unlock()
	t.Logf("FIGURES seed=%d changes=%d transactions=%d kills=%d(+%d to unblock the slave's shutdown) sidecar_starts=%d slave_restarts=1 slave_shutdown_hangs=%d nats_stops=%d leader_stops=%d bulk_loads=%d apply_errors=1 slot_drops=1 "+
		"deletes_expected=%d deletes_applied=%d events_expected=%d events_received=%d stream_messages=%d "+
		"handled=%d redeliveries=%d dead_letters=%d(planted %d) lost=%d duplicated=%d unexpected_exits=%d "+
		"starts_with_waiting_entries=%d entries_drained_at_start=%d workload=%.1fs drain=%.1fs total=%.1fs",
		seed, m.changes, m.txs, sc.kills-slaveHangs, slaveHangs, sc.starts, slaveHangs, boolInt(!cluster), leaderStops, bulks, r.deletesExpected, r.deletesApplied, r.eventsExpected, r.eventsReceived,
		r.streamMsgs, handled, redeliveries, r.deadLetters, len(m.planted()), r.lost, r.duplicated, len(sc.unexpected),
		restartsWithWork, redrained, workDone.Seconds(), drained.Seconds(), time.Since(start).Seconds())
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// bulkRows is the size of one bulk load.
const bulkRows = 200000

// applyError adds a column to shop_outcome on the master, which the slave's
// apply worker then fails on at the master's next change of an outcome, holds
// it so for hold, and adds the column on the slave.
func applyError(ctx context.Context, e *env, hold time.Duration) error {
	conn, err := pgx.Connect(ctx, e.master.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "ALTER TABLE shop_outcome ADD COLUMN fault_note text"); err != nil {
		return err
	}
	time.Sleep(hold)
	sconn, err := pgx.Connect(ctx, e.slave.DSN)
	if err != nil {
		return err
	}
	defer sconn.Close(ctx)
	_, err = sconn.Exec(ctx, "ALTER TABLE shop_outcome ADD COLUMN fault_note text")
	return err
}

// dropSidecarSlot terminates the walsender of the sidecar's slot on the
// slave and drops the slot, retrying while the sidecar reconnects.
func dropSidecarSlot(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _ = conn.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'pgoutpost_sidecar' AND active_pid IS NOT NULL")
		_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot('pgoutpost_sidecar')")
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restartSlave restarts the slave cluster with a fast shutdown, as an
// operator or a service manager does. When the shutdown does not finish in
// stopWait (a logical walsender waits for its client to confirm everything it
// sent, which the sidecar cannot do while the database refuses it new
// connections), it kills the sidecar, which lets the shutdown finish, and
// reports hung; then it starts the sidecar again once the slave is up.
func restartSlave(ctx context.Context, c *pgcluster.Cluster, sc *sidecar) (hung bool, err error) {
	const stopWait = "15"
	stop := func(wait string) error {
		out, err := c.Command(ctx, "pg_ctl", "-D", c.DataDir, "-m", "fast", "-w", "-t", wait, "stop").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	if stop(stopWait) != nil {
		hung = true
		sc.kill()
		if err := stop("60"); err != nil {
			return hung, err
		}
	}
	out, err := c.Command(ctx, "pg_ctl", "-D", c.DataDir, "-l", filepath.Join(c.Dir, "server.log"), "-w", "-t", "60", "start").CombinedOutput()
	if err != nil {
		return hung, fmt.Errorf("start: %w: %s", err, out)
	}
	if hung {
		return hung, sc.start()
	}
	return hung, nil
}

// seedSlave adds the slave's user rows.
func seedSlave(t *testing.T, ctx context.Context, dsn string, m *model) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	null := func(id int64) any {
		if id == 0 {
			return nil
		}
		return id
	}
	copies := []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"app_report", []string{"id", "unit_id", "marker_id", "outcome_id", "title"}, nil},
		{"app_note", []string{"id", "report_id", "body"}, nil},
		{"app_keeper", []string{"id", "marker_id"}, nil},
	}
	for _, r := range m.reports {
		copies[0].rows = append(copies[0].rows, []any{r.id, r.unit, null(r.marker), null(r.outcome), fmt.Sprintf("report %d", r.id)})
	}
	for _, n := range m.notes {
		copies[1].rows = append(copies[1].rows, []any{n.id, n.report, fmt.Sprintf("note %d", n.id)})
	}
	for _, k := range m.keepers {
		copies[2].rows = append(copies[2].rows, []any{k.id, k.marker})
	}
	for _, c := range copies {
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{c.table}, c.cols, pgx.CopyFromRows(c.rows)); err != nil {
			t.Fatalf("seed %s on the slave: %v", c.table, err)
		}
	}
}

func waitReady(t *testing.T, ctx context.Context, listen string) {
	t.Helper()
	if why := ready(ctx, listen, time.Minute); why != "" {
		t.Fatalf("the sidecar is not ready within a minute: %s", why)
	}
}

// readyBefore makes sure the sidecar runs and waits (a while) for it to be
// ready, so that the fault that follows hits a working sidecar.
func readyBefore(sc *sidecar, listen string) {
	_ = sc.ensure()
	_ = ready(context.Background(), listen, 20*time.Second)
}

// ready polls /readyz until it says 200 or d passes; it returns why the
// sidecar is not ready ("" when it is).
func ready(ctx context.Context, listen string, d time.Duration) string {
	deadline := time.Now().Add(d)
	why := "no answer"
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listen+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return ""
			}
			why = strings.TrimSpace(string(b))
		} else {
			why = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return why
}

// caughtUp reports whether the consumer has handled every stream message.
func caughtUp(ctx context.Context, js jetstream.JetStream, opts consumer.Options) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, consumer.DefaultStream, opts.Durable)
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

// drainedAtStart reads the sidecar's log for the entries each start found
// waiting in the queue tables (work a kill left behind): it returns their sum
// and the number of starts that found some.
func drainedAtStart(path string) (entries, starts int) {
	b, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "drained entries waiting") {
			continue
		}
		_, n, ok := strings.Cut(line, " entries=")
		if !ok {
			continue
		}
		n, _, _ = strings.Cut(n, " ")
		if v, err := strconv.Atoi(n); err == nil && v > 0 {
			entries += v
			starts++
		}
	}
	return entries, starts
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return lastLines(string(b), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
