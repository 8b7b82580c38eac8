package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/internal/pgcluster"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

// serverMajor is the major version of the PostgreSQL the tests run on.
func serverMajor(t *testing.T) int {
	t.Helper()
	var n int
	if err := pgtest.Pool(t, pgtest.Master(t).DSN("postgres")).QueryRow(ctxT(t, 10*time.Second),
		"SELECT current_setting('server_version_num')::int / 10000").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// startPrimary starts a master cluster of the test's own, with a physical
// standby streaming from slot "standby1": the test may crash or promote them.
func startPrimary(t *testing.T, standbySettings map[string]string) (primary, standby *pgcluster.Cluster) {
	t.Helper()
	ctx := ctxT(t, 2*time.Minute)
	primary, err := pgcluster.Start(ctx, pgcluster.Options{Name: "primary", Settings: pgtest.ClusterSettings})
	if err != nil {
		t.Fatalf("cannot start the primary: %v", err)
	}
	t.Cleanup(func() { _ = primary.Stop() })
	standby, err = primary.StartStandby(ctx, pgcluster.StandbyOptions{Name: "standby", Slot: "standby1", Settings: standbySettings})
	if err != nil {
		t.Fatalf("cannot start the standby: %v", err)
	}
	t.Cleanup(func() { _ = standby.Stop() })
	return primary, standby
}

// masterDB creates database name on c for a test that owns c (it goes with
// the cluster).
func masterDB(t *testing.T, c *pgcluster.Cluster, name string) *pgtest.DB {
	t.Helper()
	if err := c.CreateDatabase(ctxT(t, time.Minute), name); err != nil {
		t.Fatal(err)
	}
	return &pgtest.DB{Cluster: c, Name: name, DSN: c.DSN(name)}
}

// writer changes the master until stopped or until the master fails: new
// cat and unit rows, updates, and deletes of units (a delete model: each
// writes a delete queue entry).
type writer struct {
	stop chan struct{}
	done sync.WaitGroup
	n    atomic.Int64 // transactions committed
}

func startWriter(t *testing.T, dsn string, from int) *writer {
	w := &writer{stop: make(chan struct{})}
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		for i := from; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			_, err := conn.Exec(context.Background(), fmt.Sprintf(`
				INSERT INTO cat VALUES (%[1]d, 'cat %[1]d');
				UPDATE cat SET name = name || '+' WHERE id = %[2]d;
				INSERT INTO unit VALUES (%[1]d, %[1]d, 'unit %[1]d');
				DELETE FROM unit WHERE id = %[2]d`, i, i-1))
			if err != nil {
				return // the master is gone
			}
			w.n.Add(1)
		}
	}()
	return w
}

func (w *writer) halt() { close(w.stop); w.done.Wait() }

// contents is what the comparison reads from master and slave alike. unit
// is a delete model: its deletes reach the slave as queue entries (the
// sidecar, not run here, applies them), so its rows named by an entry are
// left out.
const contents = `
	SELECT (SELECT coalesce(string_agg(c::text, ',' ORDER BY id), '') FROM cat c) || ' | ' ||
	       (SELECT coalesce(string_agg(u::text, ',' ORDER BY id), '') FROM unit u
	        WHERE NOT EXISTS (SELECT FROM pgoutpost.delete_queue q WHERE q.table_name = 'public.unit' AND (q.pk->>'id')::int = u.id)) || ' | ' ||
	       (SELECT count(*) || ' entries ' || coalesce(md5(string_agg(id::text, ',' ORDER BY id)), '') FROM pgoutpost.delete_queue)`

