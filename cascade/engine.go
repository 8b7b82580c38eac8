package cascade

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/registry"
)

// The engine follows django/db/models/deletion.py's Collector: CASCADE
// collects and recurses (rows already collected end the recursion, so cycles
// and self-references terminate); PROTECT fails on any referencing row, even
// one deleted on another path, and reports every such row; RESTRICT fails only
// for referencing rows outside the final deleted set; SET_* update; DO_NOTHING
// skips; MTI children take their parent rows with them and parents cascade to
// their children; generic relations match content type and object id, and
// one declared on an MTI parent is followed from the parent's rows with the
// parent's content type and from each child's rows with the child's (Django
// copies the GenericRelation to every child model), but not from parent rows
// deleted only because their child is. Where it deliberately differs:
//
//   - SET_DEFAULT writes the database default (UPDATE ... SET col = DEFAULT),
//     or the application's default when the relation gives one
//     (OnDelete.Value): Django's default lives in the model, which the
//     database does not know. With neither, the delete fails with ErrNoDefault
//     before changing anything.
//   - Rows that are deleted anyway are not updated first (Django updates, then
//     deletes them), so a SET_NULL on a NOT NULL column of a row that is
//     deleted on another path does not fail.
//   - Every protected row of the graph is reported; Django's error may list
//     fewer where a failed collect stops early (its generic relations).
//   - Deleting one MTI child also deletes sibling children of the same parent
//     row (Django leaves them, and its deferred constraint then fails at commit).
//   - A generic relation follows the rule sidecar.yaml gives it (CASCADE when
//     none); Django's GenericRelation always cascades.
//   - No signals: there is no Python. Deferred constraints are left to the
//     caller's COMMIT, as Django leaves them to its transaction.

// DefaultMaxArray is how many values one key array parameter holds at most;
// larger sets are split into several statements.
const DefaultMaxArray = 10000

// Engine applies Django's on_delete rules over a registry's foreign key graph.
// It holds no connection and no per-call state: one Engine serves any number
// of concurrent Delete calls. (With BatchReferenceChecks it keeps the
// catalog's foreign keys as the last deletion read them, which every
// deletion reads again to check.)
type Engine struct {
	reg      *registry.Registry
	plans    map[registry.TableName]*plan
	maxArray int
	keyKinds map[registry.Kind]bool
	guard    bool
	// spillAbove: DeleteAll spills with more keys than this; never when negative.
	spillAbove int
	// spillRows: an in-memory deletion that collects more rows (and
	// referencing rows) than this starts again spilled; never when <= 0.
	spillRows int
	// batchChecks: see BatchReferenceChecks.
	batchChecks bool
	// catalog is what the last batch-checked deletion's checks read, the
	// constraints the next one's statements are built for (refcheck.go).
	catalog atomic.Pointer[catalog]
}

// Option configures an Engine.
type Option func(*Engine)

// MaxArray sets how many values one key array parameter holds at most.
func MaxArray(n int) Option {
	return func(e *Engine) {
		if n > 0 {
			e.maxArray = n
		}
	}
}

// ReportKeys makes Result.DeletedKeys list the primary key of every deleted
// row of the tables of these kinds (e.g. registry.KindDenormalize, whose
// deletes become events).
func ReportKeys(kinds ...registry.Kind) Option {
	return func(e *Engine) {
		for _, k := range kinds {
			e.keyKinds[k] = true
		}
	}
}

// Guard makes each Delete mark the caller's transaction as a cascade
// (registry.MarkCascade: registry.CascadeSetting on until the transaction
// ends), so that the slave write guard lets its deletes and updates through.
func Guard() Option { return func(e *Engine) { e.guard = true } }

// BatchReferenceChecks makes DeleteAll check the database's foreign key
// constraints itself, once per constraint for the whole deletion, instead of
// PostgreSQL's per-row checks: its statements run under
// session_replication_role = replica (see refcheck.go). The delete queue
// drains 2 to 2.6 times as fast on Django's schemas, but while it runs no
// trigger fires on the rows it deletes or updates except those set ENABLE
// ALWAYS (and those set ENABLE REPLICA do). The caller's role needs superuser or, on PostgreSQL 15 and
// later, GRANT SET ON PARAMETER session_replication_role. A deletion that
// spills runs with PostgreSQL's own checks.
func BatchReferenceChecks() Option { return func(e *Engine) { e.batchChecks = true } }

// New returns an engine over reg. The registry must not change afterwards.
func New(reg *registry.Registry, opts ...Option) *Engine {
	e := &Engine{reg: reg, plans: make(map[registry.TableName]*plan, len(reg.Tables)), maxArray: DefaultMaxArray, keyKinds: map[registry.Kind]bool{}, spillAbove: -1, spillRows: DefaultSpillRows}
	for _, o := range opts {
		o(e)
	}
	for _, t := range reg.Tables {
		e.plans[t.Name] = newPlan(t)
	}
	return e
}

