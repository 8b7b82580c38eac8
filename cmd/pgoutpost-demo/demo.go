package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/consumer"
	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/examples/denormalize-consumer/reports"
	"github.com/pgoutpost/pgoutpost/internal/natsembed"
	"github.com/pgoutpost/pgoutpost/internal/pgcluster"
	"github.com/pgoutpost/pgoutpost/registry"
)

//go:embed demo/schema.sql
var demoSchema string

//go:embed demo/sidecar.yaml.tmpl
var demoConfig string

const (
	// demoDatabase is the database the demo creates in each of its clusters.
	demoDatabase = "demo"
	// demoSlaveEnv is the slave's environment name (a NATS subject token).
	demoSlaveEnv = "staging"
	// demoWait bounds each wait for replication, the sidecar or an event.
	demoWait = 30 * time.Second
)

// demo is one run of the demo and everything it started, so that cleanup can
// stop each part in order whatever step failed.
type demo struct {
	stdout, stderr io.Writer
	bin            string // the pgoutpost binary
	start          time.Time
	master, slave  *pgcluster.Cluster
	nats           *natsembed.Server
	dir            string
	configs        map[string]string // role → sidecar.yaml
	listen         string            // the sidecar's /metrics address

	masterDB, slaveDB *pgxpool.Pool

	sidecar     *exec.Cmd
	sidecarDone chan int // the sidecar's exit code

	nc           *nats.Conn
	consumerStop context.CancelFunc
	consumerDone chan struct{}
	events       chan event.Event
}

// say prints one narration line with the time since the start.
func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.stdout, "[%5.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// detail prints indented lines under the narration.
func (d *demo) detail(format string, args ...any) {
	fmt.Fprintf(d.stdout, "          %s\n", fmt.Sprintf(format, args...))
}

