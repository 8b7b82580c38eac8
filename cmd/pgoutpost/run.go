package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgoutpost/pgoutpost/config"
	"github.com/pgoutpost/pgoutpost/internal/connstr"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/replication"
	"github.com/pgoutpost/pgoutpost/sidecar"
	"github.com/pgoutpost/pgoutpost/sink"
)

var runCommand = command{
	name:    "run",
	summary: "run the sidecar on a slave: apply deletes, publish denormalize events, serve /metrics /healthz /readyz",
	run:     runRun,
}

// Sink kinds of --sink.
const (
	sinkNATS = "nats"
	sinkLog  = "log"
)

func runRun(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	fs := newFlagSet(e, "run", `run [--listen addr] [--sink nats|log] [--shutdown-grace d]

Runs the sidecar next to a slave database (role: slave). It checks the queue
tables and the local publication (created by 'pgoutpost queue install'),
creates its replication slot when missing, applies the entries already
waiting in the queue tables, then follows the slot: delete entries are applied
with the on_delete rules of every foreign key, denormalize entries are
published to NATS JetStream. The slot advances only past finished work.

It serves /metrics (Prometheus), /healthz (alive) and /readyz (ready, or 503
with the reasons) on sidecar.listen. On SIGTERM or SIGINT it stops taking new
work, finishes or abandons the batch in flight and exits within the shutdown
grace period.`, &g)
	listen := fs.String("listen", "", "address of /metrics, /healthz and /readyz (default: sidecar.listen, "+config.DefaultListen+")")
	sinkKind := fs.String("sink", sinkNATS, "where denormalize events go: nats, or log (JSON lines on stdout, for debugging and demos)")
	grace := fs.Duration("shutdown-grace", 0, "how long a shutdown may take (default: sidecar.shutdown_grace, "+config.DefaultShutdownGrace.String()+")")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *sinkKind != sinkNATS && *sinkKind != sinkLog {
		return usagef("--sink %q: want nats or log", *sinkKind)
	}
	if *grace < 0 {
		return usagef("--shutdown-grace %s: want a positive duration", *grace)
	}
	cfg, logger, dsn, err := loadConfig(ctx, e, &g, "run", config.RoleSlave)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Sidecar.Listen = *listen
	}
	if *grace > 0 {
		cfg.Sidecar.ShutdownGrace = *grace
	}

	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("open the slave database pool: %s", connstr.Scrub(err.Error(), dsn))
	}
	// The sidecar's statements are prepared once and run against queue
	// tables whose size swings from empty to a large backlog: a generic plan
	// chosen while a table was small (a sequential scan) would stay as it
	// grows, and each lookup of a batch would scan the backlog (measured:
	// 37–120 ms a call instead of 0.05 ms). Custom plans cost a plan per call
	// and stay right.
	pcfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("open the slave database pool: %s", connstr.Scrub(err.Error(), dsn))
	}
	defer pool.Close()
	reg, err := validRegistry(ctx, pool, cfg, logger)
	if err != nil {
		return err
	}
	master, ok := masterSource(cfg)
	if !ok {
		return &replConfigError{"master: not set; the sidecar reads the master's system identifier for event ids"}
	}
	systemID, err := replication.MasterSystemID(ctx, master)
	if err != nil {
		return err
	}

	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := sidecar.NewMetrics(promReg)
	if err != nil {
		return err
	}
	snk, err := openSink(ctx, e, cfg, *sinkKind, metrics, logger)
	if err != nil {
		return err
	}
	defer snk.Close()

	proc := queue.NewProcessor(pool, reg, queue.NewEngine(reg), snk, queue.ProcessorOptions{
		Env:        cfg.Environment,
		SystemID:   systemID,
		BatchSize:  cfg.Queue.BatchSize,
		LargeTxn:   cfg.Queue.LargeTransaction,
		Logger:     logger,
		Observer:   metrics,
		SeedQueues: cfg.Queue.SeedQueues,
	})
	sc, err := sidecar.New(sidecar.Options{
		DB:             pool,
		ReplicationDSN: dsn,
		Processor:      proc,
		Sink:           snk,
		Metrics:        metrics,
		Gatherer:       promReg,
		Logger:         logger,
		Slot:           cfg.Sidecar.Slot,
		Publication:    cfg.Sidecar.Publication,
		SeedQueues:     cfg.Queue.SeedQueues,
		Listen:         cfg.Sidecar.Listen,
		ShutdownGrace:  cfg.Sidecar.ShutdownGrace,
		MaxLag:         cfg.Sidecar.MaxLag,
		Heartbeat:      cfg.Sidecar.Heartbeat,
		SpillBytes:     int(cfg.Sidecar.SpillBytes),
		SweepInterval:  cfg.Sidecar.SweepInterval,
		BatchSize:      cfg.Queue.BatchSize,
		LargeTxn:       cfg.Queue.LargeTransaction,
	})
	if err != nil {
		return err
	}
	logger.Info("sidecar starting", "environment", cfg.Environment, "database", cfg.Database,
		"slot", cfg.Sidecar.Slot, "publication", cfg.Sidecar.Publication, "sink", *sinkKind,
		"listen", cfg.Sidecar.Listen, "tables", len(reg.Tables))
	return sc.Run(ctx)
}

