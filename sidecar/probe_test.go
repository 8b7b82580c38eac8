package sidecar

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

// TestProbeCountsSeedQueues: a sidecar that processes django-logical-
// replication's queues (SeedQueues) shows their pending entries, dead
// letters and oldest entry in its gauges and queue lag, as it does for
// pgoutpost's own queues.
func TestProbeCountsSeedQueues(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.Exec(t, db.DSN, `
CREATE TABLE logical_replication_deletequeue (id uuid PRIMARY KEY, object_pk text NOT NULL, content_type_id int NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE logical_replication_denormalizequeue (LIKE logical_replication_deletequeue INCLUDING ALL);`)
	pool := pgtest.Pool(t, db.DSN)
	if _, err := queue.Install(ctx, pool, queue.InstallOptions{Role: registry.RoleSlave, SeedQueues: true}, false); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, db.DSN, `
INSERT INTO logical_replication_deletequeue SELECT gen_random_uuid(), g::text, 1, now() - g * interval '1 hour' FROM generate_series(1, 3) g;
INSERT INTO logical_replication_denormalizequeue VALUES (gen_random_uuid(), '1', 1, now());
INSERT INTO pgoutpost.delete_queue (table_name, pk, op, xid) VALUES ('public.unit', '{"id": 1}', 'delete', 1);
INSERT INTO pgoutpost.dead_letter (queue, entry_id, entry, error) VALUES ('logical_replication_deletequeue', gen_random_uuid(), '{}', 'test');`)

	s, err := New(Options{
		DB: pool, ReplicationDSN: db.DSN, Registerer: prometheus.NewRegistry(), Slot: "probe_seed", SeedQueues: true,
		Processor: queue.NewProcessor(pool, registry.New(nil), nil, nil, queue.ProcessorOptions{SeedQueues: true}),
	})
	if err != nil {
		t.Fatal(err)
	}
	var p probeState
	if err := s.probeDB(ctx, &p); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	metrics := string(body)
	for _, c := range []struct {
		queue         registry.Queue
		pending, dead int
	}{
		{registry.DeleteQueue, 1, 0},
		{registry.DenormalizeQueue, 0, 0},
		{registry.SeedDeleteQueue, 3, 1},
		{registry.SeedDenormalizeQueue, 1, 0},
	} {
		for _, want := range []string{
			fmt.Sprintf("pgoutpost_queue_pending_entries{queue=%q} %d\n", c.queue, c.pending),
			fmt.Sprintf("pgoutpost_queue_dead_letters{queue=%q} %d\n", c.queue, c.dead),
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %s", strings.TrimSpace(want))
			}
		}
	}
	lag := -1.0
	for _, l := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(l, "pgoutpost_queue_lag_seconds "); ok {
			lag, _ = strconv.ParseFloat(v, 64)
		}
	}
	if lag < (179 * time.Minute).Seconds() {
		t.Errorf("pgoutpost_queue_lag_seconds = %v, want the seed delete queue's oldest entry, 3 hours old", lag)
	}
	if p.slotFound {
		t.Error("the probe found a slot that does not exist")
	}
}
