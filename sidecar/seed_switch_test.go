package sidecar_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/replication"
)

// seedSwitchSchema is a django-logical-replication deployment: content
// types, a delete model, the package's queue tables (written by its signals
// on the master), and on the slave a log of unit deletes.
const seedSwitchSchema = `
CREATE TABLE django_content_type (id int PRIMARY KEY, app_label text NOT NULL, model text NOT NULL);
CREATE TABLE catalog_unit (id int PRIMARY KEY, name text);
CREATE TABLE logical_replication_deletequeue (id uuid PRIMARY KEY, object_pk text NOT NULL, content_type_id int NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE logical_replication_denormalizequeue (LIKE logical_replication_deletequeue INCLUDING ALL);
CREATE TABLE deleted_log (unit_id int NOT NULL);
CREATE FUNCTION log_unit_delete() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO deleted_log VALUES (OLD.id); RETURN OLD; END$$;
CREATE TRIGGER unit_deleted AFTER DELETE ON catalog_unit FOR EACH ROW EXECUTE FUNCTION log_unit_delete();
`

var seedSwitchSpec = registry.Spec{
	Schemas: []string{"public"},
	Models: []registry.ModelSpec{
		{Table: tn("django_content_type"), Kind: registry.KindSystem},
		{Table: tn("catalog_unit"), Kind: registry.KindDelete},
	},
}

