package queue

import (
	"context"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutpost/pgoutpost/registry"
)

func TestMasterTriggers(t *testing.T) {
	ctx := context.Background()
	reg := testRegistry()
	reg.Table(registry.TableName{Schema: "public", Name: "pair"}).OnTruncate = registry.TruncateRefuse
	_, pool := masterDB(t, reg)
	exec := func(t *testing.T, sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	reset := func(t *testing.T) {
		t.Helper()
		// One string runs on one connection, so the setting covers it all.
		exec(t, `SET pgoutpost.skip_queue = on;
			DELETE FROM unit; DELETE FROM pair; DELETE FROM outcome;
			DELETE FROM pgoutpost.delete_queue; DELETE FROM pgoutpost.denormalize_queue;
			RESET pgoutpost.skip_queue`)
	}
	// The pool may hand each statement another connection: pin one for
	// tests that set session state.
	conn := func(t *testing.T) *pgx.Conn {
		t.Helper()
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Release)
		return c.Conn()
	}

	t.Run("single delete logs the key, xid and transaction time", func(t *testing.T) {
		reset(t)
		exec(t, "INSERT INTO unit (id, name) VALUES (1, 'a'), (2, 'b')")
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var xid int64
		var start time.Time
		if err := tx.QueryRow(ctx, "SELECT txid_current(), now()").Scan(&xid, &start); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM unit WHERE id = 1"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		got := entries(t, pool, registry.DeleteQueue.Table())
		if len(got) != 1 {
			t.Fatalf("delete_queue has %d rows, want 1: %+v", len(got), got)
		}
		e := got[0]
		if e.Table != "public.unit" || e.PK != `{"id": 1}` || e.Op != OpDelete || e.XID != xid {
			t.Errorf("entry = %+v, want public.unit {\"id\": 1} delete xid %d", e, xid)
		}
		var createdAt time.Time
		if err := pool.QueryRow(ctx, "SELECT created_at FROM pgoutpost.delete_queue").Scan(&createdAt); err != nil {
			t.Fatal(err)
		}
		if !createdAt.Equal(start) {
			t.Errorf("created_at = %v, want the transaction's start %v", createdAt, start)
		}
		if e.ID[6]>>4 != 7 || e.ID[8]>>6 != 2 {
			t.Errorf("id %x is not a UUIDv7 (version %d, variant bits %b)", e.ID, e.ID[6]>>4, e.ID[8]>>6)
		}
		if d := UUIDv7Time(e.ID).Sub(start); d < 0 || d > time.Minute {
			t.Errorf("id time %v is %v after the transaction start", UUIDv7Time(e.ID), d)
		}
		if n := count(t, pool, "SELECT count(*) FROM pgoutpost.denormalize_queue"); n != 0 {
			t.Errorf("a delete model's delete wrote %d denormalize_queue rows", n)
		}
	})

	t.Run("bulk delete logs every row in one statement", func(t *testing.T) {
		reset(t)
		exec(t, "INSERT INTO unit (id, name) SELECT g, 'u' || g FROM generate_series(1, 5000) g")
		exec(t, "DELETE FROM unit WHERE id <= 3000")
		if n := count(t, pool, "SELECT count(*) FROM pgoutpost.delete_queue"); n != 3000 {
			t.Errorf("delete_queue has %d rows, want 3000", n)
		}
		if n := count(t, pool, "SELECT count(DISTINCT id) FROM pgoutpost.delete_queue"); n != 3000 {
			t.Errorf("%d distinct ids, want 3000", n)
		}
		if n := count(t, pool, "SELECT count(*) FROM pgoutpost.delete_queue d JOIN generate_series(1, 3000) g ON d.pk = jsonb_build_object('id', g)"); n != 3000 {
			t.Errorf("%d rows name the deleted keys, want 3000", n)
		}
	})

	t.Run("composite key", func(t *testing.T) {
		reset(t)
		exec(t, "INSERT INTO pair VALUES (1, 'x', 0), (1, 'y', 0), (2, 'x', 0)")
		exec(t, "DELETE FROM pair WHERE b = 'x'")
		got := entries(t, pool, registry.DeleteQueue.Table())
		var keys []string
		for _, e := range got {
			keys = append(keys, e.PK)
		}
		want := map[string]bool{`{"a": 1, "b": "x"}`: true, `{"a": 2, "b": "x"}`: true}
		if len(keys) != 2 || !want[keys[0]] || !want[keys[1]] || keys[0] == keys[1] {
			t.Errorf("keys = %q, want %v", keys, want)
		}
	})

	t.Run("denormalize insert, update and delete", func(t *testing.T) {
		reset(t)
		exec(t, `INSERT INTO outcome VALUES (1, 'a', '{"x": 1}'), (2, 'b', null)`)
		exec(t, "UPDATE outcome SET name = 'c' WHERE id = 1")
		exec(t, "DELETE FROM outcome WHERE id = 2")
		var ops []string
		for _, e := range entries(t, pool, registry.DenormalizeQueue.Table()) {
			ops = append(ops, e.Op+" "+e.PK)
		}
		// The two inserts of one statement may share a microsecond, so
		// their order among themselves is not defined.
		if len(ops) != 3 || ops[0] == ops[1] || !strings.HasPrefix(ops[0], "insert") || !strings.HasPrefix(ops[1], "insert") ||
			ops[2] != `update {"id": 1}` {
			t.Errorf("denormalize_queue = %q, want inserts of ids 1 and 2, then an update of id 1", ops)
		}
		del := entries(t, pool, registry.DeleteQueue.Table())
		if len(del) != 1 || del[0].PK != `{"id": 2}` || del[0].Table != "public.outcome" {
			t.Errorf("delete_queue = %+v, want one delete of public.outcome {\"id\": 2}", del)
		}
	})

	t.Run("update that changes nothing logs nothing", func(t *testing.T) {
		reset(t)
		exec(t, `INSERT INTO outcome SELECT g, 'n' || g, '{"k": [1, 2]}' FROM generate_series(1, 100) g`)
		exec(t, "DELETE FROM pgoutpost.denormalize_queue")
		exec(t, "UPDATE outcome SET name = name, data = data")
		exec(t, "UPDATE outcome SET name = 'n' || id WHERE id <= 50")
		exec(t, "UPDATE outcome SET name = 'changed' WHERE id IN (7, 8)")
		exec(t, `UPDATE outcome SET data = '{"k": [1, 3]}' WHERE id = 9`)
		got := entries(t, pool, registry.DenormalizeQueue.Table())
		keys := map[string]bool{}
		for _, e := range got {
			keys[e.PK] = true
		}
		if len(got) != 3 || !keys[`{"id": 7}`] || !keys[`{"id": 8}`] || !keys[`{"id": 9}`] {
			t.Errorf("denormalize_queue = %+v, want updates of ids 7, 8, 9 only", got)
		}
	})

	t.Run("upsert logs inserts and real updates only", func(t *testing.T) {
		reset(t)
		exec(t, "INSERT INTO outcome (id, name) VALUES (1, 'a'), (2, 'b')")
		exec(t, "DELETE FROM pgoutpost.denormalize_queue")
		exec(t, `INSERT INTO outcome (id, name) VALUES (1, 'a'), (2, 'changed'), (3, 'new')
			ON CONFLICT (id) DO UPDATE SET name = excluded.name`)
		var ops []string
		for _, e := range entries(t, pool, registry.DenormalizeQueue.Table()) {
			ops = append(ops, e.Op+" "+e.PK)
		}
		sort.Strings(ops)
		if want := []string{`insert {"id": 3}`, `update {"id": 2}`}; strings.Join(ops, "|") != strings.Join(want, "|") {
			t.Errorf("denormalize_queue = %q, want %q", ops, want)
		}
	})

	t.Run("update of the key logs the new key", func(t *testing.T) {
		reset(t)
		exec(t, "INSERT INTO outcome (id, name) VALUES (1, 'a')")
		exec(t, "DELETE FROM pgoutpost.denormalize_queue")
		exec(t, "UPDATE outcome SET id = 10")
		got := entries(t, pool, registry.DenormalizeQueue.Table())
		if len(got) != 1 || got[0].PK != `{"id": 10}` || got[0].Op != OpUpdate {
			t.Errorf("denormalize_queue = %+v, want one update of id 10", got)
		}
	})

	t.Run("truncate logs a delete of every row", func(t *testing.T) {
		reset(t)
		exec(t, "INSERT INTO unit (id) SELECT generate_series(1, 250)")
		exec(t, "INSERT INTO outcome (id) SELECT generate_series(1, 5)")
		exec(t, "TRUNCATE unit, outcome")
		if n := count(t, pool, "SELECT count(*) FROM pgoutpost.delete_queue WHERE table_name = 'public.unit' AND op = 'delete'"); n != 250 {
			t.Errorf("%d unit deletes logged, want 250", n)
		}
		if n := count(t, pool, "SELECT count(*) FROM pgoutpost.delete_queue WHERE table_name = 'public.outcome'"); n != 5 {
			t.Errorf("%d outcome deletes logged, want 5", n)
		}
		if n := count(t, pool, "SELECT count(*) FROM unit"); n != 0 {
			t.Errorf("TRUNCATE left %d rows", n)
		}
	})

	t.Run("truncate refused when on_truncate is refuse", func(t *testing.T) {
		reset(t)
		exec(t, "INSERT INTO pair VALUES (1, 'x', 0)")
		_, err := pool.Exec(ctx, "TRUNCATE pair")
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, "public.pair") || !strings.Contains(pgErr.Message, "refuse") {
			t.Fatalf("TRUNCATE pair: err = %v, want a refusal naming public.pair", err)
		}
		if n := count(t, pool, "SELECT count(*) FROM pair"); n != 1 {
			t.Errorf("refused TRUNCATE left %d rows, want 1", n)
		}
		c := conn(t)
		if _, err := c.Exec(ctx, "SET pgoutpost.skip_queue = on"); err != nil {
			t.Fatal(err)
		}
		defer c.Exec(ctx, "RESET pgoutpost.skip_queue") //nolint:errcheck
		if _, err := c.Exec(ctx, "TRUNCATE pair"); err != nil {
			t.Errorf("TRUNCATE with skip_queue: %v", err)
		}
	})

	t.Run("skip_queue suppresses every trigger", func(t *testing.T) {
		reset(t)
		c := conn(t)
		for _, s := range []string{
			"SET pgoutpost.skip_queue = on",
			"INSERT INTO unit (id) VALUES (1), (2)",
			"DELETE FROM unit WHERE id = 1",
			"INSERT INTO outcome (id, name) VALUES (1, 'a')",
			"UPDATE outcome SET name = 'b'",
			"DELETE FROM outcome",
			"TRUNCATE unit",
		} {
			if _, err := c.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		if n := count(t, pool, "SELECT (SELECT count(*) FROM pgoutpost.delete_queue) + (SELECT count(*) FROM pgoutpost.denormalize_queue)"); n != 0 {
			t.Errorf("skip_queue session wrote %d queue rows", n)
		}
		// Transaction-local: SET LOCAL ends with the transaction.
		if _, err := c.Exec(ctx, "RESET pgoutpost.skip_queue"); err != nil {
			t.Fatal(err)
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"SET LOCAL pgoutpost.skip_queue = on", "INSERT INTO unit (id) VALUES (5)", "DELETE FROM unit WHERE id = 5"} {
			if _, err := tx.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, "INSERT INTO unit (id) VALUES (6); DELETE FROM unit WHERE id = 6"); err != nil {
			t.Fatal(err)
		}
		got := entries(t, pool, registry.DeleteQueue.Table())
		if len(got) != 1 || got[0].PK != `{"id": 6}` {
			t.Errorf("after SET LOCAL ended, delete_queue = %+v, want only id 6", got)
		}
	})

	t.Run("delete, insert again, delete again logs twice", func(t *testing.T) {
		reset(t)
		for range 2 {
			exec(t, "INSERT INTO unit (id, name) VALUES (42, 'x')")
			exec(t, "DELETE FROM unit WHERE id = 42")
		}
		got := entries(t, pool, registry.DeleteQueue.Table())
		if len(got) != 2 || got[0].PK != `{"id": 42}` || got[1].PK != `{"id": 42}` || got[0].ID == got[1].ID {
			t.Errorf("delete_queue = %+v, want two entries for id 42", got)
		}
		if !(string(got[0].ID[:]) < string(got[1].ID[:])) || got[0].XID >= got[1].XID {
			t.Errorf("ids/xids not in write order: %+v", got)
		}
	})

	t.Run("application role needs no privilege on the queue", func(t *testing.T) {
		reset(t)
		exec(t, "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgoutpost_test_app') THEN CREATE ROLE pgoutpost_test_app; END IF; END $$")
		exec(t, "GRANT SELECT, INSERT, UPDATE, DELETE ON unit TO pgoutpost_test_app")
		t.Cleanup(func() {
			pool.Exec(ctx, "REVOKE ALL ON unit FROM pgoutpost_test_app") //nolint:errcheck
		})
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		for _, s := range []string{"SET LOCAL ROLE pgoutpost_test_app", "INSERT INTO unit (id) VALUES (9)", "DELETE FROM unit WHERE id = 9"} {
			if _, err := tx.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		if _, err := tx.Exec(ctx, "RESET ROLE"); err != nil {
			t.Fatal(err)
		}
		var n int64
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM pgoutpost.delete_queue").Scan(&n); err != nil || n != 1 {
			t.Errorf("delete by the application role logged %d rows (err %v), want 1", n, err)
		}
	})

	// The table functions are SECURITY DEFINER without a SET search_path
	// (see tableHeader): a caller whose search_path puts its own schema before
	// pg_catalog must not get its functions or operators run as the
	// function's owner. Each one here would raise if any name in the
	// functions resolved through the search_path.
	t.Run("a caller's search_path changes nothing", func(t *testing.T) {
		reset(t)
		exec(t, "DROP SCHEMA IF EXISTS pgoutpost_test_evil CASCADE")
		t.Cleanup(func() { pool.Exec(ctx, "DROP SCHEMA IF EXISTS pgoutpost_test_evil CASCADE") }) //nolint:errcheck
		exec(t, `CREATE SCHEMA pgoutpost_test_evil;
CREATE FUNCTION pgoutpost_test_evil.hijacked() RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked through the search_path'; END $$;
CREATE FUNCTION pgoutpost_test_evil.eq(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT pgoutpost_test_evil.hijacked() IS NULL $$;
CREATE OPERATOR pgoutpost_test_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = pgoutpost_test_evil.eq);
CREATE FUNCTION pgoutpost_test_evil.eqi(int, int) RETURNS boolean LANGUAGE sql AS $$ SELECT pgoutpost_test_evil.hijacked() IS NULL $$;
CREATE OPERATOR pgoutpost_test_evil.= (LEFTARG = int, RIGHTARG = int, FUNCTION = pgoutpost_test_evil.eqi);
CREATE FUNCTION pgoutpost_test_evil.cat(name, text) RETURNS text LANGUAGE sql AS $$ SELECT pgoutpost_test_evil.hijacked()::text $$;
CREATE OPERATOR pgoutpost_test_evil.|| (LEFTARG = name, RIGHTARG = text, FUNCTION = pgoutpost_test_evil.cat);
CREATE FUNCTION pgoutpost_test_evil.mul(numeric, integer) RETURNS numeric LANGUAGE sql AS $$ SELECT pgoutpost_test_evil.hijacked()::text::numeric $$;
CREATE OPERATOR pgoutpost_test_evil.* (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = pgoutpost_test_evil.mul);
CREATE FUNCTION pgoutpost_test_evil.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT pgoutpost_test_evil.hijacked()::text $$;
CREATE FUNCTION pgoutpost_test_evil.random() RETURNS double precision LANGUAGE sql AS $$ SELECT pgoutpost_test_evil.hijacked()::text::float8 $$;
CREATE FUNCTION pgoutpost_test_evil.uuidv7() RETURNS uuid LANGUAGE sql AS $$ SELECT pgoutpost_test_evil.hijacked()::text::uuid $$;
CREATE FUNCTION pgoutpost_test_evil.jsonb_build_object(text, bigint) RETURNS jsonb LANGUAGE sql AS $$ SELECT pgoutpost_test_evil.hijacked()::text::jsonb $$;
CREATE FUNCTION pgoutpost_test_evil.jsonb_build_object(text, int) RETURNS jsonb LANGUAGE sql AS $$ SELECT pgoutpost_test_evil.hijacked()::text::jsonb $$;
CREATE FUNCTION pgoutpost_test_evil.format(text, name, name) RETURNS text LANGUAGE sql AS $$ SELECT pgoutpost_test_evil.hijacked()::text $$;`)
		// The decoys work: called in the open, each one raises.
		for _, s := range []string{"SELECT 'a'::text = 'a'::text", "SELECT lower('a')", "SELECT random()", "SELECT 1::numeric * 2"} {
			if _, err := pool.Exec(ctx, "SET search_path = pgoutpost_test_evil, pg_catalog; "+s); err == nil || !strings.Contains(err.Error(), "hijacked") {
				t.Fatalf("decoy %q under the hostile search_path: err = %v, want it to raise", s, err)
			}
		}
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		for _, s := range []string{
			"SET LOCAL search_path = pgoutpost_test_evil, pg_catalog, public",
			"INSERT INTO public.unit (id, name) VALUES (1, 'a'), (2, 'b')",
			"DELETE FROM public.unit WHERE id OPERATOR(pg_catalog.=) 1",
			"INSERT INTO public.outcome (id, name) VALUES (1, 'a')",
			"UPDATE public.outcome SET name = 'b'",
			"DELETE FROM public.outcome",
			"TRUNCATE public.unit",
		} {
			if _, err := tx.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		if _, err := tx.Exec(ctx, "RESET search_path"); err != nil {
			t.Fatal(err)
		}
		var deletes, denorm int64
		if err := tx.QueryRow(ctx, "SELECT (SELECT count(*) FROM pgoutpost.delete_queue), (SELECT count(*) FROM pgoutpost.denormalize_queue)").Scan(&deletes, &denorm); err != nil {
			t.Fatal(err)
		}
		// unit 1 deleted, unit 2 truncated, outcome 1 deleted; outcome's insert and update.
		if deletes != 3 || denorm != 2 {
			t.Errorf("queue rows: %d deletes and %d denormalize, want 3 and 2", deletes, denorm)
		}
	})
}
