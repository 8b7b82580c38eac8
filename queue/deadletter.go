package queue

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/catalog"
	"github.com/pgoutpost/pgoutpost/registry"
)

// deadLetter moves the entry of it to dead_letter with reason, in one
// transaction that also removes it from its queue table. An entry that is no
// longer queued was done by an earlier run and is left alone. Failing the same
// entry again (after a retry) counts an attempt on its dead letter.
func (p *Processor) deadLetter(ctx context.Context, it *item, reason error) error {
	qt, ok := queueTable(it.e.Queue)
	if !ok {
		return fmt.Errorf("dead-letter entry %s: unknown queue %q", it.e.ID, it.e.Queue)
	}
	tx, err := p.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	var (
		table any
		pk    any
		op    any
		xid   any
		at    any
	)
	if t := it.tableName(); t != "" {
		table = t
	}
	if len(it.e.PK) > 0 {
		pk = string(it.e.PK)
	}
	if it.e.Op != "" {
		op = it.e.Op
	}
	if it.e.Xid != 0 {
		xid = it.e.Xid
	}
	if !it.e.CreatedAt.IsZero() {
		at = it.e.CreatedAt
	}
	what := it.tableName() + " " + string(it.e.PK)
	if it.e.Queue.Seed() {
		what = fmt.Sprintf("content type %d, object_pk %q", it.e.ContentTypeID, it.e.ObjectPK)
	}
	msg := capReason(fmt.Sprintf("%s entry %s (%s): %v", it.e.Queue, it.e.ID, capReason(what), reason))
	tag, err := tx.Exec(ctx, `WITH d AS (DELETE FROM `+qt.Sanitize()+` AS q WHERE q.id = $1::text::uuid RETURNING pg_catalog.to_jsonb(q) AS entry)
INSERT INTO pgoutpost.dead_letter (queue, entry_id, table_name, pk, op, xid, created_at, entry, error)
SELECT $2, $1::text::uuid, $3, $4::text::jsonb, $5, $6, $7, d.entry, $8 FROM d
ON CONFLICT (queue, entry_id) DO UPDATE SET attempts = dead_letter.attempts + 1, error = excluded.error,
  failed_at = pg_catalog.now(), entry = excluded.entry, table_name = excluded.table_name, pk = excluded.pk`,
		it.e.ID, it.e.Queue, table, pk, op, xid, at, msg)
	if err != nil {
		return fmt.Errorf("dead-letter entry %s: %w", it.e.ID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("dead-letter entry %s: commit: %w", it.e.ID, err)
	}
	if tag.RowsAffected() == 0 {
		p.observeDone(it, ResultGone)
		return nil
	}
	p.log.Warn("queue entry dead-lettered", "queue", it.e.Queue, "id", it.e.ID, "table", table, "reason", capReason(reason.Error()))
	p.observeDone(it, ResultDead)
	return nil
}

// maxReason bounds a dead letter's reason: it may quote the entry's key,
// which a queue row can make as large as it likes. The whole entry is kept in
// dead_letter.entry, so nothing is lost.
const maxReason = 4096

// capReason cuts s to maxReason bytes (on a character boundary), saying
// how much it left out.
func capReason(s string) string {
	if len(s) <= maxReason {
		return s
	}
	cut := maxReason
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d more bytes; the whole entry is in dead_letter.entry)", s[:cut], len(s)-cut)
}

