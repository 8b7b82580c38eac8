package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/pgoutpost/pgoutpost/config"
	"github.com/pgoutpost/pgoutpost/internal/connsource"
	"github.com/pgoutpost/pgoutpost/merge"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/replication"
)

var subscriptionCreateCommand = command{
	name:    "subscription create",
	summary: "create this slave's subscription to the master if missing; --join merges a slave that already holds rows [--dry-run]",
	run:     func(ctx context.Context, e *env, args []string) error { return runSubscription(ctx, e, args, false) },
}

var subscriptionUpdateCommand = command{
	name:    "subscription update",
	summary: "refresh this slave's subscription so new tables get copied; convert an earlier layout [--wait]",
	run:     func(ctx context.Context, e *env, args []string) error { return runSubscription(ctx, e, args, true) },
}

var subscriptionDropCommand = command{
	name:    "subscription drop",
	summary: "retire this slave: drop its subscription here and its replication slot on the master",
	run:     runSubscriptionDrop,
}

// subscriptionWaitTimeout bounds `subscription update --wait`.
const subscriptionWaitTimeout = 30 * time.Minute

// masterFlags choose the master's conninfo over the configuration's master:.
type masterFlags struct {
	conninfo, file, envVar, awsSecret, awsRegion string
}

func (m *masterFlags) register(fs *pflag.FlagSet) {
	fs.StringVarP(&m.conninfo, "conninfo", "c", "", "the master's conninfo (keyword/value or URL); default: master: in the configuration")
	fs.StringVar(&m.file, "conninfo-file", "", "read the master's conninfo from this file")
	fs.StringVar(&m.envVar, "conninfo-env", "", "read the master's conninfo from this environment variable")
	fs.StringVar(&m.awsSecret, "aws-secret", "", "read the master's connection from this AWS Secrets Manager secret (keys host, port, username|user, password, dbname)")
	fs.StringVar(&m.awsRegion, "aws-region", "", "region of --aws-secret (default "+connsource.DefaultAWSRegion+")")
}

// resolve returns the master's conninfo, from the flags or the
// configuration's master section.
func (m *masterFlags) resolve(ctx context.Context, cfg *config.Config) (string, error) {
	src, err := m.source(cfg)
	if err != nil {
		return "", err
	}
	return resolveMaster(ctx, src, cfg)
}

// resolveMaster reads the master's conninfo from src; a secret without a
// dbname names this environment's database.
func resolveMaster(ctx context.Context, src connsource.Source, cfg *config.Config) (string, error) {
	conninfo, err := src.Resolve(ctx, cfg.Environment)
	if err != nil {
		return "", fmt.Errorf("master conninfo: %w", err)
	}
	return conninfo, nil
}

// openSubscriber opens a slave's session for a subscription command and
// resolves the master's conninfo.
func openSubscriber(ctx context.Context, e *env, g *globalFlags, mf *masterFlags, name string) (*replSession, string, error) {
	s, err := openRepl(ctx, e, g, name, registry.RoleSlave)
	if err != nil {
		return nil, "", err
	}
	conninfo, err := mf.resolve(ctx, s.cfg)
	if err != nil {
		s.close()
		return nil, "", err
	}
	return s, conninfo, nil
}

// printResults prints what a subscription command did, one line each.
func printResults(e *env, results []replication.SubscriptionResult) {
	for _, r := range results {
		fmt.Fprintf(e.stdout, "subscription %s: %s\n", r.Name, r.Action)
	}
}

// source returns where the master's conninfo comes from: the flags, or the
// configuration's master section.
func (m *masterFlags) source(cfg *config.Config) (connsource.Source, error) {
	src := connsource.Source{DSN: m.conninfo, File: m.file, Env: m.envVar}
	if m.awsSecret != "" {
		src.AWSSecret = &connsource.AWSSecret{Name: m.awsSecret, Region: m.awsRegion}
	}
	switch src.Count() {
	case 0:
	case 1:
		return src, nil
	default:
		return src, usagef("give only one of --conninfo, --conninfo-file, --conninfo-env and --aws-secret")
	}
	if cfg.Master.IsZero() {
		return cfg.Master, &replConfigError{"no master connection: set master: in the configuration or pass --conninfo"}
	}
	return cfg.Master, nil
}

