package sink_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/natsembed"
	"github.com/pgoutpost/pgoutpost/sink"
)

// startCluster starts a three-node JetStream cluster for the test.
func startCluster(t testing.TB) *natsembed.Cluster {
	t.Helper()
	c, err := natsembed.StartCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	return c
}

// checkFor calls check every interval until it returns nil, and fails the
// test with its last error after timeout.
func checkFor(t testing.TB, timeout, interval time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

// checkOnce fails the test unless the stream holds exactly msgs, each once
// by its Nats-Msg-Id, whatever the order.
func checkOnce(t *testing.T, got []jetstream.Msg, msgs []sink.Message) {
	t.Helper()
	seen := map[string]int{}
	for _, m := range got {
		seen[m.Headers().Get(event.HeaderMsgID)]++
	}
	var lost, twice []string
	for _, m := range msgs {
		switch seen[m.ID] {
		case 0:
			lost = append(lost, m.ID)
		case 1:
		default:
			twice = append(twice, m.ID)
		}
		delete(seen, m.ID)
	}
	if len(lost) > 0 || len(twice) > 0 || len(seen) > 0 {
		t.Fatalf("stream of %d messages for %d events: %d lost, %d twice, %d others (%v)", len(got), len(msgs), len(lost), len(twice), len(seen), seen)
	}
}

func TestClusterStreamHasThreeReplicas(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	p := connect(t, testOptions(c.URLs()))
	st, err := p.JetStream().Stream(ctx, sink.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CachedInfo().Config.Replicas; r != sink.DefaultClusterReplicas {
		t.Errorf("the stream has %d replicas on a cluster, want %d", r, sink.DefaultClusterReplicas)
	}
	if w := p.Warnings(); len(w) != 0 {
		t.Errorf("warnings about an R3 stream: %q", w)
	}

	one := testOptions(c.URLs())
	one.Stream, one.Replicas, one.Env = "SINGLE", 1, "single"
	p1 := connect(t, one)
	if w := strings.Join(p1.Warnings(), "\n"); !strings.Contains(w, "stream SINGLE has a single replica on NATS cluster") {
		t.Errorf("no single-replica warning on a cluster: %q", w)
	}
	inspected, err := sink.InspectStream(ctx, one)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(inspected) != fmt.Sprint(p1.Warnings()) {
		t.Errorf("InspectStream says %q, Connect %q", inspected, p1.Warnings())
	}
	// A configured count rescales an existing stream.
	one.Replicas = 3
	if w := connect(t, one).Warnings(); len(w) != 0 {
		t.Errorf("warnings after rescaling to 3: %q", w)
	}

	srv := natsembedServer(t)
	lone := connect(t, testOptions(srv.URL()))
	if w := lone.Warnings(); len(w) != 0 {
		t.Errorf("warnings about the single replica on a lone server: %q", w)
	}
}

func natsembedServer(t testing.TB) *natsembed.Server {
	t.Helper()
	s, err := natsembed.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// publishAll publishes msgs in batches of 20 from its own goroutine; sent
// counts the acked messages.
func publishAll(t *testing.T, p sink.Sink, msgs []sink.Message, sent *counter) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		for i := 0; i < len(msgs); i += 20 {
			batch := msgs[i:min(i+20, len(msgs))]
			n, err := p.Publish(ctx, batch)
			sent.add(n)
			if err != nil {
				done <- fmt.Errorf("publish batch at %d: %w", i, err)
				return
			}
		}
		done <- nil
	}()
	return done
}

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) add(n int) { c.mu.Lock(); c.n += n; c.mu.Unlock() }
func (c *counter) get() int  { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

func events(n int) []sink.Message {
	msgs := make([]sink.Message, n)
	for i := range msgs {
		msgs[i] = msg(i+1, event.OpUpdate, i%50, fmt.Sprintf("v%d", i))
	}
	return msgs
}

// TestPublishThroughLeaderStop stops the stream's leader while the
// publisher is busy: every event is stored once, and the publisher rides
// out the election without an error.
func TestPublishThroughLeaderStop(t *testing.T) {
	c := startCluster(t)
	p := connect(t, testOptions(c.URLs()))
	leader, err := c.WaitStreamLeader(sink.DefaultStream, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	msgs := events(2000)
	var sent counter
	done := publishAll(t, p, msgs, &sent)
	checkFor(t, time.Minute, 5*time.Millisecond, func() error {
		if sent.get() < 300 {
			return errors.New("publishing has not got going")
		}
		return nil
	})
	c.Stop(leader)
	at := sent.get()
	if _, err := c.WaitStreamLeader(sink.DefaultStream, time.Minute, leader); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFormed(time.Minute); err != nil {
		t.Fatal(err)
	}
	got := readStream(t, p.JetStream(), sink.DefaultStream)
	st := p.Stats()
	t.Logf("leader n%d stopped after %d acks; stats %+v", leader+1, at, st)
	checkOnce(t, got, msgs)
	checkOrder(t, got, msgs, st.Resent)
}

// TestAckWaitsForQuorum shows that an acknowledgement, after which the
// caller dequeues the entry, means a majority of the cluster stored it:
// with two of three nodes down the publish is retried and not acked, and it
// is acked once a second node is back.
func TestAckWaitsForQuorum(t *testing.T) {
	c := startCluster(t)
	p := connect(t, testOptions(c.URLs()))
	leader, err := c.WaitStreamLeader(sink.DefaultStream, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, p, msg(1, event.OpInsert, 1, "before"))
	follower := (leader + 1) % 3
	c.Stop(leader)
	c.Stop(follower)
	failed := p.Stats().Failed
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pending := p.PublishAsync(ctx, []sink.Message{msg(2, event.OpUpdate, 1, "during")})
	// The positive signal: attempts failed, and the batch is still not acked.
	checkFor(t, time.Minute, 10*time.Millisecond, func() error {
		if p.Stats().Failed < failed+2 {
			return errors.New("no failed attempt yet")
		}
		return nil
	})
	if n := pending.Acked(); n != 0 {
		t.Fatalf("%d messages acked without a quorum", n)
	}
	if err := c.Restart(follower); err != nil {
		t.Fatal(err)
	}
	if n, err := pending.Wait(ctx); n != 1 || err != nil {
		t.Fatalf("after the quorum is back: %d acked, %v", n, err)
	}
	// Both running nodes hold it: the ack came after the quorum stored it.
	for _, i := range []int{follower, 3 - leader - follower} {
		checkFor(t, time.Minute, 10*time.Millisecond, func() error {
			if seq, _ := c.StreamLastSeq(i, sink.DefaultStream); seq != 2 {
				return fmt.Errorf("node n%d holds %d messages", i+1, seq)
			}
			return nil
		})
	}
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFormed(time.Minute); err != nil {
		t.Fatal(err)
	}
	checkOnce(t, readStream(t, p.JetStream(), sink.DefaultStream), []sink.Message{msg(1, event.OpInsert, 1, "before"), msg(2, event.OpUpdate, 1, "during")})
}

// TestPublishWhileLeaderPartitioned cuts the stream's leader off from the
// other two nodes while a publisher connected to one of them is busy: the
// majority elects a new leader, every event is stored once, and the healed
// node catches up.
func TestPublishWhileLeaderPartitioned(t *testing.T) {
	c := startCluster(t)
	// Create the stream, then publish through a node on the majority side.
	first := connect(t, testOptions(c.URLs()))
	leader, err := c.WaitStreamLeader(sink.DefaultStream, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_ = first.Close()
	other := (leader + 1) % 3
	p := connect(t, testOptions(c.Nodes[other].ClientURL()))
	msgs := events(1000)
	var sent counter
	done := publishAll(t, p, msgs, &sent)
	checkFor(t, time.Minute, 5*time.Millisecond, func() error {
		if sent.get() < 200 {
			return errors.New("publishing has not got going")
		}
		return nil
	})
	c.Partition(leader)
	if _, err := c.WaitStreamLeader(sink.DefaultStream, time.Minute, leader); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.Heal(leader)
	checkFor(t, 2*time.Minute, 20*time.Millisecond, func() error {
		want, _ := c.StreamLastSeq(other, sink.DefaultStream)
		if seq, _ := c.StreamLastSeq(leader, sink.DefaultStream); seq != want {
			return fmt.Errorf("the healed node holds %d messages, the others %d", seq, want)
		}
		return nil
	})
	if err := c.WaitFormed(time.Minute); err != nil {
		t.Fatal(err)
	}
	got := readStream(t, p.JetStream(), sink.DefaultStream)
	st := p.Stats()
	t.Logf("stats %+v", st)
	checkOnce(t, got, msgs)
	checkOrder(t, got, msgs, st.Resent)
}
