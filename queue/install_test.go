package queue

import (
	"bytes"
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// queueTriggers lists "table trigger function(args)" for every
// pgoutpost_queue_* trigger, sorted.
func queueTriggers(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	have, err := existingTriggers(context.Background(), pool, `pgoutpost\_queue\_%`)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range have {
		out = append(out, h.table.Name+" "+strings.TrimPrefix(h.name, queueTriggerPrefix)+" "+h.function+"("+strings.Join(h.args, ",")+")")
	}
	sort.Strings(out)
	return out
}

func TestInstallMaster(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t, pgtest.Master(t))
	pgtest.Exec(t, db.DSN, testSchema)
	pool := pgtest.Pool(t, db.DSN)
	opts := InstallOptions{Role: registry.RoleMaster, Registry: testRegistry()}

	before := catalogSnapshot(t, pool)
	dry, err := Install(ctx, pool, opts, true)
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if after := catalogSnapshot(t, pool); after != before {
		t.Errorf("dry run changed the catalog:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if len(dry) == 0 {
		t.Fatal("dry run on an empty database planned nothing")
	}
	var script bytes.Buffer
	if err := dry.Write(&script, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CREATE SCHEMA", "CREATE TABLE pgoutpost.delete_queue",
		`CREATE TRIGGER pgoutpost_queue_delete AFTER DELETE ON public.unit REFERENCING OLD TABLE AS pgoutpost_old FOR EACH STATEMENT EXECUTE FUNCTION pgoutpost."queue:public.unit"()`,
		`SELECT pgoutpost.uuid_v7(), pgoutpost_table, pg_catalog.jsonb_build_object('a', o.a, 'b', o.b), 'delete'`,
	} {
		if !strings.Contains(script.String(), want) {
			t.Errorf("dry-run script lacks %q:\n%s", want, script.String())
		}
	}

	applied, err := Install(ctx, pool, opts, false)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	if len(applied) != len(dry) {
		t.Errorf("install applied %d steps, the dry run planned %d", len(applied), len(dry))
	}
	wantTriggers := []string{
		"outcome delete queue:public.outcome()",
		"outcome insert queue:public.outcome()",
		"outcome truncate queue:public.outcome()",
		"outcome update queue:public.outcome()",
		"pair delete queue:public.pair()",
		"pair truncate queue:public.pair()",
		"unit delete queue:public.unit()",
		"unit truncate queue:public.unit()",
	}
	if got := queueTriggers(t, pool); strings.Join(got, "\n") != strings.Join(wantTriggers, "\n") {
		t.Errorf("triggers:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantTriggers, "\n"))
	}
	if got := queueIndexes(t, pool); got != "" {
		t.Errorf("the master's queue tables have indexes %q; the triggers would pay for them", got)
	}

	t.Run("second run changes nothing", func(t *testing.T) {
		before := catalogSnapshot(t, pool)
		p, err := Install(ctx, pool, opts, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != 0 {
			t.Errorf("second run applied %v", p)
		}
		if after := catalogSnapshot(t, pool); after != before {
			t.Errorf("second run changed the catalog:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("registry change adds and removes triggers", func(t *testing.T) {
		pgtest.Exec(t, db.DSN, "CREATE TABLE gene (symbol text PRIMARY KEY)")
		reg := registry.New([]*registry.Table{
			table("category", registry.KindSystem, "id"),
			table("unit", registry.KindDenormalize, "id"), // delete → denormalize
			table("pair", registry.KindSystem, "a", "b"),  // no longer a delete model
			table("outcome", registry.KindDelete, "id"),   // denormalize → delete
			table("gene", registry.KindDelete, "symbol"),  // new
		})
		reg.Table(registry.TableName{Schema: "public", Name: "outcome"}).OnTruncate = registry.TruncateRefuse
		opts := InstallOptions{Role: registry.RoleMaster, Registry: reg}
		before := catalogSnapshot(t, pool)
		if _, err := Install(ctx, pool, opts, true); err != nil {
			t.Fatal(err)
		}
		if after := catalogSnapshot(t, pool); after != before {
			t.Error("dry run changed the catalog")
		}
		p, err := Install(ctx, pool, opts, false)
		if err != nil {
			t.Fatal(err)
		}
		var summary bytes.Buffer
		p.Write(&summary, false) //nolint:errcheck
		want := []string{
			"gene delete queue:public.gene()",
			"gene truncate queue:public.gene()",
			"outcome delete queue:public.outcome()",
			"outcome truncate queue_refuse_truncate()",
			"unit delete queue:public.unit()",
			"unit insert queue:public.unit()",
			"unit truncate queue:public.unit()",
			"unit update queue:public.unit()",
		}
		if got := queueTriggers(t, pool); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("triggers after the change:\n%s\nwant:\n%s\nplan:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), summary.String())
		}
		for _, s := range []string{"drop trigger pgoutpost_queue_delete on public.pair", "drop trigger pgoutpost_queue_insert on public.outcome",
			"replace trigger pgoutpost_queue_truncate on public.outcome", "create trigger pgoutpost_queue_update on public.unit",
			"drop function pgoutpost.queue:public.pair()"} {
			if !strings.Contains(summary.String(), s) {
				t.Errorf("plan lacks %q:\n%s", s, summary.String())
			}
		}
		if p, err := Install(ctx, pool, opts, false); err != nil || len(p) != 0 {
			t.Errorf("run after the change: plan %v, err %v; want nothing to do", p, err)
		}
		// The new triggers work: a gene delete is queued, an outcome truncate refused.
		pgtest.Exec(t, db.DSN, "INSERT INTO gene VALUES ('BRCA1'); DELETE FROM gene")
		if n := count(t, pool, `SELECT count(*) FROM pgoutpost.delete_queue WHERE table_name = 'public.gene' AND pk = '{"symbol": "BRCA1"}'`); n != 1 {
			t.Errorf("gene delete logged %d times, want 1", n)
		}
		if _, err := pool.Exec(ctx, "TRUNCATE outcome"); err == nil {
			t.Error("TRUNCATE outcome succeeded after on_truncate became refuse")
		}
	})

	t.Run("a disabled trigger is enabled again", func(t *testing.T) {
		pgtest.Exec(t, db.DSN, "ALTER TABLE gene DISABLE TRIGGER pgoutpost_queue_delete")
		reg := registry.New([]*registry.Table{table("gene", registry.KindDelete, "symbol")})
		p, err := Install(ctx, pool, InstallOptions{Role: registry.RoleMaster, Registry: reg}, false)
		if err != nil {
			t.Fatal(err)
		}
		var summary bytes.Buffer
		p.Write(&summary, false) //nolint:errcheck
		if !strings.Contains(summary.String(), "replace trigger pgoutpost_queue_delete on public.gene") {
			t.Errorf("plan does not restore the disabled trigger:\n%s", summary.String())
		}
	})

	t.Run("a renamed table logs under its new name until install runs", func(t *testing.T) {
		pgtest.Exec(t, db.DSN, `ALTER TABLE gene RENAME TO gene2;
			INSERT INTO gene2 VALUES ('A'), ('B'); DELETE FROM gene2 WHERE symbol = 'A'; TRUNCATE gene2`)
		if n := count(t, pool, `SELECT count(*) FROM pgoutpost.delete_queue WHERE table_name = 'public.gene2'`); n != 2 {
			t.Errorf("%d deletes logged under public.gene2, want 2 (a DELETE and a TRUNCATE)", n)
		}
		reg := registry.New([]*registry.Table{table("gene2", registry.KindDelete, "symbol")})
		p, err := Install(ctx, pool, InstallOptions{Role: registry.RoleMaster, Registry: reg}, false)
		if err != nil {
			t.Fatal(err)
		}
		var summary bytes.Buffer
		p.Write(&summary, false) //nolint:errcheck
		for _, s := range []string{"create function pgoutpost.queue:public.gene2()", "drop function pgoutpost.queue:public.gene()"} {
			if !strings.Contains(summary.String(), s) {
				t.Errorf("plan lacks %q:\n%s", s, summary.String())
			}
		}
		pgtest.Exec(t, db.DSN, "ALTER TABLE gene2 RENAME TO gene")
	})

	t.Run("a busy table makes install fail fast and change nothing", func(t *testing.T) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)                                                           //nolint:errcheck
		if _, err := tx.Exec(ctx, "LOCK TABLE gene IN ROW EXCLUSIVE MODE"); err != nil { // as a writer holds it
			t.Fatal(err)
		}
		reg := registry.New([]*registry.Table{table("unit", registry.KindDelete, "id"), table("gene", registry.KindDenormalize, "symbol")})
		before := catalogSnapshot(t, pool)
		_, err = Install(ctx, pool, InstallOptions{Role: registry.RoleMaster, Registry: reg, LockTimeout: 200 * time.Millisecond}, false)
		if err == nil || !strings.Contains(err.Error(), "busy") || !strings.Contains(err.Error(), "public.gene") {
			t.Errorf("err = %v, want a busy-table error naming public.gene", err)
		}
		if after := catalogSnapshot(t, pool); after != before {
			t.Error("a failed install changed the catalog")
		}
	})

	t.Run("a table without primary key is an error naming it", func(t *testing.T) {
		reg := registry.New([]*registry.Table{table("gene", registry.KindDelete)})
		_, err := Install(ctx, pool, InstallOptions{Role: registry.RoleMaster, Registry: reg}, false)
		if err == nil || !strings.Contains(err.Error(), "public.gene has no primary key") {
			t.Errorf("err = %v, want it to name public.gene", err)
		}
	})
}

func TestTableFunctionName(t *testing.T) {
	long := strings.Repeat("x", 60)
	a := tableFunctionName(registry.TableName{Schema: "public", Name: long + "a"})
	b := tableFunctionName(registry.TableName{Schema: "public", Name: long + "b"})
	if len(a) > maxIdentifier || len(b) > maxIdentifier || a == b {
		t.Errorf("names %q and %q: want distinct and at most %d bytes", a, b, maxIdentifier)
	}
	if got := tableFunctionName(registry.TableName{Schema: "public", Name: "unit"}); got != "queue:public.unit" {
		t.Errorf("short name = %q", got)
	}
}

func TestInstallSlave(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.Exec(t, db.DSN, testSchema)
	pool := pgtest.Pool(t, db.DSN)
	// A slave restored from a dump of the master carries its queue triggers.
	stray, err := Install(ctx, pool, InstallOptions{Role: registry.RoleMaster, Registry: testRegistry()}, false)
	if err != nil || len(stray) == 0 {
		t.Fatalf("master install: %v", err)
	}
	opts := InstallOptions{Role: registry.RoleSlave, Publication: "pgoutpost_local_queue"}
	before := catalogSnapshot(t, pool)
	if _, err := Install(ctx, pool, opts, true); err != nil {
		t.Fatal(err)
	}
	if after := catalogSnapshot(t, pool); after != before {
		t.Error("dry run changed the catalog")
	}
	if _, err := Install(ctx, pool, opts, false); err != nil {
		t.Fatalf("slave install: %v", err)
	}
	if got := queueTriggers(t, pool); len(got) != 0 {
		t.Errorf("slave install left queue triggers: %v", got)
	}
	var pubs []string
	rows, _ := pool.Query(ctx, `SELECT p.pubname || ' ' || p.pubinsert || p.pubupdate || p.pubdelete || p.pubtruncate || ' ' ||
		coalesce((SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY tablename) FROM pg_publication_tables t WHERE t.pubname = p.pubname), '')
		FROM pg_publication p ORDER BY 1`)
	for rows.Next() {
		var s string
		rows.Scan(&s) //nolint:errcheck
		pubs = append(pubs, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want := "pgoutpost_local_queue truefalsefalsefalse pgoutpost.delete_queue,pgoutpost.denormalize_queue"; len(pubs) != 1 || pubs[0] != want {
		t.Errorf("publications = %q, want [%q]", pubs, want)
	}
	if n := count(t, pool, "SELECT count(*) FROM pg_class WHERE relnamespace = 'pgoutpost'::regnamespace AND relkind = 'r'"); n != 3 {
		t.Errorf("schema pgoutpost has %d tables, want 3", n)
	}
	// The drain at start reads whole transactions by xid.
	if got, want := queueIndexes(t, pool), "delete_queue_xid_idx (xid, id),denormalize_queue_xid_idx (xid, id)"; got != want {
		t.Errorf("indexes by xid = %q, want %q", got, want)
	}

	t.Run("second run changes nothing", func(t *testing.T) {
		before := catalogSnapshot(t, pool)
		p, err := Install(ctx, pool, opts, false)
		if err != nil || len(p) != 0 {
			t.Errorf("second run: plan %v, err %v", p, err)
		}
		if after := catalogSnapshot(t, pool); after != before {
			t.Errorf("second run changed the catalog:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("a drifted publication is put back", func(t *testing.T) {
		pgtest.Exec(t, db.DSN, "ALTER PUBLICATION pgoutpost_local_queue SET (publish = 'insert, delete'); ALTER PUBLICATION pgoutpost_local_queue ADD TABLE pgoutpost.dead_letter")
		p, err := Install(ctx, pool, opts, false)
		if err != nil || len(p) != 2 {
			t.Fatalf("plan %v, err %v; want two fixes", p, err)
		}
		if p, err := Install(ctx, pool, opts, false); err != nil || len(p) != 0 {
			t.Errorf("run after the fix: plan %v, err %v", p, err)
		}
	})

	t.Run("a dropped xid index is made again", func(t *testing.T) {
		pgtest.Exec(t, db.DSN, "DROP INDEX pgoutpost.delete_queue_xid_idx")
		p, err := Install(ctx, pool, opts, false)
		if err != nil || len(p) != 1 || !strings.Contains(p[0].Summary, "delete_queue_xid_idx") {
			t.Fatalf("plan %v, err %v; want the index made again", p, err)
		}
		if got := queueIndexes(t, pool); !strings.Contains(got, "delete_queue_xid_idx") {
			t.Errorf("indexes by xid = %q after the fix", got)
		}
	})

	t.Run("an xid index of an earlier version (xid alone) is replaced", func(t *testing.T) {
		pgtest.Exec(t, db.DSN, "DROP INDEX pgoutpost.delete_queue_xid_idx; CREATE INDEX delete_queue_xid_idx ON pgoutpost.delete_queue (xid)")
		p, err := Install(ctx, pool, opts, false)
		if err != nil || len(p) != 2 || !strings.HasPrefix(p[0].Summary, "drop index delete_queue_xid_idx") {
			t.Fatalf("plan %v, err %v; want a drop and a create", p, err)
		}
		if got, want := queueIndexes(t, pool), "delete_queue_xid_idx (xid, id),denormalize_queue_xid_idx (xid, id)"; got != want {
			t.Errorf("indexes by xid = %q, want %q", got, want)
		}
	})

	t.Run("an xid index on the wrong column is made again", func(t *testing.T) {
		pgtest.Exec(t, db.DSN, "DROP INDEX pgoutpost.denormalize_queue_xid_idx; CREATE INDEX denormalize_queue_xid_idx ON pgoutpost.denormalize_queue (created_at)")
		missing, err := MissingIndexes(ctx, pool)
		if err != nil || len(missing) != 1 || missing[0] != "denormalize_queue_xid_idx" {
			t.Fatalf("MissingIndexes = %v, %v; want the wrong one named", missing, err)
		}
		p, err := Install(ctx, pool, opts, false)
		if err != nil || len(p) != 2 || !strings.HasPrefix(p[0].Summary, "drop index denormalize_queue_xid_idx") {
			t.Fatalf("plan %v, err %v; want a drop and a create", p, err)
		}
		if got, want := queueIndexes(t, pool), "delete_queue_xid_idx (xid, id),denormalize_queue_xid_idx (xid, id)"; got != want {
			t.Errorf("indexes by xid = %q, want %q", got, want)
		}
		if missing, err := MissingIndexes(ctx, pool); err != nil || len(missing) != 0 {
			t.Errorf("MissingIndexes after the fix = %v, %v", missing, err)
		}
	})

	t.Run("local outbox rows get fresh ids", func(t *testing.T) {
		pgtest.Exec(t, db.DSN, `INSERT INTO pgoutpost.denormalize_queue (table_name, pk, op) VALUES ('public.outcome', '{"id": 1}', 'delete')`)
		if n := count(t, pool, "SELECT count(*) FROM pgoutpost.denormalize_queue WHERE id IS NOT NULL AND xid > 0"); n != 1 {
			t.Errorf("outbox row count = %d, want 1", n)
		}
	})
}

func TestInstallConcurrent(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t, pgtest.Master(t))
	pgtest.Exec(t, db.DSN, testSchema)
	pool := pgtest.Pool(t, db.DSN)
	opts := InstallOptions{Role: registry.RoleMaster, Registry: testRegistry()}
	type result struct {
		plan Plan
		err  error
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			p, err := Install(ctx, pool, opts, false)
			results <- result{p, err}
		}()
	}
	a, b := <-results, <-results
	if a.err != nil || b.err != nil {
		t.Fatalf("concurrent installs: %v, %v", a.err, b.err)
	}
	// The install lock serialises them: one does everything, the other nothing.
	if (len(a.plan) == 0) == (len(b.plan) == 0) {
		t.Errorf("plans of %d and %d steps; want one full and one empty", len(a.plan), len(b.plan))
	}
}

// queueIndexes lists the indexes of schema pgoutpost other than the primary
// and unique keys, as "name (columns)", comma-separated in name order.
func queueIndexes(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(c.relname || ' (' ||
    (SELECT string_agg(a.attname, ', ' ORDER BY k.n) FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) || ')', ',' ORDER BY c.relname), '')
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  WHERE c.relnamespace = 'pgoutpost'::regnamespace AND NOT i.indisunique`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestUUIDv7 checks pgoutpost.uuid_v7() as installed: PostgreSQL 18's own
// uuidv7() where the server has it, and in either form version 7, the RFC
// 9562 variant, the current time, distinct ids, and ids of later statements
// sorting after earlier ones.
func TestUUIDv7(t *testing.T) {
	ctx := context.Background()
	_, pool := masterDB(t, testRegistry())
	var version int
	var body string
	if err := pool.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, p.prosrc FROM pg_proc p
		JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgoutpost' AND p.proname = 'uuid_v7'`).Scan(&version, &body); err != nil {
		t.Fatal(err)
	}
	if native := strings.Contains(body, "uuidv7()"); native != (version >= 180000) {
		t.Errorf("server %d: uuid_v7 body %q (native uuidv7: %v)", version, body, native)
	}
	var last [16]byte
	seen := map[[16]byte]bool{}
	for round := range 3 {
		start := time.Now()
		rows, err := pool.Query(ctx, "SELECT pgoutpost.uuid_v7() FROM generate_series(1, 2000)")
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[[16]byte])
		if err != nil {
			t.Fatal(err)
		}
		var lowest [16]byte
		for i, id := range ids {
			if id[6]>>4 != 7 || id[8]>>6 != 2 {
				t.Fatalf("id %x is not a UUIDv7 (version %d, variant bits %b)", id, id[6]>>4, id[8]>>6)
			}
			if d := UUIDv7Time(id).Sub(start); d < -time.Second || d > time.Minute {
				t.Fatalf("id %x: time %v is %v from the statement's start", id, UUIDv7Time(id), d)
			}
			if seen[id] {
				t.Fatalf("id %x drawn twice", id)
			}
			seen[id] = true
			if i == 0 || bytes.Compare(id[:], lowest[:]) < 0 {
				lowest = id
			}
		}
		if round > 0 && bytes.Compare(lowest[:], last[:]) <= 0 {
			t.Errorf("round %d: lowest id %x does not sort after the last round's highest %x", round, lowest, last)
		}
		for _, id := range ids {
			if bytes.Compare(id[:], last[:]) > 0 {
				last = id
			}
		}
	}
}

// TestInstallDropsObsoleteFunctions: a function an earlier version installed
// and nothing calls any more goes on the next install, and the run after
// that plans nothing.
func TestInstallDropsObsoleteFunctions(t *testing.T) {
	ctx := context.Background()
	reg := testRegistry()
	_, pool := masterDB(t, reg)
	if _, err := pool.Exec(ctx, `CREATE FUNCTION pgoutpost.uuid_v7_next(hi bytea, lo bigint, n bigint) RETURNS uuid
		LANGUAGE sql IMMUTABLE AS $$ SELECT gen_random_uuid() $$`); err != nil {
		t.Fatal(err)
	}
	opts := InstallOptions{Role: registry.RoleMaster, Registry: reg}
	p, err := Install(ctx, pool, opts, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 1 || !strings.Contains(p[0].Summary, "uuid_v7_next") {
		t.Errorf("install planned %v, want only the drop of uuid_v7_next", p)
	}
	if n := count(t, pool, "SELECT count(*) FROM pg_proc WHERE proname = 'uuid_v7_next'"); n != 0 {
		t.Errorf("uuid_v7_next still there (%d)", n)
	}
	if p, err := Install(ctx, pool, opts, true); err != nil || len(p) != 0 {
		t.Errorf("a second install plans %v (err %v), want nothing", p, err)
	}
}
