package sidecar

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgoutpost/pgoutpost/decoder"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	// Small enough that a few thousand rows make PostgreSQL stream a transaction.
	pgtest.ClusterSettings["logical_decoding_work_mem"] = "64kB"
	pgtest.Main(m)
}

// fixture is a test database with a published table "items" and a slot name.
type fixture struct {
	db   *pgtest.DB
	slot string
}

const itemsDDL = `
CREATE TABLE items (id bigint PRIMARY KEY, batch int NOT NULL, payload text NOT NULL);
CREATE TABLE unpublished (id bigserial PRIMARY KEY, payload text);
CREATE PUBLICATION items_pub FOR TABLE items;`

func newFixture(t testing.TB) *fixture {
	t.Helper()
	db := pgtest.NewDB(t, pgtest.Master(t))
	pgtest.Exec(t, db.DSN, itemsDDL)
	// Slot names are per cluster; the database name is unique and a valid one.
	return &fixture{db: db, slot: db.Name}
}

func (f *fixture) config(c Consumer) StreamConfig {
	return StreamConfig{
		DSN:               f.db.DSN,
		Slot:              f.slot,
		Publications:      []string{"items_pub"},
		Consumer:          c,
		StatusInterval:    200 * time.Millisecond,
		FlushDelay:        20 * time.Millisecond,
		HeartbeatInterval: -1,
		ReconnectMin:      50 * time.Millisecond,
		ReconnectMax:      500 * time.Millisecond,
	}
}

// createSlot creates the slot before the stream starts, so that nothing
// committed from now on is missed.
func (f *fixture) createSlot(t testing.TB) {
	t.Helper()
	pgtest.Exec(t, f.db.DSN, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", f.slot)
}

// confirmed returns the slot's confirmed_flush_lsn.
func (f *fixture) confirmed(t testing.TB) decoder.LSN {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", f.slot).Scan(&s); err != nil {
		t.Fatalf("read slot %s: %v", f.slot, err)
	}
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return decoder.LSN(l)
}

// waitInactive waits until no walsender holds the slot.
func (f *fixture) waitInactive(t testing.TB) {
	t.Helper()
	conn := connect(t, f.db.DSN)
	pgtest.Eventually(t, "slot "+f.slot+" to be released", func() bool {
		var active bool
		if err := conn.QueryRow(context.Background(), "SELECT active FROM pg_replication_slots WHERE slot_name = $1", f.slot).Scan(&active); err != nil {
			t.Fatal(err)
		}
		return !active
	})
}

// run starts s and stops it at the end of the test; stop stops it earlier and
// returns Run's error.
func run(t testing.TB, s *Stream) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
			if errors.Is(err, context.Canceled) {
				err = nil
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stream: %v", err)
		}
	})
	return stop
}

// waitFor polls cond until it holds or a minute passes.
// delivered is what a test consumer saw of one transaction.
type delivered struct {
	Xid               uint32
	CommitLSN, EndLSN decoder.LSN
	Streamed, Spilled bool
	IDs               []int64
	Batches           []int // distinct batch numbers, in order
	Messages          int
}

// decodeTx decodes tx's inserts into items.
func decodeTx(d *decoder.Decoder, tx *Tx) (delivered, error) {
	out := delivered{Xid: tx.Xid, CommitLSN: tx.CommitLSN, EndLSN: tx.EndLSN, Streamed: tx.Streamed, Spilled: tx.Spilled()}
	for data, err := range tx.Messages() {
		if err != nil {
			return out, err
		}
		out.Messages++
		m, err := d.Decode(data)
		if err != nil {
			return out, err
		}
		ins, ok := m.(*decoder.Insert)
		if !ok || ins.Relation.Name != "items" {
			continue
		}
		id, err := strconv.ParseInt(string(ins.New.Columns[0].Data), 10, 64)
		if err != nil {
			return out, err
		}
		batch, err := strconv.Atoi(string(ins.New.Columns[1].Data))
		if err != nil {
			return out, err
		}
		out.IDs = append(out.IDs, id)
		if n := len(out.Batches); n == 0 || out.Batches[n-1] != batch {
			out.Batches = append(out.Batches, batch)
		}
	}
	return out, nil
}

// recorder is a consumer that decodes, records and acknowledges at once.
type recorder struct {
	mu  sync.Mutex
	dec *decoder.Decoder
	txs []delivered
	s   *Stream
}

func (r *recorder) consume(_ context.Context, tx *Tx) error {
	d, err := decodeTx(r.dec, tx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.txs = append(r.txs, d)
	r.mu.Unlock()
	r.s.Ack(tx.EndLSN)
	return nil
}

func (r *recorder) snapshot() []delivered {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivered(nil), r.txs...)
}

