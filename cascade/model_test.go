package cascade_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"testing"

	"github.com/jackc/pgx/v5"
	"pgregory.net/rapid"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// modelFKs are the relations of the random schema of TestDeleteMatchesModel.
var modelFKs = []struct{ from, col, to string }{
	{"r_b", "a_id", "r_a"},
	{"r_b", "parent_id", "r_b"},
	{"r_c", "a_id", "r_a"},
	{"r_c", "b_id", "r_b"},
}

var modelRules = []registry.Rule{registry.Cascade, registry.Protect, registry.Restrict, registry.SetNull, registry.DoNothing}

// modelRow is a row of the random schema: its id and its foreign key values
// by column (0 for NULL).
type modelRow struct {
	id  int
	fks map[string]int
}

// TestDeleteMatchesModel compares the engine with a direct statement of
// Django's rules (a fixpoint over in-memory rows) on random rows, random rules
// and random deletes, with tiny key arrays so that every statement is split.
func TestDeleteMatchesModel(t *testing.T) {
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.Exec(t, db.DSN, `
		CREATE TABLE r_a (id integer PRIMARY KEY);
		CREATE TABLE r_b (id integer PRIMARY KEY,
			a_id integer REFERENCES r_a DEFERRABLE INITIALLY DEFERRED,
			parent_id integer REFERENCES r_b DEFERRABLE INITIALLY DEFERRED);
		CREATE TABLE r_c (id integer PRIMARY KEY,
			a_id integer REFERENCES r_a DEFERRABLE INITIALLY DEFERRED,
			b_id integer REFERENCES r_b DEFERRABLE INITIALLY DEFERRED);`)
	pool := pgtest.Pool(t, db.DSN)
	ctx := context.Background()

	rapid.Check(t, func(rt *rapid.T) {
		rules := map[string]registry.Rule{}
		spec := registry.Spec{Schemas: []string{"public"}}
		for _, fk := range modelFKs {
			r := rapid.SampledFrom(modelRules).Draw(rt, fk.from+"."+fk.col)
			rules[fk.from+"."+fk.col] = r
			spec.Relations = append(spec.Relations, registry.RelationSpec{From: public(fk.from), Column: fk.col, OnDelete: on(r)})
		}
		n := map[string]int{
			"r_a": rapid.IntRange(1, 5).Draw(rt, "a rows"),
			"r_b": rapid.IntRange(0, 8).Draw(rt, "b rows"),
			"r_c": rapid.IntRange(0, 8).Draw(rt, "c rows"),
		}
		rows := map[string][]modelRow{}
		for _, tb := range []string{"r_a", "r_b", "r_c"} {
			for id := 1; id <= n[tb]; id++ {
				r := modelRow{id: id, fks: map[string]int{}}
				for _, fk := range modelFKs {
					if fk.from == tb {
						r.fks[fk.col] = rapid.IntRange(0, n[fk.to]).Draw(rt, fmt.Sprintf("%s %d %s", tb, id, fk.col))
					}
				}
				rows[tb] = append(rows[tb], r)
			}
		}
		var aKeys, bKeys []cascade.Key
		for _, id := range rapid.SliceOfNDistinct(rapid.IntRange(1, n["r_a"]+1), 1, 3, rapid.ID[int]).Draw(rt, "delete a") {
			aKeys = append(aKeys, cascade.Key{fmt.Sprint(id)}) // n+1 names no row
		}
		if n["r_b"] > 0 {
			for _, id := range rapid.SliceOfNDistinct(rapid.IntRange(1, n["r_b"]), 0, 2, rapid.ID[int]).Draw(rt, "delete b") {
				bKeys = append(bKeys, cascade.Key{fmt.Sprint(id)})
			}
		}

		want, wantErr := model(rows, rules, aKeys, bKeys)

		tx, err := pool.Begin(ctx)
		if err != nil {
			rt.Fatal(err)
		}
		defer tx.Rollback(ctx)
		for _, tb := range []string{"r_a", "r_b", "r_c"} {
			for _, r := range rows[tb] {
				cols, args := []string{"id"}, []any{r.id}
				for _, fk := range modelFKs {
					if fk.from == tb {
						cols = append(cols, fk.col)
						args = append(args, nullable(r.fks[fk.col]))
					}
				}
				if _, err := tx.Exec(ctx, insertSQL(tb, cols), args...); err != nil {
					rt.Fatalf("insert: %v", err)
				}
			}
		}
		reg, err := registry.Load(ctx, tx, spec)
		if err != nil {
			rt.Fatal(err)
		}
		opts := []cascade.Option{cascade.MaxArray(2)}
		switch rapid.IntRange(0, 4).Draw(rt, "mode") {
		case 1:
			opts = append(opts, cascade.SpillAbove(0))
		case 2:
			opts = append(opts, cascade.SpillRowsAbove(rapid.IntRange(1, 6).Draw(rt, "rows in memory")))
		case 3:
			opts = append(opts, cascade.BatchReferenceChecks())
		case 4:
			opts = append(opts, cascade.BatchReferenceChecks(), cascade.SpillRowsAbove(rapid.IntRange(1, 6).Draw(rt, "rows in memory")))
		}
		e := cascade.New(reg, opts...)
		_, err = e.DeleteAll(ctx, tx, []cascade.Target{{Table: public("r_a"), Keys: aKeys}, {Table: public("r_b"), Keys: bKeys}})
		switch {
		case wantErr == nil && err != nil:
			rt.Fatalf("DeleteAll: %v, want success", err)
		case wantErr != nil && !errors.Is(err, wantErr):
			rt.Fatalf("DeleteAll: %v, want %v", err, wantErr)
		}
		if got := dbState(rt, tx); !reflect.DeepEqual(got, want) {
			rt.Fatalf("rows after the delete:\n got %v\nwant %v", got, want)
		}
	})
}

