//go:build faults

package faults

import (
	"context"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/internal/natsembed"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

// schema is created on the master and on the slave: system models
// (category, and bulk for the bulk loads), two delete models (unit, and marker which belongs to a unit), a
// denormalize model (outcome) and the slave's user tables. Foreign keys are
// made as Django's migrate makes them (deferred, no ON DELETE action); the
// rules live in the configuration.
const schema = `
CREATE TABLE shop_category (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE shop_unit (
    id bigint PRIMARY KEY, name text NOT NULL,
    category_id bigint REFERENCES shop_category DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE shop_marker (
    id bigint PRIMARY KEY,
    unit_id bigint NOT NULL REFERENCES shop_unit DEFERRABLE INITIALLY DEFERRED,
    name text NOT NULL);
CREATE TABLE shop_outcome (id bigint PRIMARY KEY, name text NOT NULL, score integer NOT NULL DEFAULT 0);
CREATE TABLE shop_bulk (id bigint PRIMARY KEY, payload text NOT NULL);
CREATE TABLE app_report (
    id bigint PRIMARY KEY,
    unit_id bigint NOT NULL REFERENCES shop_unit DEFERRABLE INITIALLY DEFERRED,
    marker_id bigint REFERENCES shop_marker DEFERRABLE INITIALLY DEFERRED,
    outcome_id bigint REFERENCES shop_outcome DEFERRABLE INITIALLY DEFERRED,
    title text NOT NULL);
CREATE TABLE app_note (
    id bigint PRIMARY KEY,
    report_id bigint NOT NULL REFERENCES app_report DEFERRABLE INITIALLY DEFERRED,
    body text NOT NULL);
CREATE TABLE app_keeper (
    id bigint PRIMARY KEY,
    marker_id bigint NOT NULL REFERENCES shop_marker DEFERRABLE INITIALLY DEFERRED);
CREATE INDEX ON shop_unit (category_id);
CREATE INDEX ON shop_marker (unit_id);
CREATE INDEX ON app_report (unit_id);
CREATE INDEX ON app_report (marker_id);
CREATE INDEX ON app_report (outcome_id);
CREATE INDEX ON app_note (report_id);
CREATE INDEX ON app_keeper (marker_id);
`

// probes are created on the slave after the setup: a log of every row of a
// model deleted there (a row deleted twice would show twice), and a log of
// the slave's own outbox entries (the delete events of denormalize rows the
// sidecar deleted). The subscription's apply worker runs with
// session_replication_role = replica, so the outbox log sees only the rows
// the sidecar writes, not those copied from the master. The delete log's
// triggers are ENABLE ALWAYS: with queue.fk_checks: batch the sidecar's
// cascades run under the replica role too (the apply worker deletes no
// model rows: their deletes are not published).
const probes = `
CREATE TABLE faults_deleted (tbl text NOT NULL, id bigint NOT NULL);
CREATE FUNCTION faults_log_delete() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO faults_deleted VALUES (TG_TABLE_NAME, OLD.id); RETURN OLD; END$$;
CREATE TRIGGER faults_deleted AFTER DELETE ON shop_unit FOR EACH ROW EXECUTE FUNCTION faults_log_delete();
CREATE TRIGGER faults_deleted AFTER DELETE ON shop_marker FOR EACH ROW EXECUTE FUNCTION faults_log_delete();
CREATE TRIGGER faults_deleted AFTER DELETE ON shop_outcome FOR EACH ROW EXECUTE FUNCTION faults_log_delete();
ALTER TABLE shop_unit ENABLE ALWAYS TRIGGER faults_deleted;
ALTER TABLE shop_marker ENABLE ALWAYS TRIGGER faults_deleted;
ALTER TABLE shop_outcome ENABLE ALWAYS TRIGGER faults_deleted;
CREATE TABLE faults_outbox (id uuid PRIMARY KEY, table_name text NOT NULL, pk jsonb NOT NULL, op text NOT NULL);
CREATE FUNCTION faults_log_outbox() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO faults_outbox VALUES (NEW.id, NEW.table_name, NEW.pk, NEW.op); RETURN NEW; END$$;
CREATE TRIGGER faults_outbox AFTER INSERT ON pgoutpost.denormalize_queue FOR EACH ROW EXECUTE FUNCTION faults_log_outbox();
`

// configTemplate is the sidecar.yaml of the master and of the slave.
const configTemplate = `environment: {{.Environment}}
role: {{.Role}}
database:
  dsn: "{{.DSN}}"
{{- if eq .Role "slave"}}
master:
  dsn: "{{.Master}}"
sidecar:
  listen: "{{.Listen}}"
  shutdown_grace: 10s
nats:
  url: "{{.NATS}}"
{{- end}}
{{- if or .LargeTxn .FKChecks}}
queue:
{{- if .LargeTxn}}
  large_transaction: {{.LargeTxn}}
{{- end}}
{{- if .FKChecks}}
  fk_checks: {{.FKChecks}}
{{- end}}
{{- end}}
models:
  - name: public.shop_category
    kind: system
  - name: public.shop_unit
    kind: delete
  - name: public.shop_marker
    kind: delete
  - name: public.shop_outcome
    kind: denormalize
  - name: public.shop_bulk
    kind: system
{{- if .Twin}}
  - name: public.e2e_outcome_twin
    kind: system
{{- end}}
relations:
  shop_unit.category_id: PROTECT
  shop_marker.unit_id: CASCADE
  app_report.unit_id: CASCADE
  app_report.marker_id: SET_NULL
  app_report.outcome_id: SET_NULL
  app_note.report_id: CASCADE
  app_keeper.marker_id: PROTECT
`

type configValues struct {
	Environment, Role, DSN, Master, NATS, Listen string
	LargeTxn                                     int    // queue.large_transaction; the default when 0
	FKChecks                                     string // queue.fk_checks; the default when ""
	Twin                                         bool   // e2e_outcome_twin is a system model (BenchmarkEndToEnd)
}

// env is a master and a slave database, a NATS server and the pgoutpost
// binary with a configuration for each side.
type env struct {
	name                   string // the slave's environment, the events' subject token
	bin                    string
	dir                    string
	master, slave          *pgtest.DB
	nats                   *natsembed.Server
	cluster                *natsembed.Cluster // when set, the sidecar and the consumer use it, not nats
	masterConfig, slaveCfg string
	slaveValues            configValues // what slaveCfg was written from
	listen                 string
}

var flagBin = flag.String("faults.bin", "", "a pgoutpost binary to test instead of building cmd/pgoutpost from the work tree")

// buildBinary builds cmd/pgoutpost into a temporary directory, unless
// -faults.bin names a binary.
func buildBinary(t testing.TB) string {
	t.Helper()
	if *flagBin != "" {
		return *flagBin
	}
	bin := filepath.Join(t.TempDir(), "pgoutpost")
	// The PATH's go, as for make faults itself.
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/pgoutpost")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pgoutpost: %v\n%s", err, out)
	}
	return bin
}

