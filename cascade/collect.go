package cascade

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgoutpost/pgoutpost/registry"
)

// row holds a collected row's p.cols as text, primary key first.
type row []pgtype.Text

func (r row) key(n int) Key {
	k := make(Key, n)
	for i := range k {
		k[i] = r[i].String
	}
	return k
}

func (r row) id(n int) string {
	if n == 1 {
		return r[0].String
	}
	return r.key(n).ID()
}

// rowSet is the collected rows of one table, by primary key.
type rowSet struct {
	p    *plan
	rows map[string]row
}

// valueSet is a set of distinct value tuples, in first-seen order.
type valueSet struct {
	seen map[string]bool
	vals [][]string
}

func (s *valueSet) add(vals [][]string) {
	for _, v := range vals {
		id := Key(v).ID()
		if !s.seen[id] {
			s.seen[id] = true
			s.vals = append(s.vals, v)
		}
	}
}

// collector is the state of one Delete call.
type collector struct {
	e    *Engine
	tx   pgx.Tx
	res  *Result
	root registry.TableName

	sets       map[*plan]*rowSet                  // rows to delete
	protected  []Ref                              // rows found through PROTECT relations
	restricted []Ref                              // rows found through RESTRICT relations
	updates    map[*registry.ForeignKey][]Ref     // rows found through SET_* relations
	fast       map[*registry.ForeignKey]*valueSet // referenced values whose rows a fast-path DELETE removes
	held       int                                // rows collected and referencing rows read, against spillRows
	// viaChild are the ids of rows first collected as the MTI parents of
	// deleted child rows. Django collects those with collect_related=False:
	// their relations are followed from the child, through the fields it
	// inherits, and a generic relation inherited by the child matches the
	// child's content type, not the parent's (the registry gives children
	// their parents' generic relations). So generic relations are not
	// followed from these rows.
	viaChild map[*plan]map[string]bool
	// fkChecks, with BatchReferenceChecks, gathers what the constraints are
	// checked against at the end (refcheck.go); nil otherwise.
	fkChecks *refChecks
}

func (c *collector) run(ctx context.Context, targets []Target) error {
	if err := c.e.setGuard(ctx, c.tx); err != nil {
		return err
	}
	frontier := map[*plan][]row{}
	for _, tg := range targets {
		root := c.e.plans[tg.Table]
		vals := distinctKeys(tg.Keys)
		found := 0
		for _, chunk := range chunks(vals, c.e.maxArray) {
			cond, arg := match(root.t.PrimaryKey, root.t.Name, root.t.PrimaryKey, chunk, 1)
			rows, err := c.fetch(ctx, root, cond, []any{arg}, true)
			if err != nil {
				return rootError(root.t.Name, err)
			}
			found += len(rows)
			frontier[root] = append(frontier[root], c.add(root, rows)...)
		}
		c.res.missing(tg.Table, len(vals)-found)
	}

	for len(frontier) > 0 {
		if c.outgrown() {
			return errSpill
		}
		next := map[*plan][]row{}
		for _, p := range sortedPlans(frontier) {
			if err := c.level(ctx, p, frontier[p], next); err != nil {
				return err
			}
			if c.outgrown() {
				return errSpill
			}
		}
		frontier = next
	}
	if err := c.materialize(ctx); err != nil {
		return err
	}
	if c.outgrown() {
		return errSpill
	}
	if afterCollect != nil {
		afterCollect()
	}
	if err := c.check(); err != nil {
		return err
	}
	return c.apply(ctx)
}

