package replication

import (
	"strings"
	"testing"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// TestSeedNames replicates with django-logical-replication's names and warns
// when a kind change moves a table between the seed's two data subscriptions.
func TestSeedNames(t *testing.T) {
	reg := testRegistry(nil)
	p := newPair(t, reg)
	var err error
	// The seed's data subscription names have no environment: a unique slug
	// keeps this test's slots apart from others' on the shared master.
	slug := "seed_" + p.slave.Name
	if p.names, err = NewNames("", slug, "qa"); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, p.master.DSN, "INSERT INTO cat VALUES (1, 'one'); INSERT INTO unit VALUES (1, 1, 'u1')")
	p.publish(t, reg)
	p.subscribe(t)
	waitValue(t, p.spool, "one", "SELECT name FROM cat WHERE id = 1")
	waitValue(t, p.spool, "u1", "SELECT name FROM unit WHERE id = 1")
	if !rowExists(t, p.spool, "SELECT FROM pg_subscription WHERE subname = $1", slug+"_upsert_sub") {
		t.Errorf("no %s_upsert_sub", slug)
	}

	moved := testRegistry(map[string]registry.Kind{"cat": registry.KindDelete})
	plan, err := PlanPublications(ctx(t), p.mpool, moved, p.names)
	if err != nil {
		t.Fatal(err)
	}
	if notes := strings.Join(plan.Notes, "\n"); !strings.Contains(notes, "public.cat moves from "+slug+"_pub to "+slug+"_upsert_pub") {
		t.Errorf("no warning about the move:\n%s", notes)
	}
}

func TestSynchronous(t *testing.T) {
	db := pgtest.NewDB(t, pgtest.Master(t))
	pool := pgtest.Pool(t, db.DSN)
	t.Cleanup(func() {
		pgtest.Exec(t, db.DSN, "ALTER SYSTEM RESET synchronous_standby_names")
		pgtest.Exec(t, db.DSN, "SELECT pg_reload_conf()")
	})
	n, err := NewNames("pgoutpost", "", "staging")
	if err != nil {
		t.Fatal(err)
	}
	value := SynchronousStandbyNames(n.SubscriptionNames())
	if value != `ANY 1 ("pgoutpost_staging")` {
		t.Errorf("value = %s", value)
	}
	if _, err := SetSynchronous(ctx(t), pool, value); err != nil {
		t.Fatal(err)
	}
	// pg_reload_conf signals the postmaster; a new session sees the value.
	waitValue(t, pool, value, "SELECT setting FROM pg_settings WHERE name = 'synchronous_standby_names'")
}

// TestConnectionUpdate points the subscriptions at a new conninfo (a rotated
// password, a moved master) on update, and leaves them alone when unchanged.
func TestConnectionUpdate(t *testing.T) {
	reg := testRegistry(nil)
	p := newPair(t, reg)
	p.publish(t, reg)
	p.subscribe(t)
	res, err := UpdateSubscriptions(ctx(t), p.spool, p.names, p.master.DSN)
	if err != nil {
		t.Fatal(err)
	}
	if n := countAction(res, "connection updated"); n != len(p.names.Subs) {
		t.Errorf("results %+v: want %d connections updated", res, len(p.names.Subs))
	}
	waitValue(t, p.spool, p.master.DSN, "SELECT DISTINCT subconninfo FROM pg_subscription WHERE subname = ANY($1)", p.names.SubscriptionNames())
	pgtest.Exec(t, p.master.DSN, "INSERT INTO cat VALUES (7, 'after the new connection')")
	waitValue(t, p.spool, "after the new connection", "SELECT name FROM cat WHERE id = 7")
	if res, err = UpdateSubscriptions(ctx(t), p.spool, p.names, p.master.DSN); err != nil || countAction(res, "connection updated") != 0 {
		t.Errorf("unchanged conninfo: %+v, %v", res, err)
	}
}

func countAction(res []SubscriptionResult, action string) int {
	n := 0
	for _, r := range res {
		if r.Action == action {
			n++
		}
	}
	return n
}

