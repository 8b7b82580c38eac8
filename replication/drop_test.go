package replication

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

// countSlots counts the master's slots of subscription sub: its own and the
// copy slots of its tables (pg_<oid>_sync_…).
func countSlots(t *testing.T, p *pair, slot string, oid uint32) (own, sync int) {
	t.Helper()
	err := p.mpool.QueryRow(ctxT(t, 10*time.Second), `
		SELECT count(*) FILTER (WHERE slot_name = $1),
		       count(*) FILTER (WHERE slot_name LIKE 'pg\_' || $2::text || '\_sync\_%')
		FROM pg_replication_slots`, slot, fmt.Sprint(oid)).Scan(&own, &sync)
	if err != nil {
		t.Fatal(err)
	}
	return own, sync
}

func subOID(t *testing.T, p *pair, name string) uint32 {
	t.Helper()
	var oid uint32
	if err := p.spool.QueryRow(ctxT(t, 10*time.Second), "SELECT oid FROM pg_subscription WHERE subname = $1", name).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	return oid
}

// TestDropSubscriptions: retiring a slave drops its subscription and, on the
// master, its slot and the copy slot of a table whose initial copy keeps
// failing; a second run finds nothing to do; a master that cannot be reached
// leaves an error naming the slot still there.
func TestDropSubscriptions(t *testing.T) {
	reg := testRegistry(nil)
	p := newPair(t, reg)
	pgtest.Exec(t, p.master.DSN, "INSERT INTO cat VALUES (1, 'one')")
	// The slave already holds the row: the copy of cat fails on a duplicate
	// key again and again, and its copy slot stays on the master.
	pgtest.Exec(t, p.slave.DSN, "INSERT INTO cat VALUES (1, 'one')")
	p.publish(t, reg)
	ctx := ctxT(t, 2*time.Minute)
	if _, err := CreateSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo()); err != nil {
		t.Fatal(err)
	}
	sub := p.names.Subs[0].Name
	oid := subOID(t, p, sub)
	eventually(t, "the copy slot of the failing table", func(context.Context) (bool, error) {
		own, sync := countSlots(t, p, sub, oid)
		return own == 1 && sync > 0, nil
	})

	res, err := DropSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo())
	if err != nil {
		t.Fatalf("DropSubscriptions: %v (results %v)", err, res)
	}
	var said []string
	for _, r := range res {
		said = append(said, r.Name+": "+r.Action)
	}
	t.Logf("%s", strings.Join(said, "\n"))
	if own, sync := countSlots(t, p, sub, oid); own != 0 || sync != 0 {
		t.Errorf("after the drop the master still has %d slot(s) named %s and %d copy slot(s)", own, sub, sync)
	}
	var left int
	if err := p.spool.QueryRow(ctx, "SELECT count(*) FROM pg_subscription WHERE subname = $1", sub).Scan(&left); err != nil || left != 0 {
		t.Errorf("subscription %s still on the slave (%d, %v)", sub, left, err)
	}
	if !strings.Contains(strings.Join(said, "\n"), "slot "+sub+" dropped on the master") {
		t.Errorf("results do not report the slot's drop:\n%s", strings.Join(said, "\n"))
	}

	res, err = DropSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo())
	if err != nil || len(res) == 0 || res[0].Action != "absent" {
		t.Errorf("second drop = %v, %v; want absent, no error", res, err)
	}

	// The master cannot be reached: the slave's side is done, the error
	// names the slot left behind.
	pgtest.Exec(t, p.slave.DSN, "DELETE FROM cat")
	if _, err := CreateSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo()); err != nil {
		t.Fatal(err)
	}
	_, err = DropSubscriptions(ctx, p.spool, p.names, "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2")
	if !errors.Is(err, ErrSlotNotDropped) || !strings.Contains(err.Error(), "'"+sub+"'") {
		t.Fatalf("drop with the master unreachable = %v, want ErrSlotNotDropped naming %s", err, sub)
	}
	if own, _ := countSlots(t, p, sub, 0); own != 1 {
		t.Errorf("the master has %d slot(s) named %s, want the one left behind", own, sub)
	}
	eventually(t, "the left slot to be dropped by hand", func(ctx context.Context) (bool, error) {
		_, err := p.mpool.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NULL", sub)
		own, _ := countSlots(t, p, sub, 0)
		return own == 0, err
	})
}