// DeadLetterEntry is one row of dead_letter.
type DeadLetterEntry struct {
	ID        string    `json:"id"`
	Queue     string    `json:"queue"`
	EntryID   string    `json:"entry_id"`
	Table     string    `json:"table,omitempty"`
	PK        string    `json:"pk,omitempty"`
	Op        string    `json:"op,omitempty"`
	Error     string    `json:"error"`
	Attempts  int       `json:"attempts"`
	FailedAt  time.Time `json:"failed_at"`
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// Retry puts dead letters back into their queues: the original row, with
// its original id, is inserted again (the slave's local publication streams
// that insert to the sidecar, which processes it like a new entry) and the
// dead letter is deleted, in one transaction. ids are dead_letter ids or
// entry ids; all retries every dead letter. It returns how many entries it
// put back. An entry that is somehow still queued is not inserted twice.
func Retry(ctx context.Context, db txBeginner, ids []string, all bool) (int64, error) {
	if !all && len(ids) == 0 {
		return 0, nil
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("retry dead letters: begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if err := registry.MarkCascade(ctx, tx); err != nil {
		return 0, err
	}
	if ids == nil {
		ids = []string{}
	}
	var unknown []string
	if !all {
		rows, err := tx.Query(ctx, `SELECT x FROM unnest($1::text[]) AS x
WHERE NOT EXISTS (SELECT FROM pgoutpost.dead_letter d WHERE d.id::text = pg_catalog.lower(x) OR d.entry_id::text = pg_catalog.lower(x))`, ids)
		if err != nil {
			return 0, fmt.Errorf("retry dead letters: %w", err)
		}
		unknown, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return 0, fmt.Errorf("retry dead letters: %w", err)
		}
		if len(unknown) > 0 {
			return 0, fmt.Errorf("retry dead letters: no dead letter has the id %v", unknown)
		}
	}
	var total int64
	for _, q := range registry.Queues {
		qt := q.Table()
		exists, err := tableExists(ctx, tx, qt)
		if err != nil {
			return 0, fmt.Errorf("retry dead letters: %w", err)
		}
		if !exists {
			continue
		}
		tag, err := tx.Exec(ctx, `WITH d AS (
  DELETE FROM pgoutpost.dead_letter WHERE queue = $1
    AND ($2 OR id::text = ANY(SELECT pg_catalog.lower(x) FROM unnest($3::text[]) x) OR entry_id::text = ANY(SELECT pg_catalog.lower(x) FROM unnest($3::text[]) x))
  RETURNING entry)
INSERT INTO `+qt.Sanitize()+` SELECT (pg_catalog.jsonb_populate_record(NULL::`+qt.Sanitize()+`, d.entry)).* FROM d
ON CONFLICT (id) DO NOTHING`, q, all, ids)
		if err != nil {
			return 0, fmt.Errorf("retry dead letters of queue %s: %w", q, err)
		}
		total += tag.RowsAffected()
	}
	// Dead letters of a queue whose table is gone stay (and are reported by
	// Status); everything else was handled above.
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("retry dead letters: commit: %w", err)
	}
	return total, nil
}

// QueueDepth is the state of one queue table (catalog.Depths reads it).
type QueueDepth = catalog.QueueDepth

// Status is what `pgoutpost queue status` reports.
type Status struct {
	Queues      []QueueDepth      `json:"queues"`
	DeadLetters []DeadLetterEntry `json:"dead_letters"` // the latest, newest first
}

// ReadStatus returns the queue depths and the latest dead letters (at most
// latest of them, newest first).
func ReadStatus(ctx context.Context, db querier, seed bool, latest int) (*Status, error) {
	qs, err := catalog.Depths(ctx, db, seed, 0)
	if err != nil {
		return nil, err
	}
	s := &Status{Queues: qs, DeadLetters: []DeadLetterEntry{}}
	if latest <= 0 {
		return s, nil
	}
	rows, err := db.Query(ctx, `SELECT id::text, queue, entry_id::text, coalesce(table_name, ''), coalesce(pk::text, ''),
  coalesce(op, ''), error, attempts, failed_at, created_at
FROM pgoutpost.dead_letter ORDER BY failed_at DESC, id DESC LIMIT $1`, latest)
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d DeadLetterEntry
		var created *time.Time
		if err := rows.Scan(&d.ID, &d.Queue, &d.EntryID, &d.Table, &d.PK, &d.Op, &d.Error, &d.Attempts, &d.FailedAt, &created); err != nil {
			return nil, fmt.Errorf("read dead letters: %w", err)
		}
		if created != nil {
			d.CreatedAt = *created
		}
		s.DeadLetters = append(s.DeadLetters, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	return s, nil
}
