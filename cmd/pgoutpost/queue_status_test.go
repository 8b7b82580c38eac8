package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

func TestQueueStatusAndRetry(t *testing.T) {
	ctx := context.Background()
	slave := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.Exec(t, slave.DSN, queueCLISchema)
	pool := pgtest.Pool(t, slave.DSN)
	if _, err := queue.Install(ctx, pool, queue.InstallOptions{Role: registry.RoleSlave}, false); err != nil {
		t.Fatal(err)
	}
	cfg := writeQueueConfig(t, "staging", "slave", slave.DSN)
	pgtest.Exec(t, slave.DSN, `
INSERT INTO pgoutpost.delete_queue (id, table_name, pk, xid) VALUES ('01a20e5d-5d81-7e9b-9c04-2dbe0479d897', 'public.unit', '{"id": 1}', 5);
INSERT INTO pgoutpost.dead_letter (queue, entry_id, table_name, pk, op, xid, created_at, entry, error)
SELECT 'delete', '01a20e5d-5d81-7e9b-9c04-2dbe0479d898', 'public.unit', '{"id": 2}', 'delete', 6, now(),
  jsonb_build_object('id', '01a20e5d-5d81-7e9b-9c04-2dbe0479d898', 'table_name', 'public.unit', 'pk', '{"id": 2}'::jsonb,
    'op', 'delete', 'xid', 6, 'created_at', now()),
  'delete from public.unit: protected: 1 referencing row(s): public.note(1) references public.unit(2) through unit_id (PROTECT)';`)

	// A dead letter whose text came from a hostile queue row: a terminal
	// escape and a line that pretends to be pgoutpost's own.
	pgtest.Exec(t, slave.DSN, `INSERT INTO pgoutpost.dead_letter (queue, entry_id, table_name, pk, op, entry, error)
VALUES ('delete', '01a20e5d-5d81-7e9b-9c04-2dbe0479d899', E'public.evil\x1b[2J\nQUEUE fake', '{"id": 3}', 'delete', '{}', E'bad key \x1b[31mred\x1b[0m')`)
	code, out, errs := runCLI(t, "queue", "status", "--config", cfg)
	if code != 0 {
		t.Fatalf("queue status: exit %d: %s", code, errs)
	}
	if strings.Contains(out, "\x1b") || strings.Contains(out, "\nQUEUE fake") || !strings.Contains(out, `public.evil\x1b[2J\nQUEUE fake`) {
		t.Errorf("queue status prints a queue row's control characters:\n%q", out)
	}
	pgtest.Exec(t, slave.DSN, "DELETE FROM pgoutpost.dead_letter WHERE entry_id = '01a20e5d-5d81-7e9b-9c04-2dbe0479d899'")
	for _, want := range []string{"delete", "pgoutpost.delete_queue", "01a20e5d-5d81-7e9b-9c04-2dbe0479d898", "protected", "public.note(1)"} {
		if !strings.Contains(out, want) {
			t.Errorf("queue status output lacks %q:\n%s", want, out)
		}
	}
	code, out, errs = runCLI(t, "queue", "status", "--json", "--config", cfg)
	if code != 0 {
		t.Fatalf("queue status --json: exit %d: %s", code, errs)
	}
	var st queue.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("queue status --json: %v\n%s", err, out)
	}
	if len(st.Queues) != 2 || st.Queues[0].Pending != 1 || st.Queues[0].DeadLetters != 1 || len(st.DeadLetters) != 1 {
		t.Errorf("queue status --json: %+v", st)
	}

	if code, _, _ := runCLI(t, "queue", "retry", "--config", cfg); code != 2 {
		t.Errorf("queue retry without --id or --all: exit %d, want 2", code)
	}
	code, out, errs = runCLI(t, "queue", "retry", "--all", "--config", cfg)
	if code != 0 || !strings.Contains(out, "put 1 dead letter") {
		t.Fatalf("queue retry --all: exit %d: %s%s", code, out, errs)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pgoutpost.delete_queue WHERE id = '01a20e5d-5d81-7e9b-9c04-2dbe0479d898' AND xid = 6 AND pk = '{"id": 2}'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("the retried entry is not back in delete_queue: %d, %v", n, err)
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM pgoutpost.dead_letter").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d dead letters left, %v", n, err)
	}
}