// openSink connects the NATS publisher of the nats: section, or returns the
// log sink writing to stdout.
func openSink(ctx context.Context, e *env, cfg *config.Config, kind string, m *sidecar.Metrics, logger *slog.Logger) (sink.Sink, error) {
	if kind == sinkLog {
		return sink.NewLog(e.stdout, cfg.NATS.SubjectPrefix), nil
	}
	n := cfg.NATS
	opts := sink.Options{
		URL:             n.URL,
		CredentialsFile: n.CredentialsFile,
		Env:             cfg.Environment,
		SubjectPrefix:   n.SubjectPrefix,
		Stream:          n.Stream,
		CreateStream:    n.CreateStream,
		DuplicateWindow: n.DuplicateWindow,
		MaxInFlight:     n.MaxInFlight,
		Logger:          logger,
		ObserveAck:      m.ObserveAck,
	}
	if n.TokenEnv != "" {
		token, err := connstr.FromEnv(n.TokenEnv)
		if err != nil {
			return nil, &replConfigError{"nats.token_env: " + err.Error()}
		}
		opts.Token = token
	}
	snk, err := sink.Connect(ctx, opts)
	if err == nil || !errors.Is(err, nats.ErrNoServers) {
		return snk, err
	}
	// NATS is down (as after a node failure that took both away): start
	// anyway, so that deletes propagate and the probes answer, and connect
	// in the background. A stream that does not fit is an error at once.
	logger.Error("NATS is unreachable; starting without it and connecting in the background (not ready until then)", "err", err)
	l := &lazySink{ready: make(chan struct{}), closed: make(chan struct{}), err: err}
	go l.connect(ctx, opts, logger)
	return l, nil
}

// lazySink is the NATS sink of a sidecar that started while NATS was
// unreachable: publishing waits until the background connection is made.
type lazySink struct {
	ready, closed chan struct{}
	closeOnce     sync.Once

	mu  sync.Mutex
	n   *sink.NATS
	err error // why there is no connection yet
}

func (l *lazySink) connect(ctx context.Context, opts sink.Options, logger *slog.Logger) {
	wait := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.closed:
			return
		case <-time.After(wait):
		}
		n, err := sink.Connect(ctx, opts)
		if err == nil {
			l.mu.Lock()
			l.n, l.err = n, nil
			l.mu.Unlock()
			close(l.ready)
			logger.Info("connected to NATS", "url", connstr.RedactURLs(opts.URL))
			select {
			case <-l.closed:
				_ = n.Close()
			default:
			}
			return
		}
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
		logger.Warn("NATS still unreachable", "err", err)
		wait = min(2*wait, 30*time.Second)
	}
}

func (l *lazySink) get() *sink.NATS {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

func (l *lazySink) wait(ctx context.Context) error {
	select {
	case <-l.ready:
		return nil
	case <-l.closed:
		return sink.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *lazySink) Publish(ctx context.Context, msgs []sink.Message) (int, error) {
	if err := l.wait(ctx); err != nil {
		return 0, err
	}
	return l.get().Publish(ctx, msgs)
}

func (l *lazySink) PublishAsync(ctx context.Context, msgs []sink.Message) *sink.Pending {
	if err := l.wait(ctx); err != nil {
		// A batch that ends at once with nothing acked, as the sinks
		// report a cancelled one.
		done, cancel := context.WithCancelCause(ctx)
		cancel(err)
		return sink.NewLog(io.Discard, "").PublishAsync(done, msgs)
	}
	return l.get().PublishAsync(ctx, msgs)
}

func (l *lazySink) Ready() error {
	if n := l.get(); n != nil {
		return n.Ready()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Errorf("not connected: %w", l.err)
}

// Stats are the connected sink's, or zero (not connected).
func (l *lazySink) Stats() sink.Stats {
	if n := l.get(); n != nil {
		return n.Stats()
	}
	return sink.Stats{}
}

func (l *lazySink) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	if n := l.get(); n != nil {
		return n.Close()
	}
	return nil
}
