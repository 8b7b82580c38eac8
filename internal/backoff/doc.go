// Package backoff is the one exponential backoff of pgoutpost: a wait that
// starts at a minimum, doubles with each further failure and stops at a
// ceiling. Delay computes the n-th wait, Backoff counts the failures for a
// caller that keeps no count of its own. It neither sleeps nor reads a clock,
// and adds no jitter.
package backoff