// model applies Django's rules to rows directly: the rows to delete are the
// fixpoint of CASCADE from the roots; any PROTECT reference to them fails;
// a RESTRICT reference from a row outside them fails; SET_NULL references
// from rows outside them are nulled. It returns the expected error or state.
func model(rows map[string][]modelRow, rules map[string]registry.Rule, aKeys, bKeys []cascade.Key) ([]string, error) {
	deleted := map[string]map[int]bool{"r_a": {}, "r_b": {}, "r_c": {}}
	for tb, keys := range map[string][]cascade.Key{"r_a": aKeys, "r_b": bKeys} {
		for _, k := range keys {
			var id int
			fmt.Sscan(k[0], &id)
			if id <= len(rows[tb]) {
				deleted[tb][id] = true
			}
		}
	}
	for changed := true; changed; {
		changed = false
		for _, fk := range modelFKs {
			if rules[fk.from+"."+fk.col] != registry.Cascade {
				continue
			}
			for _, r := range rows[fk.from] {
				if v := r.fks[fk.col]; v != 0 && deleted[fk.to][v] && !deleted[fk.from][r.id] {
					deleted[fk.from][r.id] = true
					changed = true
				}
			}
		}
	}
	refs := func(rule registry.Rule, outsideOnly bool) bool {
		for _, fk := range modelFKs {
			if rules[fk.from+"."+fk.col] != rule {
				continue
			}
			for _, r := range rows[fk.from] {
				if v := r.fks[fk.col]; v != 0 && deleted[fk.to][v] && !(outsideOnly && deleted[fk.from][r.id]) {
					return true
				}
			}
		}
		return false
	}
	before := state(rows, nil, nil)
	if refs(registry.Protect, false) {
		return before, cascade.ErrProtected
	}
	if refs(registry.Restrict, true) {
		return before, cascade.ErrRestricted
	}
	return state(rows, deleted, rules), nil
}

// state renders rows as "table id fk=v ..." lines, without the deleted rows
// and with SET_NULL references to them nulled.
func state(rows map[string][]modelRow, deleted map[string]map[int]bool, rules map[string]registry.Rule) []string {
	var out []string
	for _, tb := range []string{"r_a", "r_b", "r_c"} {
		for _, r := range rows[tb] {
			if deleted[tb][r.id] {
				continue
			}
			s := fmt.Sprintf("%s %d", tb, r.id)
			for _, fk := range modelFKs {
				if fk.from != tb {
					continue
				}
				v := r.fks[fk.col]
				if rules[fk.from+"."+fk.col] == registry.SetNull && deleted[fk.to][v] {
					v = 0
				}
				s += fmt.Sprintf(" %s=%d", fk.col, v)
			}
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func dbState(rt *rapid.T, tx pgx.Tx) []string {
	var out []string
	for _, q := range []string{
		"SELECT format('r_a %s', id) FROM r_a",
		"SELECT format('r_b %s a_id=%s parent_id=%s', id, coalesce(a_id, 0), coalesce(parent_id, 0)) FROM r_b",
		"SELECT format('r_c %s a_id=%s b_id=%s', id, coalesce(a_id, 0), coalesce(b_id, 0)) FROM r_c",
	} {
		rows, err := tx.Query(context.Background(), q)
		if err != nil {
			rt.Fatal(err)
		}
		s, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			rt.Fatal(err)
		}
		out = append(out, s...)
	}
	sort.Strings(out)
	return out
}

func nullable(v int) any {
	if v == 0 {
		return nil
	}
	return v
}

func insertSQL(table string, cols []string) string {
	sql := "INSERT INTO " + ident(table) + " ("
	vals := ""
	for i, c := range cols {
		if i > 0 {
			sql += ", "
			vals += ", "
		}
		sql += ident(c)
		vals += fmt.Sprintf("$%d", i+1)
	}
	return sql + ") VALUES (" + vals + ")"
}
