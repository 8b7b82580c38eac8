// Command denormalize-consumer is an example application service: it keeps
// app_report.outcome_name (a user table's copy of shop_outcome.name, a
// denormalize model of the demo schema) up to date from pgoutpost's events.
// An insert or update of a shop_outcome row copies the row's name into every
// report pointing at it; a delete marks them stale (outcome_name = NULL), the
// "mark as stale / recompute" use case of django-logical-replication (the
// seed package).
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

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/pgoutpost/pgoutpost/consumer"
	"github.com/pgoutpost/pgoutpost/event"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "denormalize-consumer:", err)
		os.Exit(1)
	}
}

// outcomeTable is the denormalize model whose events this service follows.
const outcomeTable = "public.shop_outcome"

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

	d := &Denormalizer{DB: pool}
	log.Info("following events", "env", *env, "table", outcomeTable, "stream", *stream)
	return consumer.Run(ctx, js, consumer.Options{
		Stream:        *stream,
		SubjectPrefix: *prefix,
		Env:           *env,
		Durable:       *durable,
		Tables:        []string{outcomeTable},
		// One event at a time, in order: a failed update must not be
		// overtaken by a later one, or the older name would win.
		MaxAckPending: 1,
		RetryMin:      500 * time.Millisecond,
		RetryMax:      30 * time.Second,
		Logger:        log,
	}, d.Handle)
}

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Denormalizer applies shop_outcome events to app_report.
type Denormalizer struct {
	DB execer
}

// Handle is the consumer.Handler. It is idempotent: applying an event twice
// leaves the same column values.
func (d *Denormalizer) Handle(ctx context.Context, ev event.Event) error {
	if ev.Table != outcomeTable {
		return nil
	}
	var pk struct {
		ID *int64 `json:"id"`
	}
	if err := ev.DecodePK(&pk); err != nil {
		return err
	}
	if pk.ID == nil {
		// Retrying cannot fix this; log it through the consumer and move on.
		return nil
	}
	var name *string // NULL marks the reports stale
	if ev.Op != event.OpDelete && ev.HasRow() {
		var row struct {
			Name string `json:"name"`
		}
		if err := ev.DecodeRow(&row); err != nil {
			return err
		}
		name = &row.Name
	}
	_, err := d.DB.Exec(ctx,
		`UPDATE app_report SET outcome_name = $2 WHERE outcome_id = $1 AND outcome_name IS DISTINCT FROM $2`,
		*pk.ID, name)
	if err != nil {
		return fmt.Errorf("update reports of outcome %d: %w", *pk.ID, err)
	}
	return nil
}
