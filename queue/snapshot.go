package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/sink"
)

// txOptBeginner is a connection or a pool that begins transactions with options.
type txOptBeginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// SnapshotOptions say how Snapshot publishes.
type SnapshotOptions struct {
	Env      string // the environment the events are published for
	SystemID string // the master's system identifier, for Nats-Msg-Id
	// Where is an SQL condition on the table's rows (as in WHERE …); empty
	// for every row. It runs in a read-only transaction.
	Where string
	// BatchSize is the rows read and published at a time; DefaultBatchSize
	// when 0.
	BatchSize int
	// Rate is the most events published per second; 0 is as fast as NATS
	// acknowledges them.
	Rate float64
	// Progress, when set, is called after each published batch.
	Progress func(SnapshotProgress)
}

// SnapshotProgress is how far a Snapshot is.
type SnapshotProgress struct {
	Published, Total int64
	Elapsed          time.Duration
}

// snapshotEpoch is the committed_at of a snapshot row whose last change's
// commit time the slave does not know: older than any real change, so that
// a consumer keeping the newest event per row (event.Event.After) never
// prefers it to a live event.
var snapshotEpoch = time.Unix(0, 0).UTC()

// Snapshot publishes the current rows of the denormalize model t on the
// slave db as OpSnapshot events, in primary-key order, from one consistent
// (repeatable read) view: for a consumer that starts from nothing, or whose
// store was lost, to rebuild without touching the master. Each event's
// committed_at is the master's commit time of the row's last change when the
// slave tracks commit timestamps (track_commit_timestamp = on: the apply
// worker records the origin's), and 1970-01-01T00:00:00Z otherwise. Its
// queue_id and Nats-Msg-Id are derived from the table, the key and the row
// version (xmin), so publishing an unchanged row again within the stream's
// duplicate window stores nothing new. It returns the events published.
func Snapshot(ctx context.Context, db txOptBeginner, snk sink.Sink, t *registry.Table, opts SnapshotOptions) (int64, error) {
	if t.Kind != registry.KindDenormalize {
		return 0, fmt.Errorf("snapshot of %s: a %s model; only denormalize models have events", t.Name, t.Kind)
	}
	if len(t.PrimaryKey) == 0 {
		return 0, fmt.Errorf("snapshot of %s: no primary key", t.Name)
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	tx, err := db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, fmt.Errorf("snapshot of %s: %w", t.Name, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var track string
	if err := tx.QueryRow(ctx, "SHOW track_commit_timestamp").Scan(&track); err != nil {
		return 0, fmt.Errorf("snapshot of %s: %w", t.Name, err)
	}
	from := snapshotFrom(t, opts.Where)
	var total int64
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+from).Scan(&total); err != nil {
		return 0, fmt.Errorf("snapshot of %s: count rows: %w", t.Name, err)
	}
	keys := make([]string, len(t.PrimaryKey))
	order := make([]string, len(t.PrimaryKey))
	for i, c := range t.PrimaryKey {
		col := "pgoutpost_row." + pgx.Identifier{c}.Sanitize()
		keys[i] = "'" + strings.ReplaceAll(c, "'", "''") + "', " + col
		order[i] = col
	}
	committed := "NULL::timestamptz"
	if track == "on" {
		committed = "pg_catalog.pg_xact_commit_timestamp(pgoutpost_row.xmin)"
	}
	if _, err := tx.Exec(ctx, "DECLARE pgoutpost_snapshot NO SCROLL CURSOR FOR SELECT pg_catalog.jsonb_build_object("+
		strings.Join(keys, ", ")+")::text, pg_catalog.to_jsonb(pgoutpost_row)::text, pgoutpost_row.xmin::text, "+committed+
		" FROM "+from+" ORDER BY "+strings.Join(order, ", ")); err != nil {
		return 0, fmt.Errorf("snapshot of %s: %w", t.Name, err)
	}

	start := time.Now()
	var published int64
	table := t.Name.String()
	for {
		rows, err := tx.Query(ctx, fmt.Sprintf("FETCH %d FROM pgoutpost_snapshot", opts.BatchSize))
		if err != nil {
			return published, fmt.Errorf("snapshot of %s: %w", t.Name, err)
		}
		var msgs []sink.Message
		for rows.Next() {
			var pk, row, xmin string
			var at *time.Time
			if err := rows.Scan(&pk, &row, &xmin, &at); err != nil {
				rows.Close()
				return published, fmt.Errorf("snapshot of %s: %w", t.Name, err)
			}
			ev := event.Event{Env: opts.Env, Table: table, Op: event.OpSnapshot, PK: json.RawMessage(pk),
				QueueID: snapshotID(table, pk, xmin), CommittedAt: snapshotEpoch, Row: json.RawMessage(row)}
			if at != nil {
				ev.CommittedAt = at.UTC()
			}
			msgs = append(msgs, sink.Message{ID: event.MsgID(opts.SystemID, opts.Env, "snapshot:"+table, ev.QueueID), Event: ev})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return published, fmt.Errorf("snapshot of %s: %w", t.Name, err)
		}
		if len(msgs) == 0 {
			return published, nil
		}
		n, err := snk.Publish(ctx, msgs)
		published += int64(n)
		if err != nil {
			var pe *sink.PublishError
			if errors.As(err, &pe) && pe.Index < len(msgs) {
				return published, fmt.Errorf("snapshot of %s: row %s: %w", t.Name, msgs[pe.Index].Event.PK, err)
			}
			return published, fmt.Errorf("snapshot of %s: %w", t.Name, err)
		}
		if opts.Progress != nil {
			opts.Progress(SnapshotProgress{Published: published, Total: total, Elapsed: time.Since(start)})
		}
		if opts.Rate > 0 {
			due := start.Add(time.Duration(float64(published) / opts.Rate * float64(time.Second)))
			select {
			case <-ctx.Done():
				return published, ctx.Err()
			case <-time.After(time.Until(due)):
			}
		}
	}
}

// SnapshotCount is how many rows of t a Snapshot with the condition where
// would publish now.
func SnapshotCount(ctx context.Context, db txOptBeginner, t *registry.Table, where string) (int64, error) {
	tx, err := db.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, fmt.Errorf("count rows of %s: %w", t.Name, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var n int64
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+snapshotFrom(t, where)).Scan(&n); err != nil {
		return 0, fmt.Errorf("count rows of %s: %w", t.Name, err)
	}
	return n, nil
}

// snapshotFrom is the FROM … WHERE part of a snapshot's statements.
func snapshotFrom(t *registry.Table, where string) string {
	cond := "true"
	if strings.TrimSpace(where) != "" {
		cond = "(" + where + ")"
	}
	return t.Name.Sanitize() + " AS pgoutpost_row WHERE " + cond
}

// snapshotID is the queue_id of a snapshot event: a UUID (version 8, RFC
// 9562's custom layout) from the table, the key and the row version, the same
// for an unchanged row.
func snapshotID(table, pk, xmin string) string {
	h := sha256.Sum256([]byte("pgoutpost snapshot\x00" + table + "\x00" + pk + "\x00" + xmin))
	h[6] = h[6]&0x0f | 0x80
	h[8] = h[8]&0x3f | 0x80
	s := hex.EncodeToString(h[:16])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}