// TestFailoverToPromotedStandby: on 17+, a slave subscribed with failover =
// true follows the master's physical standby when it is promoted after the
// master crashes, with changes and delete queue entries flowing throughout:
// afterwards the slave equals the new master, no queue entry lost or twice.
func TestFailoverToPromotedStandby(t *testing.T) {
	if v := serverMajor(t); v < 17 {
		t.Skipf("failover slots need PostgreSQL 17 or newer; these tests run on %d", v)
	}
	primary, standby := startPrimary(t, map[string]string{"sync_replication_slots": "on"})
	ctx := ctxT(t, 3*time.Minute)
	// Logical walsenders send nothing the standby has not confirmed: the
	// slave is never ahead of what the standby will have after promotion.
	if err := primary.Set(ctx, "synchronized_standby_slots", "'standby1'"); err != nil {
		t.Fatal(err)
	}
	reg := testRegistry(nil)
	p := newPairWith(t, reg, masterDB(t, primary, "app"))
	p.names.SetFailover(true)
	p.publish(t, reg)
	p.subscribe(t)
	sub := p.names.Subs[0].Name
	status := func(db DB) *Report {
		t.Helper()
		r, err := Status(ctx, db, "master", p.names, SlaveChecks{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := status(p.mpool); fmt.Sprint(r.FailoverSlots) != "["+sub+"]" || strings.Contains(fmt.Sprint(r.Problems), "synchronized_standby_slots") {
		t.Errorf("master status: failover slots %v, problems %v", r.FailoverSlots, r.Problems)
	}
	// Without synchronized_standby_slots, status says what it risks.
	if err := primary.Set(ctx, "synchronized_standby_slots", "''"); err != nil {
		t.Fatal(err)
	}
	if r := status(p.mpool); !strings.Contains(fmt.Sprint(r.Problems), "synchronized_standby_slots is empty") {
		t.Errorf("master status without synchronized_standby_slots: problems %v", r.Problems)
	}
	if err := primary.Set(ctx, "synchronized_standby_slots", "'standby1'"); err != nil {
		t.Fatal(err)
	}

	w := startWriter(t, p.master.DSN, 1)
	spool := pgtest.Pool(t, standby.DSN("app"))
	eventually(t, "the subscription's slot synchronized to the standby", func(ctx context.Context) (bool, error) {
		var ok bool
		err := spool.QueryRow(ctx, "SELECT coalesce(bool_and(synced AND NOT temporary), false) FROM pg_replication_slots WHERE slot_name = $1", sub).Scan(&ok)
		return ok && w.n.Load() > 50, err
	})
	if r := status(spool); !strings.Contains(fmt.Sprint(r.FailoverSlots), sub) || len(r.Problems) != 0 {
		t.Errorf("standby status: failover slots %v, problems %v", r.FailoverSlots, r.Problems)
	}
	// The master crashes with changes in flight; its standby is promoted.
	if out, err := primary.Command(ctx, "pg_ctl", "-D", primary.DataDir, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
		t.Fatalf("crash the primary: %v\n%s", err, out)
	}
	w.halt()
	before := w.n.Load()
	if err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	newMaster := &pgtest.DB{Cluster: standby, Name: "app", DSN: standby.DSN("app")}
	// The slave follows: subscription update points it at the new master.
	res, err := UpdateSubscriptions(ctx, p.spool, p.names, newMaster.ConnInfo())
	if err != nil {
		t.Fatalf("point the subscription at the promoted standby: %v", err)
	}
	t.Logf("after promotion: %v", res)
	var next int
	if err := pgtest.Pool(t, newMaster.DSN).QueryRow(ctx, "SELECT coalesce(max(id), 0) + 1 FROM cat").Scan(&next); err != nil {
		t.Fatal(err)
	}
	w = startWriter(t, newMaster.DSN, next)
	eventually(t, "changes on the new master", func(context.Context) (bool, error) { return w.n.Load() > 50, nil })
	w.halt()

	npool := pgtest.Pool(t, newMaster.DSN)
	var want, got string
	defer showLogs(t, standby, pgtest.Slave(t))
	eventually(t, "the slave to equal the new master", func(ctx context.Context) (bool, error) {
		var err error
		if want, err = queryString(ctx, npool, contents); err != nil {
			return false, err
		}
		got, err = queryString(ctx, p.spool, contents)
		return got == want, err
	})
	t.Logf("%d transactions before the crash, %d after; slave = new master: %s", before, w.n.Load(), want[strings.LastIndex(want, "|")+2:])
}

// TestSubscribeToStandby: on 16+, a slave subscribes to a physical standby of
// the master (logical decoding on a standby) and receives its rows and
// delete queue entries, so more slaves cost the master nothing.
func TestSubscribeToStandby(t *testing.T) {
	if v := serverMajor(t); v < 16 {
		t.Skipf("logical decoding on a standby needs PostgreSQL 16 or newer; these tests run on %d", v)
	}
	primary, standby := startPrimary(t, nil)
	reg := testRegistry(nil)
	p := newPairWith(t, reg, masterDB(t, primary, "app"))
	p.publish(t, reg)
	pgtest.Exec(t, p.master.DSN, "INSERT INTO cat VALUES (1, 'before'); INSERT INTO unit VALUES (1, 1, 'u1'), (2, 1, 'u2')")
	// A slot on a standby waits for the primary's next running-transactions
	// record (every 15 s); ask for one now and then while subscribing.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mpool := p.mpool
	go func() {
		for ctx.Err() == nil {
			_, _ = mpool.Exec(ctx, "SELECT pg_log_standby_snapshot()")
			time.Sleep(100 * time.Millisecond)
		}
	}()
	onStandby := &pgtest.DB{Cluster: standby, Name: "app", DSN: standby.DSN("app")}
	var now string
	if err := mpool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&now); err != nil {
		t.Fatal(err)
	}
	stpool := pgtest.Pool(t, standby.DSN("postgres"))
	eventually(t, "the standby to replay the master's publications", func(ctx context.Context) (bool, error) {
		s, err := queryString(ctx, stpool, "SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::text", now)
		return s == "true", err
	})
	// A logical slot on a standby starts decoding at the standby's last
	// restartpoint: make it newer than the rows to copy.
	pgtest.Exec(t, p.master.DSN, "CHECKPOINT")
	if err := mpool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&now); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the standby to replay the checkpoint", func(ctx context.Context) (bool, error) {
		s, err := queryString(ctx, stpool, "SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::text", now)
		return s == "true", err
	})
	pgtest.Exec(t, standby.DSN("postgres"), "CHECKPOINT")
	sctx := ctxT(t, 2*time.Minute)
	res, err := CreateSubscriptions(sctx, p.spool, p.names, onStandby.ConnInfo())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fmt.Sprint(res), "note: the master connection is a standby") {
		t.Errorf("subscription create on a standby says nothing of its initial copy: %v", res)
	}
	if err := WaitReady(sctx, p.spool, p.names, io.Discard, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, p.master.DSN, "UPDATE cat SET name = 'after' WHERE id = 1; DELETE FROM unit WHERE id = 2")
	spoolM := pgtest.Pool(t, p.master.DSN)
	defer showLogs(t, standby, pgtest.Slave(t))
	eventually(t, "the slave to equal the master", func(ctx context.Context) (bool, error) {
		want, err := queryString(ctx, spoolM, contents)
		if err != nil {
			return false, err
		}
		got, err := queryString(ctx, p.spool, contents)
		return got == want && strings.Contains(got, "after") && strings.Contains(got, "1 entries"), err
	})
	// The slot lives on the standby, none on the master.
	var onMaster int
	if err := mpool.QueryRow(sctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'").Scan(&onMaster); err != nil || onMaster != 0 {
		t.Errorf("logical slots on the master: %d (%v), want 0", onMaster, err)
	}
}

