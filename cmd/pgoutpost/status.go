package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/pgoutpost/pgoutpost/config"
	"github.com/pgoutpost/pgoutpost/sink"

	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/replication"
)

var statusCommand = command{
	name:    "status",
	summary: "show publications, subscriptions, slots, queues and replication problems [--json]",
	run:     runStatus,
}

func runStatus(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	fs := newFlagSet(e, "status", `status [--json]

Shows the replication state of this database and its problems in words. On
the master: publications and their tables, queue depths, replication slots
with wal_status, safe_wal_size and lag. On a slave: subscriptions with each
table's sync state and lag, queue depths, dead letters, write-guarded tables,
anything queue install would fix, and what risks the events in the NATS
stream of nats: (a single replica on a cluster, memory storage).`, &g)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := openRepl(ctx, e, &g, "status", "")
	if err != nil {
		return err
	}
	defer s.close()
	checks := slaveChecks
	if !s.cfg.Master.IsZero() {
		checks.MasterConnInfo = func(ctx context.Context) (string, error) {
			return (&masterFlags{}).resolve(ctx, s.cfg)
		}
	}
	if s.cfg.Role == registry.RoleSlave {
		checks.Stream = func(ctx context.Context) ([]string, error) {
			return inspectStream(ctx, s.cfg)
		}
	}
	report, err := replication.Status(ctx, s.conn, string(s.cfg.Role), s.names, checks)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	report.Write(e.stdout)
	return nil
}

// inspectStreamTimeout bounds the look at the NATS stream, so that an
// unreachable server delays the report only that long.
const inspectStreamTimeout = 5 * time.Second

// inspectStream returns the warnings about the stream of cfg's nats: section.
func inspectStream(ctx context.Context, cfg *config.Config) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, inspectStreamTimeout)
	defer cancel()
	opts, err := natsOptions(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	return sink.InspectStream(ctx, opts)
}

// slaveChecks are the queue package's checks that the status report of a
// slave includes.
var slaveChecks = replication.SlaveChecks{
	Guarded: func(ctx context.Context, db replication.DB) ([]registry.TableName, error) {
		return queue.GuardedTables(ctx, db)
	},
	MissingIndexes: func(ctx context.Context, db replication.DB) ([]string, error) {
		return queue.MissingIndexes(ctx, db)
	},
}
