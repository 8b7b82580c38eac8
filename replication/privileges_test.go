package replication

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgcluster"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/queue"
)

// limitedRole creates a login role with no privileges on db's cluster and
// returns a pool of it on db; the role and what it owns in db go at the end.
func limitedRole(t *testing.T, db *pgtest.DB, name string) (*pgxpool.Pool, string) {
	t.Helper()
	ident := pgx.Identifier{name}.Sanitize()
	pgtest.Exec(t, db.DSN, "CREATE ROLE "+ident+" LOGIN")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, db.DSN)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		for _, s := range []string{"REASSIGN OWNED BY " + ident + " TO " + pgx.Identifier{pgcluster.Superuser}.Sanitize(), "DROP OWNED BY " + ident, "DROP ROLE " + ident} {
			if _, err := conn.Exec(ctx, s); err != nil {
				t.Errorf("%s: %v", s, err)
			}
		}
	})
	u, err := url.Parse(db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(name)
	return pgtest.Pool(t, u.String()), ident
}

// grantAll runs each need's Grant as the superuser and returns the needs
// that have none.
func grantAll(t *testing.T, db *pgtest.DB, needs []Need) (left []Need) {
	t.Helper()
	for _, n := range needs {
		if n.Grant == "" {
			left = append(left, n)
			continue
		}
		pgtest.Exec(t, db.DSN, n.Grant)
	}
	return left
}

func needsText(needs []Need) string {
	var b strings.Builder
	for _, n := range needs {
		b.WriteString(n.String() + "\n")
	}
	return b.String()
}

// TestLeastPrivilegeMaster: a role with nothing is told every privilege the
// master's commands need; granted exactly those, it installs the queue
// triggers and creates and fills the publications.
func TestLeastPrivilegeMaster(t *testing.T) {
	reg := testRegistry(nil)
	master := pgtest.NewDB(t, pgtest.Master(t))
	pgtest.Exec(t, master.DSN, testSchema)
	pool, ident := limitedRole(t, master, "lp_"+master.Name)
	ctx := ctxT(t, 2*time.Minute)
	needs, err := MissingPrivileges(ctx, pool, "master", reg)
	if err != nil {
		t.Fatal(err)
	}
	text := needsText(needs)
	for _, want := range []string{
		"publication create, queue install needs CREATE on the database: GRANT CREATE ON DATABASE",
		"publication update needs ownership of public.cat: ALTER TABLE \"public\".\"cat\" OWNER TO " + ident,
		"publication update needs ownership of public.filtered",
		"queue install needs TRIGGER on public.unit",
		"queue install needs TRIGGER on public.outcome",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("needs lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "public.report") || strings.Contains(text, "public.gene") {
		t.Errorf("needs name a user table:\n%s", text)
	}
	if left := grantAll(t, master, needs); len(left) != 0 {
		t.Fatalf("needs without a grant on the master:\n%s", needsText(left))
	}
	if again, err := MissingPrivileges(ctx, pool, "master", reg); err != nil || len(again) != 0 {
		t.Fatalf("after the grants: %v, %v", needsText(again), err)
	}
	// Exactly these suffice.
	if _, err := queue.Install(ctx, pool, queue.InstallOptions{Role: queue.RoleMaster, Registry: reg}, false); err != nil {
		t.Fatalf("queue install as the role: %v", err)
	}
	names, err := NewNames("pgoutpost", "", master.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreatePublications(ctx, pool, names); err != nil {
		t.Fatalf("publication create as the role: %v", err)
	}
	plan, err := PlanPublications(ctx, pool, reg, names)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Apply(ctx, pool); err != nil {
		t.Fatalf("publication update as the role: %v", err)
	}
	if n, _ := queryString(ctx, pool, "SELECT count(*)::text FROM pg_publication_tables WHERE pubname LIKE 'pgoutpost_%'"); n != "6" {
		t.Errorf("published tables: %s, want 6", n)
	}
}

// TestLeastPrivilegeSlave: a role with nothing on a slave is told what run
// and the subscription commands need; after the grants, only what no grant
// gives is left (a superuser for subscriptions on 15).
func TestLeastPrivilegeSlave(t *testing.T) {
	reg := testRegistry(nil)
	p := newPair(t, reg)
	pool, ident := limitedRole(t, p.slave, "lp_"+p.slave.Name)
	ctx := ctxT(t, 2*time.Minute)
	needs, err := MissingPrivileges(ctx, pool, "slave", reg)
	if err != nil {
		t.Fatal(err)
	}
	text := needsText(needs)
	for _, want := range []string{
		"run needs REPLICATION (the sidecar's slot and stream): ALTER ROLE " + ident + " REPLICATION (or on RDS: GRANT rds_replication TO " + ident + ")",
		"run needs SELECT, INSERT, DELETE on pgoutpost.delete_queue",
		"run needs SELECT, INSERT, DELETE on pgoutpost.dead_letter",
		"run needs USAGE on schema pgoutpost",
		"run needs SELECT, UPDATE, DELETE on public.unit",
		"run needs SELECT, UPDATE, DELETE on public.outcome", // a denormalize model is a delete model too
		"subscription create|update|drop needs",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("needs lack %q:\n%s", want, text)
		}
	}
	left := grantAll(t, p.slave, needs)
	again, err := MissingPrivileges(ctx, pool, "slave", reg)
	if err != nil {
		t.Fatal(err)
	}
	if needsText(again) != needsText(left) {
		t.Errorf("after the grants:\n%swant only what no grant gives:\n%s", needsText(again), needsText(left))
	}
	for _, n := range left {
		if !strings.HasPrefix(n.Commands, "subscription") {
			t.Errorf("left without a grant: %s", n)
		}
	}
}
