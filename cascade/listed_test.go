package cascade_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// DeleteListed reads its keys from a table on the server: one deletion over
// every listed key, a key listed twice deleted once, a missing one counted,
// and the reported keys left in temporary tables for the caller's SQL.
func TestDeleteListed(t *testing.T) {
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.LoadDjangoSchema(t, db)
	pgtest.Exec(t, db.DSN, baseFixture+`
		INSERT INTO catalog_outcome (id, name) VALUES (7, 'o7'), (8, 'o8'), (9, 'o9');
		INSERT INTO catalog_outcome_sub_outcomes (id, from_outcome_id, to_outcome_id) VALUES (1, 7, 8), (2, 9, 7), (3, 8, 9);
		INSERT INTO userapp_report (id, title, unit_id, outcome_id) VALUES (10, 'r10', 2, 8), (11, 'r11', 1, 9);
		CREATE TABLE listed (table_name text, pk jsonb);`)
	pool := pgtest.Pool(t, db.DSN)
	ctx := context.Background()
	e := cascade.New(buildRegistry(t, pool, nil), cascade.ReportKeys(registry.KindDenormalize), cascade.MaxArray(1))

	run := func(t *testing.T, keys string) (*cascade.Result, map[string][]string, error) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "TRUNCATE listed; INSERT INTO listed VALUES "+keys); err != nil {
			t.Fatal(err)
		}
		res, err := e.DeleteListed(ctx, tx, "listed")
		if err != nil {
			return nil, nil, err
		}
		left := map[string][]string{}
		for _, q := range []string{"SELECT id::text FROM catalog_unit ORDER BY id", "SELECT id::text FROM catalog_outcome ORDER BY id", "SELECT id::text FROM userapp_report ORDER BY id"} {
			var ids []string
			rows, _ := tx.Query(ctx, q)
			for rows.Next() {
				var id string
				_ = rows.Scan(&id)
				ids = append(ids, id)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			left[q[len("SELECT id::text FROM "):len(q)-len(" ORDER BY id")]] = ids
		}
		for name, kt := range res.KeyTables {
			var keys []string
			rows, _ := tx.Query(ctx, "SELECT pg_catalog.to_jsonb(k)::text FROM "+kt+" AS k ORDER BY 1")
			for rows.Next() {
				var k string
				_ = rows.Scan(&k)
				keys = append(keys, k)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			left["keys of "+name.Name] = keys
		}
		return res, left, nil
	}

	t.Run("deletes every listed key once", func(t *testing.T) {
		res, left, err := run(t, `('public.catalog_unit', '{"id": 2}'), ('public.catalog_unit', '{"id": 2}'), ('public.catalog_unit', '{"id": 404}'),
			('public.catalog_outcome', '{"id": 7}'), ('public.catalog_outcome', '{"id": 8}')`)
		if err != nil {
			t.Fatalf("DeleteListed: %v", err)
		}
		want := map[string][]string{
			"catalog_unit":                         {"1"},
			"catalog_outcome":                      {"9"},
			"userapp_report":                       {"11"},
			"keys of catalog_outcome":              {`{"id": 7}`, `{"id": 8}`},
			"keys of catalog_outcome_sub_outcomes": {`{"id": 1}`, `{"id": 2}`, `{"id": 3}`},
		}
		if !reflect.DeepEqual(left, want) {
			t.Errorf("after the delete:\n got %v\nwant %v", left, want)
		}
		if res.Missing != 1 {
			t.Errorf("missing = %d, want 1 (404; the key listed twice is one key)", res.Missing)
		}
		if len(res.DeletedKeys) != 0 {
			t.Errorf("DeletedKeys = %v, want them in KeyTables only", res.DeletedKeys)
		}
	})
	t.Run("a key of an unknown table fails the whole deletion", func(t *testing.T) {
		_, _, err := run(t, `('public.catalog_unit', '{"id": 2}'), ('public.nowhere', '{"id": 1}')`)
		if !errors.Is(err, cascade.ErrUnknownTable) {
			t.Errorf("got %v, want ErrUnknownTable", err)
		}
	})
	t.Run("a key without its column is malformed", func(t *testing.T) {
		_, _, err := run(t, `('public.catalog_unit', '{"id": 2}'), ('public.catalog_unit', '{"pk": 1}')`)
		if !errors.Is(err, cascade.ErrBadKey) {
			t.Errorf("got %v, want ErrBadKey", err)
		}
	})
	t.Run("a key of the wrong type is malformed", func(t *testing.T) {
		_, _, err := run(t, `('public.catalog_unit', '{"id": "two"}')`)
		if !errors.Is(err, cascade.ErrBadKey) {
			t.Errorf("got %v, want ErrBadKey", err)
		}
	})
	t.Run("protect fails with the referencing rows", func(t *testing.T) {
		pgtest.Exec(t, db.DSN, "INSERT INTO catalog_unit (id, name, category_id) VALUES (3, 'u3', 1), (4, 'u4', 1)")
		_, _, err := run(t, `('public.catalog_category', '{"id": 1}')`)
		if got, want := refNames(err), []string{"public.catalog_unit(3)", "public.catalog_unit(4)"}; !reflect.DeepEqual(got, want) {
			t.Errorf("got %v (%v), want the units protecting the category %v", got, err, want)
		}
	})
}
