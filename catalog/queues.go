package catalog

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/pgoutpost/pgoutpost/registry"
)

// Queues returns the queues whose table exists: pgoutpost's two, and
// django-logical-replication's with seed.
func Queues(ctx context.Context, q Querier, seed bool) ([]registry.Queue, error) {
	var out []registry.Queue
	for _, qu := range registry.Queues {
		if qu.Seed() && !seed {
			continue
		}
		var exists bool
		if err := q.QueryRow(ctx, "SELECT pg_catalog.to_regclass($1) IS NOT NULL", qu.Table().Sanitize()).Scan(&exists); err != nil {
			return nil, fmt.Errorf("look up table %s: %w", qu.Table(), err)
		}
		if exists {
			out = append(out, qu)
		}
	}
	return out, nil
}

// QueueDepth is the state of one queue table.
type QueueDepth struct {
	Queue       registry.Queue `json:"queue"`
	Table       string         `json:"table"`
	Pending     int64          `json:"pending"`
	OldestAge   time.Duration  `json:"oldest_age_ns"`
	DeadLetters int64          `json:"dead_letters"`
}

// Depths returns the depth of each queue table that exists (the seed queues
// only with seed), with the age of its oldest entry and its number of dead
// letters. With limit > 0 a depth is counted up to limit only (Pending is
// then at most limit): a probe that runs every few seconds must not read a
// backlog of millions of rows each time.
func Depths(ctx context.Context, q Querier, seed bool, limit int) ([]QueueDepth, error) {
	queues, err := Queues(ctx, q, seed)
	if err != nil {
		return nil, err
	}
	var out []QueueDepth
	for _, qu := range queues {
		d := QueueDepth{Queue: qu, Table: qu.Table().String()}
		var oldest *time.Time
		var now time.Time
		// The oldest entry: pgoutpost's by its id (a UUIDv7, through the
		// primary key's index), the seed's by created_at.
		by := "id"
		if qu.Seed() {
			by = "created_at"
		}
		from := qu.Table().Sanitize()
		if limit > 0 {
			from = "(SELECT FROM " + qu.Table().Sanitize() + " LIMIT " + strconv.Itoa(limit) + ") AS q"
		}
		sql := "SELECT count(*), (SELECT created_at FROM " + qu.Table().Sanitize() + " ORDER BY " + by + " LIMIT 1), pg_catalog.now() FROM " + from
		if err := q.QueryRow(ctx, sql).Scan(&d.Pending, &oldest, &now); err != nil {
			return nil, fmt.Errorf("count entries of %s: %w", qu.Table(), err)
		}
		if oldest != nil {
			d.OldestAge = max(0, now.Sub(*oldest))
		}
		if err := q.QueryRow(ctx, "SELECT count(*) FROM "+registry.DeadLetter.Sanitize()+" WHERE queue = $1", string(qu)).Scan(&d.DeadLetters); err != nil {
			return nil, fmt.Errorf("count dead letters of %s: %w", qu, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// DeadLetters counts every dead letter, those of a queue whose table is gone
// included.
func DeadLetters(ctx context.Context, q Querier) (int64, error) {
	var n int64
	if err := q.QueryRow(ctx, "SELECT count(*) FROM "+registry.DeadLetter.Sanitize()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count dead letters: %w", err)
	}
	return n, nil
}
