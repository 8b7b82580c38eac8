package cascade

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutpost/pgoutpost/registry"
)

// A spilled deletion keeps what it collects in temporary tables on the
// server instead of in memory, so that its memory does not grow with the
// number of rows: a master transaction that deleted ten million rows is
// applied by a sidecar in a small pod. It runs the same algorithm as the
// in-memory collector, with the same statements on the model tables, and its
// results are the same (the cascade tests run both):
//
//   - each table with collected rows has a set table: the plan's columns with
//     their own types, the level at which each row was collected, and whether
//     it was first collected as the MTI parent of a child; a unique index on
//     the primary key ends recursion as the in-memory map does;
//   - a level reads the new rows' referenced values back in pages of
//     MaxArray (a cursor over the set table) and runs the in-memory
//     collector's statements with them, inserting what they lock into the
//     set tables (INSERT … SELECT … FOR UPDATE ON CONFLICT DO NOTHING);
//   - PROTECT, RESTRICT and the SET_* rules need only the final sets, so they
//     are read after collecting, from all collected rows at once; the rows a
//     SET_* rule updates go to a table of their own first, so each is updated
//     once, as in memory;
//   - the deletes join the model tables with the set tables, and the keys of
//     deleted rows that must be reported go to key tables, which the caller
//     reads (DeleteAll) or uses in its own SQL (DeleteListed).
//
// Values travel as text as in memory (see sql.go), so the statements need no
// type names. The temporary tables are dropped when the deletion ends, the
// key tables of DeleteListed at the end of the caller's transaction.

// DefaultSpillRows is how many rows an in-memory deletion collects (with the
// rows that reference them through PROTECT, RESTRICT and SET_* relations)
// before it starts again spilled: a delete of one row whose cascade reaches
// millions does not hold them in memory either.
const DefaultSpillRows = 200000

// SpillRowsAbove sets how many rows an in-memory deletion collects before
// it starts again spilled (DefaultSpillRows); 0 never restarts.
func SpillRowsAbove(n int) Option {
	return func(e *Engine) { e.spillRows = n }
}

// errSpill ends an in-memory deletion that outgrew spillRows.
var errSpill = errors.New("the deletion outgrew memory")

// SpillAbove makes DeleteAll spill (keep its collected rows in temporary
// tables on the server) when it is given more than n keys; SpillAbove(0)
// spills every deletion. Without it DeleteAll works in memory; DeleteListed
// always spills.
func SpillAbove(n int) Option {
	return func(e *Engine) { e.spillAbove = n }
}

// DeleteListed deletes the rows named by the table keys, with everything
// Django's Collector would delete or update with them, as one deletion (like
// DeleteAll), inside tx and without holding the keys or the collected rows
// in memory. keys is the sanitized name of a table or view with the columns
// table_name (text, "schema.table" as registry.TableName.String writes it)
// and pk (jsonb, the primary key as an object, as the queue tables hold
// them); a key listed twice is deleted once. The keys of deleted rows of the
// tables ReportKeys chose are not in Result.DeletedKeys but in
// Result.KeyTables, temporary tables that last until tx ends.
//
// Errors are DeleteAll's; a key whose table is not in the registry fails the
// whole deletion with ErrUnknownTable, a key that lacks a primary key column
// or holds a value its column cannot take with ErrBadKey.
func (e *Engine) DeleteListed(ctx context.Context, tx pgx.Tx, keys string) (*Result, error) {
	res := newResult()
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("delete listed keys: begin savepoint: %w", err)
	}
	s := newSpiller(e, sp, res, registry.TableName{})
	err = s.runListed(ctx, keys)
	if err == nil {
		err = s.finish(ctx, false)
	}
	if err != nil {
		_ = sp.Rollback(ctx)
		return nil, err
	}
	if err := sp.Commit(ctx); err != nil {
		return nil, fmt.Errorf("delete listed keys: release savepoint: %w", TranslateError(err))
	}
	return res, nil
}

