package sidecar_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgoutpost/pgoutpost/consumer"
	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/natsembed"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/replication"
	"github.com/pgoutpost/pgoutpost/sidecar"
	"github.com/pgoutpost/pgoutpost/sink"
)

// e2eSchema is created on the master and on the slave: a delete model
// (unit), a denormalize model (outcome), user tables pointing at unit with
// CASCADE (report) and PROTECT (keeper), and a log of unit deletes filled by
// a trigger, which shows that no delete is applied twice; a synced child of
// unit (marker, CASCADE), a system table for bulk loads and a delete model
// that the ordering tests publish late.
const e2eSchema = `
CREATE TABLE unit (id int PRIMARY KEY, name text);
CREATE TABLE outcome (id int PRIMARY KEY, name text);
CREATE TABLE report (id serial PRIMARY KEY, unit_id int NOT NULL REFERENCES unit DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE keeper (id serial PRIMARY KEY, unit_id int NOT NULL REFERENCES unit DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE deleted_log (unit_id int NOT NULL);
CREATE TABLE marker (id int PRIMARY KEY, unit_id int NOT NULL REFERENCES unit DEFERRABLE INITIALLY DEFERRED, note text);
CREATE TABLE bulk (id int PRIMARY KEY, payload text);
CREATE TABLE late (id int PRIMARY KEY, payload text);
CREATE FUNCTION log_unit_delete() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO deleted_log VALUES (OLD.id); RETURN OLD; END$$;
CREATE TRIGGER unit_deleted AFTER DELETE ON unit FOR EACH ROW EXECUTE FUNCTION log_unit_delete();
`

func tn(name string) registry.TableName { return registry.TableName{Schema: "public", Name: name} }

var e2eSpec = registry.Spec{
	Schemas: []string{"public"},
	Models: []registry.ModelSpec{
		{Table: tn("unit"), Kind: registry.KindDelete},
		{Table: tn("outcome"), Kind: registry.KindDenormalize},
		{Table: tn("marker"), Kind: registry.KindDelete},
		{Table: tn("bulk"), Kind: registry.KindSystem},
		{Table: tn("late"), Kind: registry.KindDelete},
	},
	Relations: []registry.RelationSpec{
		{From: tn("marker"), Column: "unit_id", OnDelete: registry.OnDelete{Rule: registry.Cascade}},
		{From: tn("report"), Column: "unit_id", OnDelete: registry.OnDelete{Rule: registry.Cascade}},
		{From: tn("keeper"), Column: "unit_id", OnDelete: registry.OnDelete{Rule: registry.Protect}},
	},
}

// e2e is a master and a slave set up as the admin commands do, and a NATS
// server.
type e2e struct {
	master, slave *pgtest.DB
	mpool, spool  *pgxpool.Pool
	reg           *registry.Registry // the slave's
	nats          *natsembed.Server
	natsURL       string // the sidecar's and consumer's NATS URL(s) when not nats's
	replicas      int    // the stream's replicas (the sink's default when 0)
	env           string
	slot          string
	seedQueues    bool          // also process django-logical-replication's queues
	procDB        *pgxpool.Pool // the processor's pool when not spool (another role)
	runDSN        string        // when set, the whole sidecar (stream, probes, processor) runs as this DSN's role
	largeTxn      int           // the processor's LargeTxn (its default when 0)
}

