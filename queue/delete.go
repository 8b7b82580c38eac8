package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/registry"
)

// applyDeletes applies groups, the delete entries of consecutive master
// transactions (one group each, in commit order), with the outcome of
// applying them one master transaction at a time. Entries that cannot be
// applied at all (unknown table, malformed key) go to dead_letter first and
// leave their group; then:
//
//  1. all groups in one slave transaction: dequeue (DELETE … RETURNING; an
//     entry already gone is done), one DeleteAll over all groups, the outbox
//     rows of deleted denormalize-model rows, commit, when that provably
//     equals applying the groups in turn (see deleteTx);
//  2. if it does not, or fails because of an entry (PROTECT, RESTRICT, a bad
//     key, a constraint at COMMIT), each group in its own transaction. (Not
//     several groups in one transaction, one DeleteAll each: a deferred
//     constraint an earlier group breaks is checked only at the shared
//     COMMIT, and a later group could clear it by deleting the referencing
//     row, where on its own the earlier group fails.);
//  3. a group that fails so has each of its entries applied alone, in queue
//     order, each in its own transaction (what the seed's cron did with one
//     .delete() per row); an entry that still fails moves to dead_letter with
//     the error as its reason, in a transaction that also dequeues it.
//
// A failure that is not the entries' fault (connection lost, deadlock,
// cancelled ctx) is returned and nothing is dead-lettered: the caller retries.
// finish is called for each entry once it is done.
func (p *Processor) applyDeletes(ctx context.Context, groups [][]*item, finish func(*item)) error {
	// An entry that cannot be applied at all (an unknown table, a malformed
	// key) is dead-lettered at once and leaves its master transaction, whose
	// other entries are still deleted together.
	for gi, g := range groups {
		kept := g[:0:0]
		for _, it := range g {
			if it.err == nil {
				kept = append(kept, it)
				continue
			}
			if err := p.deadLetter(ctx, it, it.err); err != nil {
				return err
			}
			finish(it)
		}
		groups[gi] = kept
	}
	groups = slices.DeleteFunc(groups, func(g []*item) bool { return len(g) == 0 })
	if len(groups) == 0 {
		return nil
	}
	if len(groups) > 1 {
		err := p.deleteTx(ctx, groups, finish)
		if err == nil || !(entryFault(err) || errors.Is(err, errMergeUnsafe)) {
			return err
		}
		p.log.Debug("delete batch not applied as one; applying its transactions one by one", "transactions", len(groups), "err", err)
	}
	for _, g := range groups {
		err := p.deleteTx(ctx, [][]*item{g}, finish)
		if err == nil {
			continue
		}
		if !entryFault(err) {
			return err
		}
		if len(g) > 1 {
			p.log.Info("master transaction failed as a whole; applying its entries one by one", "entries", len(g), "err", err)
		}
		for _, it := range g {
			// An entry alone already failed as its group: not again.
			if len(g) > 1 {
				err = p.deleteTx(ctx, [][]*item{{it}}, finish)
				if err == nil {
					continue
				}
				if !entryFault(err) {
					return err
				}
			}
			if err := p.deadLetter(ctx, it, err); err != nil {
				return err
			}
			finish(it)
		}
	}
	return nil
}

// errMergeUnsafe says that a merged deletion of several master transactions
// cannot be shown to equal applying them one after the other.
var errMergeUnsafe = errors.New("merged deletion may differ from applying the transactions in turn")

