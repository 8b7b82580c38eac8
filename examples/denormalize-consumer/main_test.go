package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/sink"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestKeepsOutcomeNameUpToDate(t *testing.T) {
	schema, err := os.ReadFile("../../cmd/pgoutpost-demo/demo/schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.Exec(t, db.DSN, string(schema))
	pgtest.Exec(t, db.DSN, `
		INSERT INTO shop_unit (id, name) VALUES (1, 'u');
		INSERT INTO shop_outcome (id, name) VALUES (1, 'won'), (2, 'lost');
		INSERT INTO app_report (unit_id, outcome_id, title, outcome_name) VALUES
			(1, 1, 'a', 'won'), (1, 1, 'b', 'won'), (1, 2, 'c', 'lost'), (1, NULL, 'd', NULL);`)
	pool := pgtest.Pool(t, db.DSN)

	srv := pgtest.NATS(t)
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	pub, err := sink.Connect(ctx, sink.Options{URL: srv.URL(), Env: "staging", CreateStream: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	n := 0
	publish := func(table string, op event.Op, id int, row string) {
		t.Helper()
		n++
		e := event.Event{Env: "staging", Table: table, Op: op,
			PK:      json.RawMessage(fmt.Sprintf(`{"id":%d}`, id)),
			QueueID: fmt.Sprintf("q-%d", n), CommittedAt: time.Now()}
		if row != "" {
			e.Row = json.RawMessage(row)
		}
		m := sink.Message{ID: event.MsgID("1", e.Env, "denormalize_queue", e.QueueID), Event: e}
		if done, err := pub.Publish(ctx, []sink.Message{m}); err != nil || done != 1 {
			t.Fatalf("publish: %v", err)
		}
	}
	names := func() string {
		rows, err := pool.Query(ctx, `SELECT title, coalesce(outcome_name, '∅') FROM app_report ORDER BY title`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var b bytes.Buffer
		for rows.Next() {
			var title, name string
			if err := rows.Scan(&title, &name); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s=%s ", title, name)
		}
		return b.String()
	}

	runCtx, stop := context.WithCancel(ctx)
	var out pgtest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"--nats-url", srv.URL(), "--env", "staging", "--dsn", db.DSN}, &out)
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v\n%s", err, out.String())
		}
	}()

	steps := []struct {
		name string
		send func()
		want string
	}{
		{"update copies the new name", func() {
			publish("public.shop_outcome", event.OpUpdate, 1, `{"id":1,"name":"victory","score":3}`)
		}, "a=victory b=victory c=lost d=∅ "},
		{"other tables are ignored", func() {
			publish("public.shop_unit", event.OpUpdate, 2, `{"id":2,"name":"x"}`)
			publish("public.shop_outcome", event.OpUpsert, 2, `{"id":2,"name":"defeat","score":0}`)
		}, "a=victory b=victory c=defeat d=∅ "},
		{"ten updates end with the last name", func() {
			for i := 1; i <= 10; i++ {
				publish("public.shop_outcome", event.OpUpdate, 1, fmt.Sprintf(`{"id":1,"name":"v%d","score":%d}`, i, i))
			}
		}, "a=v10 b=v10 c=defeat d=∅ "},
		{"delete marks stale", func() {
			publish("public.shop_outcome", event.OpDelete, 2, "")
		}, "a=v10 b=v10 c=∅ d=∅ "},
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("app_report is %q; the consumer's output:\n%s", names(), out.String())
		}
	})
	for _, s := range steps {
		s.send()
		pgtest.Eventually(t, s.name+": app_report is "+s.want, func() bool { return names() == s.want })
	}
}