// url is the NATS URL(s) of the sidecar and the consumer.
func (e *e2e) url() string {
	if e.natsURL != "" {
		return e.natsURL
	}
	return e.nats.URL()
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func loadRegistry(t testing.TB, ctx context.Context, pool *pgxpool.Pool) *registry.Registry {
	t.Helper()
	reg, err := registry.Load(ctx, pool, e2eSpec)
	if err != nil {
		t.Fatal(err)
	}
	if err := registry.Validate(reg).Err(); err != nil {
		t.Fatal(err)
	}
	return reg
}

// newDatabases creates a master and a slave database with schema, nothing
// replicated yet.
func newDatabases(t testing.TB, schema string) *e2e {
	t.Helper()
	// The master's database first, so that it is dropped after the slave's
	// subscriptions.
	e := &e2e{master: pgtest.NewDB(t, pgtest.Master(t))}
	e.slave = pgtest.NewDB(t, pgtest.Slave(t))
	e.env = strings.ReplaceAll(e.slave.Name, "_", "-")
	e.slot = e.slave.Name // slots are per cluster; the database name is unique
	pgtest.Exec(t, e.master.DSN, schema)
	pgtest.Exec(t, e.slave.DSN, schema)
	e.mpool, e.spool = pgtest.Pool(t, e.master.DSN), pgtest.Pool(t, e.slave.DSN)
	return e
}

func newE2E(t testing.TB) *e2e {
	t.Helper()
	ctx := testCtx(t, 3*time.Minute)
	e := newDatabases(t, e2eSchema)
	mreg := loadRegistry(t, ctx, e.mpool)
	if _, err := queue.Install(ctx, e.mpool, queue.InstallOptions{Role: registry.RoleMaster, Registry: mreg}, false); err != nil {
		t.Fatalf("queue install on the master: %v", err)
	}
	if _, err := queue.Install(ctx, e.spool, queue.InstallOptions{Role: registry.RoleSlave}, false); err != nil {
		t.Fatalf("queue install on the slave: %v", err)
	}
	names, err := replication.NewNames("pgoutpost", "", e.slave.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replication.CreatePublications(ctx, e.mpool, names); err != nil {
		t.Fatal(err)
	}
	plan, err := replication.PlanPublications(ctx, e.mpool, mreg, names)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Apply(ctx, e.mpool); err != nil {
		t.Fatal(err)
	}
	if _, err := replication.CreateSubscriptions(ctx, e.spool, names, e.master.ConnInfo()); err != nil {
		t.Fatal(err)
	}
	if err := replication.WaitReady(ctx, e.spool, names, io.Discard, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	e.reg = loadRegistry(t, ctx, e.spool)
	e.nats = pgtest.NATS(t)
	return e
}

// crashSink is the NATS sink with a crash hook: when armed, a publish that
// was acked is reported as failed and the sidecar is stopped, as if the
// process died between the ack and the dequeue.
type crashSink struct {
	*sink.NATS
	armed atomic.Bool
	crash func()
}

func (c *crashSink) Publish(ctx context.Context, msgs []sink.Message) (int, error) {
	n, err := c.NATS.Publish(ctx, msgs)
	if n > 0 && c.armed.Load() {
		c.crash()
		return 0, errors.New("simulated crash between the publish ack and the dequeue")
	}
	return n, err
}

// running is a started sidecar.
type running struct {
	sc   *sidecar.Sidecar
	snk  *crashSink
	http *httptest.Server
	done chan struct{} // closed when Run returned
	err  error         // what Run returned
	stop context.CancelFunc
}

// wait stops the sidecar and returns Run's error.
func (r *running) wait(t testing.TB) error {
	t.Helper()
	r.stop()
	select {
	case <-r.done:
		r.http.Close()
		_ = r.snk.Close()
		return r.err
	case <-time.After(time.Minute):
		t.Fatal("the sidecar did not stop within a minute")
		return nil
	}
}

// start starts a sidecar, which owner (the test or an enclosing test) stops
// at its end.
func (e *e2e) start(t, owner testing.TB, tune func(*sidecar.Options)) *running {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	promReg := prometheus.NewRegistry()
	metrics, err := sidecar.NewMetrics(promReg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := sink.Connect(ctx, sink.Options{
		URL: e.url(), Env: e.env, CreateStream: true, Replicas: e.replicas,
		AckTimeout: time.Second, RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond,
		ReconnectWait: 100 * time.Millisecond,
		Logger:        testLogger(t),
		ObserveAck:    metrics.ObserveAck,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	snk := &crashSink{NATS: n, crash: stop}
	db, replDSN := sidecarPool(owner, e.slave.DSN), e.slave.DSN
	procDB := db
	if e.procDB != nil {
		procDB = e.procDB
	}
	if e.runDSN != "" {
		db, replDSN = sidecarPool(owner, e.runDSN), e.runDSN
		procDB = db
	}
	proc := queue.NewProcessor(procDB, e.reg, nil, snk, queue.ProcessorOptions{
		Env: e.env, SystemID: "e2e", BatchSize: 100, Logger: testLogger(t), Observer: metrics, SeedQueues: e.seedQueues,
		LargeTxn: e.largeTxn,
	})
	opts := sidecar.Options{
		DB: db, ReplicationDSN: replDSN, Processor: proc, Sink: snk,
		Metrics: metrics, Gatherer: promReg, Logger: testLogger(t),
		Slot: e.slot, ShutdownGrace: 10 * time.Second, Heartbeat: time.Second, BatchSize: 100,
		ProbeInterval: 100 * time.Millisecond, StatusInterval: 200 * time.Millisecond, FlushDelay: 20 * time.Millisecond,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond,
		SeedQueues: e.seedQueues,
	}
	if tune != nil {
		tune(&opts)
	}
	sc, err := sidecar.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	r := &running{sc: sc, snk: snk, http: httptest.NewServer(sc.Handler()), done: make(chan struct{}), stop: stop}
	go func() {
		r.err = sc.Run(runCtx)
		close(r.done)
	}()
	owner.Cleanup(func() {
		stop()
		<-r.done
		r.http.Close()
		_ = snk.Close()
	})
	return r
}

// get fetches path from the sidecar's handler.
func (r *running) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(r.http.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// events is what a consumer application received.
type events struct {
	mu  sync.Mutex
	all []event.Event
}

func (ev *events) handle(_ context.Context, e event.Event) error {
	ev.mu.Lock()
	ev.all = append(ev.all, e)
	ev.mu.Unlock()
	return nil
}

// of returns the events of outcome id, in arrival order.
func (ev *events) of(id int) []event.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	var out []event.Event
	for _, e := range ev.all {
		var pk struct{ ID int }
		if e.DecodePK(&pk) == nil && pk.ID == id {
			out = append(out, e)
		}
	}
	return out
}

// duplicates returns the queue ids received more than once.
func (ev *events) duplicates() []string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	seen := map[string]int{}
	var dup []string
	for _, e := range ev.all {
		seen[e.QueueID]++
		if seen[e.QueueID] == 2 {
			dup = append(dup, e.QueueID)
		}
	}
	return dup
}

// distinct returns the number of queue ids received.
func (ev *events) distinct() int {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	seen := make(map[string]bool, len(ev.all))
	for _, e := range ev.all {
		seen[e.QueueID] = true
	}
	return len(seen)
}

func (ev *events) count() int {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return len(ev.all)
}

// consume runs a durable consumer of the environment's events on its own
// connection until the test ends.
func (e *e2e) consume(t testing.TB) (*events, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(e.url(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ev := &events{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- consumer.Run(ctx, js, consumer.Options{Env: e.env, Durable: "e2e", Logger: testLogger(t)}, ev.handle)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})
	return ev, js
}

func queryInt(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n int64
	if err := pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func exec(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pool.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// synced waits until the slave's row count of sql equals want.
func synced(t testing.TB, pool *pgxpool.Pool, want int64, sql string, args ...any) {
	t.Helper()
	pgtest.Eventually(t, sql, func() bool { return queryInt(t, pool, sql, args...) == want })
}

func names(evs []event.Event) []string {
	var out []string
	for _, e := range evs {
		var row struct{ Name string }
		s := string(e.Op)
		if e.DecodeRow(&row) == nil {
			s += ":" + row.Name
		}
		out = append(out, s)
	}
	return out
}

func streamMsgs(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, sink.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestSidecarEndToEnd(t *testing.T) {
	e := newE2E(t)
	top := t
	sc := e.start(t, t, nil)
	ev, js := e.consume(t)
	// later inserts outcome id on the master and waits for its event. The
	// sidecar handles the slave's transactions in order, so once the event
	// is in, whatever the earlier changes would still make (an event too
	// many, a duplicate, a delete applied twice) is in too.
	later := func(t *testing.T, id int) {
		t.Helper()
		exec(t, e.mpool, "INSERT INTO outcome VALUES ($1, 'later')", id)
		pgtest.Eventually(t, "the event of a later change", func() bool { return len(ev.of(id)) == 1 })
	}

	exec(t, e.mpool, "INSERT INTO unit SELECT g, 'u' || g FROM generate_series(1, 6) g")
	synced(t, e.spool, 6, "SELECT count(*) FROM unit")
	exec(t, e.spool, "INSERT INTO report (unit_id) VALUES (1), (1), (1), (3)")
	exec(t, e.spool, "INSERT INTO keeper (unit_id) VALUES (2)")

	t.Run("a master delete cascades on the slave", func(t *testing.T) {
		exec(t, e.mpool, "DELETE FROM unit WHERE id = 1")
		synced(t, e.spool, 0, "SELECT count(*) FROM unit WHERE id = 1")
		if n := queryInt(t, e.spool, "SELECT count(*) FROM report WHERE unit_id = 1"); n != 0 {
			t.Errorf("%d reports of unit 1 left", n)
		}
		if n := queryInt(t, e.spool, "SELECT count(*) FROM deleted_log WHERE unit_id = 1"); n != 1 {
			t.Errorf("unit 1 deleted %d times", n)
		}
	})

	t.Run("protect conflict goes to dead_letter and later entries apply", func(t *testing.T) {
		exec(t, e.mpool, "DELETE FROM unit WHERE id = 2")
		exec(t, e.mpool, "DELETE FROM unit WHERE id = 3")
		synced(t, e.spool, 0, "SELECT count(*) FROM unit WHERE id = 3")
		synced(t, e.spool, 1, "SELECT count(*) FROM pgoutpost.dead_letter")
		var reason string
		if err := e.spool.QueryRow(testCtx(t, 10*time.Second), "SELECT error FROM pgoutpost.dead_letter").Scan(&reason); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(reason, "keeper") {
			t.Errorf("dead letter reason %q does not name the protecting table", reason)
		}
		if n := queryInt(t, e.spool, "SELECT count(*) FROM unit WHERE id = 2"); n != 1 {
			t.Errorf("protected unit 2: %d rows", n)
		}
		if n := queryInt(t, e.spool, "SELECT count(*) FROM report WHERE unit_id = 3"); n != 0 {
			t.Errorf("%d reports of unit 3 left", n)
		}
	})

	t.Run("insert update and delete each make one event", func(t *testing.T) {
		exec(t, e.mpool, "INSERT INTO outcome VALUES (1, 'a')")
		exec(t, e.mpool, "UPDATE outcome SET name = 'b' WHERE id = 1")
		exec(t, e.mpool, "DELETE FROM outcome WHERE id = 1")
		pgtest.Eventually(t, "three events of outcome 1", func() bool { return len(ev.of(1)) >= 3 })
		later(t, 3) // a fourth would be in by then
		got := ev.of(1)
		var ops []event.Op
		for _, x := range got {
			ops = append(ops, x.Op)
			if x.Table != "public.outcome" || x.Env != e.env || x.CommittedAt.IsZero() || x.QueueID == "" {
				t.Errorf("event %+v", x)
			}
		}
		if want := []event.Op{event.OpInsert, event.OpUpdate, event.OpDelete}; !slices.Equal(ops, want) {
			t.Errorf("ops %v, want %v", ops, want)
		}
		if got[2].HasRow() {
			t.Errorf("delete event has a row: %s", got[2].Row)
		}
	})

	t.Run("ten updates of one row arrive in commit order", func(t *testing.T) {
		exec(t, e.mpool, "INSERT INTO outcome VALUES (2, 'v0')")
		for i := 1; i <= 10; i++ {
			exec(t, e.mpool, "UPDATE outcome SET name = 'v' || $1::int WHERE id = 2", i)
		}
		pgtest.Eventually(t, "eleven events of outcome 2", func() bool { return len(ev.of(2)) >= 11 })
		got := ev.of(2)
		if len(got) != 11 {
			t.Fatalf("%d events: %v", len(got), names(got))
		}
		for i := 1; i < len(got); i++ {
			if got[i].QueueID <= got[i-1].QueueID || got[i].CommittedAt.Before(got[i-1].CommittedAt) {
				t.Errorf("event %d (%s, %s) before event %d (%s, %s)", i, got[i].QueueID, got[i].CommittedAt, i-1, got[i-1].QueueID, got[i-1].CommittedAt)
			}
		}
		if got[0].Op != event.OpInsert || got[10].Op != event.OpUpdate {
			t.Errorf("ops %v", names(got))
		}
	})

	t.Run("stopped and restarted applies nothing twice and loses nothing", func(t *testing.T) {
		if err := sc.wait(t); err != nil {
			t.Fatalf("stop: %v", err)
		}
		exec(t, e.mpool, "DELETE FROM unit WHERE id = 4")
		exec(t, e.mpool, "UPDATE outcome SET name = 'while stopped' WHERE id = 2")
		// Arrived on the slave, not applied.
		synced(t, e.spool, 1, "SELECT count(*) FROM pgoutpost.delete_queue")
		sc = e.start(t, top, nil)
		synced(t, e.spool, 0, "SELECT count(*) FROM unit WHERE id = 4")
		pgtest.Eventually(t, "the event made while stopped", func() bool { return len(ev.of(2)) >= 12 })
		synced(t, e.spool, 0, "SELECT count(*) FROM pgoutpost.denormalize_queue")
		later(t, 4)
		if n := queryInt(t, e.spool, "SELECT count(*) FROM (SELECT unit_id FROM deleted_log GROUP BY unit_id HAVING count(*) > 1) d"); n != 0 {
			t.Errorf("%d units were deleted more than once", n)
		}
		if d := ev.duplicates(); len(d) > 0 {
			t.Errorf("events received twice: %v", d)
		}
		if got := ev.of(2); len(got) != 12 {
			t.Errorf("%d events of outcome 2: %v", len(got), names(got))
		}
	})

	t.Run("killed between publish ack and dequeue the consumer sees each event once", func(t *testing.T) {
		if err := sc.wait(t); err != nil {
			t.Fatalf("stop: %v", err)
		}
		before := ev.count()
		crashing := e.start(t, top, nil)
		crashing.snk.armed.Store(true)
		exec(t, e.mpool, "UPDATE outcome SET name = 'crash' WHERE id = 2")
		select {
		case <-crashing.done:
		case <-time.After(time.Minute):
			t.Fatal("the crash hook did not stop the sidecar")
		}
		if n := queryInt(t, e.spool, "SELECT count(*) FROM pgoutpost.denormalize_queue"); n != 1 {
			t.Fatalf("%d entries queued after the crash, want the published one", n)
		}
		pgtest.Eventually(t, "the published event", func() bool { return ev.count() == before+1 })
		sc = e.start(t, top, nil)
		synced(t, e.spool, 0, "SELECT count(*) FROM pgoutpost.denormalize_queue")
		// A later change: the stream is ordered, so once its event is in,
		// a duplicate of the earlier one would be too.
		exec(t, e.mpool, "UPDATE outcome SET name = 'after the crash' WHERE id = 2")
		pgtest.Eventually(t, "the later change's event", func() bool {
			got := ev.of(2)
			var row struct{ Name string }
			return len(got) > 0 && got[len(got)-1].DecodeRow(&row) == nil && row.Name == "after the crash"
		})
		if d := ev.duplicates(); len(d) > 0 {
			t.Errorf("events received twice: %v", d)
		}
		if n, m := ev.count(), streamMsgs(t, js); uint64(n) != m {
			t.Errorf("consumer received %d events, the stream holds %d", n, m)
		}
	})

	t.Run("nats outage: nothing lost, not ready, flush held back", func(t *testing.T) {
		exec(t, e.spool, "CREATE EXTENSION IF NOT EXISTS pg_walinspect")
		before := len(ev.of(2))
		e.nats.Stop()
		restarted := false
		t.Cleanup(func() {
			if !restarted {
				_ = e.nats.Restart()
			}
		})
		exec(t, e.mpool, "UPDATE outcome SET name = 'outage' WHERE id = 2")
		synced(t, e.spool, 1, "SELECT count(*) FROM pgoutpost.denormalize_queue")
		xid := queryInt(t, e.spool, "SELECT xmin::text::bigint FROM pgoutpost.denormalize_queue")
		// The end of the slave transaction that queued the entry: the flush
		// position must stay before it while the event cannot be published.
		// The clusters commit without waiting for the WAL flush, which
		// pg_walinspect needs: a synchronous commit of our own flushes it.
		var end string
		pgtest.Eventually(t, "the commit record in the WAL", func() bool {
			exec(t, e.spool, "BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_catalog.txid_current(); COMMIT")
			end = queryText(t, e.spool, `SELECT coalesce(max(w.end_lsn)::text, '')
				FROM pg_replication_slots s, pg_get_wal_records_info(s.restart_lsn, pg_current_wal_flush_lsn()) w
				WHERE s.slot_name = $1 AND w.resource_manager = 'Transaction' AND w.record_type = 'COMMIT' AND w.xid::text::bigint = $2`, e.slot, xid)
			return end != ""
		})
		pgtest.Eventually(t, "readyz to report NATS", func() bool {
			code, body := sc.get(t, "/readyz")
			return code == http.StatusServiceUnavailable && strings.Contains(body, "nats")
		})
		// Held back: the sidecar reports to its slot, twice, that it
		// received the transaction, and acknowledges no more than before it.
		const replied = `SELECT coalesce(max(r.reply_time)::text, '') FROM pg_stat_replication r
			JOIN pg_replication_slots s ON s.active_pid = r.pid
			WHERE s.slot_name = $1 AND r.write_lsn >= $2::pg_lsn AND r.reply_time > $3::timestamptz`
		first := "-infinity"
		for _, what := range []string{"the sidecar to report the transaction received", "the sidecar's next report"} {
			pgtest.Eventually(t, what, func() bool {
				at := queryText(t, e.spool, replied, e.slot, end, first)
				if at == "" {
					return false
				}
				first = at
				return true
			})
		}
		if queryInt(t, e.spool, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn >= $2::pg_lsn", e.slot, end) != 0 {
			t.Fatalf("the slot's confirmed_flush_lsn passed %s, the end of the unpublished transaction", end)
		}
		if err := e.nats.Restart(); err != nil {
			t.Fatal(err)
		}
		restarted = true
		synced(t, e.spool, 0, "SELECT count(*) FROM pgoutpost.denormalize_queue")
		pgtest.Eventually(t, "the event made during the outage", func() bool { return len(ev.of(2)) == before+1 })
		pgtest.Eventually(t, "the flush position past the transaction", func() bool {
			return queryInt(t, e.spool, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn >= $2::pg_lsn", e.slot, end) == 1
		})
		pgtest.Eventually(t, "readyz 200", func() bool {
			code, _ := sc.get(t, "/readyz")
			return code == http.StatusOK
		})
		if d := ev.duplicates(); len(d) > 0 {
			t.Errorf("events received twice: %v", d)
		}
	})

	t.Run("a transaction the slave streams in blocks", func(t *testing.T) {
		// Over logical_decoding_work_mem (64kB in these tests), the slave's
		// decoding streams the applied transaction, with its Origin in
		// every block.
		exec(t, e.mpool, "INSERT INTO outcome SELECT g, repeat('x', 100) FROM generate_series(100, 2099) g")
		pgtest.Eventually(t, "2000 insert events", func() bool {
			n := 0
			for id := 100; id < 2100; id += 100 {
				n += len(ev.of(id))
			}
			return n == 20 && ev.count() >= 2000
		})
		synced(t, e.spool, 0, "SELECT count(*) FROM pgoutpost.denormalize_queue")
		if d := ev.duplicates(); len(d) > 0 {
			t.Errorf("%d events received twice", len(d))
		}
	})

	t.Run("metrics show every metric", func(t *testing.T) {
		// Deletes for this sidecar's counters: one applied with a cascade,
		// one protected.
		exec(t, e.mpool, "INSERT INTO unit VALUES (7, 'u7')")
		synced(t, e.spool, 1, "SELECT count(*) FROM unit WHERE id = 7")
		exec(t, e.spool, "INSERT INTO report (unit_id) VALUES (5)")
		exec(t, e.spool, "INSERT INTO keeper (unit_id) VALUES (7)")
		exec(t, e.mpool, "DELETE FROM unit WHERE id IN (5, 7)")
		synced(t, e.spool, 2, "SELECT count(*) FROM pgoutpost.dead_letter")
		synced(t, e.spool, 0, "SELECT count(*) FROM unit WHERE id = 5")
		// The gauges as of a probe after the workload.
		var code int
		var body string
		pgtest.Eventually(t, "a probe to see the dead letters and no pending entry", func() bool {
			code, body = sc.get(t, "/metrics")
			return strings.Contains(body, "pgoutpost_queue_dead_letters{queue=\"delete\"} 2") &&
				strings.Contains(body, "pgoutpost_queue_pending_entries{queue=\"delete\"} 0")
		})
		if code != http.StatusOK {
			t.Fatalf("/metrics: %d", code)
		}
		for _, m := range []string{
			"pgoutpost_stream_messages_total{type=\"Insert\"}",
			"pgoutpost_queue_entries_total{queue=\"delete\",result=\"applied\",table=\"public.unit\"}",
			"pgoutpost_queue_entries_total{queue=\"delete\",result=\"dead\",table=\"public.unit\"}",
			"pgoutpost_queue_entries_total{queue=\"denormalize\",result=\"published\",table=\"public.outcome\"}",
			"pgoutpost_queue_pending_entries{queue=\"delete\"} 0",
			"pgoutpost_queue_dead_letters{queue=\"delete\"} 2",
			"pgoutpost_queue_commit_to_done_seconds_bucket",
			"pgoutpost_cascade_rows_total{action=\"deleted\",table=\"public.report\"}",
			"pgoutpost_slot_lag_bytes",
			"pgoutpost_slot_safe_wal_size_bytes",
			"pgoutpost_slot_wal_status{status=\"reserved\"} 1",
			"pgoutpost_stream_flush_lsn",
			"pgoutpost_nats_publish_seconds_bucket",
			"pgoutpost_nats_outstanding_acks",
			"pgoutpost_nats_connected 1",
			"pgoutpost_reconnects_total{target=\"nats\"}",
			"pgoutpost_reconnects_total{target=\"postgres\"}",
			"pgoutpost_ready 1",
		} {
			if !strings.Contains(body, m) {
				t.Errorf("/metrics lacks %s", m)
			}
		}
		if code, body := sc.get(t, "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz: %d %s", code, body)
		}
	})
}

func queryText(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s string
	if err := pool.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// testLogger discards the sidecar's logs unless PGOUTPOST_TEST_LOG is set
// (then they go to stderr): goroutines may still log after a test ends.
func testLogger(testing.TB) *slog.Logger {
	if os.Getenv("PGOUTPOST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// TestSidecarRecreatesInvalidatedSlot invalidates the sidecar's slot while
// it is stopped (the slave removes WAL the slot needs) and checks that the
// sidecar recreates the slot and applies the entry waiting in the queue
// table, then follows the new slot.
func TestSidecarRecreatesInvalidatedSlot(t *testing.T) {
	e := newE2E(t)
	exec(t, e.mpool, "INSERT INTO unit SELECT g, 'u' || g FROM generate_series(1, 3) g")
	synced(t, e.spool, 3, "SELECT count(*) FROM unit")
	r := e.start(t, t, nil)
	exec(t, e.mpool, "DELETE FROM unit WHERE id = 1")
	synced(t, e.spool, 0, "SELECT count(*) FROM unit WHERE id = 1")
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}

	// The setting is cluster-wide: reset it at the end.
	exec(t, e.spool, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
	exec(t, e.spool, "SELECT pg_reload_conf()")
	t.Cleanup(func() {
		exec(t, e.spool, "ALTER SYSTEM RESET max_slot_wal_keep_size")
		exec(t, e.spool, "SELECT pg_reload_conf()")
	})
	exec(t, e.mpool, "DELETE FROM unit WHERE id = 2")
	synced(t, e.spool, 1, "SELECT count(*) FROM pgoutpost.delete_queue")
	exec(t, e.spool, "CREATE TABLE filler (n int)")
	for i := 0; ; i++ {
		if queryText(t, e.spool, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1", e.slot) == "lost" {
			break
		}
		if i == 20 {
			t.Fatal("the slot was not invalidated")
		}
		exec(t, e.spool, "INSERT INTO filler SELECT generate_series(1, 20000)")
		exec(t, e.spool, "SELECT pg_switch_wal()")
		exec(t, e.spool, "CHECKPOINT")
	}

	e.start(t, t, nil)
	synced(t, e.spool, 0, "SELECT count(*) FROM unit WHERE id = 2")
	synced(t, e.spool, 1, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND wal_status <> 'lost'", e.slot)
	exec(t, e.mpool, "DELETE FROM unit WHERE id = 3")
	synced(t, e.spool, 0, "SELECT count(*) FROM unit WHERE id = 3")
	if n := queryInt(t, e.spool, "SELECT count(*) FROM (SELECT unit_id FROM deleted_log GROUP BY unit_id HAVING count(*) > 1) d"); n != 0 {
		t.Errorf("%d units were deleted more than once", n)
	}
}

// sidecarPool is a pool to dsn configured as pgoutpost run configures the
// sidecar's (queue.ConfigurePool).
func sidecarPool(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	queue.ConfigurePool(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}