// Table returns the registry's table named name, or an error wrapping ErrUnknownTable.
func (e *Engine) Table(name registry.TableName) (*registry.Table, error) {
	t := e.reg.Table(name)
	if t == nil {
		return nil, fmt.Errorf("%s: %w", name, ErrUnknownTable)
	}
	return t, nil
}

// KeysFromJSON decodes primary keys of table given as JSON objects (see KeyFromJSON).
func (e *Engine) KeysFromJSON(table registry.TableName, docs ...[]byte) ([]Key, error) {
	t, err := e.Table(table)
	if err != nil {
		return nil, err
	}
	return KeysFromJSON(t, docs...)
}

// Result says what a Delete did.
type Result struct {
	Deleted map[registry.TableName]int64 // rows deleted per table
	Updated map[registry.TableName]int64 // rows updated per table (SET_NULL, SET_DEFAULT, SET)
	// Steps are the statements' effects in the order they ran.
	Steps []Step
	// Missing is how many of the given keys named no row (already deleted),
	// MissingIn the same by table.
	Missing   int
	MissingIn map[registry.TableName]int
	// DeletedKeys lists deleted rows of the tables whose kinds ReportKeys chose.
	DeletedKeys map[registry.TableName][]Key
	// KeyTables are, for DeleteListed, the temporary tables that hold the
	// primary keys of the deleted rows of those tables (in their columns'
	// types, named as the table's), sanitized; they last until the
	// transaction ends.
	KeyTables map[registry.TableName]string
	// Rechecked says that with BatchReferenceChecks a check found a row
	// that PostgreSQL's own checks had to judge, and the deletion ran again
	// with them (see refcheck.go).
	Rechecked bool
}

func newResult() *Result {
	return &Result{Deleted: map[registry.TableName]int64{}, Updated: map[registry.TableName]int64{}, DeletedKeys: map[registry.TableName][]Key{},
		MissingIn: map[registry.TableName]int{}}
}

// Step is the effect of one action on one table.
type Step struct {
	Table  registry.TableName
	Action string               // "DELETE", or the update rule: "SET_NULL", "SET_DEFAULT", "SET(0)"
	FK     *registry.ForeignKey // the relation followed; nil for a delete of collected rows
	Rows   int64
}

// missing counts n keys of table t that named no row.
func (r *Result) missing(t registry.TableName, n int) {
	if n > 0 {
		r.Missing += n
		r.MissingIn[t] += n
	}
}

// TotalDeleted is the number of rows deleted in all tables.
func (r *Result) TotalDeleted() int64 {
	var n int64
	for _, v := range r.Deleted {
		n += v
	}
	return n
}

func (r *Result) record(t registry.TableName, action string, fk *registry.ForeignKey, n int64) {
	if n == 0 {
		return
	}
	if action == "DELETE" {
		r.Deleted[t] += n
	} else {
		r.Updated[t] += n
	}
	if k := len(r.Steps); k > 0 && r.Steps[k-1].Table == t && r.Steps[k-1].Action == action && r.Steps[k-1].FK == fk {
		r.Steps[k-1].Rows += n // several chunks of one action
		return
	}
	r.Steps = append(r.Steps, Step{Table: t, Action: action, FK: fk, Rows: n})
}

// Delete deletes the rows of table whose primary keys are keys, with
// everything Django's Collector would delete or update with them, inside tx.
// It first collects level by level (locking every collected row FOR UPDATE),
// then checks PROTECT and RESTRICT on the complete set, then runs the updates,
// then the deletes, referencing rows first. It runs in a savepoint: on error
// nothing of it remains and tx stays usable.
//
// Errors: *ProtectedError, *RestrictedError, *ColumnError (nothing was
// changed), ErrUnknownTable, ErrNoPrimaryKey, ErrBadKey. Keys that name no
// row are counted in Result.Missing, not an error. Deferred foreign keys are
// checked at the caller's COMMIT; pass its error through TranslateError.
func (e *Engine) Delete(ctx context.Context, tx pgx.Tx, table registry.TableName, keys []Key) (*Result, error) {
	return e.DeleteAll(ctx, tx, []Target{{Table: table, Keys: keys}})
}

// Target names rows of one table by their primary keys.
type Target struct {
	Table registry.TableName
	Keys  []Key
}

