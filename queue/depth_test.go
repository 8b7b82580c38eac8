package queue

import (
	"context"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

// Depths counts a queue up to its limit (the sidecar's probe must not read a
// backlog of millions of rows every few seconds) and finds the oldest entry.
func TestDepthsCountUpToTheLimit(t *testing.T) {
	ctx := context.Background()
	s := newSlave(t)
	for i := 1; i <= 5; i++ {
		del(t, s.pool, 1, "catalog_unit", i)
	}
	pgtest.Exec(t, s.db.DSN, "UPDATE pgoutpost.delete_queue SET created_at = now() - interval '1 hour' WHERE id = (SELECT id FROM pgoutpost.delete_queue ORDER BY id LIMIT 1)")
	for _, c := range []struct{ limit, want int }{{0, 5}, {3, 3}, {10, 5}} {
		ds, err := Depths(ctx, s.pool, false, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 2 || ds[0].Queue != QueueDelete || ds[0].Pending != int64(c.want) {
			t.Errorf("limit %d: depths %+v, want %d delete entries", c.limit, ds, c.want)
			continue
		}
		if ds[0].OldestAge < 59*time.Minute || ds[0].OldestAge > 2*time.Hour {
			t.Errorf("limit %d: oldest age %s, want the first entry's hour", c.limit, ds[0].OldestAge)
		}
	}
}
