package sidecar

import "github.com/pgoutpost/pgoutpost/decoder"

// lsnTracker is the LSN bookkeeping of a stream: what was received (write),
// handed to the consumer (apply) and durably handled (flush). It is pure — no
// I/O, no locking — so that its rules can be property-tested; the stream guards
// it with a mutex.
//
// The rules that keep the slot from passing unhandled work:
//
//   - A transaction is "open" from its Begin (or first streamed chunk) to its
//     Commit (or Stream Commit / Abort, or a reconnect, after which the server
//     sends it again).
//   - At commit its end LSN joins the in-flight queue. It leaves the queue only
//     when the consumer acknowledges an LSN at or past it; acknowledgements are
//     cumulative, so flush is the end LSN of the last transaction of an
//     acknowledged prefix, never an LSN the consumer named beyond it.
//   - A keepalive's ServerWALEnd (or the start LSN of a lone non-transactional
//     message) says the server has decoded — and so sent — every transaction
//     that committed before it. Flush may jump there only when nothing is in
//     flight and nothing is open: then every transaction committed before that
//     position has been delivered and acknowledged, and a transaction still in
//     progress commits after it, so restarting there skips nothing.
//   - flush never decreases and write >= apply >= flush.
type lsnTracker struct {
	write, apply, flush decoder.LSN

	open     int           // transactions being received
	inflight []decoder.LSN // end LSNs committed (delivered or queued) and not acknowledged, ascending
}

// start sets the position a (re)connection starts from: the slot's confirmed
// position or what this process flushed, whichever is further. Open
// transactions are forgotten: the server sends them again from the start.
// In-flight ones stay: the consumer may still acknowledge them.
func (t *lsnTracker) start(pos decoder.LSN) {
	t.open = 0
	t.raiseFlush(pos)
}

// begin notes that a transaction is being received.
func (t *lsnTracker) begin() { t.open++ }

// abort notes that an open transaction ended without a commit (Stream Abort).
func (t *lsnTracker) abort() {
	if t.open > 0 {
		t.open--
	}
}

// commit notes that the open transaction ending at end was received whole and
// queued for the consumer. A transaction sent again after a reconnect is
// already in the queue and is not added twice.
func (t *lsnTracker) commit(end decoder.LSN) {
	t.abort()
	if end > t.write {
		t.write = end
	}
	if end <= t.flush {
		return // sent again after a reconnect, already acknowledged
	}
	if n := len(t.inflight); n == 0 || end > t.inflight[n-1] {
		t.inflight = append(t.inflight, end)
	}
}

// delivered notes that the consumer accepted the transaction ending at end.
func (t *lsnTracker) delivered(end decoder.LSN) {
	if end > t.apply {
		t.apply = end
	}
	if t.apply > t.write {
		t.write = t.apply
	}
}

// ack acknowledges every in-flight transaction that ends at or before lsn and
// reports whether flush moved.
func (t *lsnTracker) ack(lsn decoder.LSN) bool {
	i := 0
	for i < len(t.inflight) && t.inflight[i] <= lsn {
		i++
	}
	if i == 0 {
		return false
	}
	end := t.inflight[i-1]
	t.inflight = append(t.inflight[:0], t.inflight[i:]...)
	return t.raiseFlush(end)
}

// idle is a keepalive's ServerWALEnd or the position of a lone
// non-transactional message. It always counts as received; it becomes the
// flush position only when nothing is open or in flight. It reports whether
// flush moved.
func (t *lsnTracker) idle(pos decoder.LSN) bool {
	if pos > t.write {
		t.write = pos
	}
	if t.open > 0 || len(t.inflight) > 0 {
		return false
	}
	return t.raiseFlush(pos)
}

func (t *lsnTracker) raiseFlush(pos decoder.LSN) bool {
	if pos <= t.flush {
		return false
	}
	t.flush = pos
	if t.apply < pos {
		t.apply = pos
	}
	if t.write < pos {
		t.write = pos
	}
	return true
}