// deleteTx applies groups in one transaction (see applyDeletes) and calls
// finish for every entry once it committed.
//
// Several groups are deleted by one DeleteAll over all their entries (merged),
// which collects each level of the graph once for the whole batch instead of
// once per master transaction. That equals one DeleteAll per
// group in turn unless a later group's deletion rescues an earlier one: a
// row that would block an earlier group (a RESTRICT or DO_NOTHING referrer,
// a row a SET_* rule could not update) is deleted by a later group. Such a
// row references a deleted row through a relation whose rule is neither
// CASCADE nor PROTECT (PROTECT blocks whoever deletes), and it is deleted
// itself; mergeSafe rules that out from the tables the deletion touched, and
// otherwise the transaction is rolled back with errMergeUnsafe. A merged
// deletion that fails fails as a whole, and the caller falls back.
func (p *Processor) deleteTx(ctx context.Context, groups [][]*item, finish func(*item)) error {
	var all []*item
	for _, g := range groups {
		all = append(all, g...)
	}
	merged := len(groups) > 1
	tx, err := p.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	present, err := dequeue(ctx, tx, all)
	if err != nil {
		return err
	}
	// A key twice (deleted, inserted and deleted again on the master) is
	// deleted once: DeleteAll takes each key of a target once.
	var (
		targets []cascade.Target
		index   = map[registry.TableName]int{}
	)
	for _, it := range all {
		if !present[it.e.ID] {
			continue
		}
		i, ok := index[it.table.Name]
		if !ok {
			i = len(targets)
			index[it.table.Name] = i
			targets = append(targets, cascade.Target{Table: it.table.Name})
		}
		targets[i].Keys = append(targets[i].Keys, it.key)
	}
	var res *cascade.Result
	deleted := map[registry.TableName]map[string]bool{}
	if len(targets) > 0 {
		if res, err = p.eng.DeleteAll(ctx, tx, targets); err != nil {
			return err
		}
		if res.Rechecked {
			p.log.Debug("a batch foreign key check found a row for PostgreSQL's own checks; the deletion ran again with them", "entries", len(all))
		}
		if merged && !p.mergeSafe(res) {
			return errMergeUnsafe
		}
		if err := p.outbox(ctx, tx, res); err != nil {
			return err
		}
		for t := range index { // the entries' own tables, not every table the cascade reached
			keys := res.DeletedKeys[t]
			m := make(map[string]bool, len(keys))
			for _, k := range keys {
				m[k.ID()] = true
			}
			deleted[t] = m
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit deletes: %w", cascade.TranslateError(err))
	}
	for _, it := range all {
		r := ResultGone
		if present[it.e.ID] && deleted[it.table.Name][it.key.ID()] {
			r = ResultApplied
		}
		p.observeDone(it, r)
		finish(it)
	}
	if res != nil {
		p.observeCascade(res)
	}
	return nil
}

// observeCascade reports the rows res deleted and updated.
func (p *Processor) observeCascade(res *cascade.Result) {
	obs := p.opts.Observer
	if obs == nil {
		return
	}
	for t, n := range res.Deleted {
		obs.CascadeRows(t.String(), "deleted", int(n))
	}
	for t, n := range res.Updated {
		obs.CascadeRows(t.String(), "updated", int(n))
	}
}

// outbox writes a delete event for every deleted row of a denormalize model
// into the slave's own denormalize_queue, in the transaction that deleted
// it: the local publication streams it back to the sidecar, which publishes
// it, and it cannot be lost between the delete and the publish. Its xid is
// OutboxXid, never a master transaction's. Its id is
// the column default, pgoutpost.uuid_v7(), which never collides with the
// master's ids. The key's JSON is built by the server from the table's row
// type, so its values have the column types (as the master's trigger logs
// them).
func (p *Processor) outbox(ctx context.Context, tx pgx.Tx, res *cascade.Result) error {
	for _, name := range registry.SortedNames(res.Deleted) {
		t := p.reg.Table(name)
		if t == nil || t.Kind != registry.KindDenormalize {
			continue
		}
		keys := res.DeletedKeys[name]
		if int64(len(keys)) != res.Deleted[name] {
			return fmt.Errorf("write delete events of %s: the cascade engine reported %d deleted keys for %d deleted rows (make it with queue.NewEngine)", name, len(keys), res.Deleted[name])
		}
		docs := make([]string, len(keys))
		for i, k := range keys {
			docs[i] = keyObject(t.PrimaryKey, k)
		}
		_, err := tx.Exec(ctx, `INSERT INTO pgoutpost.denormalize_queue (table_name, pk, op, xid)
SELECT $1, (SELECT pg_catalog.jsonb_object_agg(c, r.j -> c) FROM unnest($3::text[]) AS c), 'delete', `+OutboxXid+`
FROM (SELECT pg_catalog.to_jsonb(pg_catalog.jsonb_populate_record(NULL::`+name.Sanitize()+`, u.k)) AS j, u.n
      FROM unnest($2::text[]::jsonb[]) WITH ORDINALITY AS u(k, n)) AS r
ORDER BY r.n`, name.String(), docs, t.PrimaryKey)
		if err != nil {
			return fmt.Errorf("write delete events of %s: %w", name, err)
		}
	}
	return nil
}

// keyObject is the key as a JSON object of strings, which
// jsonb_populate_record reads with each column's input function.
func keyObject(cols []string, k cascade.Key) string {
	b := []byte{'{'}
	for i, c := range cols {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, c)
		b = append(b, ':')
		b = appendJSONString(b, k[i])
	}
	return string(append(b, '}'))
}

func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20:
			b = append(b, fmt.Sprintf(`\u%04x`, r)...)
		default:
			b = append(b, string(r)...)
		}
	}
	return append(b, '"')
}

// entryFault reports whether err is the entries' fault, so that applying
// them differently (alone) or dead-lettering them is the answer, rather than
// a failure that a retry fixes once its cause is (cascade.RowFault).
func entryFault(err error) bool {
	return errors.Is(err, errBadEntry) || cascade.RowFault(err)
}

// mergeSafe reports whether no row deleted by res can reference another row
// deleted by res through a relation whose rule is neither CASCADE nor
// PROTECT, judged by the tables with deleted rows (see deleteTx).
func (p *Processor) mergeSafe(res *cascade.Result) bool {
	for name, n := range res.Deleted {
		t := p.reg.Table(name)
		if n == 0 || t == nil {
			continue
		}
		for _, fk := range t.Outgoing {
			if res.Deleted[fk.To] == 0 {
				continue
			}
			if rule := fk.Rule().Rule; rule != registry.Cascade && rule != registry.Protect {
				return false
			}
		}
	}
	return true
}
