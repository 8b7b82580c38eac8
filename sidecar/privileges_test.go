package sidecar_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/replication"
)

// TestLeastPrivilegeRun runs the whole sidecar (slot, stream, probes,
// processor) as a role granted exactly what replication.MissingPrivileges
// lists for a slave: deletes cascade, events go out, nothing is
// dead-lettered, and the slave ends equal to the master.
func TestLeastPrivilegeRun(t *testing.T) {
	e := newE2E(t)
	role := "lp_" + e.slave.Name
	ident := pgx.Identifier{role}.Sanitize()
	dsn := pgtest.Role(t, e.slave, role, "")
	conn, err := pgx.Connect(testCtx(t, time.Minute), dsn)
	if err != nil {
		t.Fatal(err)
	}
	needs, err := replication.MissingPrivileges(testCtx(t, time.Minute), conn, "slave", e.reg)
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range needs {
		if n.Grant != "" && n.Commands == "run" {
			exec(t, e.spool, n.Grant)
		}
	}
	// The test's own trigger on the slave logs each deleted unit as the
	// deleting role: a user trigger's needs are the user's.
	exec(t, e.spool, "GRANT INSERT ON deleted_log TO "+ident)
	e.runDSN = dsn
	r := e.start(t, t, nil)
	defer func() {
		if t.Failed() {
			_, body := r.get(t, "/readyz")
			t.Logf("/readyz:\n%s", body)
		}
	}()
	exec(t, e.mpool, "INSERT INTO bulk SELECT g, repeat('x', 40) FROM generate_series(1, $1::int) g", bulkRows)
	deleteAfterBulkLoad(t, e)
}
