package queue

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// waitFor polls sql (a count) on pool until it returns want.
func waitFor(t *testing.T, pool *pgxpool.Pool, want int64, sql string) {
	t.Helper()
	var n int64
	pgtest.Eventually(t, sql+" = "+strconv.FormatInt(want, 10), func() bool {
		if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return n == want
	})
}

func TestGuard(t *testing.T) {
	ctx := context.Background()
	const schema = "CREATE TABLE category (id int PRIMARY KEY, name text); CREATE TABLE mine (id int PRIMARY KEY);"
	master := pgtest.NewDB(t, pgtest.Master(t))
	pgtest.Exec(t, master.DSN, schema+"INSERT INTO category VALUES (1, 'one'); CREATE PUBLICATION guard_test FOR TABLE category;")
	slave := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.Exec(t, slave.DSN, schema)
	spool := pgtest.Pool(t, slave.DSN)
	category := registry.TableName{Schema: "public", Name: "category"}

	p, err := InstallGuard(ctx, spool, []registry.TableName{category}, false)
	if err != nil || len(p) != 3 {
		t.Fatalf("guard install: plan %v, err %v; want schema, function and trigger", p, err)
	}
	before := catalogSnapshot(t, spool)
	if p, err := InstallGuard(ctx, spool, []registry.TableName{category}, false); err != nil || len(p) != 0 {
		t.Errorf("second guard install: plan %v, err %v", p, err)
	}
	if after := catalogSnapshot(t, spool); after != before {
		t.Error("second guard install changed the catalog")
	}

	// The subscription is created after the guard: its initial copy must pass too.
	var create string
	if err := spool.QueryRow(ctx, "SELECT format('CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION %I', $1::text, $2::text, $3::text)",
		slave.Name+"_sub", master.ConnInfo(), "guard_test").Scan(&create); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, slave.DSN, create) // dropped with the slave database
	waitFor(t, spool, 1, "SELECT count(*) FROM category")

	refused := func(t *testing.T, sql string) {
		t.Helper()
		_, err := spool.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "public.category") {
			t.Errorf("%s: err = %v, want a refusal naming public.category", sql, err)
		}
	}
	t.Run("ordinary writes are refused naming the table", func(t *testing.T) {
		refused(t, "INSERT INTO category VALUES (2, 'two')")
		refused(t, "UPDATE category SET name = 'x'")
		refused(t, "DELETE FROM category")
		refused(t, "TRUNCATE category")
		if _, err := spool.Exec(ctx, "INSERT INTO mine VALUES (1)"); err != nil {
			t.Errorf("insert into an unguarded table: %v", err)
		}
	})

	t.Run("replication keeps applying", func(t *testing.T) {
		pgtest.Exec(t, master.DSN, "INSERT INTO category VALUES (2, 'two'), (3, 'three'); UPDATE category SET name = 'uno' WHERE id = 1; DELETE FROM category WHERE id = 3")
		waitFor(t, spool, 2, "SELECT count(*) FROM category WHERE id IN (1, 2) AND name IN ('uno', 'two')")
		waitFor(t, spool, 2, "SELECT count(*) FROM category")
		var errs int64
		if err := spool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_subscription WHERE subname = $1 AND pid IS NOT NULL", slave.Name+"_sub").Scan(&errs); err != nil || errs != 1 {
			t.Errorf("apply worker running: %d (err %v), want 1", errs, err)
		}
	})

	t.Run("cascade transactions pass", func(t *testing.T) {
		tx, err := spool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		if err := registry.MarkCascade(ctx, tx); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM category WHERE id = 2"); err != nil {
			t.Fatalf("delete in a cascade transaction: %v", err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		// SET LOCAL: the next transaction on the same pool is refused again.
		refused(t, "DELETE FROM category")
	})

	t.Run("status lists the guarded tables", func(t *testing.T) {
		got, err := GuardedTables(ctx, spool)
		if err != nil || len(got) != 1 || got[0] != category {
			t.Errorf("GuardedTables = %v, %v; want [public.category]", got, err)
		}
	})

	t.Run("unknown table is an error naming it", func(t *testing.T) {
		_, err := InstallGuard(ctx, spool, []registry.TableName{{Schema: "public", Name: "nope"}}, false)
		if err == nil || !strings.Contains(err.Error(), "public.nope") {
			t.Errorf("err = %v, want it to name public.nope", err)
		}
	})

	t.Run("remove lifts the guard", func(t *testing.T) {
		before := catalogSnapshot(t, spool)
		if p, err := RemoveGuard(ctx, spool, nil, true); err != nil || len(p) != 1 {
			t.Fatalf("dry-run remove: plan %v, err %v", p, err)
		}
		if after := catalogSnapshot(t, spool); after != before {
			t.Error("dry-run remove changed the catalog")
		}
		if p, err := RemoveGuard(ctx, spool, []registry.TableName{category}, false); err != nil || len(p) != 1 {
			t.Fatalf("remove: plan %v, err %v", p, err)
		}
		if _, err := spool.Exec(ctx, "INSERT INTO category VALUES (10, 'local')"); err != nil {
			t.Errorf("insert after guard remove: %v", err)
		}
		if p, err := RemoveGuard(ctx, spool, nil, false); err != nil || len(p) != 0 {
			t.Errorf("second remove: plan %v, err %v", p, err)
		}
	})
}