// spillSeq numbers temporary tables, so that several deletions in one
// session never meet.
var spillSeq atomic.Uint64

// Columns the set tables add to the plan's columns.
const (
	lvlColumn = "pgoutpost_lvl"
	viaColumn = "pgoutpost_via"
)

// spillSet is the set table of one plan.
type spillSet struct {
	p    *plan
	name string // sanitized pg_temp name
	rows int64  // rows collected
}

type spiller struct {
	e    *Engine
	tx   pgx.Tx
	res  *Result
	root registry.TableName

	sets    map[*plan]*spillSet
	fast    map[*registry.ForeignKey]bool      // CASCADE relations into fast-path tables that were reached
	updates map[*registry.ForeignKey]*spillSet // rows each SET_* relation updates
	keys    map[registry.TableName]*spillSet   // keys of deleted rows to report
	temps   []string                           // every temporary table made, to drop
	levels  map[int]map[*plan]int64            // rows newly collected per level and plan
}

func newSpiller(e *Engine, tx pgx.Tx, res *Result, root registry.TableName) *spiller {
	return &spiller{e: e, tx: tx, res: res, root: root, sets: map[*plan]*spillSet{}, fast: map[*registry.ForeignKey]bool{},
		updates: map[*registry.ForeignKey]*spillSet{}, keys: map[registry.TableName]*spillSet{}, levels: map[int]map[*plan]int64{}}
}

// The spiller's statements name its temporary tables, which are new in every
// deletion: they go over the simple protocol, so that none is prepared and
// cached (the values are text, which the server types as the extended
// protocol would; see sql.go).

func (s *spiller) exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return s.tx.Exec(ctx, sql, append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
}

func (s *spiller) queryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return s.tx.QueryRow(ctx, sql, append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
}

func (s *spiller) query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return s.tx.Query(ctx, sql, append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
}

func (s *spiller) rows(ctx context.Context, sql string, args []any, width int) ([]row, error) {
	return queryRows(ctx, s.tx, sql, append([]any{pgx.QueryExecModeSimpleProtocol}, args...), width)
}

// temp creates a temporary table shaped like cols of t (with their types),
// plus extra columns, with a unique index on unique.
func (s *spiller) temp(ctx context.Context, t *registry.Table, cols []string, extra string, unique []string) (string, error) {
	name := pgx.Identifier{"pg_temp", "pgoutpost_spill_" + strconv.FormatUint(spillSeq.Add(1), 10)}.Sanitize()
	sql := "CREATE TEMPORARY TABLE " + name + " ON COMMIT DROP AS SELECT " + identList(cols, "") + extra + " FROM " + t.Name.Sanitize() + " WITH NO DATA"
	if _, err := s.exec(ctx, sql); err != nil {
		return "", fmt.Errorf("create a temporary table for %s: %w", t.Name, err)
	}
	s.temps = append(s.temps, name)
	if len(unique) > 0 {
		if _, err := s.exec(ctx, "CREATE UNIQUE INDEX ON "+name+" ("+identList(unique, "")+")"); err != nil {
			return "", fmt.Errorf("index a temporary table for %s: %w", t.Name, err)
		}
	}
	return name, nil
}

// set returns p's set table, creating it.
func (s *spiller) set(ctx context.Context, p *plan) (*spillSet, error) {
	if st := s.sets[p]; st != nil {
		return st, nil
	}
	if len(p.t.PrimaryKey) == 0 {
		return nil, fmt.Errorf("collect %s rows: %w: its rows cannot be named", p.t.Name, ErrNoPrimaryKey)
	}
	name, err := s.temp(ctx, p.t, p.cols, ", 0 AS "+ident(lvlColumn)+", false AS "+ident(viaColumn), p.t.PrimaryKey)
	if err != nil {
		return nil, err
	}
	st := &spillSet{p: p, name: name}
	s.sets[p] = st
	return st, nil
}