// natsURL is the NATS URL(s) of the sidecar and the consumer.
func (e *env) natsURL() string {
	if e.cluster != nil {
		return e.cluster.URLs()
	}
	return e.nats.URL()
}

// newClusterEnv is newEnv with a three-node JetStream cluster for NATS.
func newClusterEnv(t testing.TB, name string) *env {
	t.Helper()
	c, err := natsembed.StartCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	return newEnvWith(t, name, c)
}

func newEnv(t testing.TB, name string) *env {
	t.Helper()
	return newEnvWith(t, name, nil)
}

func newEnvWith(t testing.TB, name string, cluster *natsembed.Cluster) *env {
	t.Helper()
	e := &env{name: name, bin: buildBinary(t), dir: t.TempDir(), cluster: cluster}
	// The master's database first, so that its cleanup runs after the
	// slave's (which drops the subscriptions and their slots on the master).
	e.master = pgtest.NewDB(t, pgtest.Master(t))
	e.slave = pgtest.NewDB(t, pgtest.Slave(t))
	e.nats = pgtest.NATS(t)
	pgtest.Exec(t, e.master.DSN, schema)
	pgtest.Exec(t, e.slave.DSN, schema)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.listen = l.Addr().String()
	l.Close()
	e.masterConfig = e.writeConfig(t, configValues{Environment: "master", Role: "master", DSN: e.master.DSN})
	e.slaveValues = configValues{
		Environment: name, Role: "slave", DSN: e.slave.DSN,
		Master: e.master.ConnInfo(), NATS: e.natsURL(), Listen: e.listen,
	}
	e.slaveCfg = e.writeConfig(t, e.slaveValues)
	return e
}

