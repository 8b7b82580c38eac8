package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sync/errgroup"

	"github.com/pgoutpost/pgoutpost/decoder"
	"github.com/pgoutpost/pgoutpost/internal/backoff"
)

// Stream defaults.
const (
	DefaultStatusInterval    = 10 * time.Second
	DefaultFlushDelay        = time.Second
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultSpillThreshold    = 16 << 20
	DefaultQueueLength       = 64
	DefaultReconnectMin      = 200 * time.Millisecond
	DefaultReconnectMax      = 30 * time.Second
)

// HeartbeatPrefix is the prefix of the logical messages the stream emits so
// that an idle slot keeps moving.
const HeartbeatPrefix = "pgoutpost.heartbeat"

// Consumer receives committed transactions in commit order. It must handle the
// transaction's messages before it returns (they are not kept afterwards) but
// may acknowledge later, with Stream.Ack, once the transaction's effects are
// durable. A transaction delivered and not acknowledged before a reconnect or a
// restart is delivered again: the consumer must be idempotent. An error stops
// the stream.
type Consumer func(ctx context.Context, tx *Tx) error

// StreamConfig configures a Stream. Zero durations and sizes take the defaults.
type StreamConfig struct {
	// DSN is the connection string of the database whose changes are streamed.
	// The replication connection is opened with replication=database added.
	DSN string
	// Slot is the pgoutput replication slot. It must exist: the stream never
	// creates or drops one (Run returns ErrSlotMissing).
	Slot string
	// Publications are passed to pgoutput as publication_names.
	Publications []string
	// Consumer receives the transactions. Required.
	Consumer Consumer

	// StatusInterval is the period of standby status updates.
	StatusInterval time.Duration
	// FlushDelay is how soon after an acknowledgement the new flush position
	// is reported (acknowledgements in between are coalesced).
	FlushDelay time.Duration
	// HeartbeatInterval is the period of the logical message emitted so that
	// an idle slot does not retain WAL; negative disables it.
	HeartbeatInterval time.Duration
	// SpillThreshold is the number of bytes of one transaction kept in memory
	// before the rest goes to a temporary file in SpillDir (os.TempDir when empty).
	SpillThreshold int
	SpillDir       string
	// QueueLength is the number of received transactions waiting for the
	// consumer before the stream stops reading.
	QueueLength int
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// reconnection attempts.
	ReconnectMin, ReconnectMax time.Duration

	Logger *slog.Logger
}

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Validate reports every problem of the configuration.
func (c *StreamConfig) Validate() error {
	var errs []error
	if c.DSN == "" {
		errs = append(errs, errors.New("stream: no DSN"))
	} else if _, err := pgconn.ParseConfig(c.DSN); err != nil {
		errs = append(errs, fmt.Errorf("stream: parse DSN: %w", err))
	}
	if !slotName.MatchString(c.Slot) {
		errs = append(errs, fmt.Errorf("stream: slot name %q: want 1 to 63 of [a-z0-9_]", c.Slot))
	}
	if len(c.Publications) == 0 {
		errs = append(errs, errors.New("stream: no publication"))
	}
	if c.Consumer == nil {
		errs = append(errs, errors.New("stream: no consumer"))
	}
	return errors.Join(errs...)
}

