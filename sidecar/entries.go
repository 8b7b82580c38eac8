package sidecar

import (
	"fmt"
	"log/slog"

	"github.com/pgoutpost/pgoutpost/decoder"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

// queueRel is what the decoder knows of one relation: whether it is a queue
// table, for one version of the relation.
type queueRel struct {
	rel   *decoder.Relation
	table registry.TableName
	queue bool
}

// entryDecoder turns a transaction's Inserts into the streamed queue tables
// into queue entries. Other messages (Relation, Type, Origin, changes of
// other tables) only count. It is used by one goroutine, the stream's
// consumer, and keeps the relation cache across transactions and reconnects
// (the server sends a Relation before its first change in every session).
type entryDecoder struct {
	dec   *decoder.Decoder
	seed  bool // also the seed package's queue tables
	large int  // the most entries of a transaction kept in memory
	rels  map[uint32]*queueRel
	cols  map[string]string
	count func(t decoder.MessageType) // counts a decoded message; may be nil
	log   *slog.Logger
}

func newEntryDecoder(seed bool, large int, count func(decoder.MessageType)) *entryDecoder {
	return &entryDecoder{dec: decoder.NewDecoder(), seed: seed, large: large, rels: map[uint32]*queueRel{}, cols: map[string]string{}, count: count,
		log: slog.New(slog.DiscardHandler)}
}

func (d *entryDecoder) relation(rel *decoder.Relation) *queueRel {
	if r := d.rels[rel.ID]; r != nil && r.rel == rel {
		return r
	}
	t := registry.TableName{Schema: rel.Namespace, Name: rel.Name}
	q, ok := registry.QueueOf(t)
	if ok && !d.seed && q.Seed() {
		ok = false
	}
	r := &queueRel{rel: rel, table: t, queue: ok}
	d.rels[rel.ID] = r
	return r
}

// decode returns the queue entries of tx in message order (the order the
// slave's apply worker inserted them, which is the master's queue order). A
// transaction of more than d.large entries that all carry one master xid
// comes back as a large Txn, without its entries: they are in the queue
// tables, and memory does not grow with the transaction. (Entries of several
// xids, or seed entries, which carry none, cannot be read back so: such a
// transaction is decoded whole, and a warning says so.)
func (d *entryDecoder) decode(tx *Tx) (queue.Txn, error) {
	txn := queue.Txn{CommitTime: tx.CommitTime}
	if d.count != nil {
		d.count(decoder.TypeBegin)
	}
	mixed := false
	err := d.each(tx, d.count, func(e queue.Entry) {
		switch {
		case txn.Count == 0:
			txn.Xid = e.Xid
		case e.Xid != txn.Xid:
			mixed = true
		}
		txn.Count++
		if e.Xid == 0 {
			mixed = true
		}
		switch {
		case txn.Large:
		case txn.Count > d.large && !mixed:
			txn.Large, txn.Entries = true, nil
		default:
			txn.Entries = append(txn.Entries, e)
		}
	})
	if err != nil {
		return txn, err
	}
	if d.count != nil {
		d.count(decoder.TypeCommit)
	}
	if txn.Large && mixed {
		d.log.Warn("large transaction has entries of several master transactions; decoding it into memory",
			"xid", tx.Xid, "entries", txn.Count)
		txn.Large = false
		err = d.each(tx, nil, func(e queue.Entry) { txn.Entries = append(txn.Entries, e) })
	}
	if !txn.Large {
		txn.Xid, txn.Count = 0, 0
	}
	return txn, err
}

// each decodes tx's messages, counting them with count (may be nil), and
// calls fn with each queue entry.
func (d *entryDecoder) each(tx *Tx, count func(decoder.MessageType), fn func(queue.Entry)) error {
	for data, err := range tx.Messages() {
		if err != nil {
			return err
		}
		m, err := d.dec.Decode(data)
		if err != nil {
			return fmt.Errorf("decode message of transaction %d: %w", tx.Xid, err)
		}
		if count != nil {
			count(m.Type())
		}
		ins, ok := m.(*decoder.Insert)
		if !ok {
			continue
		}
		r := d.relation(ins.Relation)
		if !r.queue {
			continue
		}
		e, err := d.entry(r, &ins.New)
		if err != nil {
			return fmt.Errorf("read %s entry of transaction %d: %w", r.table, tx.Xid, err)
		}
		fn(e)
	}
	return nil
}

// entry reads an inserted queue row: its columns as text (copied), as
// queue.EntryFromRow takes them.
func (d *entryDecoder) entry(r *queueRel, t *decoder.Tuple) (queue.Entry, error) {
	clear(d.cols)
	for i := range r.rel.Columns {
		if i >= len(t.Columns) || t.Columns[i].IsNull() || t.Columns[i].IsUnchanged() {
			continue
		}
		var b []byte
		if err := d.dec.Scan(r.rel, t, i, &b); err != nil {
			return queue.Entry{}, err
		}
		d.cols[r.rel.Columns[i].Name] = string(b)
	}
	return queue.EntryFromRow(r.table, d.cols)
}
