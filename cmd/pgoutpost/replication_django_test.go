package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/config"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

// exampleConfig is the annotated sidecar.yaml, which describes the reference
// Django schema.
const exampleConfig = "../../sidecar.yaml"

// TestDjangoReplication deploys the example configuration on the reference
// Django schema, master then slave, as docs/deploy.md says.
func TestDjangoReplication(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	master, slave, _, plan := djangoPair(t, ctx, `
		INSERT INTO django_content_type VALUES (1, 'catalog', 'unit'), (2, 'userapp', 'report');
		INSERT INTO auth_permission VALUES (1, 'Can add unit', 1, 'add_unit');
		INSERT INTO catalog_category VALUES (1, 'visible'), (-1, 'filtered out');
		INSERT INTO catalog_unit VALUES (1, 'u1', 1), (2, 'u2', 1);
		INSERT INTO catalog_marker VALUES (1, 'm1', 1);
		INSERT INTO catalog_artist VALUES (1, 'a1')`, "")
	spool := pgtest.Pool(t, slave.DSN)
	for _, want := range []string{
		"publication pgoutpost_system: add public.catalog_category (id, name) WHERE (id > 0)",
		"publication pgoutpost_delete: add public.django_content_type", // promoted: a user table points at it
		"publication pgoutpost_delete: add public.catalog_unit",
		"publication pgoutpost_delete: add public.catalog_outcome_sub_outcomes",
		"  public.userapp_report",
	} {
		if !strings.Contains(plan, want) {
			t.Errorf("publication update output lacks %q:\n%s", want, plan)
		}
	}
	t.Setenv("PGOUTPOST_ROLE", "master")
	t.Setenv("PGOUTPOST_DATABASE_DSN", master.DSN)
	if out := mustRun(t, "publication", "update", "--dry-run", "--config", exampleConfig); !strings.Contains(out, "no changes") {
		t.Errorf("second plan:\n%s", out)
	}

	slaveEnv(t, master, slave)
	mustRun(t, "subscription", "create", "--config", exampleConfig)
	mustRun(t, "subscription", "update", "--wait", "--timeout", "2m", "--config", exampleConfig)

	for _, q := range []struct{ sql, want string }{
		{"SELECT string_agg(name, ',' ORDER BY id) FROM catalog_category", "visible"},
		{"SELECT string_agg(name, ',' ORDER BY id) FROM catalog_unit", "u1,u2"},
		{"SELECT string_agg(codename, ',') FROM auth_permission", "add_unit"},
	} {
		var got string
		if err := spool.QueryRow(ctx, q.sql).Scan(&got); err != nil || got != q.want {
			t.Errorf("%s = %q, %v; want %q", q.sql, got, err, q.want)
		}
	}

	// A delete of a delete model reaches the slave as a queue row, not as a delete.
	pgtest.Exec(t, master.DSN, "DELETE FROM catalog_marker WHERE id = 1")
	pgtest.Eventually(t, "the marker's delete_queue row on the slave", func() bool {
		var n int
		if err := spool.QueryRow(ctx, "SELECT count(*) FROM pgoutpost.delete_queue WHERE table_name = 'public.catalog_marker'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	var markers int
	if err := spool.QueryRow(ctx, "SELECT count(*) FROM catalog_marker").Scan(&markers); err != nil || markers != 1 {
		t.Errorf("slave markers = %d, %v; the delete must not replicate", markers, err)
	}

	del := mustRun(t, "print-delete-sql", "--config", exampleConfig)
	pos := func(table string) int { return strings.Index(del, `DELETE FROM "public".`+`"`+table+`"`) }
	if !(pos("catalog_marker") < pos("catalog_unit") && pos("catalog_unit") < pos("catalog_category") &&
		pos("auth_permission") < pos("django_content_type") && pos("catalog_marker") >= 0) || strings.Contains(del, "userapp_") {
		t.Errorf("print-delete-sql order:\n%s", del)
	}
}

// djangoPair makes a master and a slave database of the reference Django
// schema, runs masterSQL and slaveSQL on them, installs the queue on both,
// creates and fills the master's publications from the example configuration
// and leaves the PGOUTPOST_* variables pointing the commands at the slave. It
// returns the master's registry and publication update's output.
func djangoPair(t testing.TB, ctx context.Context, masterSQL, slaveSQL string) (master, slave *pgtest.DB, reg *registry.Registry, plan string) {
	t.Helper()
	master = pgtest.NewDB(t, pgtest.Master(t))
	slave = pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.LoadDjangoSchema(t, master)
	pgtest.LoadDjangoSchema(t, slave)
	if masterSQL != "" {
		pgtest.Exec(t, master.DSN, masterSQL)
	}
	if slaveSQL != "" {
		pgtest.Exec(t, slave.DSN, slaveSQL)
	}
	cfg, err := config.Load(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	mpool, spool := pgtest.Pool(t, master.DSN), pgtest.Pool(t, slave.DSN)
	if reg, err = registry.Load(ctx, mpool, cfg.RegistrySpec()); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Install(ctx, mpool, queue.InstallOptions{Role: registry.RoleMaster, Registry: reg}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Install(ctx, spool, queue.InstallOptions{Role: registry.RoleSlave}, false); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGOUTPOST_ROLE", "master")
	t.Setenv("PGOUTPOST_DATABASE_DSN", master.DSN)
	mustRun(t, "publication", "create", "--config", exampleConfig)
	plan = mustRun(t, "publication", "update", "--config", exampleConfig)
	slaveEnv(t, master, slave)
	return master, slave, reg, plan
}

// slaveEnv points the commands' configuration at slave, with master as its
// master.
func slaveEnv(t testing.TB, master, slave *pgtest.DB) {
	t.Setenv("PGOUTPOST_ROLE", "slave")
	t.Setenv("PGOUTPOST_ENVIRONMENT", strings.ReplaceAll(slave.Name, "_", "-"))
	t.Setenv("PGOUTPOST_DATABASE_DSN", slave.DSN)
	t.Setenv("PGOUTPOST_MASTER_DSN", master.ConnInfo())
}
