package sink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/natsembed"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/sink"
)

const testEnv = "staging"

func testOptions(url string) sink.Options {
	return sink.Options{
		URL:           url,
		Env:           testEnv,
		CreateStream:  true,
		RetryMin:      20 * time.Millisecond,
		RetryMax:      200 * time.Millisecond,
		ReconnectWait: 50 * time.Millisecond,
		AckTimeout:    2 * time.Second,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func connect(t testing.TB, opts sink.Options) *sink.NATS {
	t.Helper()
	p, err := sink.Connect(context.Background(), opts)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// msg is queue entry n of table public.shop_outcome, row id.
func msg(n int, op event.Op, id int, name string) sink.Message {
	e := event.Event{
		Env:         testEnv,
		Table:       "public.shop_outcome",
		Op:          op,
		PK:          json.RawMessage(fmt.Sprintf(`{"id":%d}`, id)),
		QueueID:     fmt.Sprintf("00000000-0000-7000-8000-%012d", n),
		CommittedAt: time.Date(2026, 11, 24, 12, 0, 0, n*1000, time.UTC),
	}
	if op != event.OpDelete {
		e.Row = json.RawMessage(fmt.Sprintf(`{"id":%d,"name":%q,"score":%d}`, id, name, n))
	}
	return sink.Message{ID: event.MsgID("7301234567890123456", e.Env, "public.pgoutpost_denormalize_queue", e.QueueID), Event: e}
}

// readStream returns every message of the stream, in stream order.
func readStream(t testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	total := int(st.CachedInfo().State.Msgs)
	// On a cluster that has just lost or regained a node, JetStream may
	// answer "temporarily unavailable" until its meta leader settles.
	var c jetstream.Consumer
	for {
		c, err = st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err == nil {
			break
		}
		if ctx.Err() != nil || !errors.Is(err, jetstream.ErrJetStreamNotEnabled) && !strings.Contains(err.Error(), "temporarily unavailable") {
			t.Fatalf("ordered consumer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var out []jetstream.Msg
	for len(out) < total {
		b, err := c.Fetch(total-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		for m := range b.Messages() {
			out = append(out, m)
		}
		if b.Error() != nil {
			t.Fatalf("fetch: %v", b.Error())
		}
	}
	return out
}

func publish(t testing.TB, p sink.Sink, msgs ...sink.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := p.Publish(ctx, msgs)
	if err != nil || n != len(msgs) {
		t.Fatalf("publish: %d of %d done, %v", n, len(msgs), err)
	}
}

func TestPublishRoundTrip(t *testing.T) {
	srv := pgtest.NATS(t)
	p := connect(t, testOptions(srv.URL()))
	msgs := []sink.Message{msg(1, event.OpInsert, 7, "new"), msg(2, event.OpUpdate, 7, "renamed"), msg(3, event.OpDelete, 7, "")}
	publish(t, p, msgs...)

	got := readStream(t, p.JetStream(), sink.DefaultStream)
	if len(got) != 3 {
		t.Fatalf("stream holds %d messages, want 3", len(got))
	}
	for i, m := range got {
		want := msgs[i]
		if m.Subject() != "pgoutpost.staging.denormalize.public.shop_outcome" {
			t.Errorf("message %d: subject %q", i, m.Subject())
		}
		h := m.Headers()
		if h.Get(event.HeaderMsgID) != want.ID || h.Get(event.HeaderTable) != "public.shop_outcome" || h.Get(event.HeaderOp) != string(want.Event.Op) {
			t.Errorf("message %d: headers %v", i, h)
		}
		// The CloudEvents binary-mode attributes ride along, as stored.
		ce, _ := event.CloudEventHeaders(want.Event)
		for k, v := range ce {
			if h.Get(k) != v {
				t.Errorf("message %d: %s = %q, want %q", i, k, h.Get(k), v)
			}
		}
		if h.Get(event.HeaderCEID) != want.Event.QueueID || h.Get(event.HeaderCEType) != "pgoutpost.denormalize."+string(want.Event.Op) {
			t.Errorf("message %d: ce-id %q, ce-type %q", i, h.Get(event.HeaderCEID), h.Get(event.HeaderCEType))
		}
		ev, err := event.Decode(m.Data())
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		wantBody, _ := event.Encode(want.Event)
		if string(m.Data()) != string(wantBody) {
			t.Errorf("message %d body\n got %s\nwant %s", i, m.Data(), wantBody)
		}
		if ev.Op == event.OpDelete && ev.HasRow() {
			t.Errorf("delete event carries a row: %s", m.Data())
		}
	}
	if s := p.Stats(); s.Acked != 3 || s.Duplicates != 0 || s.InFlight != 0 {
		t.Errorf("stats %+v", s)
	}
	if err := p.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
}

func TestTenUpdatesInOrder(t *testing.T) {
	srv := pgtest.NATS(t)
	p := connect(t, testOptions(srv.URL()))
	var msgs []sink.Message
	for i := 1; i <= 10; i++ {
		msgs = append(msgs, msg(i, event.OpUpdate, 1, fmt.Sprintf("name %d", i)))
	}
	publish(t, p, msgs...)
	got := readStream(t, p.JetStream(), sink.DefaultStream)
	if len(got) != 10 {
		t.Fatalf("stream holds %d messages, want 10", len(got))
	}
	for i, m := range got {
		if id := m.Headers().Get(event.HeaderMsgID); id != msgs[i].ID {
			t.Errorf("position %d: %s, want %s", i, id, msgs[i].ID)
		}
	}
}

func TestRepublishIsDeduplicated(t *testing.T) {
	srv := pgtest.NATS(t)
	p := connect(t, testOptions(srv.URL()))
	m := msg(1, event.OpUpdate, 3, "x")
	publish(t, p, m)
	// As after a crash between the ack and the dequeue: the same entry again,
	// followed by a new one.
	publish(t, p, m, msg(2, event.OpUpdate, 3, "y"))

	got := readStream(t, p.JetStream(), sink.DefaultStream)
	if len(got) != 2 || got[0].Headers().Get(event.HeaderMsgID) != m.ID {
		t.Fatalf("stream holds %d messages, want the entry once then the next", len(got))
	}
	if s := p.Stats(); s.Duplicates != 1 || s.Acked != 2 {
		t.Errorf("stats %+v: want 2 acked and 1 duplicate", s)
	}
}

func TestOutageLosesNothing(t *testing.T) {
	srv := pgtest.NATS(t)
	opts := testOptions(srv.URL())
	var logged pgtest.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p := connect(t, opts)
	var before, during []sink.Message
	for i := 0; i < 5; i++ {
		before = append(before, msg(i, event.OpUpdate, 1, fmt.Sprint(i)))
	}
	for i := 5; i < 105; i++ {
		during = append(during, msg(i, event.OpUpdate, 1+i%3, fmt.Sprint(i)))
	}
	publish(t, p, before...)

	srv.Stop()
	pgtest.Eventually(t, "Ready to report the outage", func() bool { return p.Ready() != nil })

	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := p.Publish(context.Background(), during)
		done <- result{n, err}
	}()
	pgtest.Eventually(t, "failed publish attempts", func() bool { return p.Stats().Failed >= 4 })
	if last := p.Stats().LastFailure; last == "" || strings.Contains(last, "outbound buffer") {
		t.Errorf("Stats().LastFailure during the outage = %q", last)
	}
	if err := p.Ready(); err == nil {
		t.Error("Ready is nil during the outage")
	} else {
		t.Logf("Ready during outage: %v", err)
	}
	select {
	case r := <-done:
		t.Fatalf("Publish returned during the outage: %d, %v", r.n, r.err)
	default:
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.n != len(during) {
		t.Fatalf("publish across the outage: %d of %d, %v", r.n, len(during), r.err)
	}
	if err := p.Ready(); err != nil {
		t.Errorf("Ready after recovery: %v", err)
	}
	got := readStream(t, p.JetStream(), sink.DefaultStream)
	all := append(before, during...)
	if len(got) != len(all) {
		t.Fatalf("stream holds %d messages, want %d", len(got), len(all))
	}
	for i, m := range got {
		if id := m.Headers().Get(event.HeaderMsgID); id != all[i].ID {
			t.Fatalf("position %d: %s, want %s", i, id, all[i].ID)
		}
	}
	if s := p.Stats(); s.Outages == 0 {
		t.Errorf("stats %+v: no outage counted", s)
	}
	// Every retry is logged, but only the first (and a changed error) at WARN.
	var warns, debugs int
	for _, line := range strings.Split(logged.String(), "\n") {
		if !strings.Contains(line, "nats publish failed, retrying") {
			continue
		}
		switch {
		case strings.Contains(line, "level=WARN"):
			warns++
		case strings.Contains(line, "level=DEBUG"):
			debugs++
		}
		if strings.Contains(line, "outbound buffer") {
			t.Errorf("the retry log shows the client's buffer error: %s", line)
		}
	}
	if warns != 1 || debugs == 0 {
		t.Errorf("retries logged %d times at WARN and %d at DEBUG; want one warning and the rest at DEBUG:\n%s", warns, debugs, logged.String())
	}
}

func TestStreamConfigErrors(t *testing.T) {
	srv := pgtest.NATS(t)
	admin := connect(t, testOptions(srv.URL())) // creates PGOUTPOST for staging
	js := admin.JetStream()
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>", "pgoutpost.prod.denormalize.>"}}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name, stream string
		want         []string
	}{
		{"missing stream", "NOPE", []string{"stream NOPE does not exist", "pgoutpost.staging.denormalize.>"}},
		{"subjects do not cover", "OTHER", []string{"stream OTHER", "do not cover", "pgoutpost.staging.denormalize.>"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := testOptions(srv.URL())
			o.CreateStream, o.Stream = false, c.stream
			_, err := sink.Connect(ctx, o)
			if !errors.Is(err, sink.ErrStreamConfig) {
				t.Fatalf("Connect: %v, want ErrStreamConfig", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}

	t.Run("existing stream fits", func(t *testing.T) {
		o := testOptions(srv.URL())
		o.CreateStream = false
		connect(t, o)
	})

	t.Run("a max age shorter than the duplicate window is a warning", func(t *testing.T) {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SHORT", Subjects: []string{"short.>"}, MaxAge: 2 * time.Minute, Duplicates: time.Minute}); err != nil {
			t.Fatal(err)
		}
		o := testOptions(srv.URL())
		o.Stream, o.Env = "SHORT", "short"
		p := connect(t, o)
		st, err := js.Stream(ctx, "SHORT")
		if err != nil {
			t.Fatal(err)
		}
		if d := st.CachedInfo().Config.Duplicates; d != 2*time.Minute {
			t.Errorf("duplicate window %v, want the max age, 2m", d)
		}
		w := strings.Join(p.Warnings(), "\n")
		if !strings.Contains(w, "stream SHORT drops republished events as duplicates for 2m0s only") {
			t.Errorf("warnings %q do not name the short window", w)
		}
		inspected, err := sink.InspectStream(ctx, o)
		if err != nil || fmt.Sprint(inspected) != fmt.Sprint(p.Warnings()) {
			t.Errorf("InspectStream says %q (%v), Connect %q", inspected, err, p.Warnings())
		}
	})

	t.Run("a short window on a stream pgoutpost may not change is one warning", func(t *testing.T) {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NARROW", Subjects: []string{"pgoutpost.narrow.>"}, Duplicates: time.Minute}); err != nil {
			t.Fatal(err)
		}
		o := testOptions(srv.URL())
		o.CreateStream, o.Stream, o.Env = false, "NARROW", "narrow"
		p := connect(t, o)
		var window []string
		for _, w := range p.Warnings() {
			if strings.Contains(w, "duplicate") {
				window = append(window, w)
			}
		}
		if len(window) != 1 || !strings.Contains(window[0], "stream NARROW drops republished events as duplicates for 1m0s only") || strings.Contains(window[0], "max_age") {
			t.Errorf("warnings about the window: %q, want one that names the 1m window and no max_age", window)
		}
	})

	t.Run("create adds our subjects to an existing stream", func(t *testing.T) {
		o := testOptions(srv.URL())
		o.Stream, o.Env = "OTHER", "qa"
		connect(t, o)
		st, err := js.Stream(ctx, "OTHER")
		if err != nil {
			t.Fatal(err)
		}
		if subj := st.CachedInfo().Config.Subjects; len(subj) != 3 || subj[2] != "pgoutpost.qa.denormalize.>" {
			t.Errorf("subjects %q", subj)
		}
	})
}

func TestConnectErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "bad.creds")
	if err := os.WriteFile(garbage, []byte("not a creds file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := pgtest.NATS(t)

	for _, c := range []struct {
		name   string
		edit   func(*sink.Options)
		want   []string
		absent string
	}{
		{"unreachable url", func(o *sink.Options) { o.URL = "nats://alice:s3cret@" + addr },
			[]string{"connect to nats at nats://redacted@" + addr + ": server unreachable"}, "s3cret"},
		{"token in url", func(o *sink.Options) { o.URL = "nats://t0ken@" + addr }, []string{addr}, "t0ken"},
		{"missing credentials file", func(o *sink.Options) { o.CredentialsFile = filepath.Join(dir, "nope.creds") },
			[]string{"credentials file", "nope.creds"}, ""},
		{"bad credentials file", func(o *sink.Options) { o.CredentialsFile = garbage },
			[]string{"credentials file " + garbage}, ""},
		{"missing tls key", func(o *sink.Options) { o.TLS.CertFile = garbage }, []string{"key file"}, ""},
		{"bad retention", func(o *sink.Options) { o.Retention = "forever" }, []string{`retention "forever"`}, ""},
		{"bad environment token", func(o *sink.Options) { o.SubjectPrefix = "a.*" }, []string{"subject prefix"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := testOptions(srv.URL())
			c.edit(&o)
			p, err := sink.Connect(context.Background(), o)
			if err == nil {
				p.Close()
				t.Fatal("Connect succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if c.absent != "" && strings.Contains(err.Error(), c.absent) {
				t.Errorf("error %q shows %q", err, c.absent)
			}
		})
	}
}

func TestPermanentErrorStopsAtTheBadEntry(t *testing.T) {
	srv := pgtest.NATS(t)
	p := connect(t, testOptions(srv.URL()))
	bad := msg(2, event.OpUpdate, 1, "x")
	bad.Event.Op = "merge"
	other := msg(3, event.OpUpdate, 1, "y")
	other.Event.Env = "prod"
	huge := msg(5, event.OpUpdate, 1, strings.Repeat("z", 2<<20))
	for _, c := range []struct {
		name string
		msgs []sink.Message
	}{
		{"invalid event", []sink.Message{msg(1, event.OpUpdate, 1, "a"), bad, msg(4, event.OpUpdate, 1, "b")}},
		{"other environment", []sink.Message{msg(1, event.OpUpdate, 1, "a"), other}},
		{"larger than the max payload", []sink.Message{msg(1, event.OpUpdate, 1, "a"), huge, msg(6, event.OpUpdate, 1, "b")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := p.Publish(context.Background(), c.msgs)
			var pe *sink.PublishError
			if n != 1 || !errors.As(err, &pe) || pe.Index != 1 || !errors.Is(err, sink.ErrPermanent) {
				t.Fatalf("Publish = %d, %v; want 1 done and a permanent error for message 1", n, err)
			}
		})
	}
}

// The embedded server type is used by the benchmark too.
var _ = natsembed.Start

// NATS goes away while a large batch, or many batches submitted with
// PublishAsync, are in flight: after the restart the stream holds every entry
// once, in the order given.
func TestOutageMidBatchKeepsOrder(t *testing.T) {
	for _, batchSize := range []int{20000, 500} {
		t.Run(fmt.Sprintf("batches of %d", batchSize), func(t *testing.T) {
			srv := pgtest.NATS(t)
			p := connect(t, testOptions(srv.URL()))
			var msgs []sink.Message
			for i := 0; i < 20000; i++ {
				msgs = append(msgs, msg(i, event.OpUpdate, i%7, fmt.Sprint(i)))
			}
			var batches []*sink.Pending
			for i := 0; i < len(msgs); i += batchSize {
				batches = append(batches, p.PublishAsync(context.Background(), msgs[i:i+batchSize]))
			}
			pgtest.Eventually(t, "some acks", func() bool { return p.Stats().Acked > 1000 })
			srv.Stop()
			pgtest.Eventually(t, "Ready to report the outage", func() bool { return p.Ready() != nil })
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
			for i, b := range batches {
				if n, err := b.Wait(context.Background()); err != nil || n != batchSize {
					t.Fatalf("batch %d: %d of %d done, %v", i, n, batchSize, err)
				}
			}
			checkOrder(t, readStream(t, p.JetStream(), sink.DefaultStream), msgs, p.Stats().Resent)
			t.Logf("stats %+v", p.Stats())
		})
	}
}

// The stream is deleted under a running publisher (no responders): publishing
// fails and Ready says so until the stream is back, then everything pending
// goes out in order.
func TestStreamDeletedWhilePublishing(t *testing.T) {
	srv := pgtest.NATS(t)
	p := connect(t, testOptions(srv.URL()))
	ctx := context.Background()
	if err := p.JetStream().DeleteStream(ctx, sink.DefaultStream); err != nil {
		t.Fatal(err)
	}
	var msgs []sink.Message
	for i := 0; i < 1000; i++ {
		msgs = append(msgs, msg(i, event.OpUpdate, i%5, fmt.Sprint(i)))
	}
	pending := p.PublishAsync(ctx, msgs)
	pgtest.Eventually(t, "Ready to report the failing publishes", func() bool { return p.Ready() != nil })
	t.Logf("Ready without the stream: %v", p.Ready())
	connect(t, testOptions(srv.URL())) // creates the stream again
	if n, err := pending.Wait(ctx); err != nil || n != len(msgs) {
		t.Fatalf("publish: %d of %d, %v", n, len(msgs), err)
	}
	checkOrder(t, readStream(t, p.JetStream(), sink.DefaultStream), msgs, p.Stats().Resent)
	if err := p.Ready(); err != nil {
		t.Errorf("Ready after recovery: %v", err)
	}
	t.Logf("stats %+v", p.Stats())
}

// TestOvertakingMessageIsSentAgain: a message that is stored while one sent
// before it fails (here: the stream does not cover the first one's subject
// until the test widens it) is sent again behind it, so that its last copy
// keeps the publish order, and its batch waits for that copy.
func TestOvertakingMessageIsSentAgain(t *testing.T) {
	srv := pgtest.NATS(t)
	p := connect(t, testOptions(srv.URL()))
	ctx := context.Background()
	js := p.JetStream()
	st, err := js.Stream(ctx, sink.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	wide := st.CachedInfo().Config
	narrow := wide
	narrow.Subjects = []string{"pgoutpost." + testEnv + ".denormalize.public.shop_outcome"}
	if _, err := js.UpdateStream(ctx, narrow); err != nil {
		t.Fatal(err)
	}
	other := msg(0, event.OpUpdate, 1, "other table")
	other.Event.Table = "public.shop_other"
	msgs := []sink.Message{other, msg(1, event.OpUpdate, 1, "one"), msg(2, event.OpUpdate, 2, "two")}
	pending := p.PublishAsync(ctx, msgs)
	// The first fails (no stream takes its subject), the two behind it are
	// stored: they must be sent again, not counted as done.
	pgtest.Eventually(t, "the two overtaking messages to be marked for sending again", func() bool { return p.Stats().Resent >= 2 })
	if n := pending.Acked(); n != 0 {
		t.Fatalf("%d messages of the batch done while the first keeps failing", n)
	}
	if _, err := js.UpdateStream(ctx, wide); err != nil {
		t.Fatal(err)
	}
	if n, err := pending.Wait(ctx); err != nil || n != len(msgs) {
		t.Fatalf("publish: %d of %d, %v", n, len(msgs), err)
	}
	got := readStream(t, js, sink.DefaultStream)
	var ids []string
	for _, m := range got {
		ids = append(ids, m.Headers().Get(event.HeaderMsgID))
	}
	t.Logf("stream: %v", ids)
	checkOrder(t, got, msgs, p.Stats().Resent)
}

// checkOrder checks what the pipeline promises after failures: the stream
// holds every message once, plus one earlier copy per message sent again
// (resent) because it had overtaken a failed one; the last copies are in
// publish order.
func checkOrder(t *testing.T, got []jetstream.Msg, msgs []sink.Message, resent uint64) {
	t.Helper()
	if len(got) != len(msgs)+int(resent) {
		t.Fatalf("stream holds %d messages, want %d and %d copies sent again", len(got), len(msgs), resent)
	}
	last := map[string]int{} // message id → position of its last copy
	for i, m := range got {
		id, _, _ := strings.Cut(m.Headers().Get(event.HeaderMsgID), sink.ResentSuffix)
		last[id] = i
	}
	prev := -1
	for i, m := range msgs {
		at, ok := last[m.ID]
		if !ok {
			t.Fatalf("message %d (%s) is not in the stream", i, m.ID)
		}
		if at < prev {
			t.Fatalf("the last copy of message %d (%s) is at %d, before the last copy of message %d at %d", i, m.ID, at, i-1, prev)
		}
		prev = at
	}
}

// Every slave of a master publishes the same queue entries; slaves of several
// environments may share one stream. Each must get its own event, and each
// slave's republish must still be de-duplicated.
func TestSlavesSharingAStreamEachPublish(t *testing.T) {
	srv := pgtest.NATS(t)
	var published []sink.Message
	for _, env := range []string{"staging", "prod"} {
		opts := testOptions(srv.URL())
		opts.Env = env
		p := connect(t, opts)
		m := msg(1, event.OpUpdate, 7, "renamed")
		m.Event.Env = env
		m.ID = event.MsgID("7301234567890123456", env, "pgoutpost.denormalize_queue", m.Event.QueueID)
		publish(t, p, m)
		publish(t, p, m) // a republish after a crash
		published = append(published, m)
	}
	got := readStream(t, connect(t, testOptions(srv.URL())).JetStream(), sink.DefaultStream)
	if len(got) != len(published) {
		t.Fatalf("shared stream holds %d messages, want one per environment (%d)", len(got), len(published))
	}
	for i, m := range got {
		if want := "pgoutpost." + published[i].Event.Env + ".denormalize.public.shop_outcome"; m.Subject() != want {
			t.Errorf("message %d: subject %q, want %q", i, m.Subject(), want)
		}
	}
}