func runSubscription(ctx context.Context, e *env, args []string, update bool) error {
	name, synopsis := "subscription create", `subscription create [--join [--dry-run]] [-c conninfo | --conninfo-file f | --conninfo-env VAR | --aws-secret name]

Creates, on a slave, its subscription to the master if it is missing, after
checking that the master has every publication it names. One subscription
carries the queue, system and model publications, so the slave applies every
master transaction in master commit order, queue rows together with the rows
they describe: it is created over the system and model publications with the
initial copy of their tables, then the queue publication is added without a
copy (the slave sees the entries committed from then on; synchronous_commit =
on). Its
name carries the environment, so several slaves of one master never clash.
The master's connection comes from master: in the configuration or from the
flags; no password is printed or written to the server log.

With --join, for a slave whose synced tables already hold rows (an existing
environment joining, or a drifted slave after subscription drop), nothing is
emptied or copied: the subscription's slot is created on the master with an
exported snapshot, every synced table is read in that snapshot and merged
into the slave in one transaction — missing rows inserted, differing rows
updated, rows the master lacks deleted through the on_delete rules (user rows
cascade, are set null …; a PROTECT or RESTRICT stops the join with nothing
done) — and the subscription is created on that slot without a copy, so it
streams exactly the master's commits after the snapshot. Changes to
denormalize models are queued as events. --dry-run does the merge, reports
it per table and rolls it back.`
	if update {
		name, synopsis = "subscription update", `subscription update [--wait [--timeout 30m]] [-c conninfo | --conninfo-file f | --conninfo-env VAR | --aws-secret name]

Creates this slave's missing subscription, points it at the right
publications and at the master's current connection, and refreshes it so that
tables publication update added get their initial copy (new queue tables join
without one). A slave of an earlier version, with a queue subscription apart
from the data's, is converted to the one subscription at one exact master
position, losing and repeating no queue entry (see docs/deploy.md). With
--wait it shows each table's copy until all are ready, or stops naming the
table whose copy fails and the likely reason.`
	}
	var g globalFlags
	var mf masterFlags
	fs := newFlagSet(e, name, synopsis, &g)
	mf.register(fs)
	var wait, join, dryRun bool
	var timeout time.Duration
	if !update {
		fs.BoolVar(&join, "join", false, "merge the master's rows into the slave's instead of copying into empty tables (see above)")
		fs.BoolVar(&dryRun, "dry-run", false, "with --join: report what the merge would do per table, change nothing")
	}
	if update {
		fs.BoolVar(&wait, "wait", false, "show each table's initial copy until all are ready, or report the table whose copy fails")
		fs.DurationVar(&timeout, "timeout", subscriptionWaitTimeout, "with --wait: give up after this long")
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if dryRun && !join {
		return usagef("--dry-run goes with --join")
	}
	s, conninfo, err := openSubscriber(ctx, e, &g, &mf, name)
	if err != nil {
		return err
	}
	defer s.close()
	if join {
		return joinSubscription(ctx, e, s, conninfo, dryRun)
	}
	do := replication.CreateSubscriptions
	if update {
		do = replication.UpdateSubscriptions
	}
	results, err := do(ctx, s.conn, s.names, conninfo)
	printResults(e, results)
	if err != nil {
		return err
	}
	if !wait {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = replication.WaitReady(wctx, s.conn, s.names, e.stdout, time.Second)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (after --timeout %s; the copies go on: check with `pgoutpost status`)", err, timeout)
	}
	return err
}

// joinSubscription creates the subscription by merging (merge.Join).
func joinSubscription(ctx context.Context, e *env, s *replSession, conninfo string, dryRun bool) error {
	reg, err := s.registry(ctx)
	if err != nil {
		return err
	}
	spec, err := replication.JoinSubscription(ctx, s.conn, s.names, conninfo)
	if err != nil {
		return err
	}
	opts := merge.Options{DryRun: dryRun, Progress: func(p merge.Progress) {
		fmt.Fprintf(e.stderr, "join: read %s: %d rows (%d of about %d%s)\n", p.Table.Table, p.Table.Master, p.Read, p.Estimated,
			rateAndLeft(p.Read, p.Estimated, p.Elapsed))
	}}
	rep, err := merge.Join(ctx, s.conn, reg, conninfo, spec.Name, func(ctx context.Context) error {
		return replication.CreateOnSlot(ctx, s.conn, spec, conninfo)
	}, opts)
	if rep != nil {
		verb := "merged"
		if dryRun {
			verb = "would merge"
		}
		for _, c := range rep.Tables {
			if c.Inserted+c.Updated+c.Deleted > 0 || dryRun {
				fmt.Fprintf(e.stdout, "%s %s: %d inserted, %d updated, %d deleted (master has %d)\n", verb, c.Table, c.Inserted, c.Updated, c.Deleted, c.Master)
			}
		}
		if rep.Cascade != nil {
			for _, st := range rep.Cascade.Steps {
				if t := reg.Table(st.Table); st.Rows > 0 && (t == nil || t.Kind == registry.KindUser) {
					fmt.Fprintf(e.stdout, "  cascade: %s %d row(s) of %s\n", st.Action, st.Rows, st.Table)
				}
			}
		}
	}
	if err != nil {
		return err
	}
	if dryRun {
		fmt.Fprintf(e.stdout, "subscription %s: not created (--dry-run)\n", spec.Name)
		return nil
	}
	fmt.Fprintf(e.stdout, "subscription %s: created on the merged tables (no copy)\n", spec.Name)
	return nil
}

func runSubscriptionDrop(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	var mf masterFlags
	fs := newFlagSet(e, "subscription drop", `subscription drop [-c conninfo | --conninfo-file f | --conninfo-env VAR | --aws-secret name]

Retires this slave: drops its subscription (and those of the earlier
two-subscription layout) on the slave, then their replication slots on the
master, the slots of unfinished table copies included. A slot left on the
master keeps the master's WAL until it is dropped, without bound when
max_slot_wal_keep_size is -1. The slave keeps its rows; replication to it
stops. The master's connection comes from master: in the configuration or
from the flags (not from the one stored in the subscription, so a moved master
is fine). When the master cannot be reached, the slave's side is done and the
error names each slot to drop there. Stop the slave's sidecar first: its own
slot on the slave (sidecar.slot) is not touched.`, &g)
	mf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	s, conninfo, err := openSubscriber(ctx, e, &g, &mf, "subscription drop")
	if err != nil {
		return err
	}
	defer s.close()
	results, err := replication.DropSubscriptions(ctx, s.conn, s.names, conninfo)
	printResults(e, results)
	return err
}