// collect locks the rows of p matching cond and adds those not collected yet
// to its set at level lvl; it returns how many rows matched and how many
// were new.
func (s *spiller) collect(ctx context.Context, p *plan, cond string, args []any, lvl int, via bool) (matched, fresh int64, err error) {
	st, err := s.set(ctx, p)
	if err != nil {
		return 0, 0, err
	}
	sql := "WITH f AS (SELECT " + identList(p.cols, "") + " FROM " + p.t.Name.Sanitize() + " WHERE " + cond + " FOR UPDATE),\n" +
		"i AS (INSERT INTO " + st.name + " SELECT f.*, " + strconv.Itoa(lvl) + ", " + strconv.FormatBool(via) + " FROM f ON CONFLICT DO NOTHING RETURNING 1)\n" +
		"SELECT (SELECT count(*) FROM f), (SELECT count(*) FROM i)"
	if err := s.queryRow(ctx, sql, args...).Scan(&matched, &fresh); err != nil {
		return 0, 0, err
	}
	st.rows += fresh
	if fresh > 0 {
		if s.levels[lvl] == nil {
			s.levels[lvl] = map[*plan]int64{}
		}
		s.levels[lvl][p] += fresh
	}
	return matched, fresh, nil
}

// page calls fn with the distinct non-null tuples of cols (as text) of the
// rows of st that where (a condition on the set table's columns, or "")
// selects, MaxArray tuples at a time. fn may write to any table: the cursor
// reads the set as it was when the page reading started.
func (s *spiller) page(ctx context.Context, st *spillSet, cols []string, where string, fn func([][]string) error) error {
	cond := make([]string, 0, len(cols)+1)
	for _, c := range cols {
		cond = append(cond, ident(c)+" IS NOT NULL")
	}
	if where != "" {
		cond = append(cond, where)
	}
	q := "DECLARE pgoutpost_spill_page NO SCROLL CURSOR FOR SELECT DISTINCT " + textList(cols) + " FROM " + st.name + " WHERE " + strings.Join(cond, " AND ")
	if _, err := s.exec(ctx, q); err != nil {
		return fmt.Errorf("read collected %s rows: %w", st.p.t.Name, err)
	}
	fetch := "FETCH " + strconv.Itoa(s.e.maxArray) + " FROM pgoutpost_spill_page"
	for {
		rows, err := s.rows(ctx, fetch, nil, len(cols))
		if err != nil {
			return fmt.Errorf("read collected %s rows: %w", st.p.t.Name, err)
		}
		if len(rows) == 0 {
			break
		}
		vals := make([][]string, len(rows))
		for i, r := range rows {
			vals[i] = r.key(len(cols))
		}
		// The cursor stays open while fn writes: it reads its own snapshot.
		if err := fn(vals); err != nil {
			return err
		}
	}
	if _, err := s.exec(ctx, "CLOSE pgoutpost_spill_page"); err != nil {
		return fmt.Errorf("read collected %s rows: %w", st.p.t.Name, err)
	}
	return nil
}

// runAll is collector.run over targets given in memory.
func (s *spiller) runAll(ctx context.Context, targets []Target) error {
	if err := s.e.setGuard(ctx, s.tx); err != nil {
		return err
	}
	for _, tg := range targets {
		root := s.e.plans[tg.Table]
		vals := distinctKeys(tg.Keys)
		var found int64
		for _, chunk := range chunks(vals, s.e.maxArray) {
			cond, arg := match(root.t.PrimaryKey, root.t.Name, root.t.PrimaryKey, chunk, 1)
			n, _, err := s.collect(ctx, root, cond, []any{arg}, 0, false)
			if err != nil {
				return rootError(root.t.Name, err)
			}
			found += n
		}
		s.res.missing(tg.Table, len(vals)-int(found))
	}
	return s.rest(ctx)
}