// level follows every relation of the rows newly collected in p.
func (c *collector) level(ctx context.Context, p *plan, rows []row, next map[*plan][]row) error {
	if len(rows) == 0 {
		return nil
	}
	// Django deletes the parent rows of a deleted MTI child (and through them
	// everything that points at the parent).
	for _, fk := range p.t.Outgoing {
		if fk.Kind != registry.FKParentLink {
			continue
		}
		parent := c.e.plans[fk.To]
		if parent == nil {
			continue
		}
		for _, chunk := range chunks(values(p, rows, fk.FromColumns), c.e.maxArray) {
			cond, arg := match(fk.ToColumns, fk.To, fk.ToColumns, chunk, 1)
			got, err := c.fetch(ctx, parent, cond, []any{arg}, true)
			if err != nil {
				return fmt.Errorf("lock %s parent rows of %s: %w", fk.To, p.t.Name, err)
			}
			fresh := c.add(parent, got)
			if len(fresh) > 0 && c.viaChild[parent] == nil {
				c.viaChild[parent] = map[string]bool{}
			}
			for _, r := range fresh {
				c.viaChild[parent][r.id(len(parent.t.PrimaryKey))] = true
			}
			next[parent] = append(next[parent], fresh...)
		}
	}
	var own []row // rows not collected only as a child's parent
	if via := c.viaChild[p]; len(via) > 0 {
		for _, r := range rows {
			if !via[r.id(len(p.t.PrimaryKey))] {
				own = append(own, r)
			}
		}
	} else {
		own = rows
	}
	for _, fk := range p.t.Incoming {
		rule := fk.Rule().Rule
		if rule == registry.DoNothing {
			continue
		}
		from := c.e.plans[fk.From]
		src := rows
		if fk.Kind == registry.FKGeneric {
			src = own
		}
		vals := values(p, src, fk.ToColumns)
		if fk.Kind == registry.FKGeneric {
			var err error
			if vals, err = fitGeneric(from.t, fk, vals); err != nil {
				return err
			}
		}
		for _, chunk := range chunks(vals, c.e.maxArray) {
			if err := c.follow(ctx, fk, rule, from, chunk, next); err != nil {
				return err
			}
		}
	}
	return nil
}

// follow applies one relation's rule to the rows of from that reference vals.
func (c *collector) follow(ctx context.Context, fk *registry.ForeignKey, rule registry.Rule, from *plan, vals [][]string, next map[*plan][]row) error {
	if rule == registry.Cascade && from.fast {
		s := c.fast[fk]
		if s == nil {
			s = &valueSet{seen: make(map[string]bool, len(vals))}
			c.fast[fk] = s
		}
		s.add(vals)
		return nil
	}
	if len(from.t.PrimaryKey) == 0 && rule != registry.Protect && rule != "" {
		return fmt.Errorf("apply %s of %s: %w: its rows cannot be named", fk.OnDelete, fk, ErrNoPrimaryKey)
	}
	cond, args := c.e.refCondition(fk, vals)
	switch rule {
	case registry.Cascade:
		got, err := c.fetch(ctx, from, cond, args, true)
		if err != nil {
			return fmt.Errorf("lock %s rows referencing %s: %w", fk.From, fk.To, err)
		}
		next[from] = append(next[from], c.add(from, got)...)
	case registry.Protect, registry.Restrict, registry.SetNull, registry.SetDefault, registry.SetValue:
		// PROTECT fails whatever happens, so its rows need no lock.
		refs, err := c.refs(ctx, from, fk, cond, args, rule != registry.Protect)
		if err != nil {
			return fmt.Errorf("read %s rows referencing %s: %w", fk.From, fk.To, err)
		}
		c.held += len(refs)
		switch rule {
		case registry.Protect:
			c.protected = append(c.protected, refs...)
		case registry.Restrict:
			c.restricted = append(c.restricted, refs...)
		default:
			c.updates[fk] = append(c.updates[fk], refs...)
		}
	default:
		// No rule: harmless while nothing references the rows, which is
		// what the rule would have had to decide otherwise.
		refs, err := c.refs(ctx, from, fk, cond, args, false)
		if err != nil {
			return fmt.Errorf("read %s rows referencing %s: %w", fk.From, fk.To, err)
		}
		if len(refs) > 0 {
			return fmt.Errorf("relation %s: %w, and %d row(s) reference the deleted rows, e.g. %s", fk, ErrNoRule, len(refs), refs[0])
		}
	}
	return nil
}

// materialize collects the fast-path rows of tables that RESTRICT or SET_*
// relations also reached from collected rows: whether those rows are deleted
// decides the restriction or update. Fast-path tables have no incoming
// relations, so this adds no level.
func (c *collector) materialize(ctx context.Context) error {
	for _, fk := range sortedFKs(c.fast) {
		from := c.e.plans[fk.From]
		needed, err := c.e.materializing(from, fk, func(p *plan) bool { s := c.sets[p]; return s != nil && len(s.rows) > 0 })
		if err != nil {
			return err
		}
		if !needed {
			continue
		}
		for _, chunk := range chunks(c.fast[fk].vals, c.e.maxArray) {
			cond, args := c.e.refCondition(fk, chunk)
			got, err := c.fetch(ctx, from, cond, args, true)
			if err != nil {
				return fmt.Errorf("lock %s rows referencing %s: %w", fk.From, fk.To, err)
			}
			c.add(from, got)
		}
		delete(c.fast, fk)
	}
	return nil
}

