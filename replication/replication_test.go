package replication

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

func TestMain(m *testing.M) {
	// Logical replication workers wait wal_retrieve_retry_interval (5s by
	// default) before restarting; tests that wait for a failed initial copy
	// to be retried, and for new subscriptions' workers, run faster with less.
	pgtest.ClusterSettings["wal_retrieve_retry_interval"] = "'200ms'"
	pgtest.Main(m)
}

// testSchema is created on the master and on the slave: a plain system table
// (cat), a delete model (unit), a denormalize model (outcome), a system table
// with a row filter (filtered), a user table (report) and a table that starts
// as a user table and later becomes a model (gene).
const testSchema = `
CREATE TABLE cat (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE unit (id int PRIMARY KEY, cat_id int REFERENCES cat DEFERRABLE INITIALLY DEFERRED, name text);
CREATE TABLE outcome (id int PRIMARY KEY, name text);
CREATE TABLE filtered (id int PRIMARY KEY, name text, secret text);
CREATE TABLE report (id int PRIMARY KEY, unit_id int REFERENCES unit DEFERRABLE INITIALLY DEFERRED, note text);
CREATE TABLE gene (symbol text PRIMARY KEY, name text);
`

func tn(name string) registry.TableName { return registry.TableName{Schema: "public", Name: name} }

// testRegistry builds the registry of testSchema by hand; extra tables are
// given as name=kind.
func testRegistry(kinds map[string]registry.Kind) *registry.Registry {
	base := map[string]registry.Kind{
		"cat": registry.KindSystem, "unit": registry.KindDelete, "outcome": registry.KindDenormalize,
		"filtered": registry.KindSystem, "report": registry.KindUser, "gene": registry.KindUser,
	}
	for k, v := range kinds {
		base[k] = v
	}
	var tables []*registry.Table
	for name, kind := range base {
		t := &registry.Table{Name: tn(name), Kind: kind, PrimaryKey: []string{"id"}}
		if name == "gene" {
			t.PrimaryKey = []string{"symbol"}
		}
		if name == "filtered" {
			t.RowFilter = "id > 0"
			t.ColumnList = []string{"id", "name"}
		}
		tables = append(tables, t)
	}
	return registry.New(tables)
}

type pair struct {
	master, slave *pgtest.DB
	mpool, spool  *pgxpool.Pool
	names         Names
}

// newPair creates a master and a slave database with testSchema and the
// queue tables (master triggers for reg's models).
func newPair(t testing.TB, reg *registry.Registry) *pair {
	t.Helper()
	// The master's database is created first so that it is dropped last,
	// after the slave's subscriptions are gone.
	return newPairWith(t, reg, pgtest.NewDB(t, pgtest.Master(t)))
}

// newPairWith is newPair with the master database given.
func newPairWith(t testing.TB, reg *registry.Registry, master *pgtest.DB) *pair {
	t.Helper()
	p := &pair{master: master}
	p.slave = pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.Exec(t, p.master.DSN, testSchema)
	pgtest.Exec(t, p.slave.DSN, testSchema)
	p.mpool = pgtest.Pool(t, p.master.DSN)
	p.spool = pgtest.Pool(t, p.slave.DSN)
	if _, err := queue.Install(ctxT(t, time.Minute), p.mpool, queue.InstallOptions{Role: registry.RoleMaster, Registry: reg}, false); err != nil {
		t.Fatalf("queue install on the master: %v", err)
	}
	if _, err := queue.Install(ctxT(t, time.Minute), p.spool, queue.InstallOptions{Role: registry.RoleSlave}, false); err != nil {
		t.Fatalf("queue install on the slave: %v", err)
	}
	var err error
	// The environment is the slave database's name: each test's slots differ.
	if p.names, err = NewNames("pgoutpost", "", p.slave.Name); err != nil {
		t.Fatal(err)
	}
	return p
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// publish plans and applies the publications of reg on the master.
func (p *pair) publish(t *testing.T, reg *registry.Registry) *PublicationPlan {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	if _, err := CreatePublications(ctx, p.mpool, p.names); err != nil {
		t.Fatal(err)
	}
	plan, err := PlanPublications(ctx, p.mpool, reg, p.names)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Apply(ctx, p.mpool); err != nil {
		t.Fatal(err)
	}
	return plan
}

// subscribe creates or refreshes the subscriptions and waits until every table is ready.
func (p *pair) subscribe(t *testing.T) {
	t.Helper()
	ctx := ctxT(t, 2*time.Minute)
	if _, err := CreateSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo()); err != nil {
		t.Fatal(err)
	}
	if _, err := UpdateSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo()); err != nil {
		t.Fatal(err)
	}
	if err := WaitReady(ctx, p.spool, p.names, io.Discard, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	pgtest.Eventually(t, what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ok, err := cond(ctx)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return ok
	})
}

