package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/sink"
)

var eventsReplayCommand = command{
	name:    "events replay",
	summary: "publish the current rows of a denormalize model as snapshot events, for consumers that rebuild",
	run:     runEventsReplay,
}

// replayProgressEvery is how often events replay reports progress.
const replayProgressEvery = 2 * time.Second

func runEventsReplay(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	fs := newFlagSet(e, "events replay", `events replay --table TABLE [--where SQL] [--rate N] [--batch N] [--sink nats|log] [--dry-run]

Publishes every row of a denormalize model, as this slave holds it now, as an
event with op "snapshot" on the configuration's stream, in primary-key order
and from one consistent view of the table: a new consumer, or one whose store
was lost, rebuilds from them without touching the master. Live events go on
meanwhile; a consumer that keeps the newest event per row (committed_at, then
queue_id; event.Event.After) lets neither kind overwrite a newer one.

A snapshot event's committed_at is the master's commit time of the row's last
change when the slave has track_commit_timestamp = on, and
1970-01-01T00:00:00Z otherwise (never newer than a live event). Its queue_id
and Nats-Msg-Id come from the table, the key and the row version, so a replay
run again within the stream's duplicate window stores unchanged rows once.
Progress goes to stderr every two seconds.`, &g)
	table := fs.String("table", "", "the denormalize model: schema.table or a bare table name in public (required)")
	where := fs.String("where", "", "an SQL condition on the table's rows, e.g. \"id > 1000\" (run in a read-only transaction)")
	rate := fs.Float64("rate", 0, "publish at most this many events per second (0: as fast as NATS acknowledges)")
	batch := fs.Int("batch", queue.DefaultBatchSize, "rows read and published at a time")
	sinkKind := fs.String("sink", sinkNATS, "nats, or log (JSON lines on stdout)")
	dryRun := fs.Bool("dry-run", false, "count the rows that would be published, publish nothing")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *table == "":
		return usagef("--table is required")
	case *rate < 0:
		return usagef("--rate %g: want 0 or more events per second", *rate)
	case *batch <= 0:
		return usagef("--batch %d: want a positive number of rows", *batch)
	case *sinkKind != sinkNATS && *sinkKind != sinkLog:
		return usagef("--sink %q: want nats or log", *sinkKind)
	}
	name, err := registry.ParseTableName(*table)
	if err != nil {
		return usagef("--table %q: %v", *table, err)
	}
	s, err := openRepl(ctx, e, &g, "events replay", registry.RoleSlave)
	if err != nil {
		return err
	}
	defer s.close()
	reg, err := s.registry(ctx)
	if err != nil {
		return err
	}
	t := reg.Table(name)
	if t == nil || t.Kind != registry.KindDenormalize {
		var models []string
		for _, d := range reg.OfKind(registry.KindDenormalize) {
			models = append(models, d.Name.String())
		}
		return usagef("--table %s: not a denormalize model of the configuration (those are: %v)", name, models)
	}
	opts := queue.SnapshotOptions{Env: s.cfg.Environment, Where: *where, BatchSize: *batch, Rate: *rate}
	if *dryRun {
		n, err := queue.SnapshotCount(ctx, s.conn, t, *where)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "events replay %s: would publish %d snapshot event(s)\n", t.Name, n)
		return nil
	}
	if opts.SystemID, err = masterSystemID(ctx, s.cfg); err != nil {
		return err
	}
	var snk sink.Sink
	if *sinkKind == sinkLog {
		snk = sink.NewLog(e.stdout, s.cfg.NATS.SubjectPrefix)
	} else {
		nopts, err := natsOptions(s.cfg, s.logger)
		if err != nil {
			return err
		}
		if snk, err = sink.Connect(ctx, nopts); err != nil {
			return err
		}
	}
	defer snk.Close()
	var last time.Time
	opts.Progress = func(p queue.SnapshotProgress) {
		if time.Since(last) < replayProgressEvery && p.Published < p.Total {
			return
		}
		last = time.Now()
		fmt.Fprintf(e.stderr, "events replay %s: %s\n", t.Name, progressLine(p))
	}
	n, err := queue.Snapshot(ctx, s.conn, snk, t, opts)
	if err != nil {
		return fmt.Errorf("%w (%d event(s) published before)", err, n)
	}
	fmt.Fprintf(e.stdout, "events replay %s: published %d snapshot event(s)\n", t.Name, n)
	return nil
}

// progressLine says how far a replay is: rows, rate and time left.
func progressLine(p queue.SnapshotProgress) string {
	return fmt.Sprintf("%d of %d rows%s", p.Published, p.Total, rateAndLeft(p.Published, p.Total, p.Elapsed))
}

// rateAndLeft is ", <rate>/s, about <time> left" for done of total rows in
// elapsed ("" before there is a rate, no time left once done).
func rateAndLeft(done, total int64, elapsed time.Duration) string {
	if done <= 0 || elapsed <= 0 {
		return ""
	}
	rate := float64(done) / elapsed.Seconds()
	s := fmt.Sprintf(", %.0f rows/s", rate)
	if left := total - done; left > 0 {
		s += fmt.Sprintf(", about %s left", time.Duration(float64(left)/rate*float64(time.Second)).Round(time.Second))
	}
	return s
}