func (c *StreamConfig) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.StatusInterval, DefaultStatusInterval)
	def(&c.FlushDelay, DefaultFlushDelay)
	def(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	def(&c.ReconnectMin, DefaultReconnectMin)
	def(&c.ReconnectMax, DefaultReconnectMax)
	if c.SpillThreshold <= 0 {
		c.SpillThreshold = DefaultSpillThreshold
	}
	if c.QueueLength <= 0 {
		c.QueueLength = DefaultQueueLength
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Stream consumes a pgoutput replication slot and hands whole committed
// transactions to a consumer, advancing the slot only as far as the consumer
// acknowledges (see lsnTracker for the exact rule).
//
// A consumer that works in batches collects transactions, processes the batch
// when it is full or when no transaction is queued behind the current one,
// and then acknowledges the end of the batch's last transaction:
//
//	var batch []work
//	var last decoder.LSN
//	consume := func(ctx context.Context, tx *sidecar.Tx) error {
//		for msg, err := range tx.Messages() {
//			... // decode, append to batch (copy what is kept)
//		}
//		last = tx.EndLSN
//		if len(batch) < max && tx.Queued > 0 {
//			return nil
//		}
//		if err := process(ctx, batch); err != nil {
//			return err
//		}
//		batch = batch[:0]
//		stream.Ack(last)
//		return nil
//	}
type Stream struct {
	cfg StreamConfig
	log *slog.Logger
	txs chan *Tx

	nudge chan struct{} // an acknowledgement moved flush

	mu         sync.Mutex
	lsn        lsnTracker
	conn       *pgconn.PgConn // the live replication connection, for wake-ups
	deadline   time.Time      // the read deadline set on conn
	stopped    bool
	lastStatus time.Time
	sentFlush  decoder.LSN

	transactions, messages, bytes, spilled atomic.Uint64
	reconnects, heartbeats, keepalives     atomic.Uint64
	aborts, subAborts                      atomic.Uint64
}

// NewStream checks cfg and returns a stream; Run starts it.
func NewStream(cfg StreamConfig) (*Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	return &Stream{cfg: cfg, log: cfg.Logger.With("slot", cfg.Slot), nudge: make(chan struct{}, 1)}, nil
}

// Stats are counters and positions of a stream, for logs and metrics.
type Stats struct {
	Write, Apply, Flush decoder.LSN // received, delivered, acknowledged
	SentFlush           decoder.LSN // the flush position last reported to the server
	Transactions        uint64      // delivered to the consumer
	Messages, Bytes     uint64      // received in transactions
	Spilled             uint64      // transactions that went to a spill file
	Reconnects          uint64
	Heartbeats          uint64 // heartbeat messages emitted
	Keepalives          uint64 // keepalives received
	Aborts              uint64 // streamed transactions aborted (dropped)
	SubAborts           uint64 // streamed subtransactions aborted (their changes dropped)
}

// PID returns the server process of the live replication connection, 0
// when there is none.
func (s *Stream) PID() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return 0
	}
	return s.conn.PID()
}

// Stats returns the stream's current counters.
func (s *Stream) Stats() Stats {
	s.mu.Lock()
	st := Stats{Write: s.lsn.write, Apply: s.lsn.apply, Flush: s.lsn.flush, SentFlush: s.sentFlush}
	s.mu.Unlock()
	st.Transactions = s.transactions.Load()
	st.Messages = s.messages.Load()
	st.Bytes = s.bytes.Load()
	st.Spilled = s.spilled.Load()
	st.Reconnects = s.reconnects.Load()
	st.Heartbeats = s.heartbeats.Load()
	st.Keepalives = s.keepalives.Load()
	st.Aborts = s.aborts.Load()
	st.SubAborts = s.subAborts.Load()
	return st
}

// Ack acknowledges that every delivered transaction whose EndLSN is at or
// before end is durably handled, so the slot may move past them. Acks are
// cumulative: acknowledging a transaction acknowledges all earlier ones. An
// LSN before what is already acknowledged is ignored. Safe for concurrent use.
func (s *Stream) Ack(end decoder.LSN) {
	s.mu.Lock()
	moved := s.lsn.ack(end)
	if moved {
		s.wakeLocked(s.lastStatus.Add(s.cfg.FlushDelay))
	}
	s.mu.Unlock()
	if moved {
		select {
		case s.nudge <- struct{}{}:
		default:
		}
	}
}

// wakeLocked brings the receiver's read deadline forward to at, so that it
// reports a new flush position without waiting for the status interval.
func (s *Stream) wakeLocked(at time.Time) {
	if s.conn == nil || s.stopped || !at.Before(s.deadline) {
		return
	}
	s.deadline = at
	_ = s.conn.Conn().SetReadDeadline(at)
}

// setDeadline sets the receiver's read deadline unless the stream is stopping.
func (s *Stream) setDeadline(at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.conn == nil || at.Equal(s.deadline) {
		return
	}
	s.deadline = at
	_ = s.conn.Conn().SetReadDeadline(at)
}

// Run streams until ctx ends or the consumer fails, reconnecting with backoff
// after connection and server errors. It returns ctx's error or the
// consumer's.
func (s *Stream) Run(ctx context.Context) error {
	s.txs = make(chan *Tx, s.cfg.QueueLength)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.consume(ctx) })
	g.Go(func() error { return s.heartbeat(ctx) })
	g.Go(func() error { return s.receive(ctx) })
	err := g.Wait()
	for {
		select {
		case tx := <-s.txs:
			tx.release()
			continue
		default:
		}
		break
	}
	return err
}

