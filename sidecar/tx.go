package sidecar

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"sync"
	"time"

	"github.com/pgoutpost/pgoutpost/decoder"
)

// Tx is one committed transaction, delivered whole and in commit order. Its
// messages are the pgoutput messages between Begin and Commit (Relation, Type,
// Origin, Insert, Update, Delete, Truncate, transactional logical Message) in
// the non-streamed format, ready for decoder.Decoder.Decode, whether the
// server streamed the transaction or not.
type Tx struct {
	Xid        uint32
	CommitLSN  decoder.LSN // start of the commit record
	EndLSN     decoder.LSN // end of the commit record: what to acknowledge with Stream.Ack
	CommitTime time.Time
	Streamed   bool // the server streamed it in blocks before the commit (protocol v2+)
	// Queued is the number of transactions waiting behind this one when it
	// was handed over: a batching consumer processes its batch at 0.
	Queued int

	buf *txBuffer
}

// Messages iterates over the transaction's messages. A message slice is valid
// until the consumer function that received the transaction returns (for a
// spilled transaction only until the next step): copy what you keep. The error
// is from reading a spill file back.
func (tx *Tx) Messages() iter.Seq2[[]byte, error] {
	if tx.buf == nil {
		return func(func([]byte, error) bool) {}
	}
	return tx.buf.messages()
}

// Spilled reports whether the transaction outgrew the in-memory limit and was
// kept in a temporary file.
func (tx *Tx) Spilled() bool { return tx.buf != nil && tx.buf.file != nil }

func (tx *Tx) release() {
	if tx.buf != nil {
		tx.buf.release()
		tx.buf = nil
	}
}

// txBuffer collects the messages of one transaction: in memory up to limit
// bytes, then in a temporary file, so that a huge transaction costs disk, not
// memory. Each message remembers the (sub)transaction that made it, so that a
// rolled-back subtransaction's changes can be left out at delivery.
type txBuffer struct {
	limit int
	dir   string

	arena   []byte
	ents    []entry
	size    int
	aborted map[uint32]struct{}

	file *os.File
	w    *bufio.Writer
	hdr  [9]byte
}

type entry struct {
	off, n int
	sub    uint32
}

// maxPooledArena bounds the buffers kept for reuse, so one big transaction
// does not pin its memory.
const maxPooledArena = 1 << 20

var bufferPool = sync.Pool{New: func() any { return new(txBuffer) }}

func newTxBuffer(limit int, dir string) *txBuffer {
	b := bufferPool.Get().(*txBuffer)
	b.limit, b.dir = limit, dir
	return b
}

// add appends a message of (sub)transaction sub. A message of a stream block
// has its xid prefix removed (unstream).
func (b *txBuffer) add(data []byte, sub uint32, unstream bool) error {
	n := len(data)
	if unstream {
		n -= 4
	}
	b.size += n
	if b.file == nil {
		off := len(b.arena)
		if unstream {
			var err error
			if b.arena, err = decoder.Unstream(b.arena, data); err != nil {
				return err
			}
		} else {
			b.arena = append(b.arena, data...)
		}
		b.ents = append(b.ents, entry{off: off, n: len(b.arena) - off, sub: sub})
		if len(b.arena) > b.limit {
			return b.spill()
		}
		return nil
	}
	if unstream {
		if _, err := decoder.StreamXid(data); err != nil {
			return err
		}
		return b.write(data[0], data[5:], sub)
	}
	return b.write(data[0], data[1:], sub)
}

// spill moves the in-memory messages to a new temporary file; later messages
// go straight there.
func (b *txBuffer) spill() error {
	f, err := os.CreateTemp(b.dir, "pgoutpost-tx-*.spill")
	if err != nil {
		return fmt.Errorf("create spill file: %w", err)
	}
	b.file = f
	b.w = bufio.NewWriterSize(f, 256<<10)
	for _, e := range b.ents {
		m := b.arena[e.off : e.off+e.n]
		if err := b.write(m[0], m[1:], e.sub); err != nil {
			return err
		}
	}
	b.arena, b.ents = nil, nil
	return nil
}

// write appends one record to the spill file: length (4), subxid (4), type
// byte, body.
func (b *txBuffer) write(typ byte, body []byte, sub uint32) error {
	binary.BigEndian.PutUint32(b.hdr[0:], uint32(len(body)+1))
	binary.BigEndian.PutUint32(b.hdr[4:], sub)
	b.hdr[8] = typ
	if _, err := b.w.Write(b.hdr[:]); err != nil {
		return fmt.Errorf("write spill file: %w", err)
	}
	if _, err := b.w.Write(body); err != nil {
		return fmt.Errorf("write spill file: %w", err)
	}
	return nil
}

// abortSub drops subtransaction sub: its changes are left out at delivery.
func (b *txBuffer) abortSub(sub uint32) {
	if b.aborted == nil {
		b.aborted = make(map[uint32]struct{})
	}
	b.aborted[sub] = struct{}{}
}

// dropped reports whether a message of type typ made by sub is left out.
// Relation and Type messages are always kept: pgoutput sends a relation's
// schema once per streamed transaction, tagged with the subtransaction that
// first touched it, and later changes of other subtransactions rely on it.
func (b *txBuffer) dropped(typ byte, sub uint32) bool {
	if len(b.aborted) == 0 {
		return false
	}
	switch decoder.MessageType(typ) {
	case decoder.TypeRelation, decoder.TypeType, decoder.TypeOrigin:
		return false
	}
	_, ok := b.aborted[sub]
	return ok
}

// finish makes the buffer ready for reading.
func (b *txBuffer) finish() error {
	if b.w != nil {
		if err := b.w.Flush(); err != nil {
			return fmt.Errorf("write spill file: %w", err)
		}
	}
	return nil
}

func (b *txBuffer) messages() iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		if b.file == nil {
			for _, e := range b.ents {
				m := b.arena[e.off : e.off+e.n]
				if b.dropped(m[0], e.sub) {
					continue
				}
				if !yield(m, nil) {
					return
				}
			}
			return
		}
		if _, err := b.file.Seek(0, io.SeekStart); err != nil {
			yield(nil, fmt.Errorf("read spill file: %w", err))
			return
		}
		r := bufio.NewReaderSize(b.file, 256<<10)
		var hdr [8]byte
		var msg []byte
		for {
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				if !errors.Is(err, io.EOF) {
					yield(nil, fmt.Errorf("read spill file: %w", err))
				}
				return
			}
			n := int(binary.BigEndian.Uint32(hdr[0:]))
			sub := binary.BigEndian.Uint32(hdr[4:])
			if cap(msg) < n {
				msg = make([]byte, n)
			}
			msg = msg[:n]
			if _, err := io.ReadFull(r, msg); err != nil {
				yield(nil, fmt.Errorf("read spill file: %w", err))
				return
			}
			if b.dropped(msg[0], sub) {
				continue
			}
			if !yield(msg, nil) {
				return
			}
		}
	}
}

// release removes the spill file and returns the buffer to the pool.
func (b *txBuffer) release() {
	if b.file != nil {
		name := b.file.Name()
		_ = b.file.Close()
		_ = os.Remove(name)
		*b = txBuffer{}
		return
	}
	if cap(b.arena) > maxPooledArena {
		*b = txBuffer{}
		return
	}
	*b = txBuffer{arena: b.arena[:0], ents: b.ents[:0]}
	bufferPool.Put(b)
}
