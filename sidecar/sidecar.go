package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/pgoutpost/pgoutpost/catalog"
	"github.com/pgoutpost/pgoutpost/decoder"
	"github.com/pgoutpost/pgoutpost/internal/backoff"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/replication"
	"github.com/pgoutpost/pgoutpost/sink"
)

// Sidecar defaults.
const (
	DefaultSlot          = "pgoutpost_sidecar"
	DefaultShutdownGrace = 30 * time.Second
	DefaultMaxLag        = time.Minute
	DefaultHeartbeat     = DefaultHeartbeatInterval
	DefaultSpillBytes    = DefaultSpillThreshold
	DefaultBatchSize     = 500
	DefaultLargeTxn      = 50000
	DefaultProbeInterval = 2 * time.Second
	DefaultProbeTimeout  = 5 * time.Second
	// DefaultSweepInterval is the period of the sweep that processes entries
	// the stream never delivered (see Options.SweepInterval).
	DefaultSweepInterval = 30 * time.Second
	// copyPoll is how often the sidecar looks again at a table in its
	// initial copy while entries wait for it.
	copyPoll = time.Second
)

// Processor applies queue entries; *queue.Processor is the implementation.
type Processor interface {
	// Apply processes consecutive master transactions and returns how many
	// leading ones are durably done.
	Apply(ctx context.Context, txns []queue.Txn) (done int, err error)
	// Pending reads up to limit entries already waiting in the queue tables.
	Pending(ctx context.Context, limit int) ([]queue.Txn, error)
}