func (s *Stream) consume(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case tx := <-s.txs:
			tx.Queued = len(s.txs)
			err := s.cfg.Consumer(ctx, tx)
			end := tx.EndLSN
			tx.release()
			if err != nil {
				return fmt.Errorf("consume transaction %d ending at %s: %w", tx.Xid, end, err)
			}
			s.transactions.Add(1)
			s.mu.Lock()
			s.lsn.delivered(end)
			s.mu.Unlock()
		}
	}
}

// receive runs replication sessions, reconnecting with backoff.
func (s *Stream) receive(ctx context.Context) error {
	retry := backoff.New(s.cfg.ReconnectMin, s.cfg.ReconnectMax)
	for {
		began := time.Now()
		err := s.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrSlotMissing) || errors.Is(err, ErrSlotReplaced) {
			return err
		}
		// A session ends only in an error, so there is no success to reset
		// on: one that outlived the longest wait counts as one.
		if time.Since(began) > s.cfg.ReconnectMax {
			retry.Reset()
		}
		wait := retry.Next()
		s.reconnects.Add(1)
		s.log.Warn("replication stream interrupted", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// ErrSlotMissing is returned by Stream.Run when its slot does not exist, and
// ErrSlotReplaced when the slot's confirmed position is past anything this
// stream reported (it was dropped and created again, or moved by another
// client). The stream never creates, drops or moves a slot: its owner does,
// and drains the queue tables before it streams again, since transactions
// committed while the slot was gone are in no stream.
var (
	ErrSlotMissing  = errors.New("replication slot does not exist")
	ErrSlotReplaced = errors.New("replication slot was replaced or moved by another client")
)

// prepare checks the slot on a normal connection and returns the position it
// confirmed and the server's version number.
func (s *Stream) prepare(ctx context.Context) (confirmed decoder.LSN, version int, err error) {
	conn, err := s.connectSQL(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return 0, 0, fmt.Errorf("read server version: %w", err)
	}
	var plugin, lsn *string
	var sameDB *bool
	err = conn.QueryRow(ctx, `SELECT plugin, database = current_database(), confirmed_flush_lsn::text
		FROM pg_replication_slots WHERE slot_name = $1`, s.cfg.Slot).Scan(&plugin, &sameDB, &lsn)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, fmt.Errorf("slot %q: %w", s.cfg.Slot, ErrSlotMissing)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read replication slot %q: %w", s.cfg.Slot, err)
	}
	if plugin == nil || *plugin != "pgoutput" || sameDB == nil || !*sameDB || lsn == nil {
		return 0, 0, fmt.Errorf("replication slot %q is not a pgoutput slot of this database", s.cfg.Slot)
	}
	l, err := pglogrepl.ParseLSN(*lsn)
	if err != nil {
		return 0, 0, fmt.Errorf("read replication slot %q: %w", s.cfg.Slot, err)
	}
	confirmed = decoder.LSN(l)
	s.mu.Lock()
	sent := s.sentFlush
	s.mu.Unlock()
	// Only this stream's status updates move the slot's confirmed position,
	// so it never passes what the stream reported.
	if sent != 0 && confirmed > sent {
		return 0, 0, fmt.Errorf("slot %q confirmed %s, past the %s this stream reported: %w", s.cfg.Slot, confirmed, sent, ErrSlotReplaced)
	}
	return confirmed, version, nil
}

// connectSQL opens a normal connection to the database (for the slot check
// and the heartbeat), even when the DSN asks for a replication connection.
func (s *Stream) connectSQL(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(s.cfg.DSN)
	if err != nil {
		return nil, err
	}
	delete(cfg.RuntimeParams, "replication")
	return pgx.ConnectConfig(ctx, cfg)
}

// protocol chooses the highest pgoutput protocol the server speaks: 4 with
// parallel streaming from PostgreSQL 16 (its Stream Abort carries the abort
// LSN), 3 (two-phase capable; two_phase is not requested) with streaming on
// 15, 2 with streaming on 14, 1 before.
func protocol(version int) (proto, streaming string) {
	switch {
	case version >= 160000:
		return "4", "parallel"
	case version >= 150000:
		return "3", "on"
	case version >= 140000:
		return "2", "on"
	}
	return "1", ""
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// pluginArgs are the pgoutput options of START_REPLICATION.
func (s *Stream) pluginArgs(version int) []string {
	proto, streaming := protocol(version)
	names := make([]string, len(s.cfg.Publications))
	for i, p := range s.cfg.Publications {
		names[i] = pgx.Identifier{p}.Sanitize()
	}
	args := []string{
		"proto_version " + quoteLiteral(proto),
		"publication_names " + quoteLiteral(strings.Join(names, ",")),
		"messages 'true'",
	}
	if streaming != "" {
		args = append(args, "streaming "+quoteLiteral(streaming))
	}
	return args
}

// session is one replication connection: connect, start at the flushed
// position, receive until an error.
func (s *Stream) session(ctx context.Context) error {
	confirmed, version, err := s.prepare(ctx)
	if err != nil {
		return err
	}
	cfg, err := pgconn.ParseConfig(s.cfg.DSN)
	if err != nil {
		return fmt.Errorf("parse DSN: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "pgoutpost"
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect for replication: %w", err)
	}
	defer conn.Close(context.Background())
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fmt.Errorf("identify system: %w", err)
	}

	s.mu.Lock()
	s.lsn.start(confirmed)
	start := s.lsn.flush
	s.mu.Unlock()

	// PostgreSQL starts a logical slot at its confirmed_flush_lsn when asked
	// for an earlier position (0/0 included). Asking for what this process
	// flushed skips transactions acknowledged but not yet reported.
	args := s.pluginArgs(version)
	if err := pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, pglogrepl.LSN(start),
		pglogrepl.StartReplicationOptions{Mode: pglogrepl.LogicalReplication, PluginArgs: args}); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedObject { // dropped since prepare
			err = fmt.Errorf("%w: %w", ErrSlotMissing, err)
		}
		return fmt.Errorf("start replication on slot %q: %w", s.cfg.Slot, err)
	}
	s.log.Info("replication started", "start", start, "server_wal", decoder.LSN(sys.XLogPos),
		"timeline", sys.Timeline, "options", strings.Join(args, ", "))

	s.mu.Lock()
	s.conn, s.deadline, s.stopped = conn, time.Time{}, false
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.stopped = true
		_ = conn.Conn().SetReadDeadline(time.Now())
		s.mu.Unlock()
	})
	r := &receiver{s: s, conn: conn, streams: map[uint32]*txBuffer{}, abortLSN: version >= 160000}
	defer func() {
		stop()
		s.mu.Lock()
		s.conn = nil
		s.mu.Unlock()
		r.discard()
	}()
	if err := r.sendStatus(false); err != nil {
		return err
	}
	err = r.run(ctx)
	if ctx.Err() != nil {
		// Report the last acknowledgements on the way out, so that they are
		// not delivered again; a failure here only costs redelivery.
		_ = r.sendStatus(false)
	}
	return err
}

