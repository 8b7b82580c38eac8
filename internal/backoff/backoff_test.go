package backoff_test

import (
	"math"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/internal/backoff"
)

func TestDelay(t *testing.T) {
	const s = time.Second
	for _, c := range []struct {
		name   string
		n      uint64
		lo, hi time.Duration
		want   time.Duration
	}{
		{"first wait is the minimum", 1, s, time.Minute, s},
		{"zero counts as the first", 0, s, time.Minute, s},
		{"doubles", 2, s, time.Minute, 2 * s},
		{"doubles again", 4, s, time.Minute, 8 * s},
		{"last below the ceiling", 6, s, time.Minute, 32 * s},
		{"stops at the ceiling", 7, s, time.Minute, time.Minute},
		{"stays at the ceiling", 40, s, time.Minute, time.Minute},
		{"large n does not overflow", math.MaxUint64, s, time.Minute, time.Minute},
		{"ceiling near the largest duration", 100, s, math.MaxInt64, math.MaxInt64},
		{"doubling past the largest duration", 2, math.MaxInt64/2 + 1, math.MaxInt64, math.MaxInt64},
		{"equal bounds", 5, s, s, s},
		{"ceiling below the minimum wins", 1, time.Minute, s, s},
		{"zero minimum never grows", 10, 0, s, 0},
		{"zero ceiling", 3, s, 0, 0},
		{"negative minimum", 3, -s, s, 0},
		{"negative ceiling", 3, s, -s, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := backoff.Delay(c.n, c.lo, c.hi); got != c.want {
				t.Errorf("Delay(%d, %v, %v) = %v, want %v", c.n, c.lo, c.hi, got, c.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	const ms = time.Millisecond
	b := backoff.New(100*ms, 500*ms)
	for i, want := range []time.Duration{100 * ms, 200 * ms, 400 * ms, 500 * ms, 500 * ms} {
		if got := b.Next(); got != want {
			t.Errorf("wait %d = %v, want %v", i+1, got, want)
		}
	}
	b.Reset()
	if got := b.Next(); got != 100*ms {
		t.Errorf("first wait after Reset = %v, want %v", got, 100*ms)
	}
	if got := b.Next(); got != 200*ms {
		t.Errorf("second wait after Reset = %v, want %v", got, 200*ms)
	}
	var zero backoff.Backoff
	if got := zero.Next(); got != 0 {
		t.Errorf("zero Backoff's wait = %v, want 0", got)
	}
}