func (d *demo) run(ctx context.Context) error {
	steps := []struct {
		name string
		do   func(context.Context) error
	}{
		{"run pgoutpost", func(ctx context.Context) error { return d.cli(ctx, "version") }},
		{"start servers", d.startServers},
		{"set up the master", d.setupMaster},
		{"set up the slave", d.setupSlave},
		{"add user rows on the slave", d.seedSlave},
		{"start the sidecar", d.startSidecar},
		{"cascade delete", d.cascadeDelete},
		{"protect conflict", d.protectConflict},
		{"denormalize event", d.denormalizeEvent},
		{"nats outage", d.natsOutage},
		{"metrics", d.metrics},
	}
	for _, s := range steps {
		if err := s.do(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	d.say("done in %.1fs; cleaning up", time.Since(d.start).Seconds())
	return nil
}

func (d *demo) startServers(ctx context.Context) error {
	var err error
	if d.dir, err = os.MkdirTemp("", "pgoutpost-demo-"); err != nil {
		return err
	}
	d.say("starting a master and a slave PostgreSQL cluster (wal_level=logical) in %s", os.TempDir())
	// A short retry interval paces the subscription's start and the table
	// copies' workers (PostgreSQL's default is 5s).
	settings := map[string]string{"wal_retrieve_retry_interval": "'200ms'"}
	if d.master, err = pgcluster.Start(ctx, pgcluster.Options{Name: "master", Settings: settings}); err != nil {
		return fmt.Errorf("start master: %w", err)
	}
	if d.slave, err = pgcluster.Start(ctx, pgcluster.Options{Name: "slave", Settings: settings}); err != nil {
		return fmt.Errorf("start slave: %w", err)
	}
	d.say("master on port %d, slave on port %d", d.master.Port, d.slave.Port)
	d.say("starting an in-process NATS server with JetStream")
	if d.nats, err = natsembed.Start(""); err != nil {
		return fmt.Errorf("start nats: %w", err)
	}
	d.say("NATS at %s", d.nats.URL())
	if d.listen, err = freeAddr(); err != nil {
		return err
	}

	d.configs = map[string]string{}
	for _, env := range []struct {
		name, role string
		c          *pgcluster.Cluster
	}{{"master", "master", d.master}, {demoSlaveEnv, "slave", d.slave}} {
		if err := env.c.CreateDatabase(ctx, demoDatabase); err != nil {
			return fmt.Errorf("create %s database: %w", env.role, err)
		}
		if err := execScript(ctx, env.c.DSN(demoDatabase), demoSchema); err != nil {
			return fmt.Errorf("load the demo schema on the %s: %w", env.role, err)
		}
		path := filepath.Join(d.dir, env.role+".yaml")
		if err := writeDemoConfig(path, demoValues{
			Environment: env.name, Role: env.role, DSN: env.c.DSN(demoDatabase),
			Master: d.master.ConnInfo(demoDatabase), NATS: d.nats.URL(), Listen: d.listen,
		}); err != nil {
			return err
		}
		d.configs[env.role] = path
	}
	if d.masterDB, err = pgxpool.New(ctx, d.master.DSN(demoDatabase)); err != nil {
		return err
	}
	if d.slaveDB, err = pgxpool.New(ctx, d.slave.DSN(demoDatabase)); err != nil {
		return err
	}
	d.say("loaded the demo schema on both: system model shop_category; delete models shop_unit, shop_marker; " +
		"denormalize model shop_outcome; user tables app_report, app_note")
	d.say("configurations: %s (master), %s (slave)", d.configs["master"], d.configs["slave"])
	return nil
}

// cli runs a pgoutpost command as a user would, its output indented under
// the narration. Cancelling ctx interrupts it as Ctrl-C does.
func (d *demo) cli(ctx context.Context, args ...string) error {
	d.say("$ pgoutpost %s", strings.Join(args, " "))
	out := &indenter{w: d.stdout, prefix: "          "}
	errs := &indenter{w: d.stderr, prefix: "          "}
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Stdout, cmd.Stderr = out, errs
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = demoWait
	err := cmd.Run()
	out.flush()
	errs.flush()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("pgoutpost %s: %w", commandWords(args), err)
	}
	return nil
}

// commandWords returns the words of args before the first flag: the
// command's name.
func commandWords(args []string) string {
	i := slices.IndexFunc(args, func(a string) bool { return strings.HasPrefix(a, "-") })
	if i < 0 {
		i = len(args)
	}
	return strings.Join(args[:i], " ")
}

func (d *demo) setupMaster(ctx context.Context) error {
	cfg := d.configs["master"]
	for _, args := range [][]string{
		{"validate", "--config", cfg},
		{"publication", "create", "--config", cfg},
		{"queue", "install", "--config", cfg},
		{"publication", "update", "--config", cfg},
	} {
		if err := d.cli(ctx, args...); err != nil {
			return err
		}
	}
	d.say("seeding the master: categories, units, markers and outcomes")
	if err := execScript(ctx, d.master.DSN(demoDatabase), demoMasterRows); err != nil {
		return err
	}
	counts, err := countRows(ctx, d.masterDB, "shop_category", "shop_unit", "shop_marker", "shop_outcome", "pgoutpost.denormalize_queue")
	if err != nil {
		return err
	}
	d.detail("master: %s", counts)
	return nil
}

// demoMasterRows are the master's system data. Ids are given so that the
// narration can name rows; the sequences are moved past them.
const demoMasterRows = `
INSERT INTO shop_category (id, name) VALUES (1, 'tools'), (2, 'parts');
INSERT INTO shop_unit (id, name, category_id) VALUES (1, 'drill', 1), (2, 'saw', 1), (3, 'bolt', 2);
INSERT INTO shop_marker (id, unit_id, name) VALUES
  (1, 1, 'drill-a'), (2, 1, 'drill-b'), (3, 2, 'saw-a'), (4, 2, 'saw-b'), (5, 3, 'bolt-a');
INSERT INTO shop_outcome (id, name, score) VALUES (1, 'pass', 10), (2, 'fail', 0), (3, 'retest', 5);
SELECT setval(pg_get_serial_sequence(t, 'id'), 100) FROM unnest(ARRAY['shop_category', 'shop_unit', 'shop_marker', 'shop_outcome']) t;
`

func (d *demo) setupSlave(ctx context.Context) error {
	cfg := d.configs["slave"]
	for _, args := range [][]string{
		{"validate", "--config", cfg},
		{"queue", "install", "--config", cfg},
		{"subscription", "create", "--config", cfg},
		{"subscription", "update", "--wait", "--config", cfg},
	} {
		if err := d.cli(ctx, args...); err != nil {
			return err
		}
	}
	counts, err := countRows(ctx, d.slaveDB, "shop_category", "shop_unit", "shop_marker", "shop_outcome", "pgoutpost.denormalize_queue")
	if err != nil {
		return err
	}
	d.say("initial copy done; one subscription carries data and queue in master commit order, and the queue tables joined it without a copy (no history)")
	d.detail("slave: %s", counts)
	return nil
}

func (d *demo) seedSlave(ctx context.Context) error {
	d.say("adding the slave's own user rows: reports pointing at units, markers and outcomes, and notes on them")
	if err := execScript(ctx, d.slave.DSN(demoDatabase), demoSlaveRows); err != nil {
		return err
	}
	counts, err := countRows(ctx, d.slaveDB, "app_report", "app_note")
	if err != nil {
		return err
	}
	d.detail("slave: %s", counts)
	return nil
}

// demoSlaveRows are the slave's user data. outcome_name is the report's copy
// of its outcome's name, which the denormalize events keep up to date.
const demoSlaveRows = `
INSERT INTO app_report (id, unit_id, marker_id, outcome_id, title, outcome_name) VALUES
  (1, 1, NULL, 1, 'drill inspection', 'pass'),
  (2, 1, NULL, 2, 'drill repair', 'fail'),
  (3, 2, 3, 1, 'saw inspection', 'pass'),
  (4, 2, NULL, 3, 'saw check', 'retest'),
  (5, 3, 5, 1, 'bolt inspection', 'pass');
INSERT INTO app_note (report_id, body) VALUES
  (1, 'chuck worn'), (1, 'replaced chuck'), (2, 'motor noisy'), (3, 'blade sharp'), (5, 'torque ok');
`

func (d *demo) startSidecar(ctx context.Context) error {
	args := []string{"run", "--config", d.configs["slave"], "--log-level", "warn"}
	d.say("$ pgoutpost %s   (in the background; /metrics, /healthz, /readyz on %s)", strings.Join(args, " "), d.listen)
	// Not tied to ctx: cleanup stops the sidecar, after the consumer.
	logs := &indenter{w: d.stderr, prefix: "          sidecar: "}
	d.sidecar = exec.Command(d.bin, args...)
	d.sidecar.Stdout, d.sidecar.Stderr = logs, logs
	if err := d.sidecar.Start(); err != nil {
		d.sidecar = nil
		return fmt.Errorf("start pgoutpost run: %w", err)
	}
	d.sidecarDone = make(chan int, 1)
	go func() {
		d.sidecarDone <- exitCode(d.sidecar.Wait())
		logs.flush()
	}()
	var why string
	err := d.waitFor(ctx, "the sidecar to be ready", func(ctx context.Context) (bool, error) {
		select {
		case code := <-d.sidecarDone:
			d.sidecarDone <- code
			return false, fmt.Errorf("the sidecar exited %d", code)
		default:
		}
		code, body, err := httpGet(ctx, "http://"+d.listen+"/readyz")
		if err != nil {
			why = err.Error()
			return false, nil
		}
		why = strings.TrimSpace(body)
		return code == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("%w (last /readyz: %s)", err, why)
	}
	d.say("sidecar ready: GET /readyz says %q", why)
	return d.startConsumer(ctx)
}

// startConsumer follows the slave's shop_outcome events as an application
// service would (package consumer) and keeps app_report.outcome_name up to
// date with the handler of examples/denormalize-consumer.
func (d *demo) startConsumer(ctx context.Context) error {
	var err error
	if d.nc, err = nats.Connect(d.nats.URL(), nats.Name("pgoutpost-demo")); err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	js, err := jetstream.New(d.nc)
	if err != nil {
		return err
	}
	opts := consumer.Options{
		Env: demoSlaveEnv, Durable: "demo-reports", Tables: []string{reports.OutcomeTable},
		MaxAckPending: 1, RetryMin: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(d.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	// The sidecar creates the stream when it connects; wait until it exists.
	if err := d.waitFor(ctx, "the event stream", func(ctx context.Context) (bool, error) {
		_, err := consumer.Consumer(ctx, js, opts)
		return err == nil, nil
	}); err != nil {
		return err
	}
	d.events = make(chan event.Event, 64)
	cctx, cancel := context.WithCancel(context.Background())
	d.consumerStop, d.consumerDone = cancel, make(chan struct{})
	handler := &reports.Denormalizer{DB: d.slaveDB}
	go func() {
		defer close(d.consumerDone)
		_ = consumer.Run(cctx, js, opts, func(ctx context.Context, ev event.Event) error {
			if err := handler.Handle(ctx, ev); err != nil {
				return err
			}
			select {
			case d.events <- ev:
			default: // nobody is reading: the narration shows only what it waits for
			}
			return nil
		})
	}()
	d.say("a consumer (package consumer, durable %q) follows %s events on NATS", opts.Durable, reports.OutcomeTable)
	return nil
}

// cascadeDelete deletes unit 1 on the master the way Django does (its
// markers, then the unit, in one transaction) and shows the slave.
func (d *demo) cascadeDelete(ctx context.Context) error {
	tables := []string{"shop_unit", "shop_marker", "app_report", "app_note"}
	before, err := countRows(ctx, d.slaveDB, tables...)
	if err != nil {
		return err
	}
	d.say("CASCADE: deleting unit 1 (drill) on the master with its markers, in one transaction")
	d.detail("slave before: %s", before)
	err = pgx.BeginFunc(ctx, d.masterDB, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM shop_marker WHERE unit_id = 1`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM shop_unit WHERE id = 1`)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete unit 1 on the master: %w", err)
	}
	// Done is either outcome: the unit gone, or its entry dead-lettered (the
	// last of its transaction's entries).
	if err := d.waitDeleteHandled(ctx, "unit", "shop_unit", 1); err != nil {
		return err
	}
	after, err := countRows(ctx, d.slaveDB, tables...)
	if err != nil {
		return err
	}
	if after[0].n == before[0].n {
		d.say("the slave refused the delete of unit 1:")
		if err := d.showDeadLetters(ctx, []string{"public.shop_unit", "public.shop_marker"}, ""); err != nil {
			return err
		}
		d.detail("slave after: %s", after)
		return nil
	}
	var gone []string
	for i, t := range tables {
		gone = append(gone, fmt.Sprintf("%s %d", t, before[i].n-after[i].n))
	}
	d.say("the sidecar applied the delete on the slave with the on_delete rules: " +
		"the unit's markers and reports by CASCADE, the reports' notes by CASCADE")
	d.detail("deleted on the slave: %s", strings.Join(gone, ", "))
	d.detail("slave after: %s", after)
	return nil
}

// waitDeleteHandled waits until the sidecar has handled the master's delete
// of row id of public.table (a what): the row is gone from the slave, or its
// entry is a dead letter.
func (d *demo) waitDeleteHandled(ctx context.Context, what, table string, id int) error {
	name := registry.TableName{Schema: "public", Name: table}
	return d.waitFor(ctx, fmt.Sprintf("the sidecar to handle the delete of %s %d", what, id), func(ctx context.Context) (bool, error) {
		var done bool
		err := d.slaveDB.QueryRow(ctx, `SELECT NOT EXISTS (SELECT FROM `+name.Sanitize()+` WHERE id = $1)
			OR EXISTS (SELECT FROM pgoutpost.dead_letter WHERE table_name = $2 AND pk @> jsonb_build_object('id', $3::int))`,
			id, name.String(), id).Scan(&done)
		return done, err
	})
}

// protectConflict deletes a marker that a slave report points at by PROTECT.
func (d *demo) protectConflict(ctx context.Context) error {
	d.say("PROTECT: deleting marker 3 (saw-a) on the master; on the slave, report 3 points at it (app_report.marker_id: PROTECT)")
	if _, err := d.masterDB.Exec(ctx, `DELETE FROM shop_marker WHERE id = 3`); err != nil {
		return fmt.Errorf("delete marker 3 on the master: %w", err)
	}
	if err := d.waitDeleteHandled(ctx, "marker", "shop_marker", 3); err != nil {
		return err
	}
	markers, err := count(ctx, d.slaveDB, `SELECT count(*) FROM shop_marker WHERE id = 3`)
	if err != nil {
		return err
	}
	reports, err := count(ctx, d.slaveDB, `SELECT count(*) FROM app_report WHERE marker_id = 3`)
	if err != nil {
		return err
	}
	deadLetters, err := count(ctx, d.slaveDB, `SELECT count(*) FROM pgoutpost.dead_letter`)
	if err != nil {
		return err
	}
	if markers == 0 {
		d.say("marker 3 was deleted on the slave although report 3 pointed at it (reports pointing at it now: %d)", reports)
		return nil
	}
	d.say("the delete was refused on the slave and moved to the dead letters; the stream moved on")
	if err := d.showDeadLetters(ctx, []string{"public.shop_marker"}, `{"id": 3}`); err != nil {
		return err
	}
	d.detail("slave: marker 3 still there: %d row; reports pointing at it: %d; dead letters: %d", markers, reports, deadLetters)
	if err := d.cli(ctx, "queue", "status", "--config", d.configs["slave"]); err != nil {
		return err
	}
	return d.retryDeadLetter(ctx)
}

// retryDeadLetter resolves the PROTECT conflict as a user would: point the
// report elsewhere, put the dead letter back into its queue, and show the
// delete applied.
func (d *demo) retryDeadLetter(ctx context.Context) error {
	d.say("resolving it on the slave: report 3 now points at marker 4; then the dead letter goes back into the delete queue")
	if _, err := d.slaveDB.Exec(ctx, `UPDATE app_report SET marker_id = 4 WHERE id = 3`); err != nil {
		return err
	}
	if err := d.cli(ctx, "queue", "retry", "--all", "--config", d.configs["slave"]); err != nil {
		return err
	}
	if err := d.waitFor(ctx, "the sidecar to handle the retried entry", func(ctx context.Context) (bool, error) {
		var done bool
		err := d.slaveDB.QueryRow(ctx, `SELECT NOT EXISTS (SELECT FROM shop_marker WHERE id = 3)
			OR EXISTS (SELECT FROM pgoutpost.dead_letter)`).Scan(&done)
		return done, err
	}); err != nil {
		return err
	}
	var markers, deadLetters int64
	if err := d.slaveDB.QueryRow(ctx, `SELECT (SELECT count(*) FROM shop_marker WHERE id = 3), (SELECT count(*) FROM pgoutpost.dead_letter)`).
		Scan(&markers, &deadLetters); err != nil {
		return err
	}
	if markers == 0 {
		d.say("the retried delete was applied: marker 3 is gone on the slave; dead letters: %d", deadLetters)
		return nil
	}
	d.say("the retried delete failed again:")
	return d.showDeadLetters(ctx, nil, "")
}

// showDeadLetters prints the slave's dead letters of tables (all when nil)
// whose key contains pk (a JSON object; any when "").
func (d *demo) showDeadLetters(ctx context.Context, tables []string, pk string) error {
	rows, err := d.slaveDB.Query(ctx, `SELECT queue, coalesce(table_name, ''), coalesce(pk::text, ''), error, attempts
		FROM pgoutpost.dead_letter
		WHERE ($1::text[] IS NULL OR table_name = ANY ($1)) AND ($2 = '' OR pk @> $2::jsonb)
		ORDER BY failed_at, id`, tables, pk)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var queue, table, key, reason string
		var attempts int
		if err := rows.Scan(&queue, &table, &key, &reason, &attempts); err != nil {
			return err
		}
		d.detail("dead letter: queue=%s table=%s pk=%s attempts=%d", queue, table, key, attempts)
		d.detail("reason: %s", reason)
	}
	return rows.Err()
}

// denormalizeEvent renames outcome 1 on the master and waits for its event.
func (d *demo) denormalizeEvent(ctx context.Context) error {
	d.say("DENORMALIZE: renaming outcome 1 from 'pass' to 'passed' on the master")
	if _, err := d.masterDB.Exec(ctx, `UPDATE shop_outcome SET name = 'passed' WHERE id = 1`); err != nil {
		return fmt.Errorf("update outcome 1 on the master: %w", err)
	}
	return d.showEvent(ctx, 1, "passed")
}

// showEvent waits for the update event of outcome id and shows it with the
// reports the consumer updated.
func (d *demo) showEvent(ctx context.Context, id int64, name string) error {
	deadline := time.NewTimer(demoWait)
	defer deadline.Stop()
	for {
		var ev event.Event
		select {
		case ev = <-d.events:
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("no event for outcome %d within %s", id, demoWait)
		}
		var pk struct {
			ID int64 `json:"id"`
		}
		if ev.DecodePK(&pk) != nil || pk.ID != id || ev.Op != event.OpUpdate {
			d.detail("event received: %s %s pk=%s", ev.Op, ev.Table, ev.PK)
			continue
		}
		subject, _ := ev.Subject(event.DefaultPrefix)
		d.say("event received on NATS: subject %s", subject)
		d.detail("op=%s table=%s pk=%s queue_id=%s committed_at=%s", ev.Op, ev.Table, ev.PK, ev.QueueID, ev.CommittedAt.Format(time.RFC3339Nano))
		d.detail("row (as the slave holds it): %s", ev.Row)
		break
	}
	var renamed, all int64
	err := d.slaveDB.QueryRow(ctx, `SELECT count(*) FILTER (WHERE outcome_name = $2), count(*) FROM app_report WHERE outcome_id = $1`, id, name).Scan(&renamed, &all)
	if err != nil {
		return err
	}
	d.detail("the consumer updated app_report.outcome_name: %d of %d reports of outcome %d now say '%s'", renamed, all, id, name)
	return nil
}

// natsOutage stops the NATS server, changes an outcome meanwhile, and starts
// NATS again: /readyz says why the sidecar is not ready, and the event
// arrives once NATS is back (the queue row waits on the slave until then).
func (d *demo) natsOutage(ctx context.Context) error {
	d.say("NATS OUTAGE: stopping the NATS server")
	d.nats.Stop()
	var why string
	if err := d.waitFor(ctx, "/readyz to report NATS down", func(ctx context.Context) (bool, error) {
		code, body, err := httpGet(ctx, "http://"+d.listen+"/readyz")
		why = strings.TrimSpace(body)
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, "nats"), nil
	}); err != nil {
		return err
	}
	d.detail("GET /readyz: 503 %s", strings.ReplaceAll(why, "\n", "; "))
	d.say("renaming outcome 3 from 'retest' to 'rechecked' on the master while NATS is down")
	if _, err := d.masterDB.Exec(ctx, `UPDATE shop_outcome SET name = 'rechecked' WHERE id = 3`); err != nil {
		return fmt.Errorf("update outcome 3 on the master: %w", err)
	}
	if err := d.waitFor(ctx, "the entry to reach the slave", func(ctx context.Context) (bool, error) {
		n, err := count(ctx, d.slaveDB, `SELECT count(*) FROM pgoutpost.denormalize_queue`)
		return n > 0, err
	}); err != nil {
		return err
	}
	waiting, err := count(ctx, d.slaveDB, `SELECT count(*) FROM pgoutpost.denormalize_queue`)
	if err != nil {
		return err
	}
	d.detail("the slave's pgoutpost.denormalize_queue holds %d entry, waiting for NATS", waiting)
	d.say("starting NATS again")
	if err := d.nats.Restart(); err != nil {
		return fmt.Errorf("restart nats: %w", err)
	}
	if err := d.waitFor(ctx, "/readyz to be ready again", func(ctx context.Context) (bool, error) {
		code, _, err := httpGet(ctx, "http://"+d.listen+"/readyz")
		return err == nil && code == http.StatusOK, nil
	}); err != nil {
		return err
	}
	d.detail("GET /readyz: 200 ready")
	return d.showEvent(ctx, 3, "rechecked")
}

// demoMetrics are the metrics the demo's summary shows (histograms by count).
var demoMetrics = []string{
	"pgoutpost_queue_entries_total",
	"pgoutpost_queue_pending_entries",
	"pgoutpost_queue_dead_letters",
	"pgoutpost_queue_commit_to_done_seconds_count",
	"pgoutpost_cascade_rows_total",
	"pgoutpost_slot_lag_bytes",
	"pgoutpost_slot_wal_status",
	"pgoutpost_nats_publish_seconds_count",
	"pgoutpost_nats_connected",
	"pgoutpost_reconnects_total",
	"pgoutpost_ready",
}

func (d *demo) metrics(ctx context.Context) error {
	// The gauges are refreshed by a periodic probe: wait until they show
	// what the slave's tables hold.
	var dead, pendingDelete, pendingDenormalize int64
	err := d.slaveDB.QueryRow(ctx, `SELECT (SELECT count(*) FROM pgoutpost.dead_letter WHERE queue = 'delete'),
		(SELECT count(*) FROM pgoutpost.delete_queue), (SELECT count(*) FROM pgoutpost.denormalize_queue)`).
		Scan(&dead, &pendingDelete, &pendingDenormalize)
	if err != nil {
		return err
	}
	gauges := []string{
		fmt.Sprintf(`pgoutpost_queue_dead_letters{queue="delete"} %d`, dead),
		fmt.Sprintf(`pgoutpost_queue_pending_entries{queue="delete"} %d`, pendingDelete),
		fmt.Sprintf(`pgoutpost_queue_pending_entries{queue="denormalize"} %d`, pendingDenormalize),
		"pgoutpost_nats_connected 1",
	}
	var page string
	if err := d.waitFor(ctx, "the metrics to show the slave's queue tables", func(ctx context.Context) (bool, error) {
		code, body, err := httpGet(ctx, "http://"+d.listen+"/metrics")
		if err != nil || code != http.StatusOK {
			return false, nil
		}
		page = body
		for _, g := range gauges {
			if !strings.Contains(body, g+"\n") {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		return err
	}
	d.say("GET http://%s/metrics (a summary; the slave's tables hold %d dead letter(s), %d and %d pending delete and denormalize entries)",
		d.listen, dead, pendingDelete, pendingDenormalize)
	var families []string
	for _, line := range strings.Split(page, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[1] == "TYPE" && strings.HasPrefix(f[2], "pgoutpost_") {
			families = append(families, f[2])
		}
	}
	d.detail("pgoutpost metrics on the page (%d): %s", len(families), strings.Join(families, " "))
	for _, line := range strings.Split(page, "\n") {
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		if !slices.Contains(demoMetrics, name) || name == "pgoutpost_slot_wal_status" && !strings.HasSuffix(line, " 1") {
			continue
		}
		d.detail("%s", line)
	}
	return nil
}

// waitFor polls cond until it holds, fails, or demoWait passes.
func (d *demo) waitFor(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, demoWait)
	defer cancel()
	for {
		ok, err := cond(ctx)
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s: not within %s", what, demoWait)
			}
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// cleanup stops everything the demo started, in order: the consumer and the
// sidecar, then the subscriptions (while the master still runs, so that their
// slots there go too), NATS and the clusters. It does not use the demo's
// context, which Ctrl-C has cancelled.
func (d *demo) cleanup() {
	var errs []error
	if d.consumerStop != nil {
		d.consumerStop()
		select {
		case <-d.consumerDone:
		case <-time.After(30 * time.Second):
			errs = append(errs, errors.New("the consumer did not stop within 30s"))
		}
	}
	if d.nc != nil {
		d.nc.Close()
	}
	if d.sidecar != nil {
		// As Kubernetes stops it. Ctrl-C may have stopped it already.
		if err := d.sidecar.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("stop the sidecar: %w", err))
		}
		select {
		case code := <-d.sidecarDone:
			if code != 0 {
				errs = append(errs, fmt.Errorf("the sidecar exited %d on shutdown", code))
			}
		case <-time.After(time.Minute):
			_ = d.sidecar.Process.Kill()
			errs = append(errs, errors.New("the sidecar did not stop within a minute"))
		}
	}
	if d.slaveDB != nil {
		d.slaveDB.Close()
	}
	if d.masterDB != nil {
		d.masterDB.Close()
	}
	if d.slave != nil && d.master != nil {
		if err := dropSubscriptions(d.slave.DSN(demoDatabase)); err != nil {
			// Without the master's cooperation: drop them locally.
			errs = append(errs, d.slave.DropDatabase(context.Background(), demoDatabase))
		}
	}
	if d.nats != nil {
		d.nats.Shutdown()
	}
	for _, c := range []*pgcluster.Cluster{d.slave, d.master} {
		if c != nil {
			errs = append(errs, c.Stop())
		}
	}
	if d.dir != "" {
		errs = append(errs, os.RemoveAll(d.dir))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(d.stderr, "demo cleanup:", err)
	}
}

// dropSubscriptions drops every subscription of the database at dsn, with
// their slots on the master.
func dropSubscriptions(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	subs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, s := range subs {
		if _, err := conn.Exec(ctx, "DROP SUBSCRIPTION "+pgx.Identifier{s}.Sanitize()); err != nil {
			return fmt.Errorf("drop subscription %s: %w", s, err)
		}
	}
	return nil
}

// demoValues fill in demo/sidecar.yaml.tmpl.
type demoValues struct {
	Environment, Role, DSN, Master, NATS, Listen string
}

func writeDemoConfig(path string, v demoValues) error {
	t, err := template.New("sidecar.yaml").Parse(demoConfig)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := t.Execute(f, v); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// exitCode is the exit code of a process that Wait returned err for; -1
// when it did not exit (killed by a signal, or never ran).
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func httpGet(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// tableCount is one table's row count, printed as "table=n".
type tableCount struct {
	table string
	n     int64
}

type tableCounts []tableCount

func (c tableCounts) String() string {
	parts := make([]string, len(c))
	for i, tc := range c {
		parts[i] = fmt.Sprintf("%s=%d", tc.table, tc.n)
	}
	return strings.Join(parts, " ")
}

// countRows counts the rows of each table ("table" or "schema.table").
func countRows(ctx context.Context, db *pgxpool.Pool, tables ...string) (tableCounts, error) {
	out := make(tableCounts, len(tables))
	for i, t := range tables {
		n, err := count(ctx, db, "SELECT count(*) FROM "+pgx.Identifier(strings.Split(t, ".")).Sanitize())
		if err != nil {
			return nil, err
		}
		out[i] = tableCount{t, n}
	}
	return out, nil
}

func count(ctx context.Context, db *pgxpool.Pool, sql string) (n int64, err error) {
	err = db.QueryRow(ctx, sql).Scan(&n)
	return n, err
}

// indenter writes whole lines to w, each with prefix; safe for concurrent use.
type indenter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (i *indenter) Write(p []byte) (int, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.buf = append(i.buf, p...)
	for {
		n := strings.IndexByte(string(i.buf), '\n')
		if n < 0 {
			return len(p), nil
		}
		if _, err := fmt.Fprintf(i.w, "%s%s\n", i.prefix, i.buf[:n]); err != nil {
			return 0, err
		}
		i.buf = i.buf[n+1:]
	}
}

// flush writes a last line without its newline.
func (i *indenter) flush() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if len(i.buf) > 0 {
		fmt.Fprintf(i.w, "%s%s\n", i.prefix, i.buf)
		i.buf = nil
	}
}

// execScript runs a multi-statement SQL script with the simple protocol.
func execScript(ctx context.Context, dsn, script string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.PgConn().Exec(ctx, script).ReadAll()
	return err
}
