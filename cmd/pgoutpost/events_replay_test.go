package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/sink"
)

// TestEventsReplay replays a denormalize model of a running slave onto NATS:
// one snapshot event per row, whose committed_at is the master's commit time
// of the row's last change (the slave tracks commit timestamps, and its apply
// worker records the master's).
func TestEventsReplay(t *testing.T) {
	master, slave, scfg, env := runPair(t)

	pgtest.Exec(t, master.DSN, "INSERT INTO outcome VALUES (1, 'one'), (2, 'two'), (3, 'three')")
	pgtest.Exec(t, master.DSN, "UPDATE outcome SET name = 'TWO' WHERE id = 2")
	spool := pgtest.Pool(t, slave.DSN)
	pgtest.Eventually(t, "the update on the slave", func() bool {
		var n int
		if err := spool.QueryRow(context.Background(), "SELECT count(*) FROM outcome WHERE name = 'TWO'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	want := map[string]time.Time{} // pk → the master's commit time of its last change
	rows, err := pgtest.Pool(t, master.DSN).Query(context.Background(),
		"SELECT jsonb_build_object('id', id)::text, pg_xact_commit_timestamp(xmin) FROM outcome")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var pk string
		var at time.Time
		if err := rows.Scan(&pk, &at); err != nil {
			t.Fatal(err)
		}
		want[pk] = at
	}
	if rows.Close(); rows.Err() != nil || len(want) != 3 {
		t.Fatalf("master commit times %v, %v", want, rows.Err())
	}

	ns := pgtest.NATS(t)
	t.Setenv("PGOUTPOST_NATS_URL", ns.URL())
	if out := mustRun(t, "events", "replay", "--table", "outcome", "--dry-run", "--config", scfg); !strings.Contains(out, "would publish 3 snapshot event(s)") {
		t.Errorf("--dry-run: %s", out)
	}
	code, out, errs := runCLI(t, "events", "replay", "--table", "public.outcome", "--batch", "2", "--config", scfg)
	if code != exitOK || !strings.Contains(out, "published 3 snapshot event(s)") || !strings.Contains(errs, "3 of 3 rows") {
		t.Fatalf("events replay: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}

	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), sink.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := st.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		e, err := event.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if e.Op != event.OpSnapshot || e.Env != env || e.Table != "public.outcome" || !e.HasRow() {
			t.Errorf("message %d: %+v", seq, e)
		}
		if at, ok := want[string(e.PK)]; !ok || !e.CommittedAt.Equal(at) {
			t.Errorf("message %d (pk %s): committed_at %s, want the master's commit time %s", seq, e.PK, e.CommittedAt, at)
		}
		if m.Header.Get(event.HeaderCEType) != "pgoutpost.denormalize.snapshot" {
			t.Errorf("message %d: ce-type %q", seq, m.Header.Get(event.HeaderCEType))
		}
	}

	// Only denormalize models have events; the error names them.
	code, _, errs = runCLI(t, "events", "replay", "--table", "unit", "--config", scfg)
	if code != exitUsage || !strings.Contains(errs, "not a denormalize model") || !strings.Contains(errs, "public.outcome") {
		t.Errorf("replay of a delete model: exit %d\n%s", code, errs)
	}
	if code, _, errs := runCLI(t, "events", "replay", "--config", scfg); code != exitUsage || !strings.Contains(errs, "--table is required") {
		t.Errorf("replay without --table: exit %d\n%s", code, errs)
	}
}
