package queue

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/registry"
)

// guardSpec is the guard trigger on t: one statement-level BEFORE trigger for
// every kind of write, so a refused statement touches no row, and TRUNCATE is
// caught too.
func guardSpec(t registry.TableName) triggerSpec {
	return triggerSpec{table: t, name: guardTriggerName, function: guardFn.name,
		tgtype: tgBefore | tgInsert | tgUpdate | tgDelete | tgTruncate, enabled: true}
}

// InstallGuard puts the write guard on tables (a slave's synced tables): an
// INSERT, UPDATE, DELETE or TRUNCATE from an ordinary session then fails with
// an error naming the table, while the subscription's apply worker and
// transactions that called registry.MarkCascade pass. Tables already guarded are left
// as they are; guards on other tables are kept. It returns the plan it
// applied, or with dryRun the plan it would apply.
func InstallGuard(ctx context.Context, db txBeginner, tables []registry.TableName, dryRun bool) (Plan, error) {
	return inTx(ctx, db, dryRun, 0, func(tx pgx.Tx) (Plan, error) {
		if err := checkTablesExist(ctx, tx, tables); err != nil {
			return nil, err
		}
		p, _, err := planBase(ctx, tx, []function{guardFn}, false)
		if err != nil {
			return nil, err
		}
		have, err := existingTriggers(ctx, tx, guardTriggerName)
		if err != nil {
			return nil, err
		}
		want := make([]triggerSpec, len(tables))
		for i, t := range tables {
			want[i] = guardSpec(t)
		}
		steps, err := planTriggers(ctx, tx, have, want, false)
		return append(p, steps...), err
	})
}

// RemoveGuard drops the write guard from tables, or from every table that has
// it when tables is nil. Tables without a guard are skipped.
func RemoveGuard(ctx context.Context, db txBeginner, tables []registry.TableName, dryRun bool) (Plan, error) {
	return inTx(ctx, db, dryRun, 0, func(tx pgx.Tx) (Plan, error) {
		have, err := existingTriggers(ctx, tx, guardTriggerName)
		if err != nil {
			return nil, err
		}
		drop := map[registry.TableName]bool{}
		for _, t := range tables {
			drop[t] = true
		}
		var p Plan
		for _, h := range have {
			if tables == nil || drop[h.table] {
				st, err := dropTriggerStep(ctx, tx, h, "drop trigger %s on %s")
				if err != nil {
					return nil, err
				}
				p = append(p, st)
			}
		}
		return p, nil
	})
}

// GuardedTables lists the tables that have the write guard, in name order.
func GuardedTables(ctx context.Context, q querier) ([]registry.TableName, error) {
	have, err := existingTriggers(ctx, q, guardTriggerName)
	if err != nil {
		return nil, err
	}
	out := make([]registry.TableName, len(have))
	for i, h := range have {
		out[i] = h.table
	}
	return out, nil
}

// tableExists reports whether table t exists.
func tableExists(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, t registry.TableName) (bool, error) {
	var ok bool
	if err := q.QueryRow(ctx, "SELECT pg_catalog.to_regclass($1) IS NOT NULL", t.Sanitize()).Scan(&ok); err != nil {
		return false, fmt.Errorf("look up table %s: %w", t, err)
	}
	return ok, nil
}

// checkTablesExist fails naming every table of ts that does not exist.
func checkTablesExist(ctx context.Context, q querier, ts []registry.TableName) error {
	var missing []string
	for _, t := range ts {
		ok, err := tableExists(ctx, q, t)
		if err != nil {
			return err
		}
		if !ok {
			missing = append(missing, t.String())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no such table: %s", strings.Join(missing, ", "))
	}
	return nil
}