func (r *recorder) has(id int64) bool {
	for _, tx := range r.snapshot() {
		for _, x := range tx.IDs {
			if x == id {
				return true
			}
		}
	}
	return false
}

func newRecorder(t testing.TB, cfg StreamConfig) (*recorder, *Stream) {
	t.Helper()
	r := &recorder{dec: decoder.NewDecoder()}
	cfg.Consumer = r.consume
	s, err := NewStream(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	return r, s
}

// execTx runs statements in one transaction and returns its xid.
func execTx(t testing.TB, conn *pgx.Conn, stmts ...string) uint32 {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var xid int64
	if err := tx.QueryRow(ctx, "SELECT txid_current()").Scan(&xid); err != nil {
		t.Fatal(err)
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return uint32(xid)
}

func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// ins returns an INSERT of ids [from, to] of batch into items, ~150-byte rows.
func ins(batch int, from, to int64) string {
	return fmt.Sprintf("INSERT INTO items SELECT g, %d, repeat(md5(g::text), 4) FROM generate_series(%d, %d) g", batch, from, to)
}

func ids(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func equalIDs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStreamDelivers(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(nil)
	cfg.SpillThreshold = 4096
	cfg.SpillDir = t.TempDir()
	f.createSlot(t)
	rec, s := newRecorder(t, cfg)
	run(t, s)
	pgtest.Eventually(t, "the stream to start", func() bool { return s.Stats().SentFlush != 0 })

	conn := connect(t, f.db.DSN)
	type want struct {
		xid      uint32
		ids      []int64
		streamed bool
	}
	var wants []want
	for b := 1; b <= 5; b++ {
		from := int64(b * 10)
		xid := execTx(t, conn, ins(b, from, from+2), ins(b, from+3, from+3))
		wants = append(wants, want{xid: xid, ids: ids(from, from+3)})
	}
	// Big enough to be streamed: rows before, inside a committed and inside a
	// rolled-back savepoint, and after.
	xid := execTx(t, conn,
		ins(6, 1000, 2999),
		"SAVEPOINT keep", ins(6, 3000, 3999), "RELEASE SAVEPOINT keep",
		"SAVEPOINT drop", ins(6, 4000, 6999), "ROLLBACK TO SAVEPOINT drop",
		ins(6, 7000, 7999))
	wants = append(wants, want{xid: xid, ids: append(append(ids(1000, 2999), ids(3000, 3999)...), ids(7000, 7999)...), streamed: true})
	// A streamed transaction that aborts is never delivered. It rolls back
	// only once the stream has received part of it: PostgreSQL 18 no longer
	// streams a transaction already known to have aborted.
	pgtest.Eventually(t, "the streamed transaction", func() bool { return rec.has(7999) })
	m0 := s.Stats().Messages
	abort, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := abort.Exec(context.Background(), ins(7, 10000, 14999)); err != nil {
		t.Fatal(err)
	}
	pgtest.Eventually(t, "part of the open transaction to be streamed", func() bool { return s.Stats().Messages > m0+1000 })
	if err := abort.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	xid = execTx(t, conn, ins(8, 20000, 20000))
	wants = append(wants, want{xid: xid, ids: []int64{20000}})
	var walNow string
	if err := conn.QueryRow(context.Background(), "SELECT pg_current_wal_insert_lsn()::text").Scan(&walNow); err != nil {
		t.Fatal(err)
	}
	wal, _ := pglogrepl.ParseLSN(walNow)

	pgtest.Eventually(t, "the last transaction", func() bool { return rec.has(20000) })
	got := rec.snapshot()
	if len(got) != len(wants) {
		t.Fatalf("delivered %d transactions, want %d: %+v", len(got), len(wants), got)
	}
	var prevEnd decoder.LSN
	for i, w := range wants {
		g := got[i]
		if g.Xid != w.xid {
			t.Errorf("tx %d: xid %d, want %d (commit order)", i, g.Xid, w.xid)
		}
		if !equalIDs(g.IDs, w.ids) {
			t.Errorf("tx %d (xid %d): %d ids %v…, want %d %v…", i, g.Xid, len(g.IDs), head(g.IDs), len(w.ids), head(w.ids))
		}
		if g.Streamed != w.streamed {
			t.Errorf("tx %d: streamed %v, want %v", i, g.Streamed, w.streamed)
		}
		if w.streamed && !g.Spilled {
			t.Errorf("tx %d: not spilled past a 4 kB threshold", i)
		}
		if !(prevEnd <= g.CommitLSN && g.CommitLSN < g.EndLSN && g.EndLSN <= decoder.LSN(wal)) {
			t.Errorf("tx %d: commit %s end %s, previous end %s, WAL now %s", i, g.CommitLSN, g.EndLSN, prevEnd, walNow)
		}
		prevEnd = g.EndLSN
	}
	// Everything was acknowledged: the slot reaches the last end LSN.
	pgtest.Eventually(t, "the slot to confirm the last transaction", func() bool { return f.confirmed(t) >= prevEnd })
	if st := s.Stats(); st.Spilled == 0 || st.Transactions != uint64(len(wants)) || st.Aborts != 1 || st.SubAborts == 0 {
		t.Errorf("stats %+v", st)
	}
	if left, _ := os.ReadDir(cfg.SpillDir); len(left) != 0 {
		t.Errorf("spill files left behind: %d", len(left))
	}
}

func head(x []int64) []int64 {
	if len(x) > 5 {
		return x[:5]
	}
	return x
}

func TestStreamIdleFlushOnlyWhenNothingInFlight(t *testing.T) {
	f := newFixture(t)
	f.createSlot(t)
	got := make(chan delivered, 10)
	dec := decoder.NewDecoder()
	cfg := f.config(func(_ context.Context, tx *Tx) error {
		d, err := decodeTx(dec, tx)
		got <- d // held: not acknowledged
		return err
	})
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.StatusInterval = 100 * time.Millisecond
	// A DSN that already asks for replication works too (the heartbeat and
	// the slot check use normal connections).
	cfg.DSN += "&replication=database"
	s, err := NewStream(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	pgtest.Eventually(t, "the stream to start", func() bool { return s.Stats().SentFlush != 0 })

	l0 := f.confirmed(t)
	pgtest.Eventually(t, "the slot to advance with no traffic", func() bool { return f.confirmed(t) > l0 })

	conn := connect(t, f.db.DSN)
	execTx(t, conn, ins(1, 1, 1))
	d := <-got
	// WAL moves on (heartbeats, writes to an unpublished table) while the
	// transaction is in flight: the slot must stay at or before its commit.
	h := s.Stats().Heartbeats
	for i := 0; i < 5; i++ {
		execTx(t, conn, "INSERT INTO unpublished (payload) VALUES ('x')")
	}
	pgtest.Eventually(t, "keepalives and heartbeats past the held transaction", func() bool {
		st := s.Stats()
		return st.Heartbeats >= h+5 && st.Write > d.EndLSN && st.SentFlush == st.Flush
	})
	if c := f.confirmed(t); c > d.CommitLSN {
		t.Fatalf("slot confirmed %s past unacknowledged transaction committed at %s", c, d.CommitLSN)
	}
	if st := s.Stats(); st.Flush > d.CommitLSN {
		t.Fatalf("stream flush %s past unacknowledged transaction committed at %s", st.Flush, d.CommitLSN)
	}
	s.Ack(d.EndLSN)
	pgtest.Eventually(t, "the slot to confirm the acknowledged transaction", func() bool { return f.confirmed(t) >= d.EndLSN })
	pgtest.Eventually(t, "the slot to move past it once idle", func() bool { return f.confirmed(t) > d.EndLSN })
}

func TestStreamReconnectsAfterTerminate(t *testing.T) {
	f := newFixture(t)
	f.createSlot(t)
	rec, s := newRecorder(t, f.config(nil))
	run(t, s)
	pgtest.Eventually(t, "the stream to start", func() bool { return s.Stats().SentFlush != 0 })

	const batches = 80
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	produced := produce(ctx, f.db.DSN, batches)
	conn := connect(t, f.db.DSN)
	for i := 0; i < 3; i++ {
		var n int
		pgtest.Eventually(t, "a walsender to terminate", func() bool {
			err := conn.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(active_pid))
				FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, f.slot).Scan(&n)
			if err != nil {
				t.Fatal(err)
			}
			return n > 0
		})
		time.Sleep(time.Duration(100+rand.IntN(200)) * time.Millisecond) // kills at random points of the workload
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	seen := func() map[int]bool {
		m := map[int]bool{}
		for _, d := range rec.snapshot() {
			for _, b := range d.Batches {
				m[b] = true
			}
		}
		return m
	}
	pgtest.Eventually(t, "every batch", func() bool { return len(seen()) == batches })
	maxSeen := 0
	for _, d := range rec.snapshot() {
		b := d.Batches[0]
		if b > maxSeen+1 {
			t.Fatalf("batch %d delivered after %d: gap", b, maxSeen)
		}
		maxSeen = max(maxSeen, b)
	}
	if st := s.Stats(); st.Reconnects < 3 {
		t.Fatalf("reconnects = %d, want 3", st.Reconnects)
	}
}

// TestServerStartsAtConfirmedFlush checks the PostgreSQL behaviour the
// stream relies on when it resumes: START_REPLICATION of a logical slot at
// an LSN before the slot's confirmed_flush_lsn (0/0 included) starts at
// confirmed_flush_lsn, so acknowledged transactions are not sent again.
func TestServerStartsAtConfirmedFlush(t *testing.T) {
	f := newFixture(t)
	f.createSlot(t)
	conn := connect(t, f.db.DSN)
	execTx(t, conn, ins(1, 1, 1))
	want := execTx(t, conn, ins(2, 2, 2))

	// Acknowledge the first transaction only.
	var (
		s     *Stream
		first atomic.Uint64
	)
	s, err := NewStream(f.config(func(ctx context.Context, tx *Tx) error {
		if first.CompareAndSwap(0, uint64(tx.EndLSN)) {
			s.Ack(tx.EndLSN)
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	pgtest.Eventually(t, "the first transaction to be confirmed", func() bool {
		return first.Load() != 0 && f.confirmed(t) >= decoder.LSN(first.Load())
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The walsender lets go of the slot a moment after the stream hung up.
	f.waitInactive(t)

	cfg, err := pgconn.ParseConfig(f.db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["replication"] = "database"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, rc, f.slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: []string{"proto_version '1'", "publication_names 'items_pub'"}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := rc.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		x, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		if decoder.MessageType(x.WALData[0]) != decoder.TypeBegin {
			continue
		}
		b, err := decoder.ParseBegin(x.WALData)
		if err != nil {
			t.Fatal(err)
		}
		if b.Xid != want {
			t.Fatalf("started at transaction %d, want %d (the first one not acknowledged)", b.Xid, want)
		}
		return
	}
}

// TestStreamCountsMessagesBeforeCommit: the messages of a transaction still
// open on the server (streamed in blocks, as it outgrows
// logical_decoding_work_mem) show in Stats before its commit. /readyz takes
// them as the stream's sign of life; counted only at commits, a long
// transaction would look like a dead stream.
func TestStreamCountsMessagesBeforeCommit(t *testing.T) {
	f := newFixture(t)
	f.createSlot(t)
	_, s := newRecorder(t, f.config(nil))
	run(t, s)
	pgtest.Eventually(t, "the stream to start", func() bool { return s.Stats().SentFlush != 0 })

	conn := connect(t, f.db.DSN)
	tx, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // the open transaction is the point
	if _, err := tx.Exec(context.Background(), ins(1, 1, 3000)); err != nil {
		t.Fatal(err)
	}
	pgtest.Eventually(t, "messages of the open transaction in Stats", func() bool {
		st := s.Stats()
		return st.Messages > 0 && st.Transactions == 0
	})
}

// TestStreamNeverCreatesOrReplacesASlot: the stream stops with ErrSlotMissing
// when its slot does not exist (it creates none), and with ErrSlotReplaced
// when the slot it streamed was dropped and created again meanwhile: in both
// cases transactions committed without a slot are in no stream, and only the
// slot's owner can recover them.
func TestStreamNeverCreatesOrReplacesASlot(t *testing.T) {
	f := newFixture(t)
	s, err := NewStream(f.config(func(context.Context, *Tx) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Run(ctx); !errors.Is(err, ErrSlotMissing) {
		t.Fatalf("Run without a slot = %v, want ErrSlotMissing", err)
	}
	var n int
	if err := connect(t, f.db.DSN).QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", f.slot).Scan(&n); err != nil || n != 0 {
		t.Fatalf("slots named %s after Run: %d (%v): the stream created one", f.slot, n, err)
	}

	f.createSlot(t)
	s, err = NewStream(f.config(func(context.Context, *Tx) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	conn := connect(t, f.db.DSN)
	pgtest.Exec(t, f.db.DSN, ins(1, 1, 1))
	pgtest.Eventually(t, "the stream to report a position", func() bool {
		return s.Stats().SentFlush != 0 && s.Stats().Flush == s.Stats().SentFlush && s.Stats().Transactions == 1
	})
	// Drop the slot under the stream (terminating its walsender) and create
	// it again after a transaction that no stream will ever carry.
	// The stream reconnects at once, so terminate and drop until the drop
	// wins the race.
	pgtest.Eventually(t, "the slot to be dropped", func() bool {
		if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", f.slot); err != nil {
			t.Fatal(err)
		}
		_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", f.slot)
		return err == nil
	})
	pgtest.Exec(t, f.db.DSN, ins(2, 2, 1))
	f.createSlot(t)
	select {
	case err := <-done:
		if !errors.Is(err, ErrSlotReplaced) && !errors.Is(err, ErrSlotMissing) {
			t.Fatalf("Run after the slot was replaced = %v, want ErrSlotReplaced or ErrSlotMissing", err)
		}
	case <-ctx.Done():
		t.Fatal("the stream went on with a replaced slot")
	}
}
