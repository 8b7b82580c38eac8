package replication

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

// limitedRole creates a login role with nothing granted on db's cluster and
// returns a pool of it on db and its quoted name.
func limitedRole(t *testing.T, db *pgtest.DB, name string) (*pgxpool.Pool, string) {
	t.Helper()
	return pgtest.Pool(t, pgtest.Role(t, db, name, "")), pgx.Identifier{name}.Sanitize()
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
	if _, err := queue.Install(ctx, pool, queue.InstallOptions{Role: registry.RoleMaster, Registry: reg}, false); err != nil {
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
	// PUBLIC's default, which a hardened database may have revoked.
	pgtest.Exec(t, p.slave.DSN, "REVOKE TEMPORARY ON DATABASE "+pgx.Identifier{p.slave.Name}.Sanitize()+" FROM PUBLIC")
	ctx := ctxT(t, 2*time.Minute)
	needs, err := MissingPrivileges(ctx, pool, "slave", reg)
	if err != nil {
		t.Fatal(err)
	}
	text := needsText(needs)
	for _, want := range []string{
		"run (large master transactions) needs TEMPORARY on the database",
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

// TestLeastPrivilegeSubscription: on 16+, a slave role granted exactly what
// MissingPrivileges lists creates, refreshes and drops the subscription, as
// a master role with REPLICATION and SELECT that the master asks for its
// password (PostgreSQL requires one of a non-superuser's subscription).
func TestLeastPrivilegeSubscription(t *testing.T) {
	if v := serverMajor(t); v < 16 {
		t.Skipf("only a superuser creates subscriptions on PostgreSQL %d", v)
	}
	reg := testRegistry(nil)
	p := newPair(t, reg)
	p.publish(t, reg)
	ctx := ctxT(t, 2*time.Minute)

	mrole := "lp_m_" + p.master.Name
	mident := pgx.Identifier{mrole}.Sanitize()
	pgtest.Exec(t, p.master.DSN, "CREATE ROLE "+mident+" LOGIN REPLICATION PASSWORD 'se''cret'")
	t.Cleanup(func() {
		// After the slave's database (and its subscription) is gone.
		conn, err := pgx.Connect(context.Background(), p.master.Cluster.DSN("postgres"))
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		_, _ = conn.Exec(context.Background(), "DROP OWNED BY "+mident)
		_, _ = conn.Exec(context.Background(), "DROP ROLE "+mident)
	})
	for _, g := range []string{
		"GRANT USAGE ON SCHEMA pgoutpost TO " + mident,
		"GRANT SELECT ON ALL TABLES IN SCHEMA public, pgoutpost TO " + mident,
	} {
		pgtest.Exec(t, p.master.DSN, g)
	}
	if err := p.master.Cluster.RequirePassword(ctx, mrole); err != nil {
		t.Fatal(err)
	}
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s password=se'cret sslmode=disable", p.master.Cluster.Port, mrole, p.master.Name)
	conninfo = strings.Replace(conninfo, "password=se'cret", `password='se\'cret'`, 1)

	pool, _ := limitedRole(t, p.slave, "lp_s_"+p.slave.Name)
	needs, err := MissingPrivileges(ctx, pool, "slave", reg)
	if err != nil {
		t.Fatal(err)
	}
	if left := grantAll(t, p.slave, needs); len(left) != 0 {
		t.Fatalf("needs without a grant on 16+:\n%s", needsText(left))
	}
	t.Logf("granted:\n%s", needsText(needs))
	if _, err := CreateSubscriptions(ctx, pool, p.names, conninfo); err != nil {
		t.Fatalf("subscription create as the role: %v", err)
	}
	if err := WaitReady(ctx, pool, p.names, io.Discard, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, p.master.DSN, "INSERT INTO cat VALUES (7, 'least privilege')")
	eventually(t, "the row on the slave", func(ctx context.Context) (bool, error) {
		s, err := queryString(ctx, p.spool, "SELECT coalesce((SELECT name FROM cat WHERE id = 7), '')")
		return s == "least privilege", err
	})
	if _, err := UpdateSubscriptions(ctx, pool, p.names, conninfo); err != nil {
		t.Fatalf("subscription update as the role: %v", err)
	}
	if _, err := DropSubscriptions(ctx, pool, p.names, conninfo); err != nil {
		t.Fatalf("subscription drop as the role: %v", err)
	}
}
