//go:build faults

package faults

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// result is what the final check found.
type result struct {
	err      error    // the check itself failed (a query)
	problems []string // what differs from the expected state

	deletesExpected, deletesApplied int
	eventsExpected, eventsReceived  int
	streamMsgs, deadLetters         int
	lost, duplicated                int
}

func (r *result) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// check compares the slave, the master and what the consumer received with
// the model.
func check(ctx context.Context, master, slave *pgxpool.Pool, m *model, got *received) *result {
	r := &result{}
	r.err = r.run(ctx, master, slave, m, got)
	return r
}

func (r *result) run(ctx context.Context, master, slave *pgxpool.Pool, m *model, got *received) error {
	ids := func(db *pgxpool.Pool, sql string) ([]int64, error) {
		rows, _ := db.Query(ctx, sql)
		return pgx.CollectRows(rows, pgx.RowTo[int64])
	}
	strs := func(db *pgxpool.Pool, sql string) ([]string, error) {
		rows, _ := db.Query(ctx, sql)
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}

	// The pending queues.
	var pendingDelete, pendingDenormalize int
	if err := slave.QueryRow(ctx, `SELECT (SELECT count(*) FROM pgoutpost.delete_queue), (SELECT count(*) FROM pgoutpost.denormalize_queue)`).
		Scan(&pendingDelete, &pendingDenormalize); err != nil {
		return fmt.Errorf("count the slave's queues: %w", err)
	}
	if pendingDelete+pendingDenormalize > 0 {
		r.problem("the slave's queues still hold %d delete and %d denormalize entries", pendingDelete, pendingDenormalize)
	}

	// System rows: the master as the model says, the slave as the master
	// except for the refused (protected) deletes.
	for _, c := range []struct {
		what string
		db   *pgxpool.Pool
		sql  string
		want []int64
	}{
		{"master units", master, "SELECT id FROM shop_unit", m.expectedUnits()},
		{"slave units", slave, "SELECT id FROM shop_unit", m.expectedUnits()},
		{"master markers", master, "SELECT id FROM shop_marker", without(m.expectedMarkers(), m.planted())},
		{"slave markers", slave, "SELECT id FROM shop_marker", m.expectedMarkers()},
		{"master outcomes", master, "SELECT id FROM shop_outcome", m.expectedOutcomes()},
		{"slave outcomes", slave, "SELECT id FROM shop_outcome", m.expectedOutcomes()},
	} {
		have, err := ids(c.db, c.sql)
		if err != nil {
			return fmt.Errorf("read %s: %w", c.what, err)
		}
		if d := diff(have, c.want); d != "" {
			r.problem("%s differ from the expected: %s", c.what, d)
		}
	}
	// The bulk loads, applied whole.
	var mb, sb int64
	if err := master.QueryRow(ctx, "SELECT count(*) FROM shop_bulk").Scan(&mb); err != nil {
		return fmt.Errorf("count the master's bulk rows: %w", err)
	}
	if err := slave.QueryRow(ctx, "SELECT count(*) FROM shop_bulk").Scan(&sb); err != nil {
		return fmt.Errorf("count the slave's bulk rows: %w", err)
	}
	if mb != sb {
		r.problem("the slave holds %d bulk rows, the master %d", sb, mb)
	}

	// The outcomes' contents as the subscription copies them.
	const outcomes = "SELECT id || ':' || name || ':' || score FROM shop_outcome ORDER BY id"
	mo, err := strs(master, outcomes)
	if err != nil {
		return err
	}
	so, err := strs(slave, outcomes)
	if err != nil {
		return err
	}
	if d := diff(so, mo); d != "" {
		r.problem("slave outcomes differ from the master's: %s", d)
	}

	// User rows under Django's rules.
	var wantReports, wantNotes, wantKeepers []string
	for _, x := range m.expectedReports() {
		wantReports = append(wantReports, fmt.Sprintf("%d:%d:%d:%d", x.id, x.unit, x.marker, x.outcome))
	}
	for _, x := range m.expectedNotes() {
		wantNotes = append(wantNotes, fmt.Sprintf("%d:%d", x.id, x.report))
	}
	for _, x := range m.keepers {
		wantKeepers = append(wantKeepers, fmt.Sprintf("%d:%d", x.id, x.marker))
	}
	for _, c := range []struct {
		what, sql string
		want      []string
	}{
		{"reports", "SELECT concat_ws(':', id, unit_id, coalesce(marker_id, 0), coalesce(outcome_id, 0)) FROM app_report", wantReports},
		{"notes", "SELECT concat_ws(':', id, report_id) FROM app_note", wantNotes},
		{"keepers", "SELECT concat_ws(':', id, marker_id) FROM app_keeper", wantKeepers},
	} {
		have, err := strs(slave, c.sql)
		if err != nil {
			return fmt.Errorf("read %s: %w", c.what, err)
		}
		if d := diff(have, c.want); d != "" {
			r.problem("slave %s differ from what Django's rules give: %s", c.what, d)
		}
	}

	// Each delete applied once: the slave's log of deletes.
	applied := map[string]int{}
	rows, _ := slave.Query(ctx, "SELECT tbl || ':' || id, count(*)::int FROM faults_deleted GROUP BY 1")
	var key string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&key, &n}, func() error { applied[key] = n; return nil }); err != nil {
		return fmt.Errorf("read the delete log: %w", err)
	}
	expected := map[string]bool{}
	for table, ids := range m.expectedDeletes() {
		for _, id := range ids {
			expected[fmt.Sprintf("%s:%d", table, id)] = true
		}
	}
	r.deletesExpected, r.deletesApplied = len(expected), 0
	var lostDeletes, twice, extra []string
	for k := range expected {
		switch n := applied[k]; {
		case n == 0:
			lostDeletes = append(lostDeletes, k)
		case n > 1:
			twice = append(twice, k)
		}
	}
	for k, n := range applied {
		r.deletesApplied += n
		if !expected[k] {
			extra = append(extra, k)
		}
	}
	if len(lostDeletes) > 0 {
		r.problem("%d master deletes not applied on the slave: %s", len(lostDeletes), sample(lostDeletes))
	}
	if len(twice) > 0 {
		r.problem("%d deletes applied more than once: %s", len(twice), sample(twice))
	}
	if len(extra) > 0 {
		r.problem("%d rows deleted on the slave that the master kept: %s", len(extra), sample(extra))
	}
	r.lost += len(lostDeletes)
	r.duplicated += len(twice)

	// Dead letters: exactly the planted PROTECT conflicts.
	dead, err := strs(slave, `SELECT queue || ':' || coalesce(table_name, '') || ':' || coalesce(pk->>'id', '') FROM pgoutpost.dead_letter`)
	if err != nil {
		return fmt.Errorf("read the dead letters: %w", err)
	}
	r.deadLetters = len(dead)
	var wantDead []string
	for _, id := range m.planted() {
		wantDead = append(wantDead, fmt.Sprintf("delete:public.shop_marker:%d", id))
	}
	if d := diff(dead, wantDead); d != "" {
		r.problem("dead letters are not the planted PROTECT conflicts: %s", d)
	}

	// Events: every master denormalize entry and every slave outbox entry,
	// received once.
	masterIDs, err := strs(master, "SELECT id::text FROM pgoutpost.denormalize_queue")
	if err != nil {
		return fmt.Errorf("read the master's denormalize queue: %w", err)
	}
	if int64(len(masterIDs)) != m.updates {
		r.problem("the master's denormalize queue holds %d entries; the workload updated %d rows", len(masterIDs), m.updates)
	}
	outboxIDs, err := strs(slave, "SELECT id::text FROM faults_outbox")
	if err != nil {
		return fmt.Errorf("read the slave's outbox log: %w", err)
	}
	if len(outboxIDs) != len(m.deletedOutcome) {
		r.problem("the slave's outbox wrote %d delete events; the workload deleted %d outcomes", len(outboxIDs), len(m.deletedOutcome))
	}
	queueIDs, msgs, distinctMsgIDs, dup := got.tally()
	r.streamMsgs, r.eventsReceived = msgs, len(queueIDs)
	want := map[string]bool{}
	for _, id := range append(masterIDs, outboxIDs...) {
		want[id] = true
	}
	r.eventsExpected = len(want)
	var lostEvents, unexpected []string
	for id := range want {
		if queueIDs[id] == 0 {
			lostEvents = append(lostEvents, id)
		}
	}
	for id := range queueIDs {
		if !want[id] {
			unexpected = append(unexpected, id)
		}
	}
	if len(lostEvents) > 0 {
		r.problem("%d of %d denormalize changes not received: %s", len(lostEvents), len(want), sample(lostEvents))
	}
	if len(unexpected) > 0 {
		r.problem("%d events received that no queue entry made: %s", len(unexpected), sample(unexpected))
	}
	if dup > 0 || distinctMsgIDs != msgs {
		r.problem("duplicates: %d stream messages with a queue id seen before; %d messages with %d distinct Nats-Msg-Ids", dup, msgs, distinctMsgIDs)
	}
	r.lost += len(lostEvents)
	r.duplicated += dup
	return nil
}