// setGuard marks tx as a cascade (registry.MarkCascade) when the engine has
// the Guard option.
func (e *Engine) setGuard(ctx context.Context, tx pgx.Tx) error {
	if !e.guard {
		return nil
	}
	return registry.MarkCascade(ctx, tx)
}

// distinctKeys is keys without repeats, in first-seen order.
func distinctKeys(keys []Key) [][]string {
	vals := make([][]string, 0, len(keys))
	distinct := make(map[string]bool, len(keys))
	for _, k := range keys {
		if !distinct[k.ID()] {
			distinct[k.ID()] = true
			vals = append(vals, k)
		}
	}
	return vals
}

// rootError is the error of locking the rows a deletion starts from: a key
// value the column does not take is a malformed key.
func rootError(table registry.TableName, err error) error {
	if isBadValue(err) {
		return fmt.Errorf("delete from %s: %w: %v", table, ErrBadKey, err)
	}
	return fmt.Errorf("lock %s rows to delete: %w", table, err)
}

// materializing reports whether the fast-path rows of from that fk reached
// must be collected after all: one of from's checked relations points at a
// table with collected rows (collected says which). They need a primary key
// then.
func (e *Engine) materializing(from *plan, fk *registry.ForeignKey, collected func(*plan) bool) (bool, error) {
	for _, out := range from.checked {
		if collected(e.plans[out.To]) {
			if len(from.t.PrimaryKey) == 0 {
				return false, fmt.Errorf("collect %s rows referencing %s: %w: its rows cannot be named", fk.From, fk.To, ErrNoPrimaryKey)
			}
			return true, nil
		}
	}
	return false, nil
}

// add adds rows to p's collected set and returns those not collected before.
func (c *collector) add(p *plan, rows []row) []row {
	s := c.sets[p]
	if s == nil {
		s = &rowSet{p: p, rows: make(map[string]row, len(rows))}
		c.sets[p] = s
	}
	n := len(p.t.PrimaryKey)
	fresh := rows[:0]
	for _, r := range rows {
		id := r.id(n)
		if _, ok := s.rows[id]; ok {
			continue
		}
		s.rows[id] = r
		fresh = append(fresh, r)
	}
	c.held += len(fresh)
	return fresh
}

// outgrown reports whether the deletion holds more rows than the engine
// keeps in memory.
func (c *collector) outgrown() bool { return c.e.spillRows > 0 && c.held > c.e.spillRows }

func (c *collector) deleted(t registry.TableName, k Key) bool {
	s := c.sets[c.e.plans[t]]
	if s == nil {
		return false
	}
	_, ok := s.rows[k.ID()]
	return ok
}

// check fails the delete on PROTECT, then on RESTRICT rows that are not
// themselves deleted, then on update rules a column cannot take, before
// anything is written.
func (c *collector) check() error {
	if len(c.protected) > 0 {
		return &ProtectedError{Table: c.root, Refs: distinctRefs(c.protected)}
	}
	var restricted []Ref
	for _, r := range c.restricted {
		if !c.deleted(r.Table, r.Key) {
			restricted = append(restricted, r)
		}
	}
	if len(restricted) > 0 {
		return &RestrictedError{Table: c.root, Refs: distinctRefs(restricted)}
	}
	fks := make([]*registry.ForeignKey, 0, len(c.updates))
	for fk := range c.updates {
		fks = append(fks, fk)
	}
	sortFKs(fks)
	for _, fk := range fks {
		refs := c.updates[fk]
		var keep []Ref
		for _, r := range refs {
			if !c.deleted(r.Table, r.Key) { // rows deleted anyway need no update
				keep = append(keep, r)
			}
		}
		keep = distinctRefs(keep)
		c.updates[fk] = keep
		if len(keep) == 0 {
			continue
		}
		if err := checkColumns(c.e.plans[fk.From].t, fk, len(keep)); err != nil {
			return err
		}
	}
	return nil
}

