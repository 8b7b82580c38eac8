package queue

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/natsembed"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/sink"
)

const (
	testEnv      = "staging"
	testSystemID = "7300000000000000001"
)

func connectSink(t *testing.T, srv *natsembed.Server) *sink.NATS {
	t.Helper()
	snk, err := sink.Connect(context.Background(), sink.Options{
		URL: srv.URL(), Env: testEnv, CreateStream: true,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, ReconnectWait: 50 * time.Millisecond,
		AckTimeout: time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("connect sink: %v", err)
	}
	t.Cleanup(func() { _ = snk.Close() })
	return snk
}

func (s *slaveEnv) publisher(snk sink.Sink, opts ProcessorOptions) *Processor {
	p := s.processor(opts)
	p.snk = snk
	p.opts.Env, p.opts.SystemID = testEnv, testSystemID
	return p
}

// published reads every message of the stream, in order.
func published(t *testing.T, snk *sink.NATS) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	st, err := snk.JetStream().Stream(ctx, sink.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

func decode(t *testing.T, m *jetstream.RawStreamMsg) event.Event {
	t.Helper()
	e, err := event.Decode(m.Data)
	if err != nil {
		t.Fatalf("decode %s: %v", m.Data, err)
	}
	return e
}

func TestDenormalizePublishedThenDequeued(t *testing.T) {
	s := newSlave(t)
	srv := pgtest.NATS(t)
	snk := connectSink(t, srv)
	pgtest.Exec(t, s.db.DSN, "INSERT INTO catalog_outcome (id, name) VALUES (1, 'a')")
	p := s.publisher(snk, ProcessorOptions{})
	ins := enqueue(t, s.pool, registry.DenormalizeQueue, 10, "public.catalog_outcome", `{"id": 1}`, OpInsert)
	pgtest.Exec(t, s.db.DSN, "UPDATE catalog_outcome SET name = 'b' WHERE id = 1")
	upd := enqueue(t, s.pool, registry.DenormalizeQueue, 11, "public.catalog_outcome", `{"id": 1}`, OpUpdate)
	gone := enqueue(t, s.pool, registry.DenormalizeQueue, 11, "public.catalog_outcome", `{"id": 2}`, OpInsert)
	commit := time.Date(2026, 11, 24, 12, 0, 0, 123456000, time.UTC)
	apply(t, p, Txn{CommitTime: commit, Entries: []Entry{ins}}, Txn{CommitTime: commit.Add(time.Second), Entries: []Entry{upd, gone}})

	msgs := published(t, snk)
	if len(msgs) != 3 {
		t.Fatalf("%d messages, want 3", len(msgs))
	}
	for i, c := range []struct {
		e      Entry
		op     event.Op
		row    string
		commit time.Time
	}{
		{ins, event.OpInsert, `{"id": 1, "name": "b"}`, commit},
		{upd, event.OpUpdate, `{"id": 1, "name": "b"}`, commit.Add(time.Second)},
		{gone, event.OpInsert, "", commit.Add(time.Second)},
	} {
		m := msgs[i]
		ev := decode(t, m)
		if ev.Env != testEnv || ev.Table != "public.catalog_outcome" || ev.Op != c.op || ev.QueueID != c.e.ID ||
			!ev.CommittedAt.Equal(c.commit) || string(ev.PK) != string(c.e.PK) {
			t.Errorf("message %d: %+v, want %s of %s committed at %v", i, ev, c.op, c.e.PK, c.commit)
		}
		if string(ev.Row) != c.row {
			t.Errorf("message %d row %s, want %q", i, ev.Row, c.row)
		}
		if id := m.Header.Get(event.HeaderMsgID); id != event.MsgID(testSystemID, testEnv, "pgoutpost.denormalize_queue", c.e.ID) {
			t.Errorf("message %d Nats-Msg-Id %q", i, id)
		}
		if m.Subject != "pgoutpost.staging.denormalize.public.catalog_outcome" {
			t.Errorf("message %d subject %s", i, m.Subject)
		}
	}
	if n := count(t, s.pool, "SELECT count(*) FROM pgoutpost.denormalize_queue"); n != 0 {
		t.Errorf("%d entries left in denormalize_queue", n)
	}
	if n := s.obs.get("denormalize public.catalog_outcome published"); n != 3 {
		t.Errorf("published entries: %d (%v)", n, s.obs.results)
	}
	// A replay publishes nothing again: the entries are gone.
	apply(t, p, Txn{CommitTime: commit, Entries: []Entry{ins, upd, gone}})
	if n := len(published(t, snk)); n != 3 {
		t.Errorf("after a replay the stream holds %d messages, want 3", n)
	}
}

func TestDeleteEventFromOutbox(t *testing.T) {
	ctx := context.Background()
	s := newSlave(t)
	srv := pgtest.NATS(t)
	snk := connectSink(t, srv)
	pgtest.Exec(t, s.db.DSN, "INSERT INTO catalog_outcome (id, name) VALUES (1, 'a'), (2, 'b')")
	p := s.publisher(snk, ProcessorOptions{})
	// A master transaction that updates outcome 2 and deletes outcome 1:
	// the delete is applied first, then the update's event is published.
	upd := enqueue(t, s.pool, registry.DenormalizeQueue, 5, "public.catalog_outcome", `{"id": 2}`, OpUpdate)
	d := del(t, s.pool, 5, "catalog_outcome", 1)
	apply(t, p, txnOf(upd, d))
	// The outbox row is what the local publication streams next; the drain
	// at start finds it too.
	txns, err := p.Pending(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(txns) != 1 || len(txns[0].Entries) != 1 || txns[0].Entries[0].Op != OpDelete || string(txns[0].Entries[0].PK) != `{"id": 1}` {
		t.Fatalf("pending after the delete: %+v", txns)
	}
	apply(t, p, txns...)
	msgs := published(t, snk)
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	if ev := decode(t, msgs[0]); ev.Op != event.OpUpdate || string(ev.PK) != `{"id": 2}` || !ev.HasRow() {
		t.Errorf("first event %+v, want the update of 2 with its row", ev)
	}
	ev := decode(t, msgs[1])
	if ev.Op != event.OpDelete || string(ev.PK) != `{"id": 1}` || ev.HasRow() || ev.QueueID != txns[0].Entries[0].ID {
		t.Errorf("second event %+v, want the delete of 1 without a row", ev)
	}
	if n := count(t, s.pool, "SELECT count(*) FROM pgoutpost.denormalize_queue"); n != 0 {
		t.Errorf("%d entries left in denormalize_queue", n)
	}
}

func TestNATSOutageKeepsEntries(t *testing.T) {
	s := newSlave(t)
	srv := pgtest.NATS(t)
	snk := connectSink(t, srv)
	pgtest.Exec(t, s.db.DSN, "INSERT INTO catalog_outcome (id, name) SELECT g, 'o' FROM generate_series(1, 20) g")
	p := s.publisher(snk, ProcessorOptions{BatchSize: 8})
	var txns []Txn
	for i := 1; i <= 20; i++ {
		txns = append(txns, txnOf(enqueue(t, s.pool, registry.DenormalizeQueue, int64(i), "public.catalog_outcome", `{"id": `+itoa(i)+`}`, OpUpdate)))
	}
	srv.Stop()
	type result struct {
		done int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		done, err := p.Apply(context.Background(), txns)
		res <- result{done, err}
	}()
	pgtest.Eventually(t, "publishes to fail during the outage", func() bool { return snk.Stats().Failed >= 3 })
	select {
	case r := <-res:
		t.Fatalf("Apply returned during the outage: %+v", r)
	default:
	}
	if n := count(t, s.pool, "SELECT count(*) FROM pgoutpost.denormalize_queue"); n != 20 {
		t.Errorf("during the outage %d entries are queued, want 20", n)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || r.done != 20 {
		t.Fatalf("Apply after the outage: %+v", r)
	}
	msgs := published(t, snk)
	if len(msgs) != 20 {
		t.Fatalf("%d messages, want 20", len(msgs))
	}
	for i, m := range msgs {
		if ev := decode(t, m); ev.QueueID != txns[i].Entries[0].ID {
			t.Errorf("message %d is entry %s, want %s (order)", i, ev.QueueID, txns[i].Entries[0].ID)
		}
	}
	if n := count(t, s.pool, "SELECT count(*) FROM pgoutpost.denormalize_queue"); n != 0 {
		t.Errorf("%d entries left", n)
	}
}

func TestPermanentPublishErrorGoesToDeadLetter(t *testing.T) {
	s := newSlave(t)
	srv := pgtest.NATS(t)
	snk := connectSink(t, srv)
	pgtest.Exec(t, s.db.DSN, "INSERT INTO catalog_outcome (id, name) VALUES (1, 'a'), (2, repeat('x', 50)), (3, 'c')")
	// Outcome 2's row exceeds the server's max payload once widened.
	pgtest.Exec(t, s.db.DSN, "ALTER TABLE catalog_outcome ALTER COLUMN name TYPE text; UPDATE catalog_outcome SET name = repeat('x', 2000000) WHERE id = 2")
	p := s.publisher(snk, ProcessorOptions{})
	var es []Entry
	for i := 1; i <= 3; i++ {
		es = append(es, enqueue(t, s.pool, registry.DenormalizeQueue, 1, "public.catalog_outcome", `{"id": `+itoa(i)+`}`, OpUpdate))
	}
	apply(t, p, txnOf(es...))
	msgs := published(t, snk)
	if len(msgs) != 2 || decode(t, msgs[0]).QueueID != es[0].ID || decode(t, msgs[1]).QueueID != es[2].ID {
		t.Errorf("published %d messages, want entries 1 and 3", len(msgs))
	}
	dl := deadLetters(t, s.pool)
	if len(dl) != 1 || dl[es[1].ID] == "" {
		t.Errorf("dead letters %v, want entry 2's", dl)
	}
	if n := count(t, s.pool, "SELECT count(*) FROM pgoutpost.denormalize_queue"); n != 0 {
		t.Errorf("%d entries left", n)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
