package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/replication"
)

const replSchema = `
CREATE TABLE cat (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE unit (id int PRIMARY KEY, cat_id int REFERENCES cat DEFERRABLE INITIALLY DEFERRED, name text);
CREATE TABLE outcome (id int PRIMARY KEY, name text);
CREATE TABLE report (id int PRIMARY KEY, unit_id int REFERENCES unit DEFERRABLE INITIALLY DEFERRED, note text);
INSERT INTO cat VALUES (1, 'one');
`

const replConfig = `environment: %s
role: %s
database:
  dsn: %q
%s
contrib_system_tables: false
models:
  - name: public.cat
    kind: system
  - name: public.unit
    kind: delete
  - name: public.outcome
    kind: denormalize
relations:
  report.unit_id: CASCADE
`

func writeReplConfig(t *testing.T, env, role, dsn, masterConnInfo string) string {
	t.Helper()
	master := ""
	if masterConnInfo != "" {
		master = fmt.Sprintf("master:\n  dsn: %q", masterConnInfo)
	}
	path := filepath.Join(t.TempDir(), role+".yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(replConfig, env, role, dsn, master)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// pubSnapshot is the master's publications and their tables, as text.
func pubSnapshot(t *testing.T, dsn string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var s string
	err = conn.QueryRow(ctx, `SELECT coalesce(string_agg(p.pubname || ' ' || p.pubinsert || p.pubupdate || p.pubdelete || p.pubtruncate || ' ' ||
		coalesce(r.prrelid::regclass::text, '-'), E'\n' ORDER BY 1), '')
		FROM pg_publication p LEFT JOIN pg_publication_rel r ON r.prpubid = p.oid`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustRun(t testing.TB, args ...string) string {
	t.Helper()
	code, out, errs := runCLI(t, args...)
	if code != exitOK {
		t.Fatalf("pgoutpost %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func TestReplicationCommands(t *testing.T) {
	master := pgtest.NewDB(t, pgtest.Master(t))
	slave := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.Exec(t, master.DSN, replSchema)
	pgtest.Exec(t, slave.DSN, strings.ReplaceAll(replSchema, "INSERT INTO cat VALUES (1, 'one');", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mpool, spool := pgtest.Pool(t, master.DSN), pgtest.Pool(t, slave.DSN)
	reg := registry.New([]*registry.Table{
		{Name: registry.TableName{Schema: "public", Name: "unit"}, Kind: registry.KindDelete, PrimaryKey: []string{"id"}},
		{Name: registry.TableName{Schema: "public", Name: "outcome"}, Kind: registry.KindDenormalize, PrimaryKey: []string{"id"}},
	})
	if _, err := queue.Install(ctx, mpool, queue.InstallOptions{Role: registry.RoleMaster, Registry: reg}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Install(ctx, spool, queue.InstallOptions{Role: registry.RoleSlave}, false); err != nil {
		t.Fatal(err)
	}
	env := strings.ReplaceAll(slave.Name, "_", "-") // unique per test: slot names are per cluster
	mcfg := writeReplConfig(t, "prod", "master", master.DSN, "")
	scfg := writeReplConfig(t, env, "slave", slave.DSN, master.ConnInfo())

	t.Run("publication create is idempotent", func(t *testing.T) {
		out := mustRun(t, "publication", "create", "--config", mcfg)
		if !strings.Contains(out, "created publication pgoutpost_system") {
			t.Errorf("first create:\n%s", out)
		}
		if out := mustRun(t, "publication", "create", "--config", mcfg); !strings.Contains(out, "nothing to create") {
			t.Errorf("second create:\n%s", out)
		}
	})

	t.Run("dry run plans and changes nothing", func(t *testing.T) {
		before := pubSnapshot(t, master.DSN)
		out := mustRun(t, "publication", "update", "--dry-run", "--config", mcfg)
		for _, want := range []string{
			"publication pgoutpost_system: add public.cat",
			"publication pgoutpost_delete: add public.outcome",
			"publication pgoutpost_queue: add pgoutpost.delete_queue",
			"Not synced (1 user tables):\n  public.report",
			"dry run: nothing changed",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("dry run output lacks %q:\n%s", want, out)
			}
		}
		if after := pubSnapshot(t, master.DSN); after != before {
			t.Errorf("dry run changed the catalog:\n%s\n->\n%s", before, after)
		}
	})

	t.Run("update applies once", func(t *testing.T) {
		mustRun(t, "publication", "update", "--config", mcfg)
		before := pubSnapshot(t, master.DSN)
		if out := mustRun(t, "publication", "update", "--config", mcfg); !strings.Contains(out, "no changes") {
			t.Errorf("second update:\n%s", out)
		}
		if after := pubSnapshot(t, master.DSN); after != before {
			t.Errorf("second update changed the catalog")
		}
	})

	t.Run("publication commands refuse a slave configuration", func(t *testing.T) {
		code, _, errs := runCLI(t, "publication", "update", "--config", scfg)
		if code != exitUsage || !strings.Contains(errs, "runs on the master") {
			t.Errorf("exit %d, stderr %s", code, errs)
		}
	})

	t.Run("subscriptions", func(t *testing.T) {
		out := mustRun(t, "subscription", "create", "--config", scfg)
		if strings.Count(out, ": created") != 1 {
			t.Errorf("create:\n%s", out)
		}
		if out := mustRun(t, "subscription", "create", "--config", scfg); strings.Count(out, ": exists") != 1 {
			t.Errorf("create again:\n%s", out)
		}
		out = mustRun(t, "subscription", "update", "--wait", "--timeout", "2m", "--config", scfg)
		if !strings.Contains(out, "public.cat: ready") || !strings.Contains(out, "tables ready") {
			t.Errorf("update --wait:\n%s", out)
		}
		var name string
		if err := spool.QueryRow(ctx, "SELECT name FROM cat WHERE id = 1").Scan(&name); err != nil || name != "one" {
			t.Errorf("initial copy: %q, %v", name, err)
		}
	})

	t.Run("synchronous refuses a slave that is not there and a name clash", func(t *testing.T) {
		var before string
		if err := mpool.QueryRow(ctx, "SELECT current_setting('synchronous_standby_names')").Scan(&before); err != nil {
			t.Fatal(err)
		}
		code, _, errs := runCLI(t, "publication", "create", "--config", mcfg, "--synchronous", "--slave-environments", env+"-typo")
		if code != exitFailure || !strings.Contains(errs, env+"-typo") || !strings.Contains(errs, "unchanged") {
			t.Errorf("a misspelt environment: exit %d, stderr %s", code, errs)
		}
		code, _, errs = runCLI(t, "publication", "create", "--config", mcfg, "--synchronous", "--slave-environments", "a-b,a_b")
		if code != exitUsage || !strings.Contains(errs, "both make subscription") {
			t.Errorf("a-b and a_b: exit %d, stderr %s", code, errs)
		}
		var after string
		if err := mpool.QueryRow(ctx, "SELECT current_setting('synchronous_standby_names')").Scan(&after); err != nil || after != before {
			t.Errorf("synchronous_standby_names changed from %q to %q (%v)", before, after, err)
		}
	})

	t.Run("wrong conninfo names the problem without the password", func(t *testing.T) {
		other := writeReplConfig(t, env+"-other", "slave", slave.DSN, master.ConnInfo())
		bad := fmt.Sprintf("host=127.0.0.1 port=%d user=nosuchuser password=Hunter2-Secret dbname=%s sslmode=disable", master.Cluster.Port, master.Name)
		code, out, errs := runCLI(t, "subscription", "create", "--config", other, "-c", bad)
		if code != exitFailure || strings.Contains(out+errs, "Hunter2-Secret") || !strings.Contains(errs, "nosuchuser") ||
			!strings.Contains(errs, "pgoutpost_"+strings.ReplaceAll(env, "-", "_")+"_other") {
			t.Errorf("exit %d\nstdout %s\nstderr %s", code, out, errs)
		}
	})

	t.Run("status", func(t *testing.T) {
		var m, s replication.Report
		// A subscription's slot is inactive for a moment while its apply
		// worker starts: poll until the master reports no problem.
		pgtest.Eventually(t, "the master's status to report no problem", func() bool {
			m = replication.Report{}
			if err := json.Unmarshal([]byte(mustRun(t, "status", "--json", "--config", mcfg)), &m); err != nil {
				t.Fatal(err)
			}
			return len(m.Problems) == 0
		})
		if len(m.Publications) != 3 || len(m.Problems) != 0 || len(m.Slots) < 1 {
			t.Errorf("master status: %+v", m)
		}
		if err := json.Unmarshal([]byte(mustRun(t, "status", "--json", "--config", scfg)), &s); err != nil {
			t.Fatal(err)
		}
		if len(s.Subscriptions) != 1 || !s.Subscriptions[0].Enabled || s.DeadLetters == nil {
			t.Errorf("slave status: %+v", s)
		}
		if out := mustRun(t, "status", "--config", scfg); !strings.Contains(out, "subscription pgoutpost_") {
			t.Errorf("slave status text:\n%s", out)
		}
	})

	t.Run("print helpers", func(t *testing.T) {
		out := mustRun(t, "print-delete-sql", "--config", scfg)
		if i, j := strings.Index(out, `DELETE FROM "public"."unit"`), strings.Index(out, `DELETE FROM "public"."cat"`); i < 0 || j < i || strings.Contains(out, "report") {
			t.Errorf("print-delete-sql:\n%s", out)
		}
		out = mustRun(t, "print-dump-system-tables", "--data-only", "--config", scfg)
		if !strings.Contains(out, `pg_dump --data-only`) || !strings.Contains(out, `'--table="public"."outcome"'`) || strings.Contains(out, "report") {
			t.Errorf("print-dump-system-tables:\n%s", out)
		}
		if code, _, _ := runCLI(t, "print-dump-system-tables", "--data-only", "--schema-only", "--config", scfg); code != exitUsage {
			t.Errorf("--data-only --schema-only: exit %d", code)
		}
	})

	t.Run("subscription drop retires the slave", func(t *testing.T) {
		out := mustRun(t, "subscription", "drop", "--config", scfg)
		if strings.Count(out, ": dropped\n") != 1 || strings.Count(out, "dropped on the master") != 1 {
			t.Errorf("subscription drop:\n%s", out)
		}
		var m replication.Report
		if err := json.Unmarshal([]byte(mustRun(t, "status", "--json", "--config", mcfg)), &m); err != nil {
			t.Fatal(err)
		}
		for _, sl := range m.Slots {
			if strings.HasPrefix(sl.Name, "pgoutpost_") && strings.Contains(sl.Name, strings.ReplaceAll(env, "-", "_")) {
				t.Errorf("slot %s left on the master", sl.Name)
			}
		}
		if out := mustRun(t, "subscription", "drop", "--config", scfg); strings.Contains(out, "dropped") {
			t.Errorf("second subscription drop:\n%s", out)
		}
	})
}