// checkColumns fails an update rule of fk that a column of t (the
// referencing table) cannot take, before anything is written; rows is how
// many rows the rule would change.
func checkColumns(t *registry.Table, fk *registry.ForeignKey, rows int) error {
	for _, name := range fk.FromColumns {
		col := t.Column(name)
		if col == nil {
			continue // the database will say
		}
		switch {
		case fk.OnDelete.Rule == registry.SetNull && col.NotNull:
			return &ColumnError{Table: t.Name, Column: name, FK: fk, Rule: fk.OnDelete, Rows: rows, Err: ErrNotNull}
		case fk.OnDelete.Rule == registry.SetDefault && fk.OnDelete.Value == "" && col.Default == "":
			return &ColumnError{Table: t.Name, Column: name, FK: fk, Rule: fk.OnDelete, Rows: rows, Err: ErrNoDefault}
		}
	}
	return nil
}

// updateError is the error of an UPDATE that applied fk's rule: a column the
// rule cannot set names the rule.
func updateError(fk *registry.ForeignKey, err error) error {
	err = TranslateError(err)
	if ce, ok := err.(*ColumnError); ok {
		ce.FK, ce.Rule = fk, fk.OnDelete
		return ce
	}
	return fmt.Errorf("apply %s to %s: %w", fk.OnDelete, fk, err)
}