// receiver is the state of one replication connection.
type receiver struct {
	s        *Stream
	conn     *pgconn.PgConn
	abortLSN bool // Stream Abort carries LSN and time (protocol v4)

	cur      *txBuffer // the open non-streamed transaction
	begin    decoder.Begin
	streams  map[uint32]*txBuffer // streamed transactions by top-level xid
	inBlock  bool
	blockXid uint32
	status   [34]byte

	msgs, bytes uint64 // received since the last delivery, for Stats

}

func (r *receiver) discard() {
	if r.cur != nil {
		r.cur.release()
		r.cur = nil
	}
	for xid, b := range r.streams {
		b.release()
		delete(r.streams, xid)
	}
}

// sendStatus reports write, flush and apply, all three filled in
// (pglogrepl.SendStandbyStatusUpdate would turn a zero flush into the write
// position, acknowledging what was only received).
func (r *receiver) sendStatus(reply bool) error {
	s := r.s
	s.mu.Lock()
	write, flush, apply := s.lsn.write, s.lsn.flush, s.lsn.apply
	s.mu.Unlock()
	b := r.status[:0]
	b = append(b, pglogrepl.StandbyStatusUpdateByteID)
	b = appendUint64(b, uint64(write))
	b = appendUint64(b, uint64(flush))
	b = appendUint64(b, uint64(apply))
	b = appendUint64(b, uint64(time.Now().UnixMicro()-pgEpochMicros))
	if reply {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	buf, err := (&pgproto3.CopyData{Data: b}).Encode(nil)
	if err != nil {
		return err
	}
	if err := r.conn.Frontend().SendUnbufferedEncodedCopyData(buf); err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	now := time.Now()
	s.mu.Lock()
	s.lastStatus, s.sentFlush = now, flush
	s.mu.Unlock()
	return nil
}

// pgEpochMicros is 2000-01-01 00:00 UTC in Unix microseconds.
const pgEpochMicros = 946684800 * 1000000

func appendUint64(b []byte, v uint64) []byte {
	return append(b, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// statusDue reports whether a status update is due, and when the next one is.
func (r *receiver) statusDue(now time.Time) (bool, time.Time) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.lastStatus.Add(s.cfg.StatusInterval)
	if s.lsn.flush != s.sentFlush {
		next = s.lastStatus.Add(s.cfg.FlushDelay)
	}
	return !now.Before(next), next
}

func (r *receiver) run(ctx context.Context) error {
	// The read deadline is the receiver's only clock: it is set to when the
	// next status update is due, Ack brings it forward, and cancelling ctx
	// sets it to now. Until it passes, the loop skips the bookkeeping.
	var next time.Time
	for {
		if now := time.Now(); !now.Before(next) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Counted messages show in Stats here too, not only at a
			// commit: a long transaction is a sign of life for /readyz.
			r.publishCounts()
			due, at := r.statusDue(now)
			if due {
				if err := r.sendStatus(false); err != nil {
					return err
				}
				_, at = r.statusDue(time.Now())
			}
			r.s.setDeadline(at)
			next = at
		}
		msg, err := r.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				next = time.Time{}
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := r.copyData(ctx, msg.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("server ended the replication stream")
		default:
			return fmt.Errorf("unexpected %T in the replication stream", msg)
		}
	}
}

func (r *receiver) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return errors.New("empty CopyData in the replication stream")
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		r.s.keepalives.Add(1)
		r.s.mu.Lock()
		r.s.lsn.idle(decoder.LSN(k.ServerWALEnd))
		r.s.mu.Unlock()
		if k.ReplyRequested {
			return r.sendStatus(false)
		}
		return nil
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parse XLogData: %w", err)
		}
		if err := r.message(ctx, decoder.LSN(x.WALStart), x.WALData); err != nil {
			return fmt.Errorf("message at %s: %w", decoder.LSN(x.WALStart), err)
		}
		return nil
	}
	return fmt.Errorf("unknown CopyData message %q in the replication stream", data[0])
}

