package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/consumer"
	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/sink"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func setup(t *testing.T) (*sink.NATS, jetstream.JetStream) {
	t.Helper()
	srv := pgtest.NATS(t)
	p, err := sink.Connect(context.Background(), sink.Options{URL: srv.URL(), Env: "staging", CreateStream: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return p, js
}

func ev(n int, table string, op event.Op, id int) sink.Message {
	e := event.Event{
		Env: "staging", Table: table, Op: op,
		PK:          json.RawMessage(fmt.Sprintf(`{"id":%d}`, id)),
		QueueID:     fmt.Sprintf("q-%d", n),
		CommittedAt: time.Date(2026, 11, 24, 12, 0, n, 0, time.UTC),
	}
	if op != event.OpDelete {
		e.Row = json.RawMessage(fmt.Sprintf(`{"id":%d,"n":%d}`, id, n))
	}
	return sink.Message{ID: event.MsgID("1", e.Env, "q", e.QueueID), Event: e}
}

func publish(t *testing.T, p *sink.NATS, msgs ...sink.Message) {
	t.Helper()
	if n, err := p.Publish(context.Background(), msgs); err != nil || n != len(msgs) {
		t.Fatalf("publish: %d of %d, %v", n, len(msgs), err)
	}
}

// collector is a handler that records events and can fail on demand.
type collector struct {
	mu     sync.Mutex
	events []event.Event
	fail   map[string]int // queue_id → failures left
	calls  int
}

func (c *collector) handle(_ context.Context, e event.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.fail[e.QueueID] > 0 {
		c.fail[e.QueueID]--
		return fmt.Errorf("induced failure")
	}
	c.events = append(c.events, e)
	return nil
}

func (c *collector) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for _, e := range c.events {
		ids = append(ids, e.QueueID)
	}
	return ids
}

// run runs the consumer until it has seen want events, then stops it.
func run(t *testing.T, js jetstream.JetStream, opts consumer.Options, c *collector, want int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- consumer.Run(ctx, js, opts, c.handle) }()
	defer cancel()
	pgtest.Eventually(t, fmt.Sprintf("%d events", want), func() bool { return len(c.ids()) >= want })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := c.ids(); len(got) < want {
		t.Fatalf("consumer saw %d events %v, want %d", len(got), got, want)
	}
}