func (e *env) writeConfig(t testing.TB, v configValues) string {
	t.Helper()
	path := filepath.Join(e.dir, v.Role+".yaml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := template.Must(template.New("").Parse(configTemplate)).Execute(f, v); err != nil {
		t.Fatal(err)
	}
	return path
}

// cli runs the pgoutpost binary with args and fails the test when it fails.
func (e *env) cli(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(e.bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("pgoutpost %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// setupMaster runs the master's setup commands in the documented order and
// seeds the system data (without queue entries: they are history the slave
// does not need).
func (e *env) setupMaster(t testing.TB, ctx context.Context, units, outcomes int) {
	t.Helper()
	for _, args := range [][]string{
		{"validate", "--config", e.masterConfig},
		{"publication", "create", "--config", e.masterConfig},
		{"queue", "install", "--config", e.masterConfig},
		{"publication", "update", "--config", e.masterConfig},
	} {
		e.cli(t, args...)
	}
	conn, err := pgx.Connect(ctx, e.master.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{"SET pgoutpost.skip_queue = on", nil},
		{"INSERT INTO shop_category SELECT g, 'category ' || g FROM generate_series(1, 3) g", nil},
		{"INSERT INTO shop_unit SELECT g, 'unit ' || g, 1 + g % 3 FROM generate_series(1, $1::int) g", []any{units}},
		{`INSERT INTO shop_marker SELECT (u - 1) * $2::int + j, u, 'marker ' || u || '.' || j
		  FROM generate_series(1, $1::int) u, generate_series(1, $2::int) j`, []any{units, markersPerUnit}},
		{"INSERT INTO shop_outcome SELECT g, 'outcome ' || g, 0 FROM generate_series(1, $1::int) g", []any{outcomes}},
	} {
		if _, err := conn.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("seed the master: %s: %v", q.sql, err)
		}
	}
}

// setupSlave runs the slave's setup commands (the initial copy included)
// and adds the probes.
// startSidecar starts pgoutpost run on the slave; it is stopped at the end
// of the test (registered after the databases, so before they are dropped),
// and its log's last lines are shown if the test failed.
func (e *env) startSidecar(t testing.TB) *sidecar {
	t.Helper()
	sc := &sidecar{bin: e.bin, config: e.slaveCfg, log: filepath.Join(e.dir, "sidecar.log")}
	if err := sc.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sc.stop(time.Minute)
		if t.Failed() {
			t.Logf("sidecar log (%s), last lines:\n%s", sc.log, tail(sc.log, 80))
		}
	})
	return sc
}

func (e *env) setupSlave(t testing.TB) {
	t.Helper()
	for _, args := range [][]string{
		{"validate", "--config", e.slaveCfg},
		{"queue", "install", "--config", e.slaveCfg},
		{"subscription", "create", "--config", e.slaveCfg},
		{"subscription", "update", "--wait", "--config", e.slaveCfg},
	} {
		e.cli(t, args...)
	}
	pgtest.Exec(t, e.slave.DSN, probes)
}
