package registry

import "testing"

// TestQueues pins each queue's table, and that a table maps back to its
// queue: the names are in the master's triggers, the subscriptions and the
// events' ids of deployments already running.
func TestQueues(t *testing.T) {
	for _, c := range []struct {
		q             Queue
		table         string
		seed, deletes bool
	}{
		{DeleteQueue, "pgoutpost.delete_queue", false, true},
		{DenormalizeQueue, "pgoutpost.denormalize_queue", false, false},
		{SeedDeleteQueue, "public.logical_replication_deletequeue", true, true},
		{SeedDenormalizeQueue, "public.logical_replication_denormalizequeue", true, false},
	} {
		if got := c.q.Table().String(); got != c.table {
			t.Errorf("%s.Table() = %s, want %s", c.q, got, c.table)
		}
		if c.q.Seed() != c.seed || c.q.Deletes() != c.deletes || !c.q.Known() {
			t.Errorf("%s: Seed %v Deletes %v Known %v", c.q, c.q.Seed(), c.q.Deletes(), c.q.Known())
		}
		if q, ok := QueueOf(c.q.Table()); !ok || q != c.q {
			t.Errorf("QueueOf(%s) = %q, %v", c.q.Table(), q, ok)
		}
	}
	if _, ok := QueueOf(DeadLetter); ok {
		t.Error("dead_letter is a queue")
	}
	if Queue("dead_letter").Known() {
		t.Error("an unknown queue is known")
	}
}