// message handles one pgoutput message that starts at WAL position at.
func (r *receiver) message(ctx context.Context, at decoder.LSN, data []byte) error {
	if len(data) == 0 {
		return errors.New("empty pgoutput message")
	}
	s := r.s
	switch t := decoder.MessageType(data[0]); t {
	case decoder.TypeBegin:
		b, err := decoder.ParseBegin(data)
		if err != nil {
			return err
		}
		if r.cur != nil || r.inBlock {
			return errors.New("begin inside a transaction")
		}
		r.begin, r.cur = b, newTxBuffer(s.cfg.SpillThreshold, s.cfg.SpillDir)
		s.mu.Lock()
		s.lsn.begin()
		s.mu.Unlock()
		return nil

	case decoder.TypeCommit:
		c, err := decoder.ParseCommit(data)
		if err != nil {
			return err
		}
		if r.cur == nil {
			return errors.New("commit outside a transaction")
		}
		buf := r.cur
		r.cur = nil
		return r.deliver(ctx, &Tx{Xid: r.begin.Xid, CommitLSN: c.CommitLSN, EndLSN: c.EndLSN, CommitTime: c.CommitTime, buf: buf})

	case decoder.TypeStreamStart:
		m, err := decoder.ParseStreamStart(data)
		if err != nil {
			return err
		}
		if r.cur != nil || r.inBlock {
			return errors.New("stream start inside a transaction")
		}
		r.inBlock, r.blockXid = true, m.Xid
		if r.streams[m.Xid] == nil {
			r.streams[m.Xid] = newTxBuffer(s.cfg.SpillThreshold, s.cfg.SpillDir)
			s.mu.Lock()
			s.lsn.begin()
			s.mu.Unlock()
		}
		return nil

	case decoder.TypeStreamStop:
		r.inBlock = false
		return nil

	case decoder.TypeStreamCommit:
		m, err := decoder.ParseStreamCommit(data)
		if err != nil {
			return err
		}
		buf := r.streams[m.Xid]
		delete(r.streams, m.Xid)
		if buf == nil { // nothing was streamed (cannot happen with PostgreSQL)
			buf = newTxBuffer(s.cfg.SpillThreshold, s.cfg.SpillDir)
			s.mu.Lock()
			s.lsn.begin()
			s.mu.Unlock()
		}
		return r.deliver(ctx, &Tx{Xid: m.Xid, CommitLSN: m.CommitLSN, EndLSN: m.EndLSN, CommitTime: m.CommitTime, Streamed: true, buf: buf})

	case decoder.TypeStreamAbort:
		m, err := decoder.ParseStreamAbort(data, r.abortLSN)
		if err != nil {
			return err
		}
		buf := r.streams[m.Xid]
		if buf == nil {
			return nil
		}
		if m.SubXid != m.Xid {
			buf.abortSub(m.SubXid)
			s.subAborts.Add(1)
			return nil
		}
		s.aborts.Add(1)
		buf.release()
		delete(r.streams, m.Xid)
		s.mu.Lock()
		s.lsn.abort()
		s.mu.Unlock()
		return nil

	case decoder.TypeBeginPrepare, decoder.TypePrepare, decoder.TypeCommitPrepared,
		decoder.TypeRollbackPrepared, decoder.TypeStreamPrepare:
		return fmt.Errorf("two-phase message %s: two_phase was not requested", t)
	}

	r.msgs++
	r.bytes += uint64(len(data))
	switch {
	case r.inBlock && decoder.MessageType(data[0]) == decoder.TypeOrigin:
		// pgoutput sends the Origin of a transaction that a subscription
		// applied after every Stream Start, without a stream xid. It is left
		// out of streamed transactions: it says nothing the consumer needs
		// and would be repeated per block.
		return nil
	case r.inBlock:
		sub, err := decoder.StreamXid(data)
		if err != nil {
			return err
		}
		return r.streams[r.blockXid].add(data, sub, true)
	case r.cur != nil:
		return r.cur.add(data, 0, false)
	case decoder.MessageType(data[0]) == decoder.TypeMessage:
		// A non-transactional logical message (the heartbeat): everything
		// that committed before it has been sent, so it counts like a keepalive.
		s.mu.Lock()
		s.lsn.idle(at)
		s.mu.Unlock()
		return nil
	}
	return fmt.Errorf("%s outside a transaction", decoder.MessageType(data[0]))
}