func TestConsumeInOrderAndResume(t *testing.T) {
	p, js := setup(t)
	var msgs []sink.Message
	for i := 1; i <= 10; i++ {
		msgs = append(msgs, ev(i, "public.shop_outcome", event.OpUpdate, 1))
	}
	publish(t, p, msgs...)
	opts := consumer.Options{Env: "staging", Durable: "svc", Logger: quiet}
	c := &collector{}
	run(t, js, opts, c, 10)
	for i, e := range c.events {
		if e.QueueID != msgs[i].Event.QueueID || e.Op != event.OpUpdate || e.Table != "public.shop_outcome" || !e.HasRow() {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	// Stopped and started again, the durable consumer goes on after the
	// events it acked. Stopped means the server knows: until it drops the
	// stopped client's pull requests, it may hand a new event to one of
	// them, and the event comes back only after AckWait.
	pgtest.Eventually(t, "the server to drop the stopped consumer's pull requests", func() bool {
		cons, err := js.Consumer(context.Background(), sink.DefaultStream, "svc")
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.NumWaiting == 0
	})
	publish(t, p, ev(11, "public.shop_outcome", event.OpDelete, 1))
	c2 := &collector{}
	run(t, js, opts, c2, 1)
	if got := c2.ids(); len(got) != 1 || got[0] != "q-11" {
		t.Fatalf("after restart the consumer saw %v, want [q-11]", got)
	}
}

func TestTableFilter(t *testing.T) {
	p, js := setup(t)
	publish(t, p, ev(1, "public.shop_unit", event.OpInsert, 1), ev(2, "public.shop_outcome", event.OpInsert, 1),
		ev(3, "my schema.odd.name", event.OpInsert, 1), ev(4, "public.shop_unit", event.OpUpdate, 1))
	c := &collector{}
	run(t, js, consumer.Options{Env: "staging", Durable: "f", Tables: []string{"shop_outcome", "my schema.odd.name"}, Logger: quiet}, c, 2)
	if got := c.ids(); len(got) != 2 || got[0] != "q-2" || got[1] != "q-3" {
		t.Fatalf("filtered consumer saw %v, want [q-2 q-3]", got)
	}
}

func TestFailedEventIsRetriedAndMalformedIsTerminated(t *testing.T) {
	p, js := setup(t)
	// A message on our subject that is not an event.
	if _, err := js.Publish(context.Background(), "pgoutpost.staging.denormalize.public.shop_outcome", []byte(`{"v":1,"oops"`)); err != nil {
		t.Fatal(err)
	}
	publish(t, p, ev(1, "public.shop_outcome", event.OpInsert, 1), ev(2, "public.shop_outcome", event.OpUpdate, 1))
	c := &collector{fail: map[string]int{"q-1": 2}}
	run(t, js, consumer.Options{Env: "staging", Durable: "r", RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, Logger: quiet}, c, 2)
	got := c.ids()
	// q-1 failed twice, so q-2 went ahead of it.
	if len(got) != 2 || got[0] != "q-2" || got[1] != "q-1" || c.calls != 4 {
		t.Fatalf("handled %v in %d calls, want [q-2 q-1] in 4", got, c.calls)
	}
	// The malformed message was terminated: nothing is pending or waiting.
	cons, err := js.Consumer(context.Background(), consumer.DefaultStream, "r")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 || info.NumRedelivered != 0 {
		t.Fatalf("consumer state: pending %d, ack pending %d, redelivered %d", info.NumPending, info.NumAckPending, info.NumRedelivered)
	}
}

func TestStrictOrderWithOnePending(t *testing.T) {
	p, js := setup(t)
	publish(t, p, ev(1, "public.shop_outcome", event.OpInsert, 1), ev(2, "public.shop_outcome", event.OpUpdate, 1))
	c := &collector{fail: map[string]int{"q-1": 2}}
	run(t, js, consumer.Options{Env: "staging", Durable: "s", MaxAckPending: 1, RetryMin: 10 * time.Millisecond, Logger: quiet}, c, 2)
	if got := c.ids(); len(got) != 2 || got[0] != "q-1" {
		t.Fatalf("handled %v, want q-1 first", got)
	}
}

func TestBackoff(t *testing.T) {
	for _, c := range []struct {
		delivered uint64
		want      time.Duration
	}{{0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {4, 8 * time.Second}, {40, time.Minute}} {
		if got := consumer.Backoff(c.delivered, time.Second, time.Minute); got != c.want {
			t.Errorf("Backoff(%d) = %v, want %v", c.delivered, got, c.want)
		}
	}
}

// deadLetters is a dead-letter hook that records what it is given and can
// fail on demand.
type deadLetters struct {
	mu    sync.Mutex
	dead  []consumer.Dead
	fails int // calls left to fail
	calls int
}

func (d *deadLetters) hook(_ context.Context, x consumer.Dead) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if d.fails > 0 {
		d.fails--
		return fmt.Errorf("dead-letter store unavailable")
	}
	d.dead = append(d.dead, x)
	return nil
}

func (d *deadLetters) recorded() []consumer.Dead {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]consumer.Dead(nil), d.dead...)
}

