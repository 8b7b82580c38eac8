package queue

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/config"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// djangoRegistry resolves the models of the root sidecar.yaml (the reference
// Django schema's) against the database of pool.
func djangoRegistry(tb testing.TB, pool *pgxpool.Pool) *registry.Registry {
	tb.Helper()
	cfg, err := config.Load("../sidecar.yaml")
	if err != nil {
		tb.Fatalf("load ../sidecar.yaml: %v", err)
	}
	reg, err := registry.Load(context.Background(), pool, cfg.RegistrySpec())
	if err != nil {
		tb.Fatalf("load registry: %v", err)
	}
	return reg
}

// testSchema has a delete model with a simple key (unit), one with a
// composite key (pair), a denormalize model with a json column, which has no
// equality operator (outcome), and a plain system table (category).
const testSchema = `
CREATE TABLE category (id int PRIMARY KEY, name text);
CREATE TABLE unit (id bigint PRIMARY KEY, name text, category_id int REFERENCES category);
CREATE TABLE pair (a int, b text, v int, pgoutpost_hi int, PRIMARY KEY (a, b)); -- a column named like a trigger variable
CREATE TABLE outcome (id int PRIMARY KEY, name text, data json);
`

func table(name string, kind registry.Kind, pk ...string) *registry.Table {
	n, err := registry.ParseTableName(name)
	if err != nil {
		panic(err)
	}
	return &registry.Table{Name: n, Kind: kind, PrimaryKey: pk}
}

// testRegistry is the registry of testSchema.
func testRegistry() *registry.Registry {
	return registry.New([]*registry.Table{
		table("category", registry.KindSystem, "id"),
		table("unit", registry.KindDelete, "id"),
		table("pair", registry.KindDelete, "a", "b"),
		table("outcome", registry.KindDenormalize, "id"),
	})
}

// masterDB is a fresh master database with testSchema and the queue installed.
func masterDB(t *testing.T, reg *registry.Registry) (*pgtest.DB, *pgxpool.Pool) {
	t.Helper()
	db := pgtest.NewDB(t, pgtest.Master(t))
	pgtest.Exec(t, db.DSN, testSchema)
	pool := pgtest.Pool(t, db.DSN)
	if _, err := Install(context.Background(), pool, InstallOptions{Role: registry.RoleMaster, Registry: reg}, false); err != nil {
		t.Fatalf("install: %v", err)
	}
	return db, pool
}

// entry is a queue row as the tests read it.
type entry struct {
	ID    [16]byte
	Table string
	PK    string // canonical jsonb text
	Op    string
	XID   int64
}

// entries reads a queue table in id order.
func entries(t *testing.T, pool *pgxpool.Pool, q registry.TableName) []entry {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT id, table_name, pk::text, op, xid FROM "+q.Sanitize()+" ORDER BY id")
	if err != nil {
		t.Fatalf("read %s: %v", q, err)
	}
	defer rows.Close()
	var out []entry
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.ID, &e.Table, &e.PK, &e.Op, &e.XID); err != nil {
			t.Fatalf("read %s: %v", q, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read %s: %v", q, err)
	}
	return out
}

func count(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// catalogSnapshot describes every trigger, function, relation, schema and
// publication of the database with its oid and xmin, so that any DDL
// (a drop and create, a CREATE OR REPLACE, an ALTER) changes it.
func catalogSnapshot(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `
SELECT string_agg(x, E'\n' ORDER BY x) FROM (
  SELECT format('trigger %s %s oid=%s xmin=%s enabled=%s', tgrelid::regclass, tgname, oid, xmin, tgenabled)
    FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL
  SELECT format('function %s oid=%s xmin=%s', oid::regprocedure, oid, xmin) FROM pg_proc
    WHERE pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
  UNION ALL
  SELECT format('class %s kind=%s oid=%s xmin=%s', oid::regclass, relkind, oid, xmin) FROM pg_class
    WHERE relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace)
  UNION ALL
  SELECT format('schema %s oid=%s xmin=%s', nspname, oid, xmin) FROM pg_namespace
  UNION ALL
  SELECT format('publication %s oid=%s xmin=%s', pubname, oid, xmin) FROM pg_publication
  UNION ALL
  SELECT format('publication_rel %s %s xmin=%s', prpubid, prrelid::regclass, xmin) FROM pg_publication_rel
) s(x)`).Scan(&s)
	if err != nil {
		t.Fatalf("catalog snapshot: %v", err)
	}
	return s
}
