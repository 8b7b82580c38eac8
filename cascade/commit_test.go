package cascade_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

func TestDeleteSelfReferenceChainOf1000Levels(t *testing.T) {
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.LoadDjangoSchema(t, db)
	pgtest.Exec(t, db.DSN, baseFixture+`
		INSERT INTO userapp_comment (id, body, unit_id, parent_id)
		SELECT i, 'c', CASE WHEN i = 1 THEN 2 END, NULLIF(i - 1, 0) FROM generate_series(1, 1000) AS i;
		INSERT INTO userapp_comment (id, body, unit_id) VALUES (5000, 'other', 1);`)
	pool := pgtest.Pool(t, db.DSN)
	ctx := context.Background()
	for _, mode := range engineModes {
		t.Run(mode.name, func(t *testing.T) {
			e := cascade.New(buildRegistry(t, pool, nil), mode.opts...)
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			res, err := e.Delete(ctx, tx, public("catalog_unit"), []cascade.Key{{"2"}})
			if err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if got := res.Deleted[public("userapp_comment")]; got != 1000 {
				t.Errorf("deleted %d comments, want the 1000 of the chain", got)
			}
			var left int
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM userapp_comment").Scan(&left); err != nil || left != 1 {
				t.Errorf("comments left = %d (%v), want 1", left, err)
			}
			// Rolled back: the next mode starts from the same rows.
		})
	}
}

// Django's DO_NOTHING leaves the referencing rows; with a deferred foreign key
// the transaction then fails at COMMIT, and so does the engine's.
func TestDoNothingFailsAtCommit(t *testing.T) {
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.LoadDjangoSchema(t, db)
	pgtest.Exec(t, db.DSN, `
		CREATE TABLE t_note (id integer PRIMARY KEY, outcome_id integer REFERENCES catalog_outcome DEFERRABLE INITIALLY DEFERRED);
		CREATE TABLE t_memo (id integer PRIMARY KEY, outcome_id integer REFERENCES catalog_outcome);
		INSERT INTO catalog_outcome (id, name) VALUES (7, 'o7'), (8, 'o8');
		INSERT INTO t_note VALUES (1, 7);
		INSERT INTO t_memo VALUES (1, 8);`)
	pool := pgtest.Pool(t, db.DSN)
	ctx := context.Background()
	e := cascade.New(buildRegistry(t, pool, map[string]registry.OnDelete{
		"t_note.outcome_id": on(registry.DoNothing),
		"t_memo.outcome_id": on(registry.DoNothing),
	}))

	t.Run("deferred constraint fails at commit", func(t *testing.T) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		res, err := e.Delete(ctx, tx, public("catalog_outcome"), []cascade.Key{{"7"}})
		if err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if res.Deleted[public("catalog_outcome")] != 1 {
			t.Errorf("deleted = %v, want the outcome", res.Deleted)
		}
		err = cascade.TranslateError(tx.Commit(ctx))
		var re *cascade.ReferenceError
		if !errors.Is(err, cascade.ErrDanglingReference) || !errors.As(err, &re) {
			t.Fatalf("commit: got %v, want a foreign key violation", err)
		}
		t.Logf("commit failed as expected: %v", err)
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM catalog_outcome WHERE id = 7").Scan(&n); err != nil || n != 1 {
			t.Errorf("outcome 7 rows = %d (%v), want it kept", n, err)
		}
	})
	t.Run("immediate constraint fails at the delete and the transaction stays usable", func(t *testing.T) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		_, err = e.Delete(ctx, tx, public("catalog_outcome"), []cascade.Key{{"8"}})
		if !errors.Is(err, cascade.ErrDanglingReference) {
			t.Fatalf("Delete: got %v, want a foreign key violation", err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Errorf("transaction unusable after the error: %v", err)
		}
	})
}

// While the engine holds the collected rows, a concurrent transaction that
// adds a reference to one of them cannot commit before the delete does, and
// then fails: no new reference slips in between collecting and deleting.
func TestCollectedRowsAreLockedAgainstNewReferences(t *testing.T) {
	for _, mode := range engineModes {
		t.Run(mode.name, func(t *testing.T) { testCollectedRowsAreLocked(t, mode.opts) })
	}
}

