package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/sink"
)

// Results of an entry, as Observer.EntryDone reports them.
const (
	ResultApplied   = "applied"   // a delete entry whose row was deleted with its cascade
	ResultGone      = "gone"      // its row (or the queue entry itself) was already gone: nothing to do
	ResultDead      = "dead"      // moved to dead_letter
	ResultPublished = "published" // a denormalize entry published, acked and dequeued
)

// Entry is one queue row as the sidecar hands it over: decoded from the
// stream's Insert into a queue table, or read from the table by Pending.
type Entry struct {
	Queue registry.Queue // the queue the entry is in
	ID    string         // the row's uuid, text form
	// Table is "schema.table" as the trigger logged it; empty for seed
	// entries until the processor resolves their content type.
	Table string
	// PK is the key as a JSON object, e.g. {"id": 5}; empty for seed entries
	// until resolved.
	PK        json.RawMessage
	Op        string // "delete", "insert", "update" (seed: "delete", "upsert")
	Xid       int64  // master transaction id (0 for seed entries)
	CreatedAt time.Time

	// Seed entries only: the row's content_type_id and object_pk.
	ContentTypeID int64
	ObjectPK      string
}

// Txn is the queue entries of one master transaction, in queue (id) order.
// CommitTime is the master's commit time (from the stream's Begin message;
// for entries drained from the table at start, the best known: the oldest
// CreatedAt).
type Txn struct {
	CommitTime time.Time
	Entries    []Entry
	// Large marks a transaction too large to hold in memory (more than
	// ProcessorOptions.LargeTxn entries): Entries is empty, and its Count
	// entries are read from the queue tables by Xid, the master's
	// transaction id, a page at a time as they are processed.
	Large bool
	Xid   int64
	Count int
}

// Len is the number of entries of t.
func (t *Txn) Len() int {
	if t.Large {
		return t.Count
	}
	return len(t.Entries)
}

// ProcessorOptions configure a Processor.
type ProcessorOptions struct {
	Env string // environment name, the events' env
	// SystemID is the master's system identifier
	// (pg_control_system().system_identifier), the first part of every
	// Nats-Msg-Id: every slave of one master then gives an entry the same id.
	SystemID   string
	BatchSize  int          // entries per delete transaction and per publish; DefaultBatchSize when 0
	Logger     *slog.Logger // slog.Default() when nil
	Observer   Observer     // optional metrics hooks
	SeedQueues bool         // also dequeue and read django-logical-replication's queue tables
	// LargeTxn is the most entries of one master transaction held in
	// memory (DefaultLargeTxn when 0). A larger one is a large Txn: its
	// entries stay in the queue tables, its deletes are applied as one
	// spilled deletion (cascade.Engine.DeleteListed) and its events are
	// published a page at a time, so memory does not grow with its size.
	LargeTxn int
}

// DefaultBatchSize is the batch size when ProcessorOptions.BatchSize is 0.
const DefaultBatchSize = 500

// DefaultLargeTxn is ProcessorOptions.LargeTxn when it is 0.
const DefaultLargeTxn = 50000

// Observer receives metrics events; the sidecar implements it with
// Prometheus. Calls come from the goroutine that runs Apply and must not block.
type Observer interface {
	// EntryDone reports an entry's result (ResultApplied, ResultGone,
	// ResultDead, ResultPublished) and the time from its master commit.
	EntryDone(queue registry.Queue, table, result string, commitToDone time.Duration)
	// CascadeRows reports rows deleted or updated by a cascade (action
	// "deleted" or "updated").
	CascadeRows(table, action string, n int)
}

// Processor applies queue entries on a slave: delete entries with the
// cascade engine, denormalize entries through the sink. It is used by one
// goroutine at a time.
type Processor struct {
	db   *pgxpool.Pool
	reg  *registry.Registry
	eng  *cascade.Engine
	snk  sink.Sink
	opts ProcessorOptions
	log  *slog.Logger
	now  func() time.Time

	ctMu         sync.Mutex
	contentTypes map[int64]contentType // seed queues: django_content_type by id
}

// NewEngine returns a cascade engine over reg as the Processor needs it: it
// reports the deleted keys of delete and denormalize models (the outbox of
// delete events and the applied/gone results need them).
func NewEngine(reg *registry.Registry, opts ...cascade.Option) *cascade.Engine {
	return cascade.New(reg, append(opts, cascade.ReportKeys(registry.KindDelete, registry.KindDenormalize))...)
}

