package cascade_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// TestBatchReferenceChecks: with BatchReferenceChecks a deletion that leaves
// nothing for PostgreSQL's checks to object to runs under the replica role
// (a row trigger of the application does not fire) and ends with the role
// restored; one that does leave something — a reference from a table the
// registry does not read, an update rule's value with no row to reference —
// comes out exactly as it does with PostgreSQL's own checks, which judge it
// on a second run.
func TestBatchReferenceChecks(t *testing.T) {
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.LoadDjangoSchema(t, db)
	pgtest.Exec(t, db.DSN, `
		CREATE TABLE t_p (id integer PRIMARY KEY);
		CREATE TABLE t_c (id integer PRIMARY KEY,
			p_id integer REFERENCES t_p DEFERRABLE INITIALLY DEFERRED,
			d_id integer DEFAULT 99 REFERENCES t_p DEFERRABLE INITIALLY DEFERRED);
		CREATE TABLE t_fired (n integer);
		CREATE FUNCTION t_fire() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO t_fired VALUES (1); RETURN NULL; END $$;
		CREATE TRIGGER t_fire AFTER DELETE ON t_c FOR EACH ROW EXECUTE FUNCTION t_fire();
		CREATE SCHEMA t_other;
		CREATE TABLE t_other.cascading (id integer PRIMARY KEY, p_id integer REFERENCES public.t_p ON DELETE CASCADE);
		CREATE TABLE t_other.blocking (id integer PRIMARY KEY, p_id integer REFERENCES public.t_p);
		CREATE TABLE t_q (id integer PRIMARY KEY);
		CREATE TABLE t_q_child () INHERITS (t_q);
		ALTER TABLE t_q_child ADD PRIMARY KEY (id);
		CREATE TABLE t_other.child_ref (id integer PRIMARY KEY, q_id integer REFERENCES public.t_q_child ON DELETE CASCADE);`)
	pool := pgtest.Pool(t, db.DSN)
	ctx := context.Background()
	reg := buildRegistry(t, pool, map[string]registry.OnDelete{
		"t_c.p_id": on(registry.Cascade),
		"t_c.d_id": on(registry.SetDefault),
	})
	modes := map[string]*cascade.Engine{
		"database": cascade.New(reg),
		"batch":    cascade.New(reg, cascade.BatchReferenceChecks()),
	}
	type outcome struct {
		err       error
		rechecked bool
		fired     int
		left      string // the rows left, rendered
	}
	run := func(t *testing.T, e *cascade.Engine, table, fixture string, commit bool) outcome {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		// A case that commits leaves its rows for the next: start empty.
		if _, err := tx.Exec(ctx, "TRUNCATE t_p, t_q, t_q_child, t_c, t_fired, t_other.cascading, t_other.blocking, t_other.child_ref; "+fixture); err != nil {
			t.Fatalf("fixture: %v", err)
		}
		var o outcome
		res, err := e.Delete(ctx, tx, public(table), []cascade.Key{{"1"}})
		o.err = err
		if err == nil {
			o.rechecked = res.Rechecked
		}
		var role string
		if err := tx.QueryRow(ctx, "SELECT current_setting('session_replication_role')").Scan(&role); err != nil {
			t.Fatalf("after the delete: %v", err)
		}
		if role != "origin" {
			t.Errorf("session_replication_role = %s after the delete, want origin", role)
		}
		if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM t_fired),
			concat_ws(' ', (SELECT string_agg('p' || id, ',' ORDER BY id) FROM ONLY t_p), (SELECT string_agg('q' || id, ',' ORDER BY id) FROM t_q), (SELECT string_agg('c' || id || '/' || coalesce(d_id::text, '-'), ',' ORDER BY id) FROM t_c),
			(SELECT string_agg('oc' || id, ',') FROM t_other.cascading), (SELECT string_agg('ob' || id, ',') FROM t_other.blocking),
			(SELECT string_agg('or' || id, ',') FROM t_other.child_ref))`).Scan(&o.fired, &o.left); err != nil {
			t.Fatal(err)
		}
		if commit && o.err == nil {
			o.err = cascade.TranslateError(tx.Commit(ctx))
		}
		return o
	}
	cases := []struct {
		name      string
		table     string // deleted from: t_p when empty
		fixture   string
		commit    bool
		wantErr   error
		left      string
		rechecked bool // in batch mode
	}{
		{name: "nothing to object to", commit: true,
			fixture: "INSERT INTO t_p VALUES (1), (2), (99); INSERT INTO t_c VALUES (1, 1, NULL), (2, 2, 1)",
			left:    "p2,p99 c2/99"},
		{name: "a constraint's own cascade on a table the registry does not read", commit: true, rechecked: true,
			fixture: "INSERT INTO t_p VALUES (1), (2); INSERT INTO t_other.cascading VALUES (1, 1), (2, 2)",
			left:    "p2 oc2"},
		{name: "a reference PostgreSQL refuses at once", wantErr: cascade.ErrDanglingReference,
			fixture: "INSERT INTO t_p VALUES (1); INSERT INTO t_other.blocking VALUES (1, 1)",
			left:    "p1 ob1"},
		{name: "a row of an inheritance child, referenced from a table the registry does not read", commit: true, rechecked: true,
			table:   "t_q",
			fixture: "INSERT INTO t_q VALUES (2); INSERT INTO t_q_child VALUES (1); INSERT INTO t_other.child_ref VALUES (1, 1)",
			left:    "q2"},
		{name: "SET_DEFAULT to a row that does not exist fails at commit", commit: true, wantErr: cascade.ErrDanglingReference, rechecked: true,
			fixture: "INSERT INTO t_p VALUES (1), (2); INSERT INTO t_c VALUES (2, 2, 1)",
			left:    "p2 c2/99"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]outcome{}
			for name, e := range modes {
				table := tc.table
				if table == "" {
					table = "t_p"
				}
				o := run(t, e, table, tc.fixture, tc.commit)
				got[name] = o
				if !errors.Is(o.err, tc.wantErr) || (tc.wantErr == nil) != (o.err == nil) {
					t.Errorf("%s checks: error %v, want %v", name, o.err, tc.wantErr)
				}
				if o.left != tc.left {
					t.Errorf("%s checks: rows left %q, want %q", name, o.left, tc.left)
				}
			}
			db, batch := got["database"], got["batch"]
			if tc.wantErr == nil && !tc.rechecked {
				// Deleting c1 fires the row trigger unless the batch
				// checks ran under the replica role.
				if db.fired != 1 || batch.fired != 0 {
					t.Errorf("row trigger fired %d times with the database's checks and %d with batch checks, want 1 and 0", db.fired, batch.fired)
				}
			}
			if db.rechecked {
				t.Error("Rechecked without BatchReferenceChecks")
			}
			if tc.wantErr == nil && batch.rechecked != tc.rechecked {
				t.Errorf("batch checks: Rechecked = %v, want %v", batch.rechecked, tc.rechecked)
			}
		})
	}

	t.Run("a role that may not set the replica role is told so", func(t *testing.T) {
		pgtest.Exec(t, db.DSN, `DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgoutpost_test_plain') THEN CREATE ROLE pgoutpost_test_plain; END IF; END $$;
			GRANT SELECT, DELETE, UPDATE ON ALL TABLES IN SCHEMA public TO pgoutpost_test_plain`)
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		if _, err := tx.Exec(ctx, "INSERT INTO t_p VALUES (1); SET LOCAL ROLE pgoutpost_test_plain"); err != nil {
			t.Fatal(err)
		}
		_, err = modes["batch"].Delete(ctx, tx, public("t_p"), []cascade.Key{{"1"}})
		if err == nil || !strings.Contains(err.Error(), "session_replication_role") {
			t.Fatalf("Delete as a plain role: %v, want an error naming session_replication_role", err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Errorf("transaction unusable after the error: %v", err)
		}
	})

	// The statements of a deletion are built for the constraints the last one
	// read; the checks read them again and judge by the new set.
	t.Run("a constraint added since the last deletion is judged", func(t *testing.T) {
		e := cascade.New(reg, cascade.BatchReferenceChecks())
		if o := run(t, e, "t_p", "INSERT INTO t_p VALUES (1)", true); o.err != nil || o.rechecked {
			t.Fatalf("first delete: %v, rechecked %v", o.err, o.rechecked)
		}
		pgtest.Exec(t, db.DSN, "CREATE TABLE t_other.late (id integer PRIMARY KEY, p_id integer REFERENCES public.t_p)")
		defer pgtest.Exec(t, db.DSN, "DROP TABLE t_other.late")
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		if _, err := tx.Exec(ctx, "INSERT INTO t_p VALUES (1); INSERT INTO t_other.late VALUES (1, 1)"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Delete(ctx, tx, public("t_p"), []cascade.Key{{"1"}}); !errors.Is(err, cascade.ErrDanglingReference) {
			t.Errorf("Delete of a row that a constraint added since refers to: %v, want %v", err, cascade.ErrDanglingReference)
		}
	})

	// PostgreSQL's checks need no privilege of the deleting role on the
	// referencing tables; a batch check that may not read one hands the
	// deletion to them instead of failing it.
	t.Run("a role that may not read a referencing table", func(t *testing.T) {
		pgtest.Exec(t, db.DSN, `DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgoutpost_test_narrow') THEN CREATE ROLE pgoutpost_test_narrow; END IF; END $$;
			GRANT SET ON PARAMETER session_replication_role TO pgoutpost_test_narrow;
			GRANT SELECT, DELETE, UPDATE ON ALL TABLES IN SCHEMA public TO pgoutpost_test_narrow`)
		for _, tc := range []struct {
			fixture   string
			wantErr   error
			rechecked bool
		}{
			{fixture: "INSERT INTO t_p VALUES (1), (2); INSERT INTO t_other.blocking VALUES (2, 2)", rechecked: true},
			{fixture: "INSERT INTO t_p VALUES (1); INSERT INTO t_other.blocking VALUES (1, 1)", wantErr: cascade.ErrDanglingReference},
		} {
			for name, e := range modes {
				tx, err := pool.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tx.Exec(ctx, "TRUNCATE t_p CASCADE; "+tc.fixture+"; SET LOCAL ROLE pgoutpost_test_narrow"); err != nil {
					t.Fatal(err)
				}
				res, err := e.Delete(ctx, tx, public("t_p"), []cascade.Key{{"1"}})
				if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
					t.Errorf("%s checks, %s: Delete: %v, want %v", name, tc.fixture, err, tc.wantErr)
				}
				if err == nil && res.Rechecked != (tc.rechecked && name == "batch") {
					t.Errorf("%s checks, %s: Rechecked = %v", name, tc.fixture, res.Rechecked)
				}
				tx.Rollback(ctx) //nolint:errcheck
			}
		}

		// validate warns of such tables when deletes can reach what they
		// reference (t_p is a user table no delete model reaches).
		pgtest.Exec(t, db.DSN, "CREATE TABLE t_other.unit_ref (id integer PRIMARY KEY, unit_id integer REFERENCES public.catalog_unit)")
		defer pgtest.Exec(t, db.DSN, "DROP TABLE t_other.unit_ref")
		for _, role := range []string{"pgoutpost_test_narrow", ""} {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if role != "" {
				if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+role); err != nil {
					t.Fatal(err)
				}
			}
			got, err := cascade.UnreadableReferences(ctx, tx, reg)
			tx.Rollback(ctx) //nolint:errcheck
			if err != nil {
				t.Fatal(err)
			}
			var want []cascade.Unreadable
			if role != "" {
				want = []cascade.Unreadable{{Constraint: "unit_ref_unit_id_fkey", From: registry.TableName{Schema: "t_other", Name: "unit_ref"}, To: public("catalog_unit")}}
			}
			if !slices.Equal(got, want) {
				t.Errorf("UnreadableReferences as %q: %v, want %v", role, got, want)
			}
		}
	})

	// PostgreSQL's checks run as the referencing table's owner and see the
	// rows a policy hides from the deleting role; a batch check would not.
	t.Run("a referencing row that row-level security hides from the role still refuses the delete", func(t *testing.T) {
		pgtest.Exec(t, db.DSN, `DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgoutpost_test_rls') THEN CREATE ROLE pgoutpost_test_rls; END IF; END $$;
			GRANT SET ON PARAMETER session_replication_role TO pgoutpost_test_rls;
			GRANT USAGE ON SCHEMA t_other TO pgoutpost_test_rls;
			GRANT SELECT, DELETE, UPDATE ON ALL TABLES IN SCHEMA public, t_other TO pgoutpost_test_rls;
			ALTER TABLE t_other.blocking ENABLE ROW LEVEL SECURITY;
			CREATE POLICY t_hide ON t_other.blocking USING (id > 100)`)
		for name, e := range modes {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `TRUNCATE t_p, t_other.blocking CASCADE; INSERT INTO t_p VALUES (1); INSERT INTO t_other.blocking VALUES (1, 1);
				SET LOCAL ROLE pgoutpost_test_rls`); err != nil {
				t.Fatal(err)
			}
			_, err = e.Delete(ctx, tx, public("t_p"), []cascade.Key{{"1"}})
			if err == nil {
				err = cascade.TranslateError(tx.Commit(ctx))
			}
			if !errors.Is(err, cascade.ErrDanglingReference) {
				t.Errorf("%s checks: Delete as a role that cannot see the referencing row: %v, want %v", name, err, cascade.ErrDanglingReference)
			}
			tx.Rollback(ctx) //nolint:errcheck
		}
	})
}