// publishCounts adds the messages and bytes received since the last call to
// the Stream's Stats; counting them in the receiver's own fields keeps atomics
// off the per-message path.
func (r *receiver) publishCounts() {
	r.s.messages.Add(r.msgs)
	r.s.bytes.Add(r.bytes)
	r.msgs, r.bytes = 0, 0
}

// deliver queues a committed transaction for the consumer, keeping the status
// updates going while the queue is full.
func (r *receiver) deliver(ctx context.Context, tx *Tx) error {
	s := r.s
	if err := tx.buf.finish(); err != nil {
		tx.release()
		return err
	}
	if tx.Spilled() {
		s.spilled.Add(1)
	}
	r.publishCounts()
	s.mu.Lock()
	s.lsn.commit(tx.EndLSN)
	s.mu.Unlock()
	select {
	case s.txs <- tx:
		return nil
	default:
	}
	for {
		due, next := r.statusDue(time.Now())
		if due {
			if err := r.sendStatus(false); err != nil {
				tx.release()
				return err
			}
			continue
		}
		t := time.NewTimer(time.Until(next))
		select {
		case s.txs <- tx:
			t.Stop()
			return nil
		case <-ctx.Done():
			t.Stop()
			tx.release()
			return ctx.Err()
		case <-s.nudge:
		case <-t.C:
		}
		t.Stop()
	}
}

// heartbeat emits a non-transactional logical message every interval, so
// that the stream sees WAL move and may confirm it while idle.
func (s *Stream) heartbeat(ctx context.Context) error {
	if s.cfg.HeartbeatInterval < 0 {
		return nil
	}
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		var err error
		if conn == nil {
			if conn, err = s.connectSQL(ctx); err != nil {
				conn = nil
				s.log.Warn("heartbeat: connect", "err", err)
				continue
			}
		}
		_, err = conn.Exec(ctx, "SELECT pg_logical_emit_message(false, $1::text, $2::text)",
			HeartbeatPrefix, strconv.FormatInt(time.Now().UnixMilli(), 10))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("heartbeat: emit message", "err", err)
			_ = conn.Close(context.Background())
			conn = nil
			continue
		}
		s.heartbeats.Add(1)
	}
}
