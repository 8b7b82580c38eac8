package natsembed_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/internal/natsembed"
)

func TestClusterLeaderStopAndPartition(t *testing.T) {
	c, err := natsembed.StartCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.ConnectedClusterName() == "" {
		t.Fatal("the client does not see a cluster")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	leader, err := c.WaitStreamLeader("S", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(js jetstream.JetStream, subject string) {
		t.Helper()
		for {
			_, err := js.Publish(ctx, subject, nil)
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("publish %s: %v", subject, err)
			}
		}
	}
	publish(js, "s.before")

	c.Stop(leader)
	next, err := c.WaitStreamLeader("S", time.Minute, leader)
	if err != nil {
		t.Fatal(err)
	}
	publish(js, "s.stopped")
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	// The restarted node catches up from the new leader.
	if err := waitFor(time.Minute, func() error {
		if seq, ok := c.StreamLastSeq(leader, "S"); !ok || seq != 2 {
			return errors.New("the restarted node has not caught up")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	c.Partition(next)
	if err := waitFor(time.Minute, func() error {
		if n := c.Nodes[next].NumRoutes(); n != 0 {
			return errors.New("the partitioned node still has routes")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	third, err := c.WaitStreamLeader("S", time.Minute, next)
	if err != nil {
		t.Fatal(err)
	}
	if third == next {
		t.Fatal("the partitioned node still leads")
	}
	// A client of the partitioned node could not publish until Heal: this
	// one is connected to the leader's side.
	nc2, err := nats.Connect(c.Nodes[third].ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, err := jetstream.New(nc2)
	if err != nil {
		t.Fatal(err)
	}
	publish(js2, "s.partitioned")
	if seq, _ := c.StreamLastSeq(next, "S"); seq != 2 {
		t.Fatalf("the partitioned node holds %d messages; want the 2 from before the partition", seq)
	}
	c.Heal(next)
	if err := waitFor(time.Minute, func() error {
		if seq, ok := c.StreamLastSeq(next, "S"); !ok || seq != 3 {
			return errors.New("the healed node has not caught up")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