// diff describes how have differs from want as sets, "" when equal.
func diff[T interface{ ~int64 | ~string }](have, want []T) string {
	h, w := map[T]int{}, map[T]bool{}
	for _, x := range have {
		h[x]++
	}
	for _, x := range want {
		w[x] = true
	}
	var missing, extra, twice []string
	for x := range w {
		if h[x] == 0 {
			missing = append(missing, fmt.Sprint(x))
		}
	}
	for x, n := range h {
		if !w[x] {
			extra = append(extra, fmt.Sprint(x))
		}
		if n > 1 {
			twice = append(twice, fmt.Sprint(x))
		}
	}
	if len(missing)+len(extra)+len(twice) == 0 {
		return ""
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, fmt.Sprintf("%d missing (%s)", len(missing), sample(missing)))
	}
	if len(extra) > 0 {
		parts = append(parts, fmt.Sprintf("%d unexpected (%s)", len(extra), sample(extra)))
	}
	if len(twice) > 0 {
		parts = append(parts, fmt.Sprintf("%d repeated (%s)", len(twice), sample(twice)))
	}
	return strings.Join(parts, ", ")
}

func sample(s []string) string {
	slices.Sort(s)
	if len(s) > 8 {
		return strings.Join(s[:8], " ") + " …"
	}
	return strings.Join(s, " ")
}

func without(s, drop []int64) []int64 {
	return slices.DeleteFunc(slices.Clone(s), func(x int64) bool { return slices.Contains(drop, x) })
}
