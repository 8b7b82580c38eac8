package queue

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/catalog"
	"github.com/pgoutpost/pgoutpost/registry"
)

// Pending reads entries already waiting in the slave's queue tables, for the
// drain at start: the oldest first (by id, whose UUIDv7 orders by the time it
// was written), grouped into Txns by Xid, the groups in the order of their
// oldest entry. It takes about limit entries: every entry of a transaction it
// includes, so that a transaction is never split (it may then return more);
// a transaction of more than LargeTxn entries comes as a large Txn, its
// entries left in the tables.
// With SeedQueues, the oldest rows of the seed queue tables follow, each
// entry its own Txn (their rows carry no transaction id). A Txn's CommitTime
// is its oldest CreatedAt. An empty result means the tables are empty.
func (p *Processor) Pending(ctx context.Context, limit int) ([]Txn, error) {
	if limit <= 0 {
		limit = p.opts.BatchSize
	}
	// The transactions of the oldest limit ids of both tables, with their
	// sizes: one larger than LargeTxn stays in the tables (a large Txn).
	rows, err := p.db.Query(ctx, `WITH oldest AS (
  (SELECT id, xid FROM pgoutpost.delete_queue ORDER BY id LIMIT $1)
  UNION ALL
  (SELECT id, xid FROM pgoutpost.denormalize_queue ORDER BY id LIMIT $1)
  ORDER BY id LIMIT $1),
xids AS (SELECT DISTINCT xid FROM oldest)
SELECT xid, count(*), min(id::text COLLATE "C"), min(created_at) FROM (
  SELECT id, xid, created_at FROM pgoutpost.delete_queue WHERE xid IN (SELECT xid FROM xids)
  UNION ALL
  SELECT id, xid, created_at FROM pgoutpost.denormalize_queue WHERE xid IN (SELECT xid FROM xids)) AS e
GROUP BY xid`, limit)
	if err != nil {
		return nil, fmt.Errorf("read pending queue entries: %w", err)
	}
	type group struct {
		txn    Txn
		oldest string
	}
	groups, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*group, error) {
		g := &group{}
		err := r.Scan(&g.txn.Xid, &g.txn.Count, &g.oldest, &g.txn.CommitTime)
		return g, err
	})
	if err != nil {
		return nil, fmt.Errorf("read pending queue entries: %w", err)
	}
	var small []int64
	index := map[int64]*group{}
	for _, g := range groups {
		index[g.txn.Xid] = g
		if g.txn.Count > p.opts.LargeTxn {
			g.txn.Large = true
		} else {
			small = append(small, g.txn.Xid)
		}
	}
	var entries []Entry
	if len(small) > 0 {
		rows, err := p.db.Query(ctx, `SELECT 'delete', `+entryColumns+` FROM pgoutpost.delete_queue WHERE xid = ANY($1)
UNION ALL
SELECT 'denormalize', `+entryColumns+` FROM pgoutpost.denormalize_queue WHERE xid = ANY($1)`, small)
		if err != nil {
			return nil, fmt.Errorf("read pending queue entries: %w", err)
		}
		entries, err = pgx.CollectRows(rows, rowToEntry)
		if err != nil {
			return nil, fmt.Errorf("read pending queue entries: %w", err)
		}
	}
	// In id order: UUIDs sort the same as text (lower-case hex, compared
	// bytewise here, whatever the database's collation) and as uuid.
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].ID < entries[j].ID })
	for _, e := range entries {
		g := index[e.Xid]
		if g == nil { // entries of another transaction with this xid came in between
			continue
		}
		g.txn.Entries = append(g.txn.Entries, e)
	}
	// Groups in the order of their oldest entry; a small one's count is
	// what was read.
	sort.Slice(groups, func(i, j int) bool { return groups[i].oldest < groups[j].oldest })
	var txns []Txn
	for _, g := range groups {
		if !g.txn.Large {
			if len(g.txn.Entries) == 0 {
				continue
			}
			g.txn.Count = len(g.txn.Entries)
			g.txn.CommitTime = g.txn.Entries[0].CreatedAt
		}
		txns = append(txns, g.txn)
	}
	if p.opts.SeedQueues && len(entries) < limit && len(small) == len(groups) {
		for _, q := range []registry.Queue{registry.SeedDeleteQueue, registry.SeedDenormalizeQueue} {
			seed, err := p.pendingSeed(ctx, q, limit-len(entries))
			if err != nil {
				return nil, err
			}
			for _, e := range seed {
				txns = append(txns, Txn{CommitTime: e.CreatedAt, Entries: []Entry{e}})
			}
			entries = append(entries, seed...)
		}
	}
	return txns, nil
}

// entryColumns are the columns of a queue row that rowToEntry reads, after
// the queue's name.
const entryColumns = "id::text, table_name, pk::text, op, xid, created_at"

// rowToEntry reads a row of the queue name and entryColumns.
func rowToEntry(r pgx.CollectableRow) (Entry, error) {
	var e Entry
	var pk string
	err := r.Scan(&e.Queue, &e.ID, &e.Table, &pk, &e.Op, &e.Xid, &e.CreatedAt)
	e.PK = []byte(pk)
	return e, err
}

// parseTimestamptz parses PostgreSQL's text output of a timestamptz (ISO
// DateStyle), e.g. "2026-11-24 16:05:01.123456+00" or "...+05:30".
func parseTimestamptz(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999999Z07", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07:00:00", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("not a timestamp with time zone: %s", strconv.Quote(s))
}

// WaitingIDs returns the ids of up to limit entries of each queue table
// (the seed's too with seed), each as "queue/id", for the sidecar's sweep.
func WaitingIDs(ctx context.Context, db querier, seed bool, limit int) ([]string, error) {
	queues, err := catalog.Queues(ctx, db, seed)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, q := range queues {
		qt := q.Table()
		rows, err := db.Query(ctx, "SELECT $1::text || '/' || id::text FROM "+qt.Sanitize()+" ORDER BY id LIMIT $2", string(q), limit)
		if err != nil {
			return nil, fmt.Errorf("read the entries waiting in %s: %w", qt, err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("read the entries waiting in %s: %w", qt, err)
		}
		out = append(out, ids...)
	}
	return out, nil
}