// ConfigurePool makes the pool a Processor runs on plan each of its
// statements for its parameters, every time. Its statements run on queue
// tables whose size swings from empty to a large backlog: a generic plan
// chosen while a table was small (a sequential scan) would stay as it grows,
// and each lookup of a batch would read the whole backlog (measured: 37–120
// ms a call instead of 0.05 ms; see BenchmarkLookupAsQueueGrows).
//
// It does so with pgx's QueryExecModeCacheDescribe: a statement is described
// once per connection, then sent each time as the unnamed statement, which
// PostgreSQL plans anew with the values bound. Not with plan_cache_mode =
// force_custom_plan, as it did before: that setting also holds for the
// queries of PostgreSQL's own foreign-key triggers, which then planned every
// check of every deleted row again and cut the default drain (queue.fk_checks:
// database) to a third (BenchmarkApplyDeleteEntries, batch 2,000: 3.5k
// entries/s, against 9.1k in this mode).
func ConfigurePool(cfg *pgxpool.Config) {
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
}

// NewProcessor returns a processor over the slave database db. eng must have
// been made by NewEngine (or with cascade.ReportKeys(registry.KindDelete,
// registry.KindDenormalize)); nil makes one. snk may be nil when no
// denormalize entries are expected (Apply then fails on the first one). db's
// configuration should have been through ConfigurePool.
func NewProcessor(db *pgxpool.Pool, reg *registry.Registry, eng *cascade.Engine, snk sink.Sink, opts ProcessorOptions) *Processor {
	if eng == nil {
		eng = NewEngine(reg)
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.LargeTxn <= 0 {
		opts.LargeTxn = DefaultLargeTxn
	}
	return &Processor{db: db, reg: reg, eng: eng, snk: snk, opts: opts, log: opts.Logger, now: time.Now}
}

// item is an entry during one Apply call.
type item struct {
	e      *Entry
	txn    int       // index of its Txn in the Apply call
	commit time.Time // its Txn's commit time
	// resolved: the model table and the key, or why the entry cannot be
	// applied (a dead letter).
	table *registry.Table
	key   cascade.Key
	err   error
}

func (it *item) tableName() string {
	if it.table != nil {
		return it.table.Name.String()
	}
	return it.e.Table
}

// Apply processes txns (consecutive master transactions in commit order) and
// returns when every entry of every txn is durably done: applied and
// dequeued, dead-lettered, or published, acked and dequeued. On error, done
// says how many leading txns are fully done (the caller acknowledges the
// stream only up to their end) and entries of the others may be done too:
// handing them again is safe, as a dequeued entry is skipped.
//
// Txns are taken in chunks of consecutive transactions of about BatchSize
// entries. For each chunk, the delete entries are applied first, in one
// transaction with one cascade (cascade.Engine.DeleteAll) per master
// transaction, in commit order; then the chunk's denormalize entries are
// published in queue order, so an event of a transaction is published after
// the transaction's own deletes committed (and maybe after later ones of the
// chunk: an event's row is the row as the slave holds it when published, and
// a row deleted by then is absent, its delete event following). See
// applyDeletes for the fallbacks that keep batching from changing outcomes.
func (p *Processor) Apply(ctx context.Context, txns []Txn) (done int, err error) {
	left := make([]int, len(txns)) // entries of each txn not done yet
	for i := range txns {
		left[i] = txns[i].Len()
	}
	leading := func() int {
		n := 0
		for n < len(left) && left[n] == 0 {
			n++
		}
		return n
	}
	finish := func(it *item) { left[it.txn]-- }
	for lo := 0; lo < len(txns); {
		if txns[lo].Large {
			if err := p.applyLarge(ctx, &txns[lo]); err != nil {
				return leading(), err
			}
			left[lo] = 0
			lo++
			continue
		}
		hi, n := lo, 0
		for hi < len(txns) && !txns[hi].Large && (hi == lo || n+len(txns[hi].Entries) <= p.opts.BatchSize) {
			n += len(txns[hi].Entries)
			hi++
		}
		var dels [][]*item
		var dens []*item
		for i := lo; i < hi; i++ {
			var g []*item
			for j := range txns[i].Entries {
				it := &item{e: &txns[i].Entries[j], txn: i, commit: txns[i].CommitTime}
				if err := p.resolve(ctx, it); err != nil {
					return leading(), err
				}
				if it.e.Queue.Deletes() {
					g = append(g, it)
				} else {
					dens = append(dens, it)
				}
			}
			if len(g) > 0 {
				dels = append(dels, g)
			}
		}
		if err := p.applyDeletes(ctx, dels, finish); err != nil {
			return leading(), err
		}
		if err := p.publish(ctx, dens, finish); err != nil {
			return leading(), err
		}
		lo = hi
	}
	return leading(), nil
}

// errBadEntry marks an entry that cannot be applied as it is: wrong queue,
// unknown table, malformed key. It goes to dead_letter.
var errBadEntry = errors.New("bad queue entry")

// resolve finds the entry's table and key. Problems with the entry itself
// are kept in it.err (a dead letter); the error returned is a database
// failure.
func (p *Processor) resolve(ctx context.Context, it *item) error {
	e := it.e
	switch e.Queue {
	case registry.SeedDeleteQueue, registry.SeedDenormalizeQueue:
		if !p.opts.SeedQueues {
			it.err = fmt.Errorf("%w: queue %s: seed queues are not enabled (queue.seed_queues)", errBadEntry, e.Queue)
			return nil
		}
		return p.resolveSeed(ctx, it)
	case registry.DeleteQueue:
		if e.Op != OpDelete {
			it.err = fmt.Errorf("%w: op %q in the delete queue", errBadEntry, e.Op)
			return nil
		}
	case registry.DenormalizeQueue:
		if e.Op != OpInsert && e.Op != OpUpdate && e.Op != OpDelete {
			it.err = fmt.Errorf("%w: op %q in the denormalize queue", errBadEntry, e.Op)
			return nil
		}
	default:
		it.err = fmt.Errorf("%w: unknown queue %q", errBadEntry, e.Queue)
		return nil
	}
	name, err := registry.ParseTableName(e.Table)
	if err != nil {
		it.err = fmt.Errorf("%w: %v", errBadEntry, err)
		return nil
	}
	t := p.reg.Table(name)
	if t == nil {
		it.err = fmt.Errorf("%w: table %s: %w", errBadEntry, name, cascade.ErrUnknownTable)
		return nil
	}
	it.table = t
	if e.Queue == registry.DeleteQueue && !t.Kind.IsDeleteModel() {
		it.err = fmt.Errorf("%w: %s is a %s table, not a delete model (check the models of sidecar.yaml)", errBadEntry, name, t.Kind)
		return nil
	}
	if e.Queue == registry.DenormalizeQueue && t.Kind != registry.KindDenormalize {
		it.err = fmt.Errorf("%w: %s is a %s table, not a denormalize model (check the models of sidecar.yaml)", errBadEntry, name, t.Kind)
		return nil
	}
	k, err := cascade.KeyFromJSON(t, e.PK)
	if err != nil {
		it.err = fmt.Errorf("%w: %w", errBadEntry, err)
		return nil
	}
	it.key = k
	return nil
}

// queueTable is the table holding the entries of queue q.
func queueTable(q registry.Queue) (registry.TableName, bool) {
	if !q.Known() {
		return registry.TableName{}, false
	}
	return q.Table(), true
}

// dequeue deletes the entries of items from their queue tables in tx and
// returns the ids that were there. An id missing was dequeued before (by a
// run that crashed before its acknowledgement): that entry is done.
func dequeue(ctx context.Context, tx pgx.Tx, items []*item) (map[string]bool, error) {
	byQueue := map[registry.TableName][]string{}
	for _, it := range items {
		qt, ok := queueTable(it.e.Queue)
		if !ok {
			continue
		}
		byQueue[qt] = append(byQueue[qt], it.e.ID)
	}
	present := make(map[string]bool, len(items))
	for _, qt := range registry.SortedNames(byQueue) {
		rows, err := tx.Query(ctx, "DELETE FROM "+qt.Sanitize()+" WHERE id = ANY($1::text[]::uuid[]) RETURNING id::text", byQueue[qt])
		if err != nil {
			return nil, fmt.Errorf("dequeue entries of %s: %w", qt, err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("dequeue entries of %s: %w", qt, err)
			}
			present[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("dequeue entries of %s: %w", qt, err)
		}
	}
	return present, nil
}

// begin starts a processing transaction: marked as a cascade so that the
// slave write guard lets it write synced tables.
func (p *Processor) begin(ctx context.Context) (pgx.Tx, error) {
	tx, err := p.db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	if err := registry.MarkCascade(ctx, tx); err != nil {
		_ = tx.Rollback(ctx)
		return nil, err
	}
	return tx, nil
}

func (p *Processor) observeDone(it *item, result string) {
	if p.opts.Observer == nil {
		return
	}
	var d time.Duration
	if !it.commit.IsZero() {
		d = p.now().Sub(it.commit)
	}
	q := it.e.Queue
	switch q {
	case registry.SeedDeleteQueue:
		q = registry.DeleteQueue
	case registry.SeedDenormalizeQueue:
		q = registry.DenormalizeQueue
	}
	// Only a table of the registry names a series: a queue row's table name
	// is data, and each bogus one would add a metric series.
	table := UnknownTable
	if it.table != nil {
		table = it.table.Name.String()
	}
	p.opts.Observer.EntryDone(q, table, result, d)
}

// UnknownTable is the table an Observer is told for an entry whose table is
// not in the registry (dead-lettered).
const UnknownTable = "unknown"