// runListed is collector.run over the keys listed in the table keys.
func (s *spiller) runListed(ctx context.Context, keys string) error {
	if err := s.e.setGuard(ctx, s.tx); err != nil {
		return err
	}
	rows, err := s.query(ctx, "SELECT DISTINCT table_name FROM "+keys+" ORDER BY 1")
	if err != nil {
		return fmt.Errorf("read the tables of the listed keys: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read the tables of the listed keys: %w", err)
	}
	for _, n := range names {
		name, err := registry.ParseTableName(n)
		if err != nil {
			return fmt.Errorf("listed key of table %q: %w: %v", n, ErrUnknownTable, err)
		}
		root := s.e.plans[name]
		if root == nil {
			return fmt.Errorf("delete from %s: %w", name, ErrUnknownTable)
		}
		if len(root.t.PrimaryKey) == 0 {
			return fmt.Errorf("delete from %s: %w", name, ErrNoPrimaryKey)
		}
		if s.root == (registry.TableName{}) {
			s.root = name
		}
		st, err := s.set(ctx, root)
		if err != nil {
			return err
		}
		// The keys typed as the table's columns; a key lacking a column
		// has NULL there and is refused.
		pk := identList(root.t.PrimaryKey, "k.")
		var nulls []string
		for _, c := range root.t.PrimaryKey {
			nulls = append(nulls, "k."+ident(c)+" IS NULL")
		}
		sql := "WITH k AS (SELECT DISTINCT " + pk + " FROM " + keys + " AS l, pg_catalog.jsonb_populate_record(NULL::" + root.t.Name.Sanitize() + ", l.pk) AS k WHERE l.table_name = $1),\n" +
			"f AS (SELECT " + identList(root.cols, "t.") + " FROM " + root.t.Name.Sanitize() + " AS t WHERE (" + identList(root.t.PrimaryKey, "t.") + ") IN (SELECT * FROM k) FOR UPDATE OF t),\n" +
			"i AS (INSERT INTO " + st.name + " SELECT f.*, 0, false FROM f ON CONFLICT DO NOTHING RETURNING 1)\n" +
			"SELECT (SELECT count(*) FROM k), (SELECT count(*) FROM k WHERE " + strings.Join(nulls, " OR ") + "), (SELECT count(*) FROM f), (SELECT count(*) FROM i)"
		var distinct, bad, found, fresh int64
		if err := s.queryRow(ctx, sql, n).Scan(&distinct, &bad, &found, &fresh); err != nil {
			return rootError(name, err)
		}
		if bad > 0 {
			return fmt.Errorf("delete from %s: %w: %d listed key(s) lack a primary key column (%s)", name, ErrBadKey, bad, strings.Join(root.t.PrimaryKey, ", "))
		}
		st.rows += fresh
		if fresh > 0 {
			if s.levels[0] == nil {
				s.levels[0] = map[*plan]int64{}
			}
			s.levels[0][root] += fresh
		}
		s.res.missing(name, int(distinct-found))
	}
	return s.rest(ctx)
}

