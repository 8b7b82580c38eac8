package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/registry"
)

// A large master transaction (more than ProcessorOptions.LargeTxn entries)
// is applied without holding its entries in memory: they are all in the
// slave's queue tables, under the master transaction's id, when the stream
// delivers its end (the subscription applied it), and the processor works
// on them there.
//
//   - Its delete entries are dequeued into a temporary table and deleted as
//     one deletion (cascade.Engine.DeleteListed), in one slave transaction
//     with their delete events (the outbox), exactly as a small transaction's
//     are; when that fails because of an entry (PROTECT, RESTRICT, a bad
//     key), it is rolled back and the entries are applied one by one, a page
//     at a time, the failing ones dead-lettered: the small path's fallback.
//   - Its denormalize entries are then published a page at a time in queue
//     order, each page as a small transaction's entries are.
//
// The rows the sidecar writes itself (the outbox) carry the negative of the
// slave's transaction id (OutboxXid), so that they never pass for a master
// transaction's entries.

// WriteDeleteEvents queues, in the slave's own denormalize queue (the
// outbox the sidecar publishes), a delete event for each row of a
// denormalize model that the DeleteListed deletion res deleted in tx.
func WriteDeleteEvents(ctx context.Context, tx pgx.Tx, reg *registry.Registry, res *cascade.Result) error {
	for _, name := range registry.SortedNames(res.KeyTables) {
		if t := reg.Table(name); t == nil || t.Kind != registry.KindDenormalize {
			continue
		}
		// The key table is new in every deletion: not a statement to
		// prepare and cache.
		if _, err := tx.Exec(ctx, `INSERT INTO pgoutpost.denormalize_queue (table_name, pk, op, xid)
SELECT $1, pg_catalog.to_jsonb(k), 'delete', `+OutboxXid+` FROM `+res.KeyTables[name]+` AS k`, pgx.QueryExecModeSimpleProtocol, name.String()); err != nil {
			return fmt.Errorf("write delete events of %s: %w", name, err)
		}
	}
	return nil
}

// OutboxXid is the SQL for the xid of the queue rows the slave writes itself
// (the processor's delete events, a merge's events): the negative of the
// writing transaction's id, which no master transaction has.
const OutboxXid = "-pg_catalog.txid_current()"

// applyLarge applies the large transaction txn (see above); it returns once
// every entry is durably done.
func (p *Processor) applyLarge(ctx context.Context, txn *Txn) error {
	start := p.now()
	p.log.Info("large master transaction: applying its entries from the queue tables",
		"xid", txn.Xid, "entries", txn.Count)
	deleted, err := p.largeDeletes(ctx, txn)
	if err != nil {
		return err
	}
	published, err := p.largeEvents(ctx, txn)
	if err != nil {
		return err
	}
	elapsed := p.now().Sub(start)
	p.log.Info("large master transaction applied", "xid", txn.Xid, "delete_entries", deleted,
		"denormalize_entries", published, "took", elapsed.Round(time.Millisecond))
	return nil
}

// largeDeletes applies the delete entries of txn and returns how many it
// handled, with a small transaction's fallbacks (applyDeletes): entries that
// cannot be applied at all (unknown table, malformed key) are dead-lettered
// and the rest deleted together; if that fails because of an entry, they are
// applied one by one.
func (p *Processor) largeDeletes(ctx context.Context, txn *Txn) (int64, error) {
	n, err := p.largeDeleteTx(ctx, txn)
	if err == nil || !entryFault(err) {
		return n, err
	}
	var bad int64
	_, perr := p.largePages(ctx, txn, registry.DeleteQueue, func(items []*item) error {
		for _, it := range items {
			if it.err == nil {
				continue
			}
			if err := p.deadLetter(ctx, it, it.err); err != nil {
				return err
			}
			bad++
		}
		return nil
	})
	if perr != nil {
		return 0, perr
	}
	if bad > 0 {
		if n, err = p.largeDeleteTx(ctx, txn); err == nil || !entryFault(err) {
			return n + bad, err
		}
	}
	p.log.Info("large master transaction failed as a whole; applying its delete entries one by one",
		"xid", txn.Xid, "err", err)
	n, err = p.largePages(ctx, txn, registry.DeleteQueue, func(items []*item) error {
		for _, it := range items {
			if err := p.applyDeletes(ctx, [][]*item{{it}}, func(*item) {}); err != nil {
				return err
			}
		}
		return nil
	})
	return n + bad, err
}

