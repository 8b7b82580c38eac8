//go:build faults

package faults

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

// TestStartWhileNATSDown starts `pgoutpost run` while the NATS server is
// down, as after a node failure that took both away: the sidecar is to wait
// for NATS (it reconnects on its own once running) rather than exit, and be
// ready once NATS is back.
func TestStartWhileNATSDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newEnv(t, "natsdown")
	m := newModel(rand.New(rand.NewPCG(1, 2)), 400, 0)
	e.setupMaster(t, ctx, int(m.units), int(m.outcomes))
	e.setupSlave(t)

	e.nats.Stop()
	sc := e.startSidecar(t)
	hasExited := func() bool {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return sc.exitedLocked()
	}
	// Waiting shows as retries: two background attempts to reach NATS
	// after the first one failed, or an exit.
	pgtest.Eventually(t, "the sidecar's second retry to reach NATS, or its exit", func() bool {
		return hasExited() || logCount(sc, "NATS still unreachable") >= 2
	})
	exited := hasExited()
	if exited {
		t.Errorf("pgoutpost run exited while NATS was down (%v) instead of waiting for it", sc.unexpected)
	}
	if err := e.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	if !exited {
		if why := ready(ctx, e.listen, time.Minute); why != "" {
			t.Errorf("not ready within a minute of NATS coming back: %s", why)
		}
	}
}

// TestSlaveRestartWhileBusy restarts the slave (fast shutdown) while the
// sidecar holds a streamed entry it cannot finish: NATS is down, so the
// denormalize entry cannot be published and its position is not confirmed.
// PostgreSQL's shutdown waits for every walsender's client to confirm all it
// was sent, so the restart is to finish only if the sidecar lets go of the
// stream; otherwise the slave stays "shutting down", refusing every
// connection, until the sidecar goes away.
func TestSlaveRestartWhileBusy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newEnv(t, "busy")
	m := newModel(rand.New(rand.NewPCG(1, 2)), 400, 0)
	e.setupMaster(t, ctx, int(m.units), int(m.outcomes))
	e.setupSlave(t)
	sc := e.startSidecar(t)
	waitReady(t, ctx, e.listen)

	e.nats.Stop()
	pgtest.Exec(t, e.master.DSN, "UPDATE shop_outcome SET score = score + 1 WHERE id = 1")
	spool := pgtest.Pool(t, e.slave.DSN)
	pgtest.Eventually(t, "the entry in the slave's queue", func() bool {
		var n int
		if err := spool.QueryRow(ctx, "SELECT count(*) FROM pgoutpost.denormalize_queue").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	spool.Close()
	// The sidecar has the entry once it has failed to publish it.
	pgtest.Eventually(t, "the sidecar's first failed publish", func() bool {
		return logCount(sc, "nats publish failed") > 0
	})

	hung, err := restartSlave(ctx, e.slave.Cluster, sc)
	if err != nil {
		t.Fatal(err)
	}
	if hung {
		log, _ := os.ReadFile(filepath.Join(e.slave.Cluster.Dir, "server.log"))
		t.Errorf("the slave's fast shutdown did not finish within 15s while the sidecar held an unpublished entry; "+
			"it finished only once the sidecar was killed. Server log, last lines:\n%s", lastLines(string(log), 25))
	}
	if err := e.nats.Restart(); err != nil {
		t.Fatal(err)
	}
}
