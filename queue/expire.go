package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/pgoutpost/pgoutpost/registry"
)

// DefaultExpireBatch is how many rows Expire deletes per statement.
const DefaultExpireBatch = 10000

// Expire deletes the rows of queue table (registry.DeleteQueue.Table() or registry.DenormalizeQueue.Table())
// older than olderThan, batch rows per statement and transaction so that a
// large backlog neither holds long locks nor bloats one transaction. A row's
// age is the time in its UUIDv7 id (when it was written), which the primary
// key index serves. olderThan <= 0 keeps everything. It returns how many rows
// it deleted; with dryRun it only counts them.
//
// On the master these deletes never reach the slaves: the queue publication
// publishes inserts only.
func Expire(ctx context.Context, db querier, table registry.TableName, olderThan time.Duration, batch int, dryRun bool) (int64, error) {
	if olderThan <= 0 {
		return 0, nil
	}
	if table != registry.DeleteQueue.Table() && table != registry.DenormalizeQueue.Table() {
		return 0, fmt.Errorf("expire %s: not a queue table", table)
	}
	if batch <= 0 {
		batch = DefaultExpireBatch
	}
	var now time.Time
	if err := db.QueryRow(ctx, "SELECT pg_catalog.now()").Scan(&now); err != nil {
		return 0, fmt.Errorf("read the server's time: %w", err)
	}
	bound := UUIDv7Floor(now.Add(-olderThan))
	if dryRun {
		var n int64
		if err := db.QueryRow(ctx, "SELECT count(*) FROM "+table.Sanitize()+" WHERE id < $1", bound).Scan(&n); err != nil {
			return 0, fmt.Errorf("count expired rows of %s: %w", table, err)
		}
		return n, nil
	}
	var total int64
	for {
		tag, err := db.Exec(ctx, "DELETE FROM "+table.Sanitize()+" WHERE id IN (SELECT id FROM "+table.Sanitize()+
			" WHERE id < $1 ORDER BY id LIMIT $2)", bound, batch)
		if err != nil {
			return total, fmt.Errorf("expire rows of %s: %w", table, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) {
			return total, nil
		}
	}
}