// rest collects level by level from the roots, then checks and writes.
func (s *spiller) rest(ctx context.Context) error {
	for lvl := 0; len(s.levels[lvl]) > 0; lvl++ {
		plans := make([]*plan, 0, len(s.levels[lvl]))
		for p := range s.levels[lvl] {
			plans = append(plans, p)
		}
		sort.Slice(plans, func(i, j int) bool { return plans[i].t.Name.String() < plans[j].t.Name.String() })
		for _, p := range plans {
			if err := s.level(ctx, p, lvl); err != nil {
				return err
			}
		}
		delete(s.levels, lvl)
	}
	if err := s.materialize(ctx); err != nil {
		return err
	}
	if afterCollect != nil {
		afterCollect()
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.apply(ctx)
}

// atLevel selects a set's rows collected at lvl.
func atLevel(lvl int) string { return ident(lvlColumn) + " = " + strconv.Itoa(lvl) }

// own selects the rows not first collected as a child's MTI parent (see
// collector.viaChild).
var own = "NOT " + ident(viaColumn)

// sources is the condition for the rows whose relation fk is followed: for a
// generic relation only the rows not collected as a child's parent.
func sources(fk *registry.ForeignKey, where string) string {
	if fk.Kind != registry.FKGeneric {
		return where
	}
	if where == "" {
		return own
	}
	return where + " AND " + own
}

// level follows every relation of the rows newly collected in p at lvl
// (collector.level).
func (s *spiller) level(ctx context.Context, p *plan, lvl int) error {
	st := s.sets[p]
	where := atLevel(lvl)
	for _, fk := range p.t.Outgoing {
		if fk.Kind != registry.FKParentLink {
			continue
		}
		parent := s.e.plans[fk.To]
		if parent == nil {
			continue
		}
		err := s.page(ctx, st, fk.FromColumns, where, func(vals [][]string) error {
			cond, arg := match(fk.ToColumns, fk.To, fk.ToColumns, vals, 1)
			if _, _, err := s.collect(ctx, parent, cond, []any{arg}, lvl+1, true); err != nil {
				return fmt.Errorf("lock %s parent rows of %s: %w", fk.To, p.t.Name, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for _, fk := range p.t.Incoming {
		rule := fk.Rule().Rule
		if rule != registry.Cascade {
			continue // the other rules are read from the final sets (check)
		}
		from := s.e.plans[fk.From]
		if from.fast {
			s.fast[fk] = true
			continue
		}
		if len(from.t.PrimaryKey) == 0 {
			return fmt.Errorf("apply %s of %s: %w: its rows cannot be named", fk.OnDelete, fk, ErrNoPrimaryKey)
		}
		err := s.follow(ctx, st, fk, sources(fk, where), func(cond string, args []any) error {
			if _, _, err := s.collect(ctx, from, cond, args, lvl+1, false); err != nil {
				return fmt.Errorf("lock %s rows referencing %s: %w", fk.From, fk.To, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// follow calls fn with the condition (and its parameters, from $1) for the
// rows of fk.From that reference the rows of st that where selects, a page
// at a time.
func (s *spiller) follow(ctx context.Context, st *spillSet, fk *registry.ForeignKey, where string, fn func(cond string, args []any) error) error {
	from := s.e.plans[fk.From]
	return s.page(ctx, st, fk.ToColumns, where, func(vals [][]string) error {
		if fk.Kind == registry.FKGeneric {
			var err error
			if vals, err = fitGeneric(from.t, fk, vals); err != nil {
				return err
			}
			if len(vals) == 0 {
				return nil
			}
		}
		cond, args := s.e.refCondition(fk, vals)
		return fn(cond, args)
	})
}

// materialize is collector.materialize.
func (s *spiller) materialize(ctx context.Context) error {
	for _, fk := range sortedFKs(s.fast) {
		from := s.e.plans[fk.From]
		needed, err := s.e.materializing(from, fk, func(p *plan) bool { st := s.sets[p]; return st != nil && st.rows > 0 })
		if err != nil {
			return err
		}
		if !needed {
			continue
		}
		err = s.follow(ctx, s.sets[s.e.plans[fk.To]], fk, sources(fk, ""), func(cond string, args []any) error {
			if _, _, err := s.collect(ctx, from, cond, args, -1, false); err != nil {
				return fmt.Errorf("lock %s rows referencing %s: %w", fk.From, fk.To, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		delete(s.fast, fk)
	}
	return nil
}

// relations returns the relations with rule into tables with collected
// rows, in a stable order, with the set each is followed from.
func (s *spiller) relations(match func(registry.Rule) bool) []*registry.ForeignKey {
	var out []*registry.ForeignKey
	for p, st := range s.sets {
		if st.rows == 0 {
			continue
		}
		for _, fk := range p.t.Incoming {
			if match(fk.Rule().Rule) {
				out = append(out, fk)
			}
		}
	}
	sortFKs(out)
	return out
}

// maxRefs bounds the referencing rows a spilled deletion's error lists.
const maxRefs = 10000

// refsOf reads up to limit rows of fk.From that reference the collected rows
// of fk.To (and are not collected themselves, with notDeleted).
func (s *spiller) refsOf(ctx context.Context, fk *registry.ForeignKey, notDeleted, lock bool, limit int) ([]Ref, error) {
	from := s.e.plans[fk.From]
	var out []Ref
	err := s.follow(ctx, s.sets[s.e.plans[fk.To]], fk, sources(fk, ""), func(cond string, args []any) error {
		if len(out) >= limit {
			return nil
		}
		cols := append(append([]string(nil), from.t.PrimaryKey...), fk.FromColumns...)
		sql := "SELECT " + textList(cols) + " FROM " + from.t.Name.Sanitize() + " AS r WHERE " + cond
		if notDeleted {
			sql += s.notCollected(from, "r.")
		}
		if lock {
			sql += " FOR UPDATE OF r"
		}
		sql += " LIMIT " + strconv.Itoa(limit-len(out))
		rows, err := s.rows(ctx, sql, args, len(cols))
		if err != nil {
			return fmt.Errorf("read %s rows referencing %s: %w", fk.From, fk.To, err)
		}
		n := len(from.t.PrimaryKey)
		for _, r := range rows {
			v := make(Key, len(fk.FromColumns))
			for j := range v {
				v[j] = r[n+j].String
			}
			out = append(out, Ref{Table: from.t.Name, Key: r.key(n), FK: fk, Value: v})
		}
		return nil
	})
	return out, err
}

// notCollected is " AND NOT EXISTS (…)" for rows of p (aliased by prefix)
// that are not in p's set, or "" when p has none.
func (s *spiller) notCollected(p *plan, prefix string) string {
	st := s.sets[p]
	if st == nil || st.rows == 0 {
		return ""
	}
	return " AND NOT EXISTS (SELECT FROM " + st.name + " AS s WHERE " + sameKey(p.t.PrimaryKey, "s.", prefix) + ")"
}

// sameKey is the condition that the key columns cols of the rows aliased by
// the prefixes a and b are equal.
func sameKey(cols []string, a, b string) string {
	eq := make([]string, len(cols))
	for i, c := range cols {
		eq[i] = a + ident(c) + " = " + b + ident(c)
	}
	return strings.Join(eq, " AND ")
}

// check is collector.check (and the rule-less and key-less relations that
// collector.follow refuses), read from the final sets.
func (s *spiller) check(ctx context.Context) error {
	for _, fk := range s.relations(func(r registry.Rule) bool { return r != registry.DoNothing && r != registry.Cascade }) {
		rule := fk.Rule().Rule
		from := s.e.plans[fk.From]
		switch {
		case len(from.t.PrimaryKey) == 0 && rule != registry.Protect && rule != "":
			refs, err := s.refsOf(ctx, fk, false, false, 1)
			if err != nil {
				return err
			}
			if len(refs) > 0 {
				return fmt.Errorf("apply %s of %s: %w: its rows cannot be named", fk.OnDelete, fk, ErrNoPrimaryKey)
			}
		case rule != registry.Protect && rule != registry.Restrict && rule != registry.SetNull && rule != registry.SetDefault && rule != registry.SetValue:
			refs, err := s.refsOf(ctx, fk, false, false, maxRefs)
			if err != nil {
				return err
			}
			if len(refs) > 0 {
				return fmt.Errorf("relation %s: %w, and %d row(s) reference the deleted rows, e.g. %s", fk, ErrNoRule, len(refs), refs[0])
			}
		}
	}
	var protected []Ref
	for _, fk := range s.relations(func(r registry.Rule) bool { return r == registry.Protect }) {
		refs, err := s.refsOf(ctx, fk, false, false, maxRefs-len(protected))
		if err != nil {
			return err
		}
		protected = append(protected, refs...)
	}
	if len(protected) > 0 {
		return &ProtectedError{Table: s.root, Refs: distinctRefs(protected)}
	}
	var restricted []Ref
	for _, fk := range s.relations(func(r registry.Rule) bool { return r == registry.Restrict }) {
		refs, err := s.refsOf(ctx, fk, true, true, maxRefs-len(restricted))
		if err != nil {
			return err
		}
		restricted = append(restricted, refs...)
	}
	if len(restricted) > 0 {
		return &RestrictedError{Table: s.root, Refs: distinctRefs(restricted)}
	}
	for _, fk := range s.relations(func(r registry.Rule) bool {
		return r == registry.SetNull || r == registry.SetDefault || r == registry.SetValue
	}) {
		from := s.e.plans[fk.From]
		name, err := s.temp(ctx, from.t, from.t.PrimaryKey, "", from.t.PrimaryKey)
		if err != nil {
			return err
		}
		u := &spillSet{p: from, name: name}
		err = s.follow(ctx, s.sets[s.e.plans[fk.To]], fk, sources(fk, ""), func(cond string, args []any) error {
			sql := "WITH f AS (SELECT " + identList(from.t.PrimaryKey, "r.") + " FROM " + from.t.Name.Sanitize() + " AS r WHERE " + cond + s.notCollected(from, "r.") + " FOR UPDATE OF r),\n" +
				"i AS (INSERT INTO " + name + " SELECT * FROM f ON CONFLICT DO NOTHING RETURNING 1)\nSELECT count(*) FROM i"
			var n int64
			if err := s.queryRow(ctx, sql, args...).Scan(&n); err != nil {
				return fmt.Errorf("read %s rows referencing %s: %w", fk.From, fk.To, err)
			}
			u.rows += n
			return nil
		})
		if err != nil {
			return err
		}
		if u.rows == 0 {
			continue
		}
		s.updates[fk] = u
		if err := checkColumns(from.t, fk, int(u.rows)); err != nil {
			return err
		}
	}
	return nil
}

// apply is collector.apply.
func (s *spiller) apply(ctx context.Context) error {
	for _, fk := range sortedFKs(s.updates) {
		u := s.updates[fk]
		t := u.p.t
		set, value := setClause(fk, 1)
		tag, err := s.exec(ctx, "UPDATE "+t.Name.Sanitize()+" AS r SET "+set+" FROM "+u.name+" AS u WHERE "+sameKey(t.PrimaryKey, "u.", "r."), value...)
		if err != nil {
			return updateError(fk, err)
		}
		s.res.record(t.Name, fk.OnDelete.String(), fk, tag.RowsAffected())
	}
	for _, fk := range sortedFKs(s.fast) {
		from := s.e.plans[fk.From]
		err := s.follow(ctx, s.sets[s.e.plans[fk.To]], fk, sources(fk, ""), func(cond string, args []any) error {
			return s.delete(ctx, from, fk, "DELETE FROM "+from.t.Name.Sanitize()+" AS r WHERE "+cond, args)
		})
		if err != nil {
			return err
		}
	}
	var plans []*plan
	for p, st := range s.sets {
		if st.rows > 0 {
			plans = append(plans, p)
		}
	}
	for _, p := range deleteOrder(plans) {
		if err := s.delete(ctx, p, nil, "DELETE FROM "+p.t.Name.Sanitize()+" AS r USING "+s.sets[p].name+" AS s WHERE "+sameKey(p.t.PrimaryKey, "s.", "r."), nil); err != nil {
			return err
		}
	}
	return nil
}

// delete runs sql (a DELETE aliasing its table r) and records it; the keys
// of the deleted rows go to p's key table when ReportKeys chose its kind.
func (s *spiller) delete(ctx context.Context, p *plan, fk *registry.ForeignKey, sql string, args []any) error {
	var n int64
	if s.e.keyKinds[p.t.Kind] && len(p.t.PrimaryKey) > 0 {
		kt := s.keys[p.t.Name]
		if kt == nil {
			name, err := s.temp(ctx, p.t, p.t.PrimaryKey, "", nil)
			if err != nil {
				return err
			}
			kt = &spillSet{p: p, name: name}
			s.keys[p.t.Name] = kt
		}
		err := s.queryRow(ctx, "WITH d AS ("+sql+" RETURNING "+identList(p.t.PrimaryKey, "r.")+"),\ni AS (INSERT INTO "+kt.name+" SELECT * FROM d RETURNING 1)\nSELECT count(*) FROM i", args...).Scan(&n)
		if err != nil {
			return fmt.Errorf("delete from %s: %w", p.t.Name, TranslateError(err))
		}
		kt.rows += n
	} else {
		tag, err := s.exec(ctx, sql, args...)
		if err != nil {
			return fmt.Errorf("delete from %s: %w", p.t.Name, TranslateError(err))
		}
		n = tag.RowsAffected()
	}
	s.res.record(p.t.Name, "DELETE", fk, n)
	return nil
}

// finish reads the reported keys into the result (read) or hands their
// tables over, and drops the other temporary tables.
func (s *spiller) finish(ctx context.Context, read bool) error {
	keep := map[string]bool{}
	for name, kt := range s.keys {
		if !read {
			if s.res.KeyTables == nil {
				s.res.KeyTables = map[registry.TableName]string{}
			}
			s.res.KeyTables[name] = kt.name
			keep[kt.name] = true
			continue
		}
		rows, err := s.rows(ctx, "SELECT "+textList(kt.p.t.PrimaryKey)+" FROM "+kt.name, nil, len(kt.p.t.PrimaryKey))
		if err != nil {
			return fmt.Errorf("read the deleted keys of %s: %w", name, err)
		}
		for _, r := range rows {
			s.res.DeletedKeys[name] = append(s.res.DeletedKeys[name], r.key(len(kt.p.t.PrimaryKey)))
		}
	}
	var drop []string
	for _, t := range s.temps {
		if !keep[t] {
			drop = append(drop, t)
		}
	}
	if len(drop) > 0 {
		if _, err := s.exec(ctx, "DROP TABLE "+strings.Join(drop, ", ")); err != nil {
			return fmt.Errorf("drop temporary tables: %w", err)
		}
	}
	return nil
}

// setClause is the SET list of an update rule, its value (if any) as
// parameter $n.
func setClause(fk *registry.ForeignKey, n int) (string, []any) {
	set := ""
	var value []any
	for i, col := range fk.FromColumns {
		if i > 0 {
			set += ", "
		}
		set += ident(col) + " = "
		switch {
		case fk.OnDelete.Rule == registry.SetNull:
			set += "NULL"
		case fk.OnDelete.Rule == registry.SetDefault && fk.OnDelete.Value == "":
			set += "DEFAULT"
		default:
			// SET(<literal>), or SET_DEFAULT with the model's default given:
			// the server parses the text as the column's type.
			set += "$" + strconv.Itoa(n)
			value = []any{fk.OnDelete.Value}
		}
	}
	return set, value
}

func sortedFKs[V any](m map[*registry.ForeignKey]V) []*registry.ForeignKey {
	out := make([]*registry.ForeignKey, 0, len(m))
	for fk := range m {
		out = append(out, fk)
	}
	sortFKs(out)
	return out
}

// identList is `prefix"a", prefix"b"`.
func identList(cols []string, prefix string) string {
	var b strings.Builder
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(prefix)
		b.WriteString(ident(c))
	}
	return b.String()
}