// TestSeedMasterSwitchover takes a django-logical-replication deployment over
// in the order docs/deploy.md gives, while the master deletes units all the
// time (each delete queued by the package's signal until they are turned
// off): every delete reaches the slave, none is applied twice, and the slave
// ends equal to the master.
func TestSeedMasterSwitchover(t *testing.T) {
	ctx := testCtx(t, 4*time.Minute)
	e := newDatabases(t, seedSwitchSchema)
	e.seedQueues = true
	const units = 3000
	exec(t, e.mpool, "INSERT INTO django_content_type VALUES (1, 'catalog', 'unit')")
	exec(t, e.mpool, "INSERT INTO catalog_unit SELECT g, 'u' FROM generate_series(1, $1::int) g", units)

	// The seed's replication, as the package made it.
	slug := "sw_" + e.slave.Name
	exec(t, e.mpool, fmt.Sprintf("CREATE PUBLICATION %s_pub FOR TABLE django_content_type", slug))
	exec(t, e.mpool, fmt.Sprintf("CREATE PUBLICATION %s_upsert_pub FOR TABLE catalog_unit, logical_replication_deletequeue, logical_replication_denormalizequeue WITH (publish = 'insert, update')", slug))
	seed := replication.Names{
		System: replication.PublicationSpec{Name: slug + "_pub"}, Delete: replication.PublicationSpec{Name: slug + "_upsert_pub"},
		Queue: replication.PublicationSpec{Name: slug + "_upsert_pub"},
		Subs: []replication.SubscriptionSpec{
			{Name: slug + "_sub", Publications: []string{slug + "_pub"}},
			{Name: slug + "_upsert_sub", Publications: []string{slug + "_upsert_pub"}},
		},
	}
	if _, err := replication.CreateSubscriptions(ctx, e.spool, seed, e.master.ConnInfo()); err != nil {
		t.Fatal(err)
	}
	if err := replication.WaitReady(ctx, e.spool, seed, io.Discard, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}

	// The master deletes units throughout; while the signals are on, each
	// delete also writes the seed's queue row in its transaction.
	var signals atomic.Bool
	signals.Store(true)
	var made atomic.Int64 // deletes committed
	wctx, stopWriter := context.WithCancel(ctx)
	writerDone := make(chan int)
	go func() {
		id := 0
		defer func() { writerDone <- id }()
		for wctx.Err() == nil && id < units {
			id++
			sql := "DELETE FROM catalog_unit WHERE id = $1"
			if signals.Load() {
				sql = "WITH d AS (DELETE FROM catalog_unit WHERE id = $1 RETURNING id) " +
					"INSERT INTO logical_replication_deletequeue SELECT gen_random_uuid(), id::text, 1, now() FROM d"
			}
			if _, err := e.mpool.Exec(wctx, sql, id); err != nil && wctx.Err() == nil {
				t.Errorf("deleter: %v", err)
				return
			}
			made.Store(int64(id))
			time.Sleep(3 * time.Millisecond) // paces the workload, no wait for anything
		}
	}()
	// step lets the deleter commit deletes in the current phase before the
	// next one starts.
	step := func() {
		t.Helper()
		from := made.Load()
		pgtest.Eventually(t, "deletes in this phase of the switchover", func() bool { return made.Load() >= from+50 })
	}

	// 1. Every slave: queue install, the seed's cron stops, the sidecar starts.
	step()
	if _, err := queue.Install(ctx, e.spool, queue.InstallOptions{Role: registry.RoleSlave, SeedQueues: true}, false); err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Load(ctx, e.spool, seedSwitchSpec)
	if err != nil {
		t.Fatal(err)
	}
	e.reg = reg
	e.nats = pgtest.NATS(t)
	r := e.start(t, t, nil)

	// 2. The master: triggers, publications (the seed's queues stay published).
	step()
	mreg, err := registry.Load(ctx, e.mpool, seedSwitchSpec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Install(ctx, e.mpool, queue.InstallOptions{Role: registry.RoleMaster, Registry: mreg}, false); err != nil {
		t.Fatal(err)
	}
	names, err := replication.NewNames("", slug, e.env)
	if err != nil {
		t.Fatal(err)
	}
	names.SeedQueues = true
	if _, err := replication.CreatePublications(ctx, e.mpool, names); err != nil {
		t.Fatal(err)
	}
	plan, err := replication.PlanPublications(ctx, e.mpool, mreg, names)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Apply(ctx, e.mpool); err != nil {
		t.Fatal(err)
	}

	// 3. Every slave: the queue publication joins the upsert subscription.
	step()
	if res, err := replication.UpdateSubscriptions(ctx, e.spool, names, e.master.ConnInfo()); err != nil {
		t.Fatalf("subscription update: %v (%+v)", err, res)
	}

	// 4. The master's application turns the signals off; deletes go on.
	step()
	signals.Store(false)
	step()
	stopWriter()
	deleted := <-writerDone
	if deleted < 200 {
		t.Fatalf("the deleter made only %d deletes", deleted)
	}
	if queryInt(t, e.mpool, "SELECT count(*) FROM catalog_unit WHERE id = $1", deleted) == 1 {
		deleted-- // its last delete was cancelled with it
	}

	pgtest.Eventually(t, "every delete applied on the slave", func() bool {
		return queryInt(t, e.spool, "SELECT count(*) FROM catalog_unit") == queryInt(t, e.mpool, "SELECT count(*) FROM catalog_unit")
	})
	pgtest.Eventually(t, "the queues empty", func() bool {
		return queryInt(t, e.spool, "SELECT (SELECT count(*) FROM pgoutpost.delete_queue) + (SELECT count(*) FROM logical_replication_deletequeue)") == 0
	})
	sameRows(t, e, "catalog_unit")
	lost := queryInt(t, e.spool, "SELECT count(*) FROM generate_series(1, $1::int) g WHERE g NOT IN (SELECT unit_id FROM deleted_log)", deleted)
	dup := queryInt(t, e.spool, "SELECT count(*) FROM (SELECT unit_id FROM deleted_log GROUP BY 1 HAVING count(*) > 1) d")
	if lost != 0 || dup != 0 {
		t.Errorf("deletes: %d made on the master, %d lost on the slave, %d applied twice", deleted, lost, dup)
	}
	if n := queryInt(t, e.spool, "SELECT count(*) FROM pgoutpost.dead_letter"); n != 0 {
		t.Errorf("%d dead letters", n)
	}
	if _, body := r.get(t, "/metrics"); !strings.Contains(body, `result="applied"`) {
		t.Errorf("no applied entries in the metrics:\n%s", grepLines(body, "entries_total"))
	}
}