// Options configure a Sidecar. DB, ReplicationDSN, Processor and Metrics (or
// Registerer) are required; zero durations and sizes take the defaults.
type Options struct {
	// DB is a pool on the slave database, for the start checks, the slot,
	// the probes and the drain.
	DB *pgxpool.Pool
	// ReplicationDSN is the slave database's connection string for the
	// replication stream (the stream adds replication=database).
	ReplicationDSN string
	Processor      Processor
	// Sink is the event sink, for readiness and the NATS metrics (optional).
	Sink sink.Sink

	// Metrics are the sidecar's metrics; when nil they are created on
	// Registerer. Gatherer serves /metrics; when nil, Registerer is used if
	// it is also a Gatherer (a *prometheus.Registry).
	Metrics    *Metrics
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer

	Logger *slog.Logger

	Slot        string // the sidecar's pgoutput slot on the slave
	Publication string // the slave's local publication of its queue tables
	SeedQueues  bool   // also stream django-logical-replication's queue tables

	// Listen is the address of /metrics, /healthz and /readyz; "" serves
	// nothing (Handler still works).
	Listen        string
	ShutdownGrace time.Duration // Run returns within this after ctx ends
	MaxLag        time.Duration // readiness: oldest unfinished master commit
	Heartbeat     time.Duration // the stream's heartbeat; stale after 3×
	SpillBytes    int           // a transaction's bytes kept in memory before spilling to disk
	// BatchSize is the most entries per Apply call. A batch takes what is
	// waiting and is applied at once: batches grow under load, as
	// transactions arrive while the previous batch is applied.
	BatchSize int
	// LargeTxn is the most entries of one transaction decoded into memory;
	// a larger transaction is handed to the processor as a large queue.Txn
	// (its entries stay in the queue tables).
	LargeTxn int

	ProbeInterval time.Duration // period of the slot, queue and readiness probe
	// SweepInterval is the period of the sweep: while the stream holds no
	// unfinished work, an entry still in the queue tables one interval after
	// it was seen there, once the stream has delivered everything committed
	// before that, is one the stream missed; the sweep processes it and
	// counts it (pgoutpost_queue_swept_entries_total, which should stay 0).
	SweepInterval time.Duration
	// Stream tuning, for tests; zero takes the stream's defaults.
	StatusInterval, FlushDelay time.Duration
	ReconnectMin, ReconnectMax time.Duration
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.ShutdownGrace, DefaultShutdownGrace)
	def(&o.MaxLag, DefaultMaxLag)
	def(&o.Heartbeat, DefaultHeartbeat)
	def(&o.ProbeInterval, DefaultProbeInterval)
	def(&o.SweepInterval, DefaultSweepInterval)
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.LargeTxn <= 0 {
		o.LargeTxn = DefaultLargeTxn
	}
	if o.Slot == "" {
		o.Slot = DefaultSlot
	}
	if o.Publication == "" {
		o.Publication = queue.DefaultLocalPublication
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Sidecar is the run loop on a slave: it drains the queue tables, follows
// the slot's stream of new entries, hands them to the processor in batches
// and acknowledges the stream only past finished work. It serves metrics and
// health. Create it with New and start it with Run.
type Sidecar struct {
	opts    Options
	log     *slog.Logger
	metrics *Metrics
	gather  prometheus.Gatherer
	entries *entryDecoder

	stream   atomic.Pointer[Stream]
	running  atomic.Bool // the loop runs (healthz)
	stopping atomic.Bool
	slotLost chan struct{}
	pgDown   chan struct{} // the slave refuses connections: it is shutting down
	addr     chan net.Addr

	// The stream's consumer state (one goroutine).
	lastQueued decoder.LSN

	mu       sync.Mutex
	inflight []time.Time // commit times of transactions received and not acknowledged, oldest first
	probe    probeState
	copying  []string // tables not ready, as waitCopies last saw them
	applyErr error    // the last failure to apply entries, until one succeeds
}

// New checks opts and returns a sidecar.
func New(opts Options) (*Sidecar, error) {
	opts.setDefaults()
	var errs []error
	if opts.DB == nil {
		errs = append(errs, errors.New("sidecar: no database pool"))
	}
	if opts.ReplicationDSN == "" {
		errs = append(errs, errors.New("sidecar: no replication DSN"))
	}
	if opts.Processor == nil {
		errs = append(errs, errors.New("sidecar: no processor"))
	}
	if opts.Metrics == nil && opts.Registerer == nil {
		errs = append(errs, errors.New("sidecar: no metrics and no registerer"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s := &Sidecar{opts: opts, log: opts.Logger, slotLost: make(chan struct{}, 1), pgDown: make(chan struct{}, 1), addr: make(chan net.Addr, 1)}
	s.metrics = opts.Metrics
	if s.metrics == nil {
		m, err := NewMetrics(opts.Registerer)
		if err != nil {
			return nil, err
		}
		s.metrics = m
	}
	s.gather = opts.Gatherer
	if s.gather == nil {
		if g, ok := opts.Registerer.(prometheus.Gatherer); ok {
			s.gather = g
		} else {
			s.gather = prometheus.NewRegistry()
		}
	}
	s.entries = newEntryDecoder(opts.SeedQueues, opts.LargeTxn, s.metrics.countMessage)
	s.entries.log = s.log
	return s, nil
}

// Addr returns the address the HTTP server listens on, once Run has opened
// it, or nil when ctx ends first.
func (s *Sidecar) Addr(ctx context.Context) net.Addr {
	select {
	case a := <-s.addr:
		s.addr <- a
		return a
	case <-ctx.Done():
		return nil
	}
}

// ErrNotInstalled is wrapped by Run's error when the slave lacks the queue
// tables or the local publication.
var ErrNotInstalled = errors.New("pgoutpost queue is not installed on this slave")

// errSlotLost stops the stream when the slot was invalidated.
var errSlotLost = errors.New("replication slot invalidated")

// errShuttingDown stops the stream when the slave is shutting down.
// PostgreSQL's shutdown waits until each walsender's client has confirmed
// everything it was sent; while the sidecar holds work it cannot finish (NATS
// down) it does not confirm, so it lets go of the stream instead and starts
// over from the slot once the slave is back.
var errShuttingDown = errors.New("the slave is shutting down: letting go of the replication stream so that its shutdown can finish")

// Run runs the sidecar until ctx ends (nil) or a failure it cannot recover
// from. Within ShutdownGrace of ctx's end it stops taking new work, finishes
// or abandons the batch in flight (Apply is transactional and idempotent),
// acknowledges what is done, sends a final standby status and returns.
func (s *Sidecar) Run(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	// A hard stop: whatever still runs ShutdownGrace after ctx ends is cancelled.
	hard := context.AfterFunc(ctx, func() {
		s.stopping.Store(true)
		t := time.AfterFunc(s.opts.ShutdownGrace, stop)
		context.AfterFunc(life, func() { t.Stop() })
	})
	defer hard()

	g, gctx := errgroup.WithContext(life)
	if s.opts.Listen != "" {
		ln, err := net.Listen("tcp", s.opts.Listen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", s.opts.Listen, err)
		}
		s.addr <- ln.Addr()
		// Bounded reads, writes and idle connections: a client that opens
		// connections and sends nothing must not hold them.
		srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve http on %s: %w", s.opts.Listen, err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			return nil
		})
		s.log.Info("serving metrics and health", "addr", ln.Addr().String())
	}
	g.Go(func() error { s.probeLoop(gctx); return nil })
	g.Go(func() error {
		defer stop()
		s.running.Store(true)
		defer s.running.Store(false)
		return s.loop(ctx, gctx)
	})
	err := g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		s.log.Info("sidecar stopped")
		return nil
	}
	return err
}

// check makes sure the slave has what `pgoutpost queue install` creates.
func (s *Sidecar) check(ctx context.Context) error {
	settings, err := catalog.ReadSettings(ctx, s.opts.DB)
	if err != nil {
		return fmt.Errorf("check the slave database: %w", err)
	}
	var del, den, pub bool
	err = s.opts.DB.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL,
		EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = $3)`,
		registry.DeleteQueue.Table().Sanitize(), registry.DenormalizeQueue.Table().Sanitize(), s.opts.Publication).Scan(&del, &den, &pub)
	if err != nil {
		return fmt.Errorf("check the slave database: %w", err)
	}
	var missing []error
	if !settings.LogicalWAL() {
		missing = append(missing, fmt.Errorf("wal_level is %s on the slave: the sidecar's slot needs wal_level = logical (set it and restart PostgreSQL)", settings.WalLevel))
	}
	if !del || !den {
		missing = append(missing, fmt.Errorf("%w: the queue tables %s and %s are missing; run `pgoutpost queue install` with the slave's configuration", ErrNotInstalled, registry.DeleteQueue.Table(), registry.DenormalizeQueue.Table()))
	}
	if !pub {
		missing = append(missing, fmt.Errorf("%w: the local publication %s is missing; run `pgoutpost queue install` with the slave's configuration", ErrNotInstalled, s.opts.Publication))
	}
	if err := errors.Join(missing...); err != nil {
		return err
	}
	ix, err := queue.MissingIndexes(ctx, s.opts.DB)
	if err != nil {
		s.log.Warn("cannot check the queue tables' indexes", "err", err)
	} else if len(ix) > 0 {
		s.log.Warn("the queue tables lack indexes that `pgoutpost queue install` creates: a backlog drains slowly until it is run again", "missing", ix)
	}
	return nil
}

// loop prepares the slot, drains the queue tables and follows the stream,
// starting over when the slot is invalidated.
func (s *Sidecar) loop(parent, ctx context.Context) error {
	retry := backoff.New(200*time.Millisecond, 10*time.Second)
	for {
		err := s.prepare(parent, ctx)
		if parent.Err() != nil {
			return nil
		}
		s.setApplyErr(err)
		if err == nil {
			retry.Reset()
			err = s.follow(parent, ctx)
			if err == nil || parent.Err() != nil {
				return nil
			}
		}
		if parent.Err() != nil || ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errShuttingDown) {
			s.log.Warn(err.Error(), "slot", s.opts.Slot)
		}
		if errors.Is(err, errSlotLost) {
			continue // prepare's ensureSlot drops and recreates the slot
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			return perm.err
		}
		wait := retry.Next()
		if errors.Is(err, ErrSlotMissing) || errors.Is(err, ErrSlotReplaced) {
			// Entries committed while the slot was gone are in no stream:
			// prepare creates the slot when missing and drains the queue
			// tables before the stream starts again. Not at once: a slot
			// that the stream keeps missing (its DSN names another server
			// than the pool's) must not spin.
			s.metrics.slotRecoveries.Inc()
			s.log.Warn("replication slot lost while running; draining the queue tables before streaming again", "slot", s.opts.Slot, "err", err, "retry_in", wait)
		} else {
			s.log.Warn("sidecar loop interrupted; retrying", "err", err, "retry_in", wait)
		}
		select {
		case <-parent.Done():
			return nil
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// permanentError is a failure that retrying does not fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }

// graceContext returns a context of ctx that outlives parent by most of the
// grace period, so that work in flight at shutdown can finish.
func (s *Sidecar) graceContext(parent, ctx context.Context) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(parent, func() {
		t := time.AfterFunc(s.opts.ShutdownGrace*3/4, cancel)
		context.AfterFunc(wctx, func() { t.Stop() })
	})
	return wctx, func() { stop(); cancel() }
}

// prepare creates the slot when missing (before the drain, so that every
// entry committed after the drain's last read is in the stream) and drains
// the entries already waiting.
func (s *Sidecar) prepare(parent, ctx context.Context) error {
	if err := s.ensureSlot(ctx); err != nil {
		return err
	}
	ctx, cancel := s.graceContext(parent, ctx)
	defer cancel()
	return s.drain(parent, ctx)
}

// drain applies every entry waiting in the queue tables, oldest transaction
// first.
func (s *Sidecar) drain(parent, ctx context.Context) error {
	n := 0
	start := time.Now()
	logged := start
	for parent.Err() == nil {
		if now := time.Now(); now.Sub(logged) >= drainProgressEvery {
			logged = now
			s.log.Info("draining the queue tables", "applied", n,
				"per_second", int(float64(n)/now.Sub(start).Seconds()))
		}
		txns, err := s.opts.Processor.Pending(ctx, s.opts.BatchSize)
		if err != nil {
			return fmt.Errorf("read pending entries: %w", err)
		}
		if len(txns) == 0 {
			break
		}
		if err := s.waitCopies(ctx); err != nil {
			return err
		}
		done, err := s.opts.Processor.Apply(ctx, txns)
		for _, t := range txns[:done] {
			n += t.Len()
		}
		if err != nil {
			return fmt.Errorf("apply pending entries: %w", err)
		}
	}
	if n > 0 {
		s.log.Info("drained entries waiting in the queue tables", "entries", n, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// waitCopies returns once no table of the slave's subscriptions is in its
// initial copy (or added and not ready yet). Until then no entry is applied:
// a cascade or an event may read any synced table, and one whose rows are
// not all there yet would lose a delete or publish a row that is not the
// master's. Entries wait in order; none is lost.
func (s *Sidecar) waitCopies(ctx context.Context) error {
	for {
		tables, err := replication.CopyingTables(ctx, s.opts.DB)
		if err != nil {
			return err
		}
		names := s.setCopying(tables)
		if len(names) == 0 {
			return nil
		}
		if s.stopping.Load() {
			return errors.New("shutting down while tables are being copied")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(copyPoll):
		}
	}
}

// drainProgressEvery is how often a long drain at start logs its progress.
const drainProgressEvery = 10 * time.Second

// ensureSlot creates the slot when it is missing; an invalidated slot is
// dropped and created again.
func (s *Sidecar) ensureSlot(ctx context.Context) error {
	slot, found, err := catalog.FindSlot(ctx, s.opts.DB, s.opts.Slot)
	switch {
	case err != nil:
		return err
	case found && slot.Plugin != "pgoutput":
		return &permanentError{fmt.Errorf("replication slot %q is not a logical pgoutput slot: drop it or choose another sidecar.slot", s.opts.Slot)}
	case found && slot.WalStatus == "lost":
		s.log.Error("REPLICATION SLOT INVALIDATED: the slave removed WAL the sidecar's slot still needed; "+
			"dropping and recreating the slot and recovering from the queue tables, which hold every entry not yet done",
			"slot", s.opts.Slot)
		if err := s.dropSlot(ctx); err != nil {
			return err
		}
	case found:
		return nil
	}
	var lsn string
	err = s.opts.DB.QueryRow(ctx, "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')", s.opts.Slot).Scan(&lsn)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" {
		return &permanentError{fmt.Errorf("replication slot %q exists in another database of the slave cluster: choose another sidecar.slot", s.opts.Slot)}
	}
	if err != nil {
		return fmt.Errorf("create replication slot %q: %w", s.opts.Slot, err)
	}
	s.log.Info("replication slot created", "slot", s.opts.Slot, "lsn", lsn)
	return nil
}

// dropSlot drops the slot, waiting for (and at last terminating) the
// walsender that still holds it.
func (s *Sidecar) dropSlot(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.opts.DB.Exec(ctx, "SELECT pg_catalog.pg_drop_replication_slot($1)", s.opts.Slot)
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			s.log.Warn("replication slot dropped", "slot", s.opts.Slot)
			return nil
		case errors.As(err, &pgErr) && pgErr.Code == "42704": // undefined_object: gone already
			return nil
		case errors.As(err, &pgErr) && pgErr.Code == "55006" && time.Now().Before(deadline): // object_in_use
		case errors.As(err, &pgErr) && pgErr.Code == "55006":
			_, _ = s.opts.DB.Exec(ctx, `SELECT pg_catalog.pg_terminate_backend(active_pid)
				FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, s.opts.Slot)
			deadline = time.Now().Add(10 * time.Second)
		default:
			return fmt.Errorf("drop replication slot %q: %w", s.opts.Slot, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// item is one received transaction on its way through the batcher.
type item struct {
	end decoder.LSN
	xid uint32 // the slave transaction's id
	txn queue.Txn
}

// follow streams the slot until parent ends (nil) or a failure.
func (s *Sidecar) follow(parent, ctx context.Context) error {
	items := make(chan item, 4*DefaultQueueLength)
	s.lastQueued = 0
	s.mu.Lock()
	s.inflight = s.inflight[:0]
	s.mu.Unlock()
	for _, c := range []chan struct{}{s.slotLost, s.pgDown} { // noticed before this stream: prepare handled it
		select {
		case <-c:
		default:
		}
	}
	st, err := NewStream(StreamConfig{
		DSN:               s.opts.ReplicationDSN,
		Slot:              s.opts.Slot,
		Publications:      []string{s.opts.Publication},
		Consumer:          func(ctx context.Context, tx *Tx) error { return s.consume(ctx, tx, items) },
		StatusInterval:    s.opts.StatusInterval,
		FlushDelay:        s.opts.FlushDelay,
		HeartbeatInterval: s.opts.Heartbeat,
		SpillThreshold:    s.opts.SpillBytes,
		ReconnectMin:      s.opts.ReconnectMin,
		ReconnectMax:      s.opts.ReconnectMax,
		Logger:            s.log,
	})
	if err != nil {
		return &permanentError{err}
	}
	s.stream.Store(st)
	defer s.stream.Store(nil)
	s.setBeat(time.Now())

	sctx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	g, gctx := errgroup.WithContext(sctx)
	g.Go(func() error { return st.Run(gctx) })
	g.Go(func() error {
		err := s.batch(parent, gctx, st, items)
		if err == nil {
			// Stop the stream only now: its last standby status then
			// carries the last acknowledgement.
			stopStream()
		}
		return err
	})
	g.Go(func() error {
		select {
		case <-s.slotLost:
			return errSlotLost
		case <-s.pgDown:
			return errShuttingDown
		case <-gctx.Done():
			return nil
		}
	})
	err = g.Wait()
	if parent.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	if err == nil {
		err = errors.New("stream ended")
	}
	return err
}

// consume is the stream's consumer: it decodes the transaction's queue
// entries and queues them for the batcher.
func (s *Sidecar) consume(ctx context.Context, tx *Tx, items chan<- item) error {
	if tx.EndLSN <= s.lastQueued {
		return nil // sent again after a reconnect: already on its way
	}
	txn, err := s.entries.decode(tx)
	if err != nil {
		return err
	}
	s.lastQueued = tx.EndLSN
	s.mu.Lock()
	s.inflight = append(s.inflight, tx.CommitTime)
	s.mu.Unlock()
	select {
	case items <- item{end: tx.EndLSN, xid: tx.Xid, txn: txn}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// batch collects received transactions into batches, applies them and
// acknowledges the stream up to the last transaction that is fully done. It
// returns nil when parent ends: the batch in flight is finished (or
// abandoned when ShutdownGrace runs out) and acknowledged first.
func (s *Sidecar) batch(parent, ctx context.Context, st *Stream, items <-chan item) error {
	applyCtx, cancelApply := s.graceContext(parent, ctx)
	defer cancelApply()
	retry := backoff.New(100*time.Millisecond, 5*time.Second)
	sweep := time.NewTicker(s.opts.SweepInterval)
	defer sweep.Stop()
	var mark *sweepMark
	var buf []item
	for {
		if len(buf) == 0 {
			select {
			case <-parent.Done():
				return nil
			case <-ctx.Done():
				return ctx.Err()
			case it := <-items:
				buf = append(buf, it)
			case <-sweep.C:
				if len(items) > 0 {
					continue // not idle: the stream is delivering
				}
				var err error
				if mark, err = s.sweep(parent, applyCtx, st, mark); err != nil {
					s.log.Warn("sweep of the queue tables", "err", err)
				}
				continue
			}
		}
		n := 0
		for _, it := range buf {
			n += it.txn.Len()
		}
	collect:
		for n < s.opts.BatchSize {
			select {
			case it := <-items:
				buf = append(buf, it)
				n += it.txn.Len()
			default:
				break collect
			}
		}

		var err error
		buf, err = s.apply(applyCtx, st, buf)
		s.setApplyErr(err)
		if err == nil {
			retry.Reset()
			continue
		}
		if parent.Err() != nil {
			s.log.Warn("batch abandoned at shutdown; its entries stay queued and are applied after the restart",
				"transactions", len(buf), "err", err)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := retry.Next()
		s.log.Warn("apply queue entries; retrying", "err", err, "transactions", len(buf), "retry_in", wait)
		select {
		case <-parent.Done():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// apply hands the batch's transactions that have entries to the processor,
// acknowledges the stream up to the end of the last item whose work is done
// (items without entries count as done once everything before them is) and
// returns the items left.
func (s *Sidecar) apply(ctx context.Context, st *Stream, buf []item) ([]item, error) {
	var txns []queue.Txn
	var at []int // the index in buf of each txn
	var xids []int64
	for i, it := range buf {
		if it.txn.Len() > 0 {
			txns = append(txns, it.txn)
			at = append(at, i)
			xids = append(xids, int64(it.xid))
		}
	}
	done, err := 0, error(nil)
	if len(txns) > 0 {
		err = s.waitVisible(ctx, xids)
	}
	if len(txns) > 0 && err == nil {
		err = s.waitCopies(ctx)
	}
	if len(txns) > 0 && err == nil {
		done, err = s.opts.Processor.Apply(ctx, txns)
		if err == nil && done < len(txns) {
			err = fmt.Errorf("processor finished %d of %d transactions", done, len(txns))
		}
	}
	cut := len(buf)
	if done < len(txns) {
		cut = at[done]
	}
	if cut > 0 {
		st.Ack(buf[cut-1].end)
		s.metrics.flushLSN.Set(float64(buf[cut-1].end))
		s.mu.Lock()
		k := min(cut, len(s.inflight))
		s.inflight = append(s.inflight[:0], s.inflight[k:]...)
		s.mu.Unlock()
	}
	return append(buf[:0], buf[cut:]...), err
}

// setApplyErr records, for /readyz, why entries cannot be applied (nil once
// they can). Such a failure is no entry's fault (cascade.RowFault): nothing
// is dead-lettered, the work is retried until its cause is fixed.
func (s *Sidecar) setApplyErr(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	s.mu.Lock()
	s.applyErr = err
	s.mu.Unlock()
}

// setCopying records the tables not ready for /readyz, logs when the set
// changes, and returns them as text.
func (s *Sidecar) setCopying(tables []replication.SyncState) []string {
	var names []string
	for _, t := range tables {
		names = append(names, fmt.Sprintf("%s (%s, subscription %s)", t.TableName, replication.StateName(t.State), t.Subscription))
	}
	s.mu.Lock()
	changed := strings.Join(names, ", ") != strings.Join(s.copying, ", ")
	s.copying = names
	s.mu.Unlock()
	switch {
	case changed && len(names) > 0:
		s.log.Info("tables being copied: queue entries wait until they are ready", "tables", names)
	case changed:
		s.log.Info("every table of the subscriptions is ready")
	}
	return names
}

// sweepMark is what one sweep saw: the entries in the queue tables and the
// slave's WAL position after it looked.
type sweepMark struct {
	ids map[string]bool
	wal decoder.LSN
}

// sweep runs while the batcher holds no work: it marks the entries in the
// queue tables and, at the next sweep, once the stream has delivered and
// acknowledged everything committed before the mark, processes every entry
// still there. Any such marked entry is one the stream missed (a slot
// recreated, a bug): it is counted and logged. This keeps "the queue tables
// are the to-do list, the stream only the signal" true while running, not
// only at start.
func (s *Sidecar) sweep(parent, ctx context.Context, st *Stream, mark *sweepMark) (*sweepMark, error) {
	if mark != nil && st.Stats().Flush >= mark.wal && s.inflightCount() == 0 {
		ids, err := queue.WaitingIDs(ctx, s.opts.DB, s.opts.SeedQueues, sweepLimit)
		if err != nil {
			return mark, err
		}
		missed := 0
		for _, id := range ids {
			if mark.ids[id] {
				missed++
			}
		}
		if missed > 0 {
			s.metrics.swept.Add(float64(missed))
			s.log.Warn("the sweep found entries the stream never delivered; processing them", "entries", missed)
			if err := s.drain(parent, ctx); err != nil {
				return nil, err
			}
		}
		mark = nil
	}
	if mark != nil {
		return mark, nil // the stream has not caught up with the mark yet
	}
	ids, err := queue.WaitingIDs(ctx, s.opts.DB, s.opts.SeedQueues, sweepLimit)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	m := &sweepMark{ids: make(map[string]bool, len(ids))}
	for _, id := range ids {
		m.ids[id] = true
	}
	var wal string
	if err := s.opts.DB.QueryRow(ctx, "SELECT pg_catalog.pg_current_wal_lsn()::text").Scan(&wal); err != nil {
		return nil, fmt.Errorf("read the slave's WAL position: %w", err)
	}
	l, err := pglogrepl.ParseLSN(wal)
	if err != nil {
		return nil, err
	}
	m.wal = decoder.LSN(l)
	return m, nil
}

// sweepLimit bounds the entries one sweep looks at; the drain it starts
// processes them all.
const sweepLimit = 10000

// inflightCount is the number of transactions received and not acknowledged.
func (s *Sidecar) inflightCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inflight)
}

// waitVisible waits until the slave transactions xids are visible to new
// snapshots. PostgreSQL writes and flushes a commit record before it takes
// the transaction out of the running ones, so the stream can hand over a
// transaction whose rows a query does not see yet for a moment; the
// processor would take its entries for dequeued ("gone") and skip them.
func (s *Sidecar) waitVisible(ctx context.Context, xids []int64) error {
	const q = `WITH s AS (SELECT pg_catalog.pg_current_snapshot() AS snap),
		x AS (SELECT snap, (pg_catalog.pg_snapshot_xmax(snap)::text::int8 >> 32 << 32) | u.xid AS fx FROM s, unnest($1::int8[]) AS u(xid))
		SELECT coalesce(bool_and(pg_catalog.pg_visible_in_snapshot(
			(CASE WHEN fx > pg_catalog.pg_snapshot_xmax(snap)::text::int8 + 1000000 THEN fx - 4294967296 ELSE fx END)::text::xid8, snap)), true)
		FROM x`
	poll := backoff.New(100*time.Microsecond, 10*time.Millisecond)
	for {
		var visible bool
		if err := s.opts.DB.QueryRow(ctx, q, xids).Scan(&visible); err != nil {
			return fmt.Errorf("wait for transactions to be visible: %w", err)
		}
		if visible {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll.Next()):
		}
	}
}

// lag is the age of the oldest transaction received and not finished.
func (s *Sidecar) lag(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.inflight) == 0 || s.inflight[0].IsZero() {
		return 0
	}
	return max(now.Sub(s.inflight[0]), 0)
}