// TestQueueSubscriptionCommitsSynchronously: the queue subscription applies
// with synchronous_commit = on (so the sidecar's walsender, which sends only
// flushed WAL, sees entries at once), the data subscription keeps the default,
// and update restores the setting when someone changed it.
func TestQueueSubscriptionCommitsSynchronously(t *testing.T) {
	reg := testRegistry(nil)
	p := newPair(t, reg)
	p.publish(t, reg)
	p.subscribe(t)
	settings := func() map[string]string {
		rows, err := p.spool.Query(ctx(t), "SELECT subname, subsynccommit FROM pg_subscription WHERE subname = ANY($1)", p.names.SubscriptionNames())
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for rows.Next() {
			var name, sc string
			if err := rows.Scan(&name, &sc); err != nil {
				t.Fatal(err)
			}
			got[name] = sc
		}
		return got
	}
	queueSub := p.names.Subs[len(p.names.Subs)-1].Name
	for name, sc := range settings() {
		if want := map[bool]string{true: "on", false: "off"}[name == queueSub]; sc != want {
			t.Errorf("subscription %s: synchronous_commit = %s, want %s", name, sc, want)
		}
	}
	pgtest.Exec(t, p.slave.DSN, "ALTER SUBSCRIPTION "+ident(queueSub)+" SET (synchronous_commit = off)")
	res, err := UpdateSubscriptions(ctx(t), p.spool, p.names, p.master.ConnInfo())
	if err != nil {
		t.Fatal(err)
	}
	if n := countAction(res, "synchronous_commit on"); n != 1 {
		t.Errorf("update results %+v: want synchronous_commit restored once", res)
	}
	if sc := settings()[queueSub]; sc != "on" {
		t.Errorf("after update: %s synchronous_commit = %s, want on", queueSub, sc)
	}
}

// TestSeedQueuesStayPublished: while queue.seed_queues is on, publication
// update keeps django-logical-replication's queue tables where the seed
// published them (its upsert publication, which the slaves' upsert
// subscription already knows), so that entries its signals still write during
// a switchover reach the slaves; turned off, they are dropped.
func TestSeedQueuesStayPublished(t *testing.T) {
	reg := testRegistry(nil)
	p := newPair(t, reg)
	slug := "seedq_" + p.slave.Name
	var err error
	if p.names, err = NewNames("", slug, "qa"); err != nil {
		t.Fatal(err)
	}
	seedDDL := `CREATE TABLE logical_replication_deletequeue (id uuid PRIMARY KEY, object_pk text, content_type_id int, created_at timestamptz);
CREATE TABLE logical_replication_denormalizequeue (id uuid PRIMARY KEY, object_pk text, content_type_id int, created_at timestamptz);`
	pgtest.Exec(t, p.master.DSN, seedDDL)
	p.publish(t, reg)
	pgtest.Exec(t, p.master.DSN, "ALTER PUBLICATION "+ident(p.names.Delete.Name)+" ADD TABLE logical_replication_deletequeue, logical_replication_denormalizequeue")
	seedChanges := func(plan *PublicationPlan) []string {
		var out []string
		for _, c := range plan.Changes {
			for _, m := range []Member{c.From, c.To} {
				if strings.HasPrefix(m.Table.Name, "logical_replication_") {
					out = append(out, c.String())
				}
			}
		}
		return out
	}
	p.names.SeedQueues = true
	plan, err := PlanPublications(ctx(t), p.mpool, reg, p.names)
	if err != nil {
		t.Fatal(err)
	}
	if c := seedChanges(plan); len(c) != 0 {
		t.Errorf("with seed_queues on, the plan changes the seed's queue tables: %v", c)
	}
	p.names.SeedQueues = false
	if plan, err = PlanPublications(ctx(t), p.mpool, reg, p.names); err != nil {
		t.Fatal(err)
	}
	if c := seedChanges(plan); len(c) != 2 {
		t.Errorf("with seed_queues off, want the seed's two queue tables dropped, got %v", c)
	}
}