// showLogs prints the end of the clusters' server logs when the test failed.
func showLogs(t *testing.T, cs ...*pgcluster.Cluster) {
	if !t.Failed() {
		return
	}
	for _, c := range cs {
		b, _ := os.ReadFile(filepath.Join(c.Dir, "server.log"))
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		t.Logf("%s server log:\n%s", c.Name, b)
	}
}

// TestFailoverOption: replication.failover creates the subscription with
// failover = true on 17+, and turns it on for an existing one; before 17 it
// is refused with the reason, and nothing is created.
func TestFailoverOption(t *testing.T) {
	reg := testRegistry(nil)
	p := newPair(t, reg)
	p.publish(t, reg)
	ctx := ctxT(t, 2*time.Minute)
	p.names.SetFailover(true)
	sub := p.names.Subs[0].Name
	_, err := CreateSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo())
	if v := serverMajor(t); v < 17 {
		if !errors.Is(err, ErrFailoverUnsupported) {
			t.Fatalf("failover on %d: %v, want ErrFailoverUnsupported", v, err)
		}
		if n, _ := queryString(ctx, p.spool, "SELECT count(*)::text FROM pg_subscription WHERE subname = $1", sub); n != "0" {
			t.Errorf("%s subscriptions created", n)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	failover := func() string {
		s, err := queryString(ctx, p.mpool, "SELECT failover::text FROM pg_replication_slots WHERE slot_name = $1", sub)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if f := failover(); f != "true" {
		t.Errorf("the master's slot has failover = %q, want true", f)
	}
	// An existing subscription without it gets it from subscription update.
	for _, stmt := range []string{"DISABLE", "SET (failover = false)", "ENABLE"} {
		pgtest.Exec(t, p.slave.DSN, "ALTER SUBSCRIPTION "+ident(sub)+" "+stmt)
	}
	if f := failover(); f != "false" {
		t.Fatalf("failover = %q after turning it off", f)
	}
	res, err := UpdateSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo())
	if err != nil {
		t.Fatal(err)
	}
	if f := failover(); f != "true" || !strings.Contains(fmt.Sprint(res), "failover on") {
		t.Errorf("after subscription update: failover = %q, results %v", f, res)
	}
}