// TestMaxDeliverGoesToDeadLetter gives up on an event after MaxDeliver
// failed deliveries, and on a message that is no event, only once the
// dead-letter hook has recorded it: the hook's own failure brings the
// message back. In strict order, the events behind it go on afterwards.
func TestMaxDeliverGoesToDeadLetter(t *testing.T) {
	p, js := setup(t)
	if _, err := js.Publish(context.Background(), "pgoutpost.staging.denormalize.public.shop_outcome", []byte(`{"v":1,"oops"`)); err != nil {
		t.Fatal(err)
	}
	publish(t, p, ev(1, "public.shop_outcome", event.OpInsert, 1), ev(2, "public.shop_outcome", event.OpUpdate, 1))
	c := &collector{fail: map[string]int{"q-1": 1000}}
	dl := &deadLetters{fails: 1}
	run(t, js, consumer.Options{Env: "staging", Durable: "d", MaxAckPending: 1, MaxDeliver: 3,
		RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond, DeadLetter: dl.hook, Logger: quiet}, c, 1)

	if got := c.ids(); len(got) != 1 || got[0] != "q-2" {
		t.Fatalf("handled %v, want [q-2]", got)
	}
	dead := dl.recorded()
	if len(dead) != 2 {
		t.Fatalf("dead letters %+v, want the malformed message and q-1", dead)
	}
	// The malformed message came first; the hook failed on it once, so it
	// was delivered again and recorded at its second delivery.
	if m := dead[0]; m.Event != nil || string(m.Data) != `{"v":1,"oops"` || m.Delivered != 2 || m.Err == nil {
		t.Errorf("malformed message's dead letter: %+v", m)
	}
	if e := dead[1]; e.Event == nil || e.Event.QueueID != "q-1" || e.Delivered != 3 || e.MsgID != event.MsgID("1", "staging", "q", "q-1") ||
		e.Err == nil || e.Err.Error() != "induced failure" {
		t.Errorf("q-1's dead letter: %+v", e)
	}
	if c.calls != 3+1 || dl.calls != 3 {
		t.Errorf("handler called %d times, hook %d; want 4 and 3", c.calls, dl.calls)
	}
	cons, err := js.Consumer(context.Background(), consumer.DefaultStream, "d")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 || info.Config.MaxDeliver != -1 {
		t.Fatalf("consumer state: pending %d, ack pending %d, server max deliver %d", info.NumPending, info.NumAckPending, info.Config.MaxDeliver)
	}
}

// TestKeepNewestUnderRedelivery shows what MaxAckPending > 1 reorders and
// how Event.After keeps the newest: the row's first event fails once and is
// redelivered after its second, and a handler that keeps the newest event
// per row skips the late one.
func TestKeepNewestUnderRedelivery(t *testing.T) {
	p, js := setup(t)
	publish(t, p, ev(1, "public.shop_outcome", event.OpInsert, 1), ev(2, "public.shop_outcome", event.OpUpdate, 1))
	var (
		mu      sync.Mutex
		order   []string
		newest  = map[string]event.Event{} // pk → newest applied
		skipped []string
	)
	c := &collector{fail: map[string]int{"q-1": 1}}
	h := func(ctx context.Context, e event.Event) error {
		if err := c.handle(ctx, e); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		order = append(order, e.QueueID)
		if cur, ok := newest[string(e.PK)]; ok && !e.After(cur) {
			skipped = append(skipped, e.QueueID)
			return nil
		}
		newest[string(e.PK)] = e
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- consumer.Run(ctx, js, consumer.Options{Env: "staging", Durable: "k", MaxAckPending: 10,
			RetryMin: 5 * time.Millisecond, Logger: quiet}, h)
	}()
	pgtest.Eventually(t, "both events", func() bool { return len(c.ids()) == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 2 || order[0] != "q-2" || order[1] != "q-1" {
		t.Fatalf("applied in order %v, want the redelivered q-1 after q-2", order)
	}
	if got := newest[`{"id":1}`]; got.QueueID != "q-2" || len(skipped) != 1 || skipped[0] != "q-1" {
		t.Errorf("kept %s, skipped %v; want q-2 kept and the late q-1 skipped", got.QueueID, skipped)
	}
}
