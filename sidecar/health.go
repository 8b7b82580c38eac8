package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgoutpost/pgoutpost/catalog"
	"github.com/pgoutpost/pgoutpost/replication"
	"github.com/pgoutpost/pgoutpost/sink"
)

// probeState is what the last probe found, for /readyz.
type probeState struct {
	at         time.Time
	pgErr      error         // the probe's query failed
	slotFound  bool          // the slot exists
	slotActive bool          // a walsender streams it
	walStatus  string        // pg_replication_slots.wal_status
	holder     uint32        // the slot's active_pid
	holderApp  string        // its application_name and client address, for /readyz
	queueLag   time.Duration // age of the oldest row in the queue tables

	beat     time.Time // when the stream last showed life
	beatMark uint64    // the stream's message and keepalive count then
	natsUp   bool      // connected at the last probe (reconnect counting)
}

// statser is the optional Stats of a sink (sink.NATS).
type statser interface{ Stats() sink.Stats }

// maxCountedDepth bounds the count of pgoutpost_queue_pending_entries.
const maxCountedDepth = 1000000

// shuttingDown reports an error of a server that is shutting down:
// cannot_connect_now for a new connection, admin_shutdown for a session it ends.
func shuttingDown(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "57P03" && strings.Contains(pgErr.Message, "shutting down") || pgErr.Code == "57P01")
}

// streamPID is the server process of the sidecar's replication connection,
// 0 when it has none.
func (s *Sidecar) streamPID() uint32 {
	if st := s.stream.Load(); st != nil {
		return st.PID()
	}
	return 0
}

func (s *Sidecar) setBeat(t time.Time) {
	s.mu.Lock()
	s.probe.beat = t
	s.mu.Unlock()
}