func queryString(ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) (string, error) {
	var s string
	err := pool.QueryRow(ctx, sql, args...).Scan(&s)
	if err == pgx.ErrNoRows {
		return "", nil
	}
	return s, err
}

func rowExists(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) bool {
	t.Helper()
	var ok bool
	if err := pool.QueryRow(context.Background(), "SELECT EXISTS ("+sql+")", args...).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func waitValue(t *testing.T, pool *pgxpool.Pool, want, sql string, args ...any) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s = %q", sql, want), func(ctx context.Context) (bool, error) {
		got, err := queryString(ctx, pool, sql, args...)
		return got == want, err
	})
}

// catalogSnapshot is every replication object of both databases, as text.
func (p *pair) catalogSnapshot(t *testing.T) string {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	var b strings.Builder
	for _, q := range []struct {
		pool *pgxpool.Pool
		sql  string
	}{
		{p.mpool, `SELECT pubname, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication ORDER BY 1`},
		{p.mpool, `SELECT p.pubname, r.prrelid::regclass::text, coalesce(pg_get_expr(r.prqual, r.prrelid), ''), coalesce(r.prattrs::text, '')
		           FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid ORDER BY 1, 2`},
		{p.mpool, `SELECT slot_name FROM pg_replication_slots WHERE database = current_database() AND slot_name NOT LIKE 'pg_%sync%' ORDER BY 1`},
		{p.mpool, `SELECT current_setting('synchronous_standby_names')`},
		{p.spool, `SELECT subname, subenabled, subpublications::text, subslotname::text FROM pg_subscription
		           WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1`},
		{p.spool, `SELECT s.subname, r.srrelid::regclass::text, r.srsubstate FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid ORDER BY 1, 2`},
	} {
		rows, err := q.pool.Query(ctx, q.sql)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(&b, vals...)
		}
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
		b.WriteString("--\n")
	}
	return b.String()
}

