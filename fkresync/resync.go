package fkresync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/registry"
)

// DefaultBatchSize is how many hanging rows one transaction resolves.
const DefaultBatchSize = 1000

// windowFactor times the batch size is how many rows of a referencing table
// one statement looks at (see relation.windowEnd).
const windowFactor = 10

// Options say how a run treats the relations it checks. The table lists
// mirror the flags of `pgoutpost resync-fks`, whose names the report uses.
type Options struct {
	// DryRun only counts: one READ ONLY transaction, nothing changed.
	DryRun bool
	// BatchSize is how many hanging rows one transaction resolves
	// (DefaultBatchSize when 0).
	BatchSize int
	// DeleteProtect names referencing tables whose rows hanging through a
	// PROTECT, RESTRICT or DO_NOTHING relation (or one without a rule) are
	// deleted anyway, through the cascade engine.
	DeleteProtect []registry.TableName
	// NullProtect names referencing tables whose such relations are set to NULL.
	NullProtect []registry.TableName
	// Skip names tables left out: relations from or to them are not checked.
	// Rows of a skipped table are still deleted or updated when the
	// cascade of another table's hanging row reaches them, as Django would.
	Skip []registry.TableName
	// Logger gets a line per batch; nil discards.
	Logger *slog.Logger
}

// txBeginner is what Run needs of a connection (a *pgx.Conn or a *pgxpool.Pool).
type txBeginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// Relations returns the relations a run checks: every foreign key (declared,
// generic and parent links included) from a table that is not synced to a
// table that is, except those from or to a table of skip, in name order.
func Relations(reg *registry.Registry, skip ...registry.TableName) []*registry.ForeignKey {
	skipped := map[registry.TableName]bool{}
	for _, n := range skip {
		skipped[n] = true
	}
	var out []*registry.ForeignKey
	for _, t := range reg.Tables {
		if t.Kind.IsSynced() || skipped[t.Name] {
			continue
		}
		for _, fk := range t.Outgoing {
			if to := reg.Table(fk.To); to != nil && to.Kind.IsSynced() && !skipped[fk.To] {
				out = append(out, fk)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Run finds the hanging rows of every relation Relations returns and resolves
// them by their rules: CASCADE relations first (their deletes may take rows
// that hang elsewhere too), then updates, then the relations whose rows stay.
// Each batch of one relation is one transaction, so an error or a cancelled
// ctx leaves every batch either done or untouched. Rows a rule cannot resolve
// (PROTECT, a cascade that PROTECT or RESTRICT blocks, SET_NULL on a NOT NULL
// column) are left and reported, and the run goes on; Report.Left counts them.
// An error is returned only for options that do not fit the registry or for
// a failure of the database itself; the report then says what was done.
func Run(ctx context.Context, db txBeginner, reg *registry.Registry, opts Options) (*Report, error) {
	if err := checkOptions(reg, opts); err != nil {
		return nil, err
	}
	r := &runner{db: db, reg: reg, eng: cascade.New(reg, cascade.Guard()), opts: opts, log: opts.Logger,
		deleteProtect: set(opts.DeleteProtect), nullProtect: set(opts.NullProtect)}
	if r.opts.BatchSize <= 0 {
		r.opts.BatchSize = DefaultBatchSize
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	works := make([]*work, 0)
	for _, fk := range Relations(reg, opts.Skip...) {
		works = append(works, r.plan(fk))
	}
	order := map[Action]int{ActionDelete: 0, ActionUpdate: 1, ActionLeave: 2}
	sort.SliceStable(works, func(i, j int) bool { return order[works[i].res.Action] < order[works[j].res.Action] })
	rep := &Report{DryRun: opts.DryRun}
	for _, w := range works {
		rep.Results = append(rep.Results, w.res)
	}
	defer func() {
		for _, w := range works {
			w.res.finish()
		}
	}()
	if opts.DryRun {
		return rep, r.dryRun(ctx, works)
	}
	for _, w := range works {
		if err := r.resolve(ctx, w); err != nil {
			return rep, fmt.Errorf("resolve %s: %w", w.res.FK, err)
		}
	}
	// A cascade that RESTRICT blocked may pass once another relation's
	// deletes took the restricting rows (an album whose songs hang through
	// their own artist): Django deletes such rows in one go. Go over the
	// deletes that left rows again for as long as a pass deletes anything.
	for {
		var again []*work
		for _, w := range works {
			if w.res.Action == ActionDelete && w.res.Left > 0 {
				again = append(again, w)
			}
		}
		var progress int64
		for _, w := range again {
			before := w.res.Deleted
			w.res.Hanging -= w.res.Left
			w.res.Left, w.res.Reasons, w.res.left = 0, nil, nil
			if err := r.resolve(ctx, w); err != nil {
				return rep, fmt.Errorf("resolve %s: %w", w.res.FK, err)
			}
			progress += w.res.Deleted - before
		}
		if progress == 0 {
			return rep, nil
		}
	}
}

func set(names []registry.TableName) map[registry.TableName]bool {
	m := make(map[registry.TableName]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func checkOptions(reg *registry.Registry, opts Options) error {
	var errs []error
	del := set(opts.DeleteProtect)
	for _, l := range []struct {
		flag  string
		names []registry.TableName
	}{{"--delete-protect", opts.DeleteProtect}, {"--null-protect", opts.NullProtect}, {"--skip", opts.Skip}} {
		for _, n := range l.names {
			t := reg.Table(n)
			switch {
			case t == nil:
				errs = append(errs, fmt.Errorf("%s %s: %w", l.flag, n, ErrUnknownTable))
			case l.flag != "--skip" && t.Kind.IsSynced():
				errs = append(errs, fmt.Errorf("%w: %s %s: a synced (%s) table; only rows of user tables are changed", ErrBadOption, l.flag, n, t.Kind))
			case l.flag == "--null-protect" && del[n]:
				errs = append(errs, fmt.Errorf("%w: %s is named by both --delete-protect and --null-protect", ErrBadOption, n))
			}
		}
	}
	return errors.Join(errs...)
}

type runner struct {
	db            txBeginner
	reg           *registry.Registry
	eng           *cascade.Engine
	opts          Options
	log           *slog.Logger
	deleteProtect map[registry.TableName]bool
	nullProtect   map[registry.TableName]bool
}

// work is one relation's plan.
type work struct {
	rel *relation
	res *FKResult
	// For ActionUpdate: the value written (nil: NULL, or DEFAULT with useDefault).
	value      *string
	useDefault bool
	// For ActionLeave: why the rows stay.
	reason string
}

// plan chooses what to do with fk's hanging rows from its rule and the options.
func (r *runner) plan(fk *registry.ForeignKey) *work {
	w := &work{rel: newRelation(r.reg, fk), res: &FKResult{FK: fk, AlsoDeleted: map[registry.TableName]int64{}, AlsoUpdated: map[registry.TableName]int64{}}}
	rule := fk.Rule()
	from := fk.From.String()
	leave := func(why, reason string) *work {
		w.res.Action, w.res.Why, w.reason = ActionLeave, why, reason
		return w
	}
	if len(w.rel.from.PrimaryKey) == 0 {
		return leave(rule.String(), fmt.Sprintf("%s has no primary key, so its rows cannot be named: fix them by hand", fk.From))
	}
	switch rule.Rule {
	case registry.Cascade:
		w.res.Action, w.res.Why = ActionDelete, "CASCADE"
		return w
	case registry.SetNull, registry.SetDefault, registry.SetValue:
		w.res.Action, w.res.Why = ActionUpdate, rule.String()
		switch {
		case rule.Value != "":
			v := rule.Value
			w.value = &v
		case rule.Rule == registry.SetDefault:
			w.useDefault = true
		}
		for _, name := range fk.FromColumns {
			col := w.rel.from.Column(name)
			switch {
			case col == nil:
			case rule.Rule == registry.SetNull && col.NotNull:
				return leave(rule.String(), fmt.Sprintf("SET_NULL cannot apply: %s.%s is NOT NULL (fix the rule in sidecar.yaml, or delete the rows by hand)", fk.From, name))
			case w.useDefault && col.Default == "":
				return leave(rule.String(), fmt.Sprintf("SET_DEFAULT cannot apply: %s.%s has no database default (Django's default lives in the model: give it as default: in sidecar.yaml's relations)", fk.From, name))
			}
		}
		return w
	}
	why := rule.String()
	if why == "" {
		why = "no rule"
	}
	switch {
	case r.deleteProtect[fk.From]:
		w.res.Action, w.res.Why = ActionDelete, "--delete-protect"
		return w
	case r.nullProtect[fk.From]:
		w.res.Action, w.res.Why = ActionUpdate, "--null-protect"
		for _, name := range fk.FromColumns {
			if col := w.rel.from.Column(name); col != nil && col.NotNull {
				return leave(why, fmt.Sprintf("--null-protect cannot apply: %s.%s is NOT NULL; use --delete-protect %s", fk.From, name, from))
			}
		}
		return w
	case rule.Rule == "":
		return leave(why, fmt.Sprintf("the relation has no on_delete rule: give one in sidecar.yaml's relations, or rerun with --delete-protect %s (delete them) or --null-protect %s (set %s to NULL)", from, from, strings.Join(fk.FromColumns, ",")))
	}
	return leave(why, fmt.Sprintf("%s: rerun with --delete-protect %s (delete them and their CASCADE dependents) or --null-protect %s (set %s to NULL)", why, from, from, strings.Join(fk.FromColumns, ",")))
}

// checkValue leaves the rows of an update that would write a value naming no
// row of the target either (SET(v), SET_DEFAULT with default:).
func (r *runner) checkValue(ctx context.Context, q pgx.Tx, w *work) error {
	fk := w.rel.fk
	if w.res.Action != ActionUpdate || w.value == nil || len(fk.FromColumns) != 1 || fk.Kind == registry.FKGeneric {
		return nil
	}
	var ok bool
	if err := q.QueryRow(ctx, w.rel.targetExists(), *w.value).Scan(&ok); err != nil {
		if cascade.RowFault(err) {
			w.res.Action, w.reason = ActionLeave, fmt.Sprintf("%s cannot apply: %v", w.res.Why, err)
			return nil
		}
		return fmt.Errorf("look up %s's value in %s: %w", w.res.Why, fk.To, err)
	}
	if !ok {
		w.res.Action, w.reason = ActionLeave, fmt.Sprintf("%s cannot apply: %s has no row with %s = %s either", w.res.Why, fk.To, fk.ToColumns[0], *w.value)
	}
	return nil
}

// dryRun counts every relation's hanging rows in one read-only snapshot.
func (r *runner) dryRun(ctx context.Context, works []*work) error {
	tx, err := r.db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin read-only transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for _, w := range works {
		if err := r.checkValue(ctx, tx, w); err != nil {
			return err
		}
		if err := r.count(ctx, tx, w); err != nil {
			return err
		}
		if w.res.Action == ActionLeave {
			w.res.leave(w.res.Hanging, w.reason, w.res.found)
		}
	}
	return nil
}

// count sets the relation's Hanging and its first examples.
func (r *runner) count(ctx context.Context, tx pgx.Tx, w *work) error {
	sql, args := w.rel.count()
	if err := tx.QueryRow(ctx, sql, args...).Scan(&w.res.Hanging); err != nil {
		return fmt.Errorf("count rows of %s hanging: %w", w.res.FK, err)
	}
	if w.res.Hanging == 0 {
		return nil
	}
	rows, err := r.page(ctx, tx, w, nil, nil, MaxExamples, false)
	if err != nil {
		return err
	}
	w.res.found = appendRows(w.res.found, rows)
	return nil
}

// page reads hanging rows in primary-key order after the key after, up to upto.
func (r *runner) page(ctx context.Context, tx pgx.Tx, w *work, after, upto []string, limit int, lock bool, only ...[]string) ([]Row, error) {
	sql, args := w.rel.page(after, upto, limit, lock, only...)
	rs, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("find rows of %s hanging: %w", w.res.FK, err)
	}
	defer rs.Close()
	nk, nv := len(w.rel.from.PrimaryKey), len(w.rel.fk.FromColumns)
	vals := make([]pgtype.Text, nk+nv)
	dest := make([]any, len(vals))
	for i := range vals {
		dest[i] = &vals[i]
	}
	var out []Row
	for rs.Next() {
		if err := rs.Scan(dest...); err != nil {
			return nil, fmt.Errorf("read rows of %s hanging: %w", w.res.FK, err)
		}
		row := Row{Key: make(cascade.Key, nk), Value: make(cascade.Key, nv)}
		for i := range vals {
			if i < nk {
				row.Key[i] = vals[i].String
			} else {
				row.Value[i-nk] = vals[i].String
			}
		}
		out = append(out, row)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("find rows of %s hanging: %w", w.res.FK, err)
	}
	return out, nil
}

// resolve works through one relation's hanging rows, a batch per transaction.
func (r *runner) resolve(ctx context.Context, w *work) error {
	if w.res.Action == ActionUpdate {
		err := r.inTx(ctx, pgx.ReadOnly, func(tx pgx.Tx) error { return r.checkValue(ctx, tx, w) })
		if err != nil {
			return err
		}
	}
	if w.res.Action == ActionLeave {
		err := r.inTx(ctx, pgx.ReadOnly, func(tx pgx.Tx) error { return r.count(ctx, tx, w) })
		if err != nil {
			return err
		}
		w.res.leave(w.res.Hanging, w.reason, w.res.found)
		if w.res.Hanging > 0 {
			r.log.Warn("hanging rows left", "relation", w.res.FK.String(), "rule", w.res.Why, "rows", w.res.Hanging)
		}
		return nil
	}
	var after []string
	for batch := 1; ; batch++ {
		var rows []Row
		var out outcome
		var next []string
		end := false
		err := r.inTx(ctx, pgx.ReadWrite, func(tx pgx.Tx) error {
			// Walk windows of the table in key order until one has hanging rows.
			for len(rows) == 0 {
				upto, err := r.windowEnd(ctx, tx, w, after)
				if err != nil {
					return err
				}
				if rows, err = r.page(ctx, tx, w, after, upto, r.opts.BatchSize, true); err != nil {
					return err
				}
				switch {
				case len(rows) == r.opts.BatchSize:
					next = rows[len(rows)-1].Key
				case upto != nil:
					next = upto
				default:
					end = true
				}
				if len(rows) == 0 {
					if end {
						return nil
					}
					after = next
				}
			}
			var err error
			if w.res.Action == ActionDelete {
				out, err = r.deleteRows(ctx, tx, w, rows)
			} else {
				out, err = r.updateRows(ctx, tx, w, rows)
			}
			return err
		})
		switch {
		case err == nil:
		case len(rows) > 0 && cascade.RowFault(err) && w.res.Action == ActionDelete:
			// The commit failed (a deferred constraint): retry the rows one
			// by one, each in its own transaction.
			out, err = r.retryAlone(ctx, w, rows)
			if err != nil {
				return err
			}
		case len(rows) > 0 && cascade.RowFault(err):
			out = outcome{left: failures(rows, err)}
		default:
			return err
		}
		if len(rows) > 0 {
			w.res.Hanging += int64(len(rows))
			w.res.found = appendRows(w.res.found, rows)
			out.addTo(w.res)
			r.log.Info("resync batch", "relation", w.res.FK.String(), "action", string(w.res.Action), "batch", batch,
				"rows", len(rows), "deleted", out.deleted, "updated", out.updated, "left", len(out.left), "hanging_so_far", w.res.Hanging)
		}
		if end {
			return nil
		}
		after = next
	}
}

// windowEnd returns the key that ends the window of rows after the key after
// that one page examines, or nil when the window reaches the end of the table.
func (r *runner) windowEnd(ctx context.Context, tx pgx.Tx, w *work, after []string) ([]string, error) {
	sql, args := w.rel.windowEnd(after, windowFactor*r.opts.BatchSize)
	rs, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", w.rel.from.Name, err)
	}
	defer rs.Close()
	vals := make([]pgtype.Text, len(w.rel.from.PrimaryKey))
	dest := make([]any, len(vals))
	for i := range vals {
		dest[i] = &vals[i]
	}
	var key []string
	for rs.Next() {
		if err := rs.Scan(dest...); err != nil {
			return nil, fmt.Errorf("scan %s: %w", w.rel.from.Name, err)
		}
		key = make([]string, len(vals))
		for i, v := range vals {
			key[i] = v.String
		}
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("scan %s: %w", w.rel.from.Name, err)
	}
	return key, nil
}

// outcome is what one committed batch did.
type outcome struct {
	deleted, updated         int64
	alsoDeleted, alsoUpdated map[registry.TableName]int64
	left                     []failure
}

type failure struct {
	row    Row
	reason string
}

func failures(rows []Row, err error) []failure {
	out := make([]failure, len(rows))
	reason := reasonOf(err)
	for i, row := range rows {
		out[i] = failure{row, reason}
	}
	return out
}

// reasonOf says why rows were left, by relation rather than by row (the
// examples name the rows), so that one cause reads as one reason.
func reasonOf(err error) string {
	var refs []cascade.Ref
	what := ""
	var pe *cascade.ProtectedError
	var re *cascade.RestrictedError
	switch {
	case errors.As(err, &pe):
		refs, what = pe.Refs, "the deletion is protected by"
	case errors.As(err, &re):
		refs, what = re.Refs, "the deletion is restricted by rows outside it, through"
	default:
		return err.Error()
	}
	var fks []string
	seen := map[*registry.ForeignKey]bool{}
	for _, ref := range refs {
		if !seen[ref.FK] {
			seen[ref.FK] = true
			fks = append(fks, fmt.Sprintf("%s (%s)", ref.FK, ref.FK.OnDelete))
		}
	}
	sort.Strings(fks)
	return what + " " + strings.Join(fks, ", ")
}

func (o *outcome) add(p outcome) {
	o.deleted += p.deleted
	o.updated += p.updated
	o.left = append(o.left, p.left...)
	for _, m := range []struct{ dst, src *map[registry.TableName]int64 }{{&o.alsoDeleted, &p.alsoDeleted}, {&o.alsoUpdated, &p.alsoUpdated}} {
		for t, n := range *m.src {
			if *m.dst == nil {
				*m.dst = map[registry.TableName]int64{}
			}
			(*m.dst)[t] += n
		}
	}
}

func (o *outcome) addTo(res *FKResult) {
	res.Deleted += o.deleted
	res.Updated += o.updated
	for t, n := range o.alsoDeleted {
		res.AlsoDeleted[t] += n
	}
	for t, n := range o.alsoUpdated {
		res.AlsoUpdated[t] += n
	}
	for _, f := range o.left {
		res.leave(1, f.reason, []Row{f.row})
	}
}

// deleteRows deletes rows and their dependents through the cascade engine.
// When the engine refuses the batch (PROTECT, RESTRICT, ...), each row is
// tried alone in tx (the engine runs in a savepoint, so tx stays usable) and
// the ones it refuses are left.
func (r *runner) deleteRows(ctx context.Context, tx pgx.Tx, w *work, rows []Row) (outcome, error) {
	keys := make([]cascade.Key, len(rows))
	for i, row := range rows {
		keys[i] = row.Key
	}
	res, err := r.eng.Delete(ctx, tx, w.rel.fk.From, keys)
	if err == nil {
		return cascadeOutcome(w.rel.fk.From, res, len(keys)), nil
	}
	if !cascade.RowFault(err) {
		return outcome{}, err
	}
	if len(rows) == 1 {
		return outcome{left: failures(rows, err)}, nil
	}
	var out outcome
	for _, row := range rows {
		o, err := r.deleteRows(ctx, tx, w, []Row{row})
		if err != nil {
			return outcome{}, err
		}
		out.add(o)
	}
	return out, nil
}

// retryAlone deletes rows one per transaction, after their batch failed at
// COMMIT. Each row is looked up again: another session may have fixed it.
func (r *runner) retryAlone(ctx context.Context, w *work, rows []Row) (outcome, error) {
	var out outcome
	for _, row := range rows {
		var o outcome
		err := r.inTx(ctx, pgx.ReadWrite, func(tx pgx.Tx) error {
			still, err := r.page(ctx, tx, w, nil, nil, 1, true, row.Key)
			if err != nil || len(still) == 0 {
				return err
			}
			o, err = r.deleteRows(ctx, tx, w, still)
			return err
		})
		if err != nil {
			if !cascade.RowFault(err) {
				return outcome{}, err
			}
			o = outcome{left: failures([]Row{row}, err)}
		}
		out.add(o)
	}
	return out, nil
}

func cascadeOutcome(from registry.TableName, res *cascade.Result, n int) outcome {
	out := outcome{deleted: int64(n - res.Missing), alsoDeleted: map[registry.TableName]int64{}, alsoUpdated: map[registry.TableName]int64{}}
	for t, c := range res.Deleted {
		if t == from {
			c -= out.deleted
		}
		if c > 0 {
			out.alsoDeleted[t] += c
		}
	}
	for t, c := range res.Updated {
		out.alsoUpdated[t] += c
	}
	return out
}

// updateRows sets the relation's columns of rows that still hang.
func (r *runner) updateRows(ctx context.Context, tx pgx.Tx, w *work, rows []Row) (outcome, error) {
	keys := make([][]string, len(rows))
	for i, row := range rows {
		keys[i] = row.Key
	}
	sql, args := w.rel.update(keys, w.value, w.useDefault)
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil {
		return outcome{}, cascade.TranslateError(err)
	}
	return outcome{updated: tag.RowsAffected()}, nil
}

// inTx runs fn in a transaction that the write guard lets through, and
// commits it. A failed COMMIT (a deferred constraint) comes back translated
// by cascade.TranslateError.
func (r *runner) inTx(ctx context.Context, mode pgx.TxAccessMode, fn func(pgx.Tx) error) error {
	tx, err := r.db.BeginTx(ctx, pgx.TxOptions{AccessMode: mode})
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if mode == pgx.ReadWrite {
		if err := registry.MarkCascade(ctx, tx); err != nil {
			return err
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return cascade.TranslateError(err)
	}
	return nil
}
