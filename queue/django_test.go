package queue

import (
	"context"
	"sort"
	"strings"
	"testing"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// TestInstallDjangoSchema installs the queue for the reference Django schema
// as the root sidecar.yaml describes it, resolved by registry.Load.
func TestInstallDjangoSchema(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t, pgtest.Master(t))
	pgtest.LoadDjangoSchema(t, db)
	pool := pgtest.Pool(t, db.DSN)
	reg := djangoRegistry(t, pool)
	opts := InstallOptions{Role: registry.RoleMaster, Registry: reg}
	if _, err := Install(ctx, pool, opts, false); err != nil {
		t.Fatalf("install: %v", err)
	}

	var want []string
	for _, tbl := range reg.OfKind(registry.KindDelete, registry.KindDenormalize) {
		fn := tableFunctionName(tbl.Name) + "()"
		want = append(want, tbl.Name.Name+" delete "+fn)
		if tbl.OnTruncate == registry.TruncateRefuse {
			want = append(want, tbl.Name.Name+" truncate queue_refuse_truncate()")
		} else {
			want = append(want, tbl.Name.Name+" truncate "+fn)
		}
		if tbl.Kind == registry.KindDenormalize {
			want = append(want, tbl.Name.Name+" insert "+fn, tbl.Name.Name+" update "+fn)
		}
	}
	sort.Strings(want)
	got := queueTriggers(t, pool)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("triggers:\n%s\nwant (from the registry):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, name := range []string{"catalog_unit delete", "catalog_gene delete", "catalog_outcome update", "catalog_outcome_sub_outcomes insert"} {
		if !strings.Contains(strings.Join(got, "\n"), name) {
			t.Errorf("no %s trigger: %v", name, got)
		}
	}
	if strings.Contains(strings.Join(got, "\n"), "catalog_category") || strings.Contains(strings.Join(got, "\n"), "userapp_") {
		t.Errorf("a system or user table got queue triggers: %v", got)
	}

	pgtest.Exec(t, db.DSN, `
INSERT INTO catalog_category (id, name) VALUES (1, 'c');
INSERT INTO catalog_unit (id, name, category_id) SELECT g, 'u' || g, 1 FROM generate_series(1, 1000) g;
INSERT INTO catalog_outcome (id, name) VALUES (1, 'a'), (2, 'b');
INSERT INTO catalog_outcome_sub_outcomes (id, from_outcome_id, to_outcome_id) VALUES (1, 1, 2);
UPDATE catalog_outcome SET name = 'z' WHERE id = 2;
UPDATE catalog_category SET name = 'd';
DELETE FROM catalog_outcome_sub_outcomes;
DELETE FROM catalog_unit WHERE id > 10;
`)
	for _, c := range []struct {
		sql  string
		want int64
	}{
		{"SELECT count(*) FROM pgoutpost.delete_queue WHERE table_name = 'public.catalog_unit'", 990},
		{"SELECT count(*) FROM pgoutpost.delete_queue WHERE table_name = 'public.catalog_outcome_sub_outcomes'", 1},
		{"SELECT count(*) FROM pgoutpost.denormalize_queue WHERE table_name = 'public.catalog_outcome' AND op = 'insert'", 2},
		{`SELECT count(*) FROM pgoutpost.denormalize_queue WHERE table_name = 'public.catalog_outcome' AND op = 'update' AND pk = '{"id": 2}'`, 1},
		{"SELECT count(*) FROM pgoutpost.denormalize_queue WHERE table_name = 'public.catalog_outcome_sub_outcomes'", 1},
		{"SELECT count(*) FROM pgoutpost.denormalize_queue WHERE table_name LIKE 'public.catalog_category%'", 0},
	} {
		if n := count(t, pool, c.sql); n != c.want {
			t.Errorf("%s = %d, want %d", c.sql, n, c.want)
		}
	}

	before := catalogSnapshot(t, pool)
	if p, err := Install(ctx, pool, opts, false); err != nil || len(p) != 0 {
		t.Errorf("second install: plan %v, err %v", p, err)
	}
	if after := catalogSnapshot(t, pool); after != before {
		t.Error("second install changed the catalog")
	}
}
