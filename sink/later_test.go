package sink_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/natsembed"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/sink"
)

// deferred stops a NATS server and returns a sink that connects to it later,
// once it has failed an attempt, with the log it writes.
func deferred(t *testing.T, srv *natsembed.Server) (*sink.Deferred, *pgtest.Buffer) {
	t.Helper()
	srv.Stop()
	log := &pgtest.Buffer{}
	opts := testOptions(srv.URL())
	opts.Logger = slog.New(slog.NewTextHandler(log, nil))
	_, err := sink.Connect(context.Background(), opts)
	if !errors.Is(err, nats.ErrNoServers) {
		t.Fatalf("connect to a stopped server: %v, want nats.ErrNoServers", err)
	}
	d := sink.ConnectLater(context.Background(), opts, err)
	t.Cleanup(func() { _ = d.Close() })
	if err := d.Ready(); !errors.Is(err, nats.ErrNoServers) {
		t.Errorf("Ready before the first attempt: %v, want the cause", err)
	}
	pgtest.Eventually(t, "a failed connection attempt", func() bool {
		return strings.Contains(log.String(), "NATS still unreachable")
	})
	return d, log
}

// published is what a Publish call returned.
type published struct {
	n   int
	err error
}

func publishInBackground(d *sink.Deferred, msgs ...sink.Message) <-chan published {
	done := make(chan published, 1)
	go func() {
		n, err := d.Publish(context.Background(), msgs)
		done <- published{n, err}
	}()
	return done
}

func TestConnectLater(t *testing.T) {
	t.Run("publishing waits until NATS is reachable", func(t *testing.T) {
		srv := pgtest.NATS(t)
		d, log := deferred(t, srv)
		first := msg(1, event.OpUpdate, 1, "one")
		done := publishInBackground(d, first)
		if err := d.Ready(); err == nil || !strings.Contains(err.Error(), "not connected") {
			t.Errorf("Ready while NATS is down: %v, want not connected", err)
		}
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
		var r published
		select {
		case r = <-done:
		case <-time.After(time.Minute):
			t.Fatalf("Publish still waits a minute after NATS came back\n%s", log.String())
		}
		if r.err != nil || r.n != 1 {
			t.Fatalf("Publish: %d done, %v; want 1", r.n, r.err)
		}
		if err := d.Ready(); err != nil {
			t.Errorf("Ready once connected: %v", err)
		}
		second := msg(2, event.OpUpdate, 1, "two")
		if n, err := d.PublishAsync(context.Background(), []sink.Message{second}).Wait(context.Background()); err != nil || n != 1 {
			t.Fatalf("PublishAsync: %d done, %v; want 1", n, err)
		}
		if s := d.Stats(); s.Acked != 2 || !s.Connected {
			t.Errorf("stats %+v, want 2 acked and connected", s)
		}
		nc, err := nats.Connect(srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		got := readStream(t, js, sink.DefaultStream)
		if len(got) != 2 || got[0].Headers().Get(event.HeaderMsgID) != first.ID || got[1].Headers().Get(event.HeaderMsgID) != second.ID {
			t.Errorf("the stream holds %d messages, want the two published in order", len(got))
		}
	})

	t.Run("close ends the publishing that waits", func(t *testing.T) {
		d, _ := deferred(t, pgtest.NATS(t))
		done := publishInBackground(d, msg(1, event.OpUpdate, 1, "one"))
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case r := <-done:
			if r.n != 0 || !errors.Is(r.err, sink.ErrClosed) {
				t.Errorf("Publish: %d done, %v; want 0, sink.ErrClosed", r.n, r.err)
			}
		case <-time.After(time.Minute):
			t.Fatal("Publish still waits a minute after Close")
		}
		p := d.PublishAsync(context.Background(), []sink.Message{msg(2, event.OpUpdate, 1, "two")})
		if n, err := p.Wait(context.Background()); n != 0 || !errors.Is(err, sink.ErrClosed) {
			t.Errorf("PublishAsync after Close: %d done, %v; want 0, sink.ErrClosed", n, err)
		}
	})

	t.Run("a cancelled batch ends with nothing acked", func(t *testing.T) {
		d, _ := deferred(t, pgtest.NATS(t))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		p := d.PublishAsync(ctx, []sink.Message{msg(1, event.OpUpdate, 1, "one")})
		if n, err := p.Wait(context.Background()); n != 0 || !errors.Is(err, context.Canceled) {
			t.Errorf("PublishAsync with a cancelled context: %d done, %v; want 0, context.Canceled", n, err)
		}
	})
}