func TestReplicationEndToEnd(t *testing.T) {
	reg := testRegistry(nil)
	p := newPair(t, reg)
	// Rows that exist before the subscriptions get the initial copy.
	pgtest.Exec(t, p.master.DSN, `
		INSERT INTO cat VALUES (1, 'one'), (2, 'two');
		INSERT INTO unit VALUES (1, 1, 'u1'), (2, 1, 'u2'), (3, 2, 'u3');
		INSERT INTO outcome VALUES (1, 'o1');
		INSERT INTO filtered VALUES (1, 'visible', 'master-only'), (-1, 'hidden', 'x');
		INSERT INTO report VALUES (100, 1, 'master report');
		INSERT INTO gene VALUES ('BRCA1', 'breast cancer 1'), ('TP53', 'tumour protein');`)
	pgtest.Exec(t, p.slave.DSN, `INSERT INTO report VALUES (200, NULL, 'slave report')`)

	plan := p.publish(t, reg)
	if plan.Empty() {
		t.Fatal("first plan is empty")
	}
	p.subscribe(t)

	t.Run("initial copy of system and delete models", func(t *testing.T) {
		for _, q := range []struct{ sql, want string }{
			{"SELECT string_agg(name, ',' ORDER BY id) FROM cat", "one,two"},
			{"SELECT string_agg(name, ',' ORDER BY id) FROM unit", "u1,u2,u3"},
			{"SELECT string_agg(name, ',' ORDER BY id) FROM outcome", "o1"},
		} {
			waitValue(t, p.spool, q.want, q.sql)
		}
	})

	t.Run("row filter and column list", func(t *testing.T) {
		if rowExists(t, p.spool, "SELECT FROM filtered WHERE id = -1") {
			t.Error("a row excluded by the row filter was copied")
		}
		if got, _ := queryString(context.Background(), p.spool, "SELECT coalesce(secret, 'NULL') FROM filtered WHERE id = 1"); got != "NULL" {
			t.Errorf("column outside the column list arrived: secret = %q", got)
		}
		pgtest.Exec(t, p.master.DSN, "INSERT INTO filtered VALUES (-2, 'hidden too', 'x')")
		pgtest.Exec(t, p.master.DSN, "INSERT INTO filtered VALUES (2, 'second', 'x')")
		waitValue(t, p.spool, "second", "SELECT name FROM filtered WHERE id = 2")
		if rowExists(t, p.spool, "SELECT FROM filtered WHERE id < 0") {
			t.Error("a row excluded by the row filter arrived")
		}
	})

	t.Run("insert update delete of a system table replicate", func(t *testing.T) {
		pgtest.Exec(t, p.master.DSN, "INSERT INTO cat VALUES (3, 'three')")
		waitValue(t, p.spool, "three", "SELECT name FROM cat WHERE id = 3")
		pgtest.Exec(t, p.master.DSN, "UPDATE cat SET name = 'THREE' WHERE id = 3")
		waitValue(t, p.spool, "THREE", "SELECT name FROM cat WHERE id = 3")
		pgtest.Exec(t, p.master.DSN, "DELETE FROM cat WHERE id = 3")
		waitValue(t, p.spool, "", "SELECT name FROM cat WHERE id = 3")
	})

	t.Run("delete of a delete model does not reach the slave", func(t *testing.T) {
		pgtest.Exec(t, p.master.DSN, "DELETE FROM unit WHERE id = 3")
		// A later change through the same subscription is the barrier: once
		// it arrived, the delete has been decoded (and filtered) before it.
		pgtest.Exec(t, p.master.DSN, "UPDATE unit SET name = 'u2 renamed' WHERE id = 2")
		waitValue(t, p.spool, "u2 renamed", "SELECT name FROM unit WHERE id = 2")
		if !rowExists(t, p.spool, "SELECT FROM unit WHERE id = 3") {
			t.Error("the master's delete of unit 3 reached the slave")
		}
		pgtest.Exec(t, p.master.DSN, "UPDATE outcome SET name = 'o1 renamed' WHERE id = 1")
		waitValue(t, p.spool, "o1 renamed", "SELECT name FROM outcome WHERE id = 1")
	})

	t.Run("user table untouched", func(t *testing.T) {
		got, err := queryString(context.Background(), p.spool, "SELECT string_agg(id::text || ':' || note, ',' ORDER BY id) FROM report")
		if err != nil || got != "200:slave report" {
			t.Errorf("slave's report table = %q, %v; want only its own row", got, err)
		}
		if rowExists(t, p.spool, "SELECT FROM gene") {
			t.Error("a user table's rows arrived")
		}
	})

	t.Run("queue rows arrive, history and expiry do not", func(t *testing.T) {
		// The insert of outcome 1 before the subscriptions is history.
		if rowExists(t, p.spool, "SELECT FROM pgoutpost.denormalize_queue WHERE op = 'insert'") {
			t.Error("the master's queue history was copied to the slave")
		}
		// Unit 3 was deleted above: its delete is queued, not replicated.
		waitValue(t, p.spool, `{"id": 3}`, "SELECT pk::text FROM pgoutpost.delete_queue WHERE table_name = 'public.unit'")
		// The update of outcome 1 above is queued for denormalization.
		waitValue(t, p.spool, `{"id": 1}`, "SELECT pk::text FROM pgoutpost.denormalize_queue WHERE table_name = 'public.outcome' AND op = 'update'")
		// Expiring queue rows on the master does not reach the slave.
		pgtest.Exec(t, p.master.DSN, "DELETE FROM pgoutpost.delete_queue")
		pgtest.Exec(t, p.master.DSN, "INSERT INTO outcome VALUES (2, 'o2')")
		waitValue(t, p.spool, `{"id": 2}`, "SELECT pk::text FROM pgoutpost.denormalize_queue WHERE op = 'insert'")
		if !rowExists(t, p.spool, "SELECT FROM pgoutpost.delete_queue") {
			t.Error("expiring a queue row on the master deleted it on the slave")
		}
	})

	t.Run("running every command again changes nothing", func(t *testing.T) {
		before := p.catalogSnapshot(t)
		ctx := ctxT(t, time.Minute)
		created, err := CreatePublications(ctx, p.mpool, p.names)
		if err != nil || len(created) != 0 {
			t.Fatalf("publication create again: created %v, %v", created, err)
		}
		plan, err := PlanPublications(ctx, p.mpool, reg, p.names)
		if err != nil {
			t.Fatal(err)
		}
		if !plan.Empty() {
			t.Fatalf("second plan is not empty: %v", plan.Changes)
		}
		if err := plan.Apply(ctx, p.mpool); err != nil {
			t.Fatal(err)
		}
		res, err := CreateSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Action != "exists" {
				t.Errorf("subscription create again: %s %s", r.Name, r.Action)
			}
		}
		if _, err := UpdateSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo()); err != nil {
			t.Fatal(err)
		}
		if err := WaitReady(ctx, p.spool, p.names, io.Discard, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if after := p.catalogSnapshot(t); after != before {
			t.Errorf("catalog changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	reg2 := testRegistry(map[string]registry.Kind{"gene": registry.KindSystem, "cat": registry.KindDelete})
	t.Run("planning changes nothing", func(t *testing.T) {
		before := p.catalogSnapshot(t)
		plan, err := PlanPublications(ctx(t), p.mpool, reg2, p.names)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range plan.Changes {
			got = append(got, c.String())
		}
		want := []string{
			"publication " + p.names.System.Name + ": drop public.cat",
			"publication " + p.names.System.Name + ": add public.gene",
			"publication " + p.names.Delete.Name + ": add public.cat",
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if after := p.catalogSnapshot(t); after != before {
			t.Errorf("planning changed the catalog:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("adding a model brings its existing rows", func(t *testing.T) {
		p.publish(t, reg2)
		ctx := ctxT(t, 2*time.Minute)
		if _, err := UpdateSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo()); err != nil {
			t.Fatal(err)
		}
		var progress strings.Builder
		if err := WaitReady(ctx, p.spool, p.names, &progress, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(progress.String(), "public.gene") {
			t.Errorf("progress does not show the new table:\n%s", progress.String())
		}
		waitValue(t, p.spool, "BRCA1,TP53", "SELECT string_agg(symbol, ',' ORDER BY symbol) FROM gene")
		// cat is now a delete model: its deletes stop replicating.
		pgtest.Exec(t, p.master.DSN, "DELETE FROM cat WHERE id = 2; INSERT INTO cat VALUES (4, 'four')")
		waitValue(t, p.spool, "four", "SELECT name FROM cat WHERE id = 4")
		if !rowExists(t, p.spool, "SELECT FROM cat WHERE id = 2") {
			t.Error("a delete of a table turned into a delete model reached the slave")
		}
	})
}

func ctx(t *testing.T) context.Context { return ctxT(t, time.Minute) }