// DeleteAll is Delete over the rows of several tables at once, as one
// deletion: PROTECT and RESTRICT are checked against everything deleted by
// all targets together, as Django's QuerySet.delete() does for its rows. The
// delete queue applies the entries of one master transaction this way.
func (e *Engine) DeleteAll(ctx context.Context, tx pgx.Tx, targets []Target) (*Result, error) {
	res := newResult()
	if len(targets) == 0 {
		return res, nil
	}
	root := targets[0].Table
	nkeys := 0
	for _, tg := range targets {
		p := e.plans[tg.Table]
		if p == nil {
			return nil, fmt.Errorf("delete from %s: %w", tg.Table, ErrUnknownTable)
		}
		if len(p.t.PrimaryKey) == 0 {
			return nil, fmt.Errorf("delete from %s: %w", tg.Table, ErrNoPrimaryKey)
		}
		for _, k := range tg.Keys {
			if len(k) != len(p.t.PrimaryKey) {
				return nil, fmt.Errorf("delete from %s: %w: key %s has %d values, the primary key %d columns", tg.Table, ErrBadKey, k, len(k), len(p.t.PrimaryKey))
			}
		}
		nkeys += len(tg.Keys)
	}
	if nkeys == 0 {
		return res, nil
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("delete from %s: begin savepoint: %w", root, err)
	}
	spill := e.spillAbove >= 0 && nkeys > e.spillAbove
	if !spill {
		err = e.collect(ctx, sp, res, root, targets, e.batchChecks)
		if errors.Is(err, errRecheck) {
			// A batch check failed: run it again with PostgreSQL's own
			// checks, which raise the violation or apply the constraint's
			// own ON DELETE action as they would have.
			if err = sp.Rollback(ctx); err != nil {
				return nil, fmt.Errorf("delete from %s: roll back to savepoint: %w", root, err)
			}
			if sp, err = tx.Begin(ctx); err != nil {
				return nil, fmt.Errorf("delete from %s: begin savepoint: %w", root, err)
			}
			res = newResult()
			res.Rechecked = true
			err = e.collect(ctx, sp, res, root, targets, false)
		}
		if errors.Is(err, errSpill) {
			// The cascade reaches more rows than memory should hold:
			// undo what was locked and start again, spilled.
			if err = sp.Rollback(ctx); err != nil {
				return nil, fmt.Errorf("delete from %s: roll back to savepoint: %w", root, err)
			}
			if sp, err = tx.Begin(ctx); err != nil {
				return nil, fmt.Errorf("delete from %s: begin savepoint: %w", root, err)
			}
			res, spill = newResult(), true
		}
	}
	if spill {
		s := newSpiller(e, sp, res, root)
		err = s.runAll(ctx, targets)
		if err == nil {
			err = s.finish(ctx, true)
		}
	}
	if err != nil {
		_ = sp.Rollback(ctx) // the caller's tx may be broken already; its own rollback reports that
		return nil, err
	}
	if err := sp.Commit(ctx); err != nil {
		return nil, fmt.Errorf("delete from %s: release savepoint: %w", root, TranslateError(err))
	}
	return res, nil
}

// collect runs an in-memory deletion in tx (a savepoint). With batch, it
// runs under the replica role and is followed by the batch reference checks
// (refcheck.go); the role ends with the checks, and an error rolls the
// savepoint back, the role with it.
func (e *Engine) collect(ctx context.Context, tx pgx.Tx, res *Result, root registry.TableName, targets []Target, batch bool) error {
	c := &collector{e: e, tx: tx, res: res, root: root, sets: map[*plan]*rowSet{}, updates: map[*registry.ForeignKey][]Ref{}, fast: map[*registry.ForeignKey]*valueSet{}, viaChild: map[*plan]map[string]bool{}}
	if !batch {
		return c.run(ctx, targets)
	}
	cat := e.catalog.Load()
	if cat == nil {
		var err error
		if cat, err = readCatalog(ctx, c.tx); err != nil {
			return err
		}
	}
	refs := newRefChecks(cat)
	prev, err := replicaRole(ctx, c.tx)
	if err != nil {
		return err
	}
	c.fkChecks = refs
	if err := c.run(ctx, targets); err != nil {
		return err
	}
	if err := refs.verify(ctx, c.e, c.tx, c.res); err != nil {
		return err
	}
	return restoreRole(ctx, c.tx, prev)
}

// afterCollect is a test hook run between collecting and writing.
var afterCollect func()

// plan is what the engine precomputes for one table.
type plan struct {
	t    *registry.Table
	cols []string // columns fetched for collected rows: the primary key, then the referenced and parent-link columns
	pos  map[string]int
	// fast is true when no relation points at this table and it is no MTI
	// child: rows reached through a CASCADE then have nothing to follow, and
	// one DELETE ... WHERE fk = ANY($1) removes them without collecting them.
	fast bool
	// checked are its relations whose rule needs to know which of its rows
	// are deleted (RESTRICT, SET_*); when one of them points at a table with
	// collected rows, the fast-path rows are collected after all.
	checked []*registry.ForeignKey
}

func newPlan(t *registry.Table) *plan {
	p := &plan{t: t, pos: map[string]int{}}
	need := func(cols []string) {
		for _, c := range cols {
			if _, ok := p.pos[c]; !ok {
				p.pos[c] = len(p.cols)
				p.cols = append(p.cols, c)
			}
		}
	}
	need(t.PrimaryKey)
	p.fast = true
	for _, fk := range t.Incoming {
		if fk.Rule().Rule != registry.DoNothing {
			need(fk.ToColumns)
			p.fast = false
		}
	}
	for _, fk := range t.Outgoing {
		if fk.Kind == registry.FKParentLink {
			need(fk.FromColumns)
			p.fast = false
		}
		if r := fk.Rule().Rule; r != registry.Cascade && r != registry.DoNothing && r != registry.Protect {
			p.checked = append(p.checked, fk)
		}
	}
	return p
}