// apply writes: the updates first, then the fast-path deletes (their rows
// reference collected rows and nothing references them), then the collected
// rows in dependency order, referencing tables first. (Django runs its fast
// deletes before the updates; the two sets of rows are disjoint, so the order
// between them changes nothing.)
func (c *collector) apply(ctx context.Context) error {
	fks := make([]*registry.ForeignKey, 0, len(c.updates))
	for fk := range c.updates {
		fks = append(fks, fk)
	}
	sortFKs(fks)
	for _, fk := range fks {
		if err := c.update(ctx, fk, c.updates[fk]); err != nil {
			return err
		}
	}

	fks = fks[:0]
	for fk := range c.fast {
		fks = append(fks, fk)
	}
	sortFKs(fks)
	for _, fk := range fks {
		from := c.e.plans[fk.From]
		for _, chunk := range chunks(c.fast[fk].vals, c.e.maxArray) {
			cond, args := c.e.refCondition(fk, chunk)
			if err := c.delete(ctx, from, fk, cond, args); err != nil {
				return err
			}
		}
	}

	var plans []*plan
	for p, s := range c.sets {
		if len(s.rows) > 0 {
			plans = append(plans, p)
		}
	}
	for _, p := range deleteOrder(plans) {
		s := c.sets[p]
		keys := make([][]string, 0, len(s.rows))
		for _, r := range s.rows {
			keys = append(keys, r.key(len(p.t.PrimaryKey)))
		}
		for _, chunk := range chunks(keys, c.e.maxArray) {
			cond, arg := match(p.t.PrimaryKey, p.t.Name, p.t.PrimaryKey, chunk, 1)
			if err := c.delete(ctx, p, nil, cond, []any{arg}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *collector) delete(ctx context.Context, p *plan, fk *registry.ForeignKey, cond string, args []any) error {
	sql := "DELETE FROM " + p.t.Name.Sanitize() + " WHERE " + cond
	var ret []string
	npk := 0
	if c.e.keyKinds[p.t.Kind] && len(p.t.PrimaryKey) > 0 {
		npk = len(p.t.PrimaryKey)
		ret = append(ret, p.t.PrimaryKey...)
	}
	var refCols []string
	if c.fkChecks != nil {
		refCols = c.fkChecks.retCols[p.t.Name]
		ret = append(ret, refCols...)
	}
	if len(ret) > 0 {
		rows, err := c.query(ctx, sql+" RETURNING "+textList(ret), args, len(ret))
		if err != nil {
			return fmt.Errorf("delete from %s: %w", p.t.Name, TranslateError(err))
		}
		for _, r := range rows {
			if npk > 0 {
				c.res.DeletedKeys[p.t.Name] = append(c.res.DeletedKeys[p.t.Name], r.key(npk))
			}
			if len(refCols) > 0 {
				v := make([]string, len(refCols))
				for i := range v {
					if t := r[npk+i]; t.Valid {
						v[i] = t.String
					} else {
						v[i] = nullText
					}
				}
				c.fkChecks.deleted[p.t.Name] = append(c.fkChecks.deleted[p.t.Name], v)
			}
		}
		if len(refCols) > 0 {
			// The values are held until the checks: as many as the
			// collected rows may be, or the deletion starts again spilled.
			c.fkChecks.held += len(rows)
			if c.e.spillRows > 0 && c.held+c.fkChecks.held > c.e.spillRows {
				return errSpill
			}
		}
		c.res.record(p.t.Name, "DELETE", fk, int64(len(rows)))
		return nil
	}
	tag, err := c.tx.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("delete from %s: %w", p.t.Name, TranslateError(err))
	}
	c.res.record(p.t.Name, "DELETE", fk, tag.RowsAffected())
	return nil
}

func (c *collector) update(ctx context.Context, fk *registry.ForeignKey, refs []Ref) error {
	t := c.e.plans[fk.From].t
	set, value := setClause(fk, 2)
	keys := make([][]string, len(refs))
	for i, r := range refs {
		keys[i] = r.Key
	}
	if c.fkChecks != nil {
		c.fkChecks.updated = append(c.fkChecks.updated, updatedRows{table: t.Name, cols: fk.FromColumns, keys: keys})
	}
	for _, chunk := range chunks(keys, c.e.maxArray) {
		cond, arg := match(t.PrimaryKey, t.Name, t.PrimaryKey, chunk, 1)
		tag, err := c.tx.Exec(ctx, "UPDATE "+t.Name.Sanitize()+" SET "+set+" WHERE "+cond, append([]any{arg}, value...)...)
		if err != nil {
			return updateError(fk, err)
		}
		c.res.record(t.Name, fk.OnDelete.String(), fk, tag.RowsAffected())
	}
	return nil
}

// fetch reads the rows of p matching cond, as p.cols text.
func (c *collector) fetch(ctx context.Context, p *plan, cond string, args []any, lock bool) ([]row, error) {
	limit, args := c.limit(args)
	sql := "SELECT " + textList(p.cols) + " FROM " + p.t.Name.Sanitize() + " WHERE " + cond + limit
	if lock {
		sql += " FOR UPDATE"
	}
	rows, err := c.query(ctx, sql, args, len(p.cols))
	if err == nil && c.e.spillRows > 0 && c.held+len(rows) > c.e.spillRows {
		return nil, errSpill
	}
	return rows, err
}

// limit bounds a statement's rows to what the deletion may still hold in
// memory (and one more, to tell that it outgrew it): a LIMIT clause with its
// parameter, after args. (A parameter: the statement's text stays the same,
// and so one prepared statement serves.)
func (c *collector) limit(args []any) (string, []any) {
	if c.e.spillRows <= 0 {
		return "", args
	}
	args = append(args[:len(args):len(args)], strconv.Itoa(max(c.e.spillRows-c.held, 0)+1))
	return " LIMIT $" + strconv.Itoa(len(args)) + "::bigint", args
}

// refs reads the primary key and the relation's columns of the rows of from matching cond.
func (c *collector) refs(ctx context.Context, from *plan, fk *registry.ForeignKey, cond string, args []any, lock bool) ([]Ref, error) {
	cols := append(append([]string(nil), from.t.PrimaryKey...), fk.FromColumns...)
	limit, args := c.limit(args)
	sql := "SELECT " + textList(cols) + " FROM " + from.t.Name.Sanitize() + " WHERE " + cond + limit
	if lock {
		sql += " FOR UPDATE"
	}
	rows, err := c.query(ctx, sql, args, len(cols))
	if err != nil {
		return nil, err
	}
	if c.e.spillRows > 0 && c.held+len(rows) > c.e.spillRows {
		return nil, errSpill
	}
	n := len(from.t.PrimaryKey)
	refs := make([]Ref, len(rows))
	for i, r := range rows {
		v := make(Key, len(fk.FromColumns))
		for j := range v {
			v[j] = r[n+j].String
		}
		refs[i] = Ref{Table: from.t.Name, Key: r.key(n), FK: fk, Value: v}
	}
	return refs, nil
}

func (c *collector) query(ctx context.Context, sql string, args []any, width int) ([]row, error) {
	return queryRows(ctx, c.tx, sql, args, width)
}

// queryRows reads the rows of sql as text, width columns each.
func queryRows(ctx context.Context, tx pgx.Tx, sql string, args []any, width int) ([]row, error) {
	rs, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []row
	dest := make([]any, width)
	for rs.Next() {
		r := make(row, width)
		for i := range r {
			dest[i] = &r[i]
		}
		if err := rs.Scan(dest...); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rs.Err()
}

// values returns the distinct non-null tuples of cols in rows.
func values(p *plan, rows []row, cols []string) [][]string {
	idx := make([]int, len(cols))
	for i, c := range cols {
		idx[i] = p.pos[c]
	}
	seen := make(map[string]bool, len(rows))
	out := make([][]string, 0, len(rows))
next:
	for _, r := range rows {
		v := make([]string, len(idx))
		for i, j := range idx {
			if !r[j].Valid {
				continue next
			}
			v[i] = r[j].String
		}
		id := Key(v).ID()
		if !seen[id] {
			seen[id] = true
			out = append(out, v)
		}
	}
	return out
}

// fitGeneric drops target keys an integer object_id column cannot hold: Django
// converts the target's pk to the object_id field's type, and a value out of
// that type's range names no row (while the server would reject the cast). A
// key that is no integer at all fails, as Django's conversion does.
func fitGeneric(from *registry.Table, fk *registry.ForeignKey, vals [][]string) ([][]string, error) {
	col := from.Column(fk.FromColumns[0])
	if col == nil {
		return vals, nil
	}
	var bits int
	switch col.TypeOID {
	case pgtype.Int2OID:
		bits = 16
	case pgtype.Int4OID:
		bits = 32
	case pgtype.Int8OID:
		bits = 64
	default:
		return vals, nil
	}
	out := vals[:0:0]
	for _, v := range vals {
		_, err := strconv.ParseInt(v[0], 10, bits)
		switch {
		case err == nil:
			out = append(out, v)
		case errors.Is(err, strconv.ErrSyntax):
			return nil, fmt.Errorf("follow %s: %w: key %q of %s is not an integer, which its object id column %s needs", registry.FKSubject(fk), ErrBadKey, v[0], fk.To, fk.FromColumns[0])
		}
	}
	return out, nil
}

func sortedPlans(m map[*plan][]row) []*plan {
	out := make([]*plan, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].t.Name.String() < out[j].t.Name.String() })
	return out
}

func sortFKs(fks []*registry.ForeignKey) {
	sort.Slice(fks, func(i, j int) bool { return fks[i].String() < fks[j].String() })
}

// deleteOrder orders the tables of plans so that a table comes after every
// other one that references it. Tables in a reference cycle (which Django's
// deferred constraints allow) come in name order.
func deleteOrder(plans []*plan) []*plan {
	remaining := make(map[registry.TableName]*plan, len(plans))
	for _, p := range plans {
		remaining[p.t.Name] = p
	}
	var out []*plan
	for len(remaining) > 0 {
		var ready []*plan
		for name, p := range remaining {
			referenced := false
			for _, fk := range p.t.Incoming {
				if fk.From != name && remaining[fk.From] != nil {
					referenced = true
					break
				}
			}
			if !referenced {
				ready = append(ready, p)
			}
		}
		if len(ready) == 0 { // a cycle: break it at the first name
			for _, p := range remaining {
				if ready == nil || p.t.Name.String() < ready[0].t.Name.String() {
					ready = []*plan{p}
				}
			}
		}
		sort.Slice(ready, func(i, j int) bool { return ready[i].t.Name.String() < ready[j].t.Name.String() })
		for _, p := range ready {
			delete(remaining, p.t.Name)
		}
		out = append(out, ready...)
	}
	return out
}

func distinctRefs(refs []Ref) []Ref {
	seen := map[string]bool{}
	out := refs[:0:0]
	for _, r := range refs {
		id := r.FK.String() + "\x01" + r.Key.ID()
		if !seen[id] {
			seen[id] = true
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if a, b := out[i].Table.String(), out[j].Table.String(); a != b {
			return a < b
		}
		return out[i].Key.ID() < out[j].Key.ID()
	})
	return out
}

func chunks[T any](s []T, n int) [][]T {
	var out [][]T
	for len(s) > n {
		out = append(out, s[:n:n])
		s = s[n:]
	}
	if len(s) > 0 {
		out = append(out, s)
	}
	return out
}