// probeLoop refreshes the gauges and the readiness state every
// ProbeInterval until ctx ends.
func (s *Sidecar) probeLoop(ctx context.Context) {
	s.mu.Lock()
	s.probe.natsUp = true
	s.mu.Unlock()
	t := time.NewTicker(s.opts.ProbeInterval)
	defer t.Stop()
	var reconnects uint64
	for {
		s.probeOnce(ctx, &reconnects)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Sidecar) probeOnce(ctx context.Context, reconnects *uint64) {
	now := time.Now()
	m := s.metrics

	// The stream: position, reconnects, signs of life.
	if st := s.stream.Load(); st != nil {
		stats := st.Stats()
		m.flushLSN.Set(float64(stats.Flush))
		if stats.Reconnects > *reconnects {
			m.reconnects.WithLabelValues("postgres").Add(float64(stats.Reconnects - *reconnects))
		}
		*reconnects = stats.Reconnects
		mark := stats.Messages + stats.Keepalives + stats.Transactions
		s.mu.Lock()
		if mark != s.probe.beatMark {
			s.probe.beat, s.probe.beatMark = now, mark
		}
		s.mu.Unlock()
	}
	m.lag.Set(s.lag(now).Seconds())

	// NATS.
	if sn, ok := s.opts.Sink.(statser); ok {
		ns := sn.Stats()
		m.natsUp.Set(boolGauge(ns.Connected))
		m.natsAcks.Set(float64(ns.InFlight))
		s.mu.Lock()
		if ns.Connected && !s.probe.natsUp {
			m.reconnects.WithLabelValues("nats").Inc()
		}
		s.probe.natsUp = ns.Connected
		s.mu.Unlock()
	}

	// The database: slot and queues.
	qctx, cancel := context.WithTimeout(ctx, min(DefaultProbeTimeout, max(s.opts.ProbeInterval, time.Second)))
	defer cancel()
	var p probeState
	p.pgErr = s.probeDB(qctx, &p)
	if p.pgErr != nil && ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	s.probe.at, s.probe.pgErr = now, p.pgErr
	if p.pgErr == nil {
		s.probe.slotFound, s.probe.slotActive, s.probe.walStatus = p.slotFound, p.slotActive, p.walStatus
		s.probe.holder, s.probe.holderApp = p.holder, p.holderApp
		s.probe.queueLag = p.queueLag
	}
	s.mu.Unlock()
	if shuttingDown(p.pgErr) {
		select {
		case s.pgDown <- struct{}{}:
		default:
		}
	}
	if p.pgErr == nil && p.walStatus == "lost" {
		select {
		case s.slotLost <- struct{}{}:
		default:
		}
	}
	m.ready.Set(boolGauge(len(s.notReady(now)) == 0))
}

// probeDB reads the slot, the queue depths and dead letters (the seed
// queues' too with SeedQueues) and the tables being copied, and sets their
// gauges.
func (s *Sidecar) probeDB(ctx context.Context, p *probeState) error {
	m := s.metrics
	slot, found, err := catalog.FindSlot(ctx, s.opts.DB, s.opts.Slot)
	if err != nil {
		return err
	}
	if found {
		p.slotFound, p.slotActive, p.walStatus = true, slot.Active, slot.WalStatus
		p.holder, p.holderApp = slot.ActivePID, slot.Holder
		m.setWALStatus(p.walStatus)
		if slot.SafeWalSize != nil {
			m.safeWAL.Set(float64(*slot.SafeWalSize))
		} else {
			m.safeWAL.Set(-1)
		}
		if slot.LagBytes != nil {
			m.slotLag.Set(float64(*slot.LagBytes))
		}
	}

	// Counted up to a bound: the probe runs every ProbeInterval, and a
	// backlog of millions of rows (a large transaction) must not be read
	// whole each time.
	depths, err := catalog.Depths(ctx, s.opts.DB, s.opts.SeedQueues, maxCountedDepth)
	if err != nil {
		return err
	}
	for _, d := range depths {
		m.pending.WithLabelValues(string(d.Queue)).Set(float64(d.Pending))
		m.dead.WithLabelValues(string(d.Queue)).Set(float64(d.DeadLetters))
		p.queueLag = max(p.queueLag, d.OldestAge)
	}
	m.queueLag.Set(p.queueLag.Seconds())
	tables, err := replication.CopyingTables(ctx, s.opts.DB)
	if err != nil {
		return err
	}
	s.setCopying(tables)
	return nil
}

// notReady lists why the sidecar is not ready, one reason each; none when ready.
func (s *Sidecar) notReady(now time.Time) []string {
	var why []string
	if !s.running.Load() {
		why = append(why, "the run loop is not running")
	}
	if s.stopping.Load() {
		why = append(why, "shutting down")
	}
	s.mu.Lock()
	p := s.probe
	s.mu.Unlock()
	switch {
	case p.at.IsZero():
		why = append(why, "postgresql: not probed yet")
	case p.pgErr != nil:
		why = append(why, "postgresql: "+p.pgErr.Error())
	case !p.slotFound:
		why = append(why, fmt.Sprintf("replication slot %s does not exist yet", s.opts.Slot))
	case p.walStatus == "lost":
		why = append(why, fmt.Sprintf("replication slot %s was invalidated (wal_status lost): it is being recreated", s.opts.Slot))
	case !p.slotActive:
		why = append(why, fmt.Sprintf("replication slot %s is not active: the stream is not connected", s.opts.Slot))
	case p.holder != 0 && s.streamPID() != p.holder:
		why = append(why, fmt.Sprintf("replication slot %s is held by another connection (server PID %d, %s): another sidecar on the same slot? This one streams only once it lets go",
			s.opts.Slot, p.holder, p.holderApp))
	}
	if s.stream.Load() == nil {
		why = append(why, "stream: not started (draining the queue tables)")
	} else if stale := now.Sub(p.beat); !p.beat.IsZero() && stale > 3*s.opts.Heartbeat {
		why = append(why, fmt.Sprintf("stream: no message or keepalive for %s (heartbeat every %s)", stale.Round(time.Second), s.opts.Heartbeat))
	}
	s.mu.Lock()
	copying, applyErr := s.copying, s.applyErr
	s.mu.Unlock()
	if applyErr != nil {
		why = append(why, "apply: "+applyErr.Error()+" (no entry's fault: retrying until it is fixed)")
	}
	for _, t := range copying {
		why = append(why, "copying: "+t+": queue entries wait until it is ready")
	}
	if lag := max(s.lag(now), p.queueLag); lag > s.opts.MaxLag {
		why = append(why, fmt.Sprintf("lag: the oldest queue entry was written %s ago (max_lag %s)", lag.Round(time.Second), s.opts.MaxLag))
	}
	if s.opts.Sink != nil {
		if err := s.opts.Sink.Ready(); err != nil {
			why = append(why, "nats: "+err.Error())
		}
	}
	return why
}

// warner is a sink with warnings about its setup that do not stop it from
// publishing (sink.NATS: a single-replica stream on a cluster).
type warner interface{ Warnings() []string }

// warnings are the sink's, each prefixed for /readyz.
func (s *Sidecar) warnings() []string {
	w, ok := s.opts.Sink.(warner)
	if !ok {
		return nil
	}
	var out []string
	for _, l := range w.Warnings() {
		out = append(out, "warning: nats: "+l)
	}
	return out
}

// Handler serves /metrics, /healthz (200 while the run loop runs) and
// /readyz (200 when ready, else 503 with one reason per line; then a line
// per warning, which does not make it 503).
func (s *Sidecar) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.running.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not running")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		why := s.notReady(time.Now())
		s.metrics.ready.Set(boolGauge(len(why) == 0))
		if len(why) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, l := range append(why, s.warnings()...) {
				fmt.Fprintln(w, l)
			}
			return
		}
		fmt.Fprintln(w, "ready")
		for _, l := range s.warnings() {
			fmt.Fprintln(w, l)
		}
	})
	return mux
}
