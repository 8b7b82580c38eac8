package queue

import (
	"context"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

func TestUUIDv7Floor(t *testing.T) {
	tm := time.Date(2026, 11, 24, 15, 0, 0, 123_456_789, time.UTC)
	u := UUIDv7Floor(tm)
	if got := UUIDv7Time(u); !got.Equal(tm.Truncate(time.Millisecond)) {
		t.Errorf("UUIDv7Time(UUIDv7Floor(t)) = %v, want %v", got, tm.Truncate(time.Millisecond))
	}
}

func TestExpire(t *testing.T) {
	ctx := context.Background()
	db, pool := masterDB(t, testRegistry())
	// Old rows: ids made as if written 48 and 30 hours ago (the id is the age).
	pgtest.Exec(t, db.DSN, `
INSERT INTO pgoutpost.delete_queue (id, table_name, pk)
  SELECT $1::uuid, 'public.unit', jsonb_build_object('id', 1)`, uuidAt(time.Now().Add(-48*time.Hour)))
	pgtest.Exec(t, db.DSN, `
INSERT INTO pgoutpost.denormalize_queue (id, table_name, pk, op)
  SELECT $1::uuid, 'public.outcome', jsonb_build_object('id', 1), 'update'`, uuidAt(time.Now().Add(-30*time.Hour)))
	// Fresh rows, through the triggers.
	pgtest.Exec(t, db.DSN, "INSERT INTO unit (id) SELECT generate_series(1, 25); DELETE FROM unit; INSERT INTO outcome (id) VALUES (1)")

	for _, tc := range []struct {
		name       string
		after      time.Duration
		dryRun     bool
		wantDel    int64
		wantDenorm int64
		leftDel    int64
	}{
		{"zero keeps everything", 0, false, 0, 0, 26},
		{"dry run counts", 24 * time.Hour, true, 1, 1, 26},
		{"nothing that young", 72 * time.Hour, false, 0, 0, 26},
		{"older rows go", 24 * time.Hour, false, 1, 1, 25},
		{"second run finds nothing", 24 * time.Hour, false, 0, 0, 25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			del, err := Expire(ctx, pool, registry.DeleteQueue.Table(), tc.after, 1, tc.dryRun)
			if err != nil {
				t.Fatal(err)
			}
			den, err := Expire(ctx, pool, registry.DenormalizeQueue.Table(), tc.after, 1, tc.dryRun)
			if err != nil {
				t.Fatal(err)
			}
			if del != tc.wantDel || den != tc.wantDenorm {
				t.Errorf("expired %d delete and %d denormalize rows, want %d and %d", del, den, tc.wantDel, tc.wantDenorm)
			}
			if n := count(t, pool, "SELECT count(*) FROM pgoutpost.delete_queue"); n != tc.leftDel {
				t.Errorf("delete_queue has %d rows left, want %d", n, tc.leftDel)
			}
		})
	}

	t.Run("batches", func(t *testing.T) {
		// Ages have millisecond resolution: let the fresh rows' millisecond pass.
		time.Sleep(10 * time.Millisecond)
		n, err := Expire(ctx, pool, registry.DeleteQueue.Table(), time.Nanosecond, 7, false)
		if err != nil || n != 25 {
			t.Errorf("expired %d (err %v), want 25 in batches of 7", n, err)
		}
	})
	t.Run("not a queue table", func(t *testing.T) {
		if _, err := Expire(ctx, pool, DeadLetter, time.Hour, 0, false); err == nil {
			t.Error("expire of dead_letter succeeded")
		}
	})
}

// uuidAt is a UUIDv7 of time tm, as text.
func uuidAt(tm time.Time) string {
	u := UUIDv7Floor(tm)
	u[6] |= 0x70
	u[8] = 0x80
	u[15] = 1
	const hex = "0123456789abcdef"
	var b []byte
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hex[c>>4], hex[c&15])
	}
	return string(b)
}