// largeDeleteTx applies every delete entry of txn in one transaction.
func (p *Processor) largeDeleteTx(ctx context.Context, txn *Txn) (int64, error) {
	tx, err := p.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	const listed = "pg_temp.pgoutpost_listed"
	if _, err := tx.Exec(ctx, "CREATE TEMPORARY TABLE pgoutpost_listed (table_name text, pk jsonb) ON COMMIT DROP"); err != nil {
		return 0, fmt.Errorf("list the delete entries of master transaction %d: %w", txn.Xid, err)
	}
	tag, err := tx.Exec(ctx, `WITH d AS (DELETE FROM pgoutpost.delete_queue WHERE xid = $1 RETURNING table_name, pk)
INSERT INTO `+listed+` SELECT table_name, pk FROM d`, txn.Xid)
	if err != nil {
		return 0, fmt.Errorf("dequeue the delete entries of master transaction %d: %w", txn.Xid, err)
	}
	n := tag.RowsAffected()
	if n == 0 {
		return 0, nil // done by an earlier run (or it had none)
	}
	// Each entry's table must be a delete model, as for a small
	// transaction's entries (resolve); the one-by-one fallback
	// dead-letters those that are not.
	rows, err := tx.Query(ctx, "SELECT table_name, count(*) FROM "+listed+" GROUP BY table_name ORDER BY table_name")
	if err != nil {
		return 0, fmt.Errorf("read the delete entries of master transaction %d: %w", txn.Xid, err)
	}
	type count struct {
		table *registry.Table
		n     int64
	}
	var counts []count
	for rows.Next() {
		var name string
		var c count
		if err := rows.Scan(&name, &c.n); err != nil {
			rows.Close()
			return 0, err
		}
		tn, perr := registry.ParseTableName(name)
		if perr == nil {
			c.table = p.reg.Table(tn)
		}
		if c.table == nil || !c.table.Kind.IsDeleteModel() {
			rows.Close()
			return 0, fmt.Errorf("%w: table %q of master transaction %d is not a delete model", errBadEntry, name, txn.Xid)
		}
		counts = append(counts, c)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read the delete entries of master transaction %d: %w", txn.Xid, err)
	}
	res, err := p.eng.DeleteListed(ctx, tx, listed)
	if err != nil {
		return 0, err
	}
	if err := WriteDeleteEvents(ctx, tx, p.reg, res); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit deletes: %w", cascade.TranslateError(err))
	}
	if obs := p.opts.Observer; obs != nil {
		var d time.Duration
		if !txn.CommitTime.IsZero() {
			d = p.now().Sub(txn.CommitTime)
		}
		for _, c := range counts {
			gone := int64(res.MissingIn[c.table.Name])
			for range c.n - gone {
				obs.EntryDone(registry.DeleteQueue, c.table.Name.String(), ResultApplied, d)
			}
			for range gone {
				obs.EntryDone(registry.DeleteQueue, c.table.Name.String(), ResultGone, d)
			}
		}
	}
	p.observeCascade(res)
	return n, nil
}

// largeEvents publishes the denormalize entries of txn a page at a time.
func (p *Processor) largeEvents(ctx context.Context, txn *Txn) (int64, error) {
	return p.largePages(ctx, txn, registry.DenormalizeQueue, func(items []*item) error {
		return p.publish(ctx, items, func(*item) {})
	})
}

// largePages calls fn with the entries of txn in queue q, BatchSize at a
// time in queue order, resolved; fn must leave each entry done (dequeued or
// dead-lettered). It returns how many entries it handed over.
func (p *Processor) largePages(ctx context.Context, txn *Txn, q registry.Queue, fn func([]*item) error) (int64, error) {
	qt := q.Table()
	after := "00000000-0000-0000-0000-000000000000"
	var total int64
	next := p.now().Add(10 * time.Second)
	for {
		rows, err := p.db.Query(ctx, `SELECT $4::text, `+entryColumns+` FROM `+qt.Sanitize()+`
WHERE xid = $1 AND id > $2::uuid ORDER BY id LIMIT $3`, txn.Xid, after, p.opts.BatchSize, q)
		if err != nil {
			return total, fmt.Errorf("read the %s entries of master transaction %d: %w", q, txn.Xid, err)
		}
		entries, err := pgx.CollectRows(rows, rowToEntry)
		if err != nil {
			return total, fmt.Errorf("read the %s entries of master transaction %d: %w", q, txn.Xid, err)
		}
		if len(entries) == 0 {
			return total, nil
		}
		items := make([]*item, len(entries))
		for i := range entries {
			items[i] = &item{e: &entries[i], commit: txn.CommitTime}
			if err := p.resolve(ctx, items[i]); err != nil {
				return total, err
			}
		}
		if err := fn(items); err != nil {
			return total, err
		}
		after = entries[len(entries)-1].ID
		total += int64(len(entries))
		if now := p.now(); now.After(next) {
			p.log.Info("large master transaction: progress", "xid", txn.Xid, "queue", q, "entries_done", total, "entries", txn.Count)
			next = now.Add(10 * time.Second)
		}
	}
}
