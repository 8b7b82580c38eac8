package sidecar_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/internal/natsembed"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/sink"
)

// TestSidecarOnJetStreamCluster runs the sidecar against a three-node
// JetStream cluster: its stream gets three replicas, it publishes through a
// stop of the stream's leader, and while two of three nodes are down (no
// quorum) the entry stays in the slave's queue table until the cluster
// acknowledges its event. At the end the stream holds every master change
// once, plus the copies the sink sent again because they had overtaken a
// failed publish (sink.Stats.Resent, see sink.NATS.PublishAsync).
func TestSidecarOnJetStreamCluster(t *testing.T) {
	e := newE2E(t)
	c, err := natsembed.StartCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	e.natsURL = c.URLs()
	r := e.start(t, t, nil)
	pgtest.Eventually(t, "the sidecar is ready", func() bool {
		code, _ := r.get(t, "/readyz")
		return code == 200
	})
	if _, body := r.get(t, "/readyz"); strings.Contains(body, "warning") {
		t.Errorf("/readyz warns about the default stream:\n%s", body)
	}
	ev, js := e.consume(t)
	info, err := js.Stream(testCtx(t, time.Minute), sink.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().Config.Replicas; n != 3 {
		t.Fatalf("the sidecar created its stream with %d replicas on a cluster", n)
	}

	const n = 300
	work := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			if _, err := e.mpool.Exec(testCtx(t, time.Minute), "INSERT INTO outcome VALUES ($1, $2)", i, fmt.Sprintf("o%d", i)); err != nil {
				work <- err
				return
			}
		}
		work <- nil
	}()
	pgtest.Eventually(t, "events flow", func() bool { return ev.distinct() >= n/3 })
	leader := c.StreamLeader(sink.DefaultStream)
	if leader < 0 {
		t.Fatal("the stream has no leader")
	}
	c.Stop(leader)
	next, err := c.WaitStreamLeader(sink.DefaultStream, time.Minute, leader)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-work; err != nil {
		t.Fatal(err)
	}
	pgtest.Eventually(t, "every insert is published", func() bool { return ev.distinct() >= n })
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFormed(time.Minute); err != nil {
		t.Fatal(err)
	}

	// No quorum: the event of this update is not acknowledged, so its
	// entry stays queued on the slave.
	third := 3 - leader - next
	c.Stop(next)
	c.Stop(third)
	failed := r.snk.Stats().Failed
	exec(t, e.mpool, "UPDATE outcome SET name = 'without quorum' WHERE id = 1")
	pgtest.Eventually(t, "the publish fails", func() bool { return r.snk.Stats().Failed > failed })
	if q := queryInt(t, e.spool, "SELECT count(*) FROM pgoutpost.denormalize_queue"); q != 1 {
		t.Fatalf("the slave's denormalize queue holds %d rows while the cluster has no quorum, want the unacknowledged one", q)
	}
	if code, body := r.get(t, "/readyz"); code != 503 || !strings.Contains(body, "nats:") {
		t.Errorf("/readyz without a quorum: %d\n%s", code, body)
	}
	if err := c.Restart(third); err != nil {
		t.Fatal(err)
	}
	synced(t, e.spool, 0, "SELECT count(*) FROM pgoutpost.denormalize_queue")
	if err := c.Restart(next); err != nil {
		t.Fatal(err)
	}
	pgtest.Eventually(t, "the last event arrives", func() bool { return ev.distinct() >= n+1 })

	var want []string
	rows, err := e.mpool.Query(testCtx(t, time.Minute), "SELECT id::text FROM pgoutpost.denormalize_queue")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// What the sidecar stored: every entry's event, once. The consumer
	// receives each at least once: an acknowledgement that the cluster had
	// not stored when it lost its quorum or its consumer leader is
	// redelivered (handlers are idempotent), and a message stored ahead of
	// a failed one is stored again behind it under a new id, so the
	// received ids are compared as a set. The stream's message count shows
	// that nothing else was stored twice: with every id received, any other
	// copy would make it exceed the entries plus the copies sent again.
	ev.mu.Lock()
	received := len(ev.all)
	seen := map[string]bool{}
	var got []string
	for _, x := range ev.all {
		if !seen[x.QueueID] {
			seen[x.QueueID] = true
			got = append(got, x.QueueID)
		}
	}
	ev.mu.Unlock()
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("received %d distinct events for the master's %d queue entries", len(got), len(want))
	}
	resent := r.snk.Stats().Resent
	if m := streamMsgs(t, js); m != uint64(len(want))+resent {
		t.Errorf("the stream holds %d messages for %d queue entries and %d copies sent again", m, len(want), resent)
	}
	t.Logf("leader n%d stopped, then n%d and n%d; sink stats %+v; the consumer received %d deliveries of %d events",
		leader+1, next+1, third+1, r.snk.Stats(), received, len(got))
}
