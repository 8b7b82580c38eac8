package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/config"
	"github.com/pgoutpost/pgoutpost/internal/connstr"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
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
	cfg, logger, dsn, err := loadConfig(ctx, e, &g, "run", registry.RoleSlave)
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
	queue.ConfigurePool(pcfg)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("open the slave database pool: %s", connstr.Scrub(err.Error(), dsn))
	}
	defer pool.Close()
	reg, err := validRegistry(ctx, pool, cfg, logger)
	if err != nil {
		return err
	}
	systemID, err := masterSystemID(ctx, cfg)
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

	var engineOpts []cascade.Option
	if cfg.Queue.FKChecks == config.FKChecksBatch {
		if err := cascade.CheckReplicaRole(ctx, pool); err != nil {
			return fmt.Errorf("queue.fk_checks: batch: %w", err)
		}
		engineOpts = append(engineOpts, cascade.BatchReferenceChecks())
	}
	proc := queue.NewProcessor(pool, reg, queue.NewEngine(reg, engineOpts...), snk, queue.ProcessorOptions{
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

// masterSystemID reads the system identifier of the configuration's master,
// the first part of every event's Nats-Msg-Id.
func masterSystemID(ctx context.Context, cfg *config.Config) (string, error) {
	if cfg.Master.IsZero() {
		return "", &replConfigError{"master: not set; event ids start with the master's system identifier, read from there"}
	}
	master, err := resolveMaster(ctx, cfg.Master, cfg)
	if err != nil {
		return "", err
	}
	return replication.MasterSystemID(ctx, master)
}

// openSink connects the NATS publisher of the nats: section, or returns the
// log sink writing to stdout.
func openSink(ctx context.Context, e *env, cfg *config.Config, kind string, m *sidecar.Metrics, logger *slog.Logger) (sink.Sink, error) {
	if kind == sinkLog {
		return sink.NewLog(e.stdout, cfg.NATS.SubjectPrefix), nil
	}
	opts, err := natsOptions(cfg, logger)
	if err != nil {
		return nil, err
	}
	opts.ObserveAck = m.ObserveAck
	snk, err := sink.Connect(ctx, opts)
	if err == nil || !errors.Is(err, nats.ErrNoServers) {
		return snk, err
	}
	// NATS is down (as after a node failure that took both away): start
	// anyway, so that deletes propagate and the probes answer, and connect
	// in the background. A stream that does not fit is an error at once.
	logger.Error("NATS is unreachable; starting without it and connecting in the background (not ready until then)", "err", err)
	return sink.ConnectLater(ctx, opts, err), nil
}

// natsOptions are the publisher's options from the nats: section.
func natsOptions(cfg *config.Config, logger *slog.Logger) (sink.Options, error) {
	n := cfg.NATS
	opts := sink.Options{
		URL:             n.URL,
		CredentialsFile: n.CredentialsFile,
		Env:             cfg.Environment,
		SubjectPrefix:   n.SubjectPrefix,
		Stream:          n.Stream,
		CreateStream:    n.CreateStream,
		DuplicateWindow: n.DuplicateWindow,
		Replicas:        n.Replicas,
		Placement:       sink.Placement{Cluster: n.Placement.Cluster, Tags: n.Placement.Tags},
		Storage:         n.Storage,
		MaxAge:          n.MaxAge,
		MaxBytes:        n.MaxBytes,
		MaxInFlight:     n.MaxInFlight,
		Logger:          logger,
	}
	if n.TokenEnv != "" {
		token, err := connstr.FromEnv(n.TokenEnv)
		if err != nil {
			return opts, &replConfigError{"nats.token_env: " + err.Error()}
		}
		opts.Token = token
	}
	return opts, nil
}
