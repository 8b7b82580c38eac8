package backoff

import "time"

// Delay is the n-th wait of a backoff from lo to hi: lo doubled n-1 times,
// at most hi. An n of 0 counts as the first wait. The ceiling wins over the
// minimum (hi below lo gives hi), and a minimum or ceiling of zero or less
// gives no wait at all, so that a misconfigured caller neither overflows nor
// waits a negative time.
func Delay(n uint64, lo, hi time.Duration) time.Duration {
	lo, hi = max(lo, 0), max(hi, 0)
	if lo == 0 || lo >= hi {
		return min(lo, hi)
	}
	d := lo
	for i := uint64(1); i < n; i++ {
		if d > hi-d { // 2*d would pass the ceiling, or overflow
			return hi
		}
		d *= 2
	}
	return d
}

// Backoff hands out the waits of Delay in turn, from the first after a
// Reset. The zero value has no minimum and ceiling, and every wait is zero.
type Backoff struct {
	min, max time.Duration
	n        uint64 // failures since the last Reset
}

// New is a backoff whose first wait is lo and whose waits stop at hi.
func New(lo, hi time.Duration) *Backoff { return &Backoff{min: lo, max: hi} }

// Next counts a failure and returns the wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	b.n++
	return Delay(b.n, b.min, b.max)
}

// Reset starts over after a success: the next wait is the minimum again.
func (b *Backoff) Reset() { b.n = 0 }