func testCollectedRowsAreLocked(t *testing.T, opts []cascade.Option) {
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.LoadDjangoSchema(t, db)
	pgtest.Exec(t, db.DSN, baseFixture)
	pool := pgtest.Pool(t, db.DSN)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := cascade.New(buildRegistry(t, pool, nil), opts...)

	other := make(chan error, 1)
	cascade.SetAfterCollect(func() {
		go func() {
			tx, err := pool.Begin(ctx)
			if err != nil {
				other <- err
				return
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, "INSERT INTO userapp_report (id, title, unit_id) VALUES (99, 'late', 2)"); err != nil {
				other <- err
				return
			}
			other <- cascade.TranslateError(tx.Commit(ctx))
		}()
		// Wait until the other transaction's commit waits for our lock.
		for {
			var waiting bool
			err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&waiting)
			if err != nil {
				t.Errorf("poll pg_stat_activity: %v", err)
				return
			}
			if waiting {
				return
			}
			select {
			case err := <-other:
				t.Errorf("the concurrent reference committed before the delete: %v", err)
				other <- err
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	defer cascade.SetAfterCollect(nil)

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := e.Delete(ctx, tx, public("catalog_unit"), []cascade.Key{{"2"}}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", cascade.TranslateError(err))
	}
	if err := <-other; !errors.Is(err, cascade.ErrDanglingReference) {
		t.Errorf("concurrent insert: got %v, want a foreign key violation", err)
	}
}

// The engine sends keys as untyped text parameters, so it works whatever
// query exec mode the caller's pool uses (e.g. exec or simple_protocol behind
// a transaction-pooling proxy).
func TestDeleteInEveryQueryExecMode(t *testing.T) {
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.LoadDjangoSchema(t, db)
	pgtest.Exec(t, db.DSN, baseFixture+boxes)
	ctx := context.Background()
	for _, cfg := range []struct {
		mode   string
		engine int
	}{
		{"cache_statement", 0}, {"cache_describe", 0}, {"describe_exec", 0}, {"exec", 0}, {"simple_protocol", 0},
		{"cache_statement", 1}, {"cache_describe", 1}, {"exec", 1},
	} {
		mode, engine := cfg.mode, engineModes[cfg.engine]
		t.Run(mode+"/"+engine.name, func(t *testing.T) {
			pool := pgtest.Pool(t, db.DSN+"&default_query_exec_mode="+mode)
			e := cascade.New(buildRegistry(t, pool, map[string]registry.OnDelete{
				"t_item.box_a":               on(registry.SetNull),
				"userapp_preference.unit_id": {Rule: registry.SetValue, Value: "1"},
			}), engine.opts...)
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, `
				INSERT INTO userapp_report (id, title, unit_id) VALUES (10, 'r"10', 2);
				INSERT INTO userapp_taggeditem (id, object_id, label, content_type_id) VALUES (1, 10, 'a', 50);
				INSERT INTO userapp_preference (id, value, unit_id) VALUES (1, 'v', 2);`); err != nil {
				t.Fatal(err)
			}
			res, err := e.DeleteAll(ctx, tx, []cascade.Target{
				{Table: public("catalog_unit"), Keys: []cascade.Key{{"2"}}},
				{Table: public("t_box"), Keys: []cascade.Key{{"1", "x"}, {"2", `x"\`}}},
			})
			if err != nil {
				t.Fatalf("DeleteAll: %v", err)
			}
			want := map[string]int64{"catalog_unit": 1, "userapp_report": 1, "userapp_taggeditem": 1, "t_box": 1}
			if got := byName(res.Deleted); !reflect.DeepEqual(got, want) {
				t.Errorf("deleted = %v, want %v", got, want)
			}
			wantUpd := map[string]int64{"t_item": 2, "userapp_preference": 1}
			if got := byName(res.Updated); !reflect.DeepEqual(got, wantUpd) {
				t.Errorf("updated = %v, want %v", got, wantUpd)
			}
		})
	}
}
