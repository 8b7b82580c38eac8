package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/sink"
)

// publish publishes the denormalize entries items in order and dequeues
// each once the sink acked it:
//
//   - an entry no longer in its queue table was published and dequeued by an
//     earlier run: skipped (gone);
//   - an entry that cannot be read (unknown table, bad key) is dead-lettered;
//   - the row is read as the slave holds it now (to_jsonb of the row);
//     a row that is gone is published without one (its delete event follows
//     from the cascade's outbox), delete events never carry one;
//   - the sink publishes in order and reports the acked prefix, which is
//     dequeued; an entry it refuses for good (ErrPermanent) is
//     dead-lettered and the rest go on; any other error (ctx, a closed sink)
//     is returned with the acked prefix dequeued. A NATS outage does not end
//     Publish: the sink retries until it is back.
func (p *Processor) publish(ctx context.Context, items []*item, finish func(*item)) error {
	if len(items) == 0 {
		return nil
	}
	if p.snk == nil {
		return errors.New("publish denormalize entries: the processor has no sink")
	}
	if p.opts.Env == "" || p.opts.SystemID == "" {
		return errors.New("publish denormalize entries: the processor has no environment or system identifier")
	}
	present, err := p.stillQueued(ctx, items)
	if err != nil {
		return err
	}
	var live []*item
	for _, it := range items {
		switch {
		case !present[it.e.ID]:
			p.observeDone(it, ResultGone)
			finish(it)
		case it.err != nil:
			if err := p.deadLetter(ctx, it, it.err); err != nil {
				return err
			}
			finish(it)
		default:
			live = append(live, it)
		}
	}
	rows, err := p.readRows(ctx, live, finish)
	if err != nil {
		return err
	}
	var (
		msgs []sink.Message
		its  []*item
	)
	for _, it := range live {
		if it.err != nil { // dead-lettered by readRows
			continue
		}
		op := event.Op(it.e.Op)
		if it.e.Queue == registry.SeedDenormalizeQueue {
			op = event.OpUpsert
		}
		ev := event.Event{Env: p.opts.Env, Table: it.table.Name.String(), Op: op, PK: it.e.PK,
			QueueID: it.e.ID, CommittedAt: it.commit}
		if ev.CommittedAt.IsZero() {
			ev.CommittedAt = it.e.CreatedAt
		}
		if ev.CommittedAt.IsZero() { // the contract requires one; better late than a dead letter
			ev.CommittedAt = p.now()
		}
		if op != event.OpDelete {
			ev.Row = rows[it]
		}
		qt, _ := queueTable(it.e.Queue)
		msgs = append(msgs, sink.Message{ID: event.MsgID(p.opts.SystemID, p.opts.Env, qt.String(), it.e.ID), Event: ev})
		its = append(its, it)
	}
	for len(msgs) > 0 {
		n, err := p.snk.Publish(ctx, msgs)
		if n > 0 {
			if derr := p.dequeueAcked(ctx, its[:n], finish); derr != nil {
				return derr
			}
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, sink.ErrPermanent) || n >= len(msgs) {
			return fmt.Errorf("publish denormalize entries: %w", err)
		}
		if derr := p.deadLetter(ctx, its[n], err); derr != nil {
			return derr
		}
		finish(its[n])
		msgs, its = msgs[n+1:], its[n+1:]
	}
	return nil
}

// stillQueued returns which entries of items are still in their queue tables.
func (p *Processor) stillQueued(ctx context.Context, items []*item) (map[string]bool, error) {
	byQueue := map[registry.TableName][]string{}
	for _, it := range items {
		if qt, ok := queueTable(it.e.Queue); ok {
			byQueue[qt] = append(byQueue[qt], it.e.ID)
		}
	}
	present := make(map[string]bool, len(items))
	for _, qt := range registry.SortedNames(byQueue) {
		rows, err := p.db.Query(ctx, "SELECT id::text FROM "+qt.Sanitize()+" WHERE id = ANY($1::text[]::uuid[])", byQueue[qt])
		if err != nil {
			return nil, fmt.Errorf("look up entries of %s: %w", qt, err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("look up entries of %s: %w", qt, err)
		}
		for _, id := range ids {
			present[id] = true
		}
	}
	return present, nil
}

// readRows reads the current row of each entry that is not a delete, one
// query per table. A table whose query fails for a reason of the entries
// (a key the column type refuses) is read entry by entry and the entries
// that still fail are dead-lettered (it.err set, finish called).
func (p *Processor) readRows(ctx context.Context, items []*item, finish func(*item)) (map[*item]json.RawMessage, error) {
	byTable := map[registry.TableName][]*item{}
	for _, it := range items {
		if it.e.Op == OpDelete {
			continue
		}
		byTable[it.table.Name] = append(byTable[it.table.Name], it)
	}
	out := make(map[*item]json.RawMessage, len(items))
	for _, name := range registry.SortedNames(byTable) {
		its := byTable[name]
		err := p.readTable(ctx, its, out)
		if err == nil {
			continue
		}
		if !entryFault(err) {
			return nil, err
		}
		for _, it := range its {
			err := p.readTable(ctx, []*item{it}, out)
			if err == nil {
				continue
			}
			if !entryFault(err) {
				return nil, err
			}
			it.err = err
			if err := p.deadLetter(ctx, it, err); err != nil {
				return nil, err
			}
			finish(it)
		}
	}
	return out, nil
}

// readTable reads the rows of items (all of one table) into out; a row that
// is gone gets no entry. The key's JSON goes through the row type
// (jsonb_populate_record), so the comparison uses the columns' own types.
func (p *Processor) readTable(ctx context.Context, items []*item, out map[*item]json.RawMessage) error {
	t := items[0].table
	docs := make([]string, len(items))
	for i, it := range items {
		docs[i] = string(it.e.PK)
	}
	conds := make([]string, len(t.PrimaryKey))
	for i, c := range t.PrimaryKey {
		col := pgx.Identifier{c}.Sanitize()
		conds[i] = "pgoutpost_row." + col + " = pgoutpost_key." + col
	}
	rows, err := p.db.Query(ctx, `SELECT u.n, pg_catalog.to_jsonb(pgoutpost_row)
FROM unnest($1::text[]::jsonb[]) WITH ORDINALITY AS u(k, n)
CROSS JOIN LATERAL pg_catalog.jsonb_populate_record(NULL::`+t.Name.Sanitize()+`, u.k) AS pgoutpost_key
JOIN `+t.Name.Sanitize()+` AS pgoutpost_row ON `+strings.Join(conds, " AND "), docs)
	if err != nil {
		return fmt.Errorf("read rows of %s: %w", t.Name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var n int64
		var row []byte
		if err := rows.Scan(&n, &row); err != nil {
			return fmt.Errorf("read rows of %s: %w", t.Name, err)
		}
		out[items[n-1]] = row
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read rows of %s: %w", t.Name, err)
	}
	return nil
}

// dequeueAcked deletes published entries from their queue tables.
func (p *Processor) dequeueAcked(ctx context.Context, items []*item, finish func(*item)) error {
	tx, err := p.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := dequeue(ctx, tx, items); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit dequeue of published entries: %w", err)
	}
	for _, it := range items {
		p.observeDone(it, ResultPublished)
		finish(it)
	}
	return nil
}
