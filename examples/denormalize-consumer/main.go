// Command denormalize-consumer is an example application service: it keeps
// app_report.outcome_name (a user table's copy of shop_outcome.name, a
// denormalize model of the demo schema) up to date from pgoutpost's events,
// following them on NATS with package consumer and applying them with the
// handler of package reports.
//
//	denormalize-consumer --nats-url nats://127.0.0.1:4222 --env staging \
//	    --dsn postgres://app@localhost/app
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/pgoutpost/pgoutpost/consumer"
	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/examples/denormalize-consumer/reports"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "denormalize-consumer:", err)
		os.Exit(1)
	}
}

// run parses args, connects and consumes events until ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := pflag.NewFlagSet("denormalize-consumer", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats-url", nats.DefaultURL, "NATS server URL")
	creds := fs.String("creds", "", "NATS credentials file")
	env := fs.String("env", "", "environment whose events to follow (required)")
	dsn := fs.String("dsn", "", "PostgreSQL connection string of the application database (required; or DATABASE_URL)")
	stream := fs.String("stream", consumer.DefaultStream, "JetStream stream of the events")
	prefix := fs.String("subject-prefix", event.DefaultPrefix, "subject prefix")
	durable := fs.String("durable", "denormalize-consumer", "durable consumer name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dsn == "" {
		*dsn = os.Getenv("DATABASE_URL")
	}
	if *env == "" || *dsn == "" {
		return errors.New("--env and --dsn are required")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	pool, err := pgxpool.New(ctx, *dsn)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	defer pool.Close()

	opts := []nats.Option{nats.Name("denormalize-consumer"), nats.MaxReconnects(-1)}
	if *creds != "" {
		opts = append(opts, nats.UserCredentials(*creds))
	}
	nc, err := nats.Connect(*natsURL, opts...)
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("open jetstream: %w", err)
	}

	d := &reports.Denormalizer{DB: pool}
	log.Info("following events", "env", *env, "table", reports.OutcomeTable, "stream", *stream)
	return consumer.Run(ctx, js, consumer.Options{
		Stream:        *stream,
		SubjectPrefix: *prefix,
		Env:           *env,
		Durable:       *durable,
		Tables:        []string{reports.OutcomeTable},
		// One event at a time, in order: a failed update must not be
		// overtaken by a later one, or the older name would win.
		MaxAckPending: 1,
		RetryMin:      500 * time.Millisecond,
		RetryMax:      30 * time.Second,
		Logger:        log,
	}, d.Handle)
}
