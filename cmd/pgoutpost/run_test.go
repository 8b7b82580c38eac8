package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

const runConfig = `environment: %s
role: %s
database:
  dsn: %q
%s
contrib_system_tables: false
sidecar:
  slot: %s
  heartbeat: 1s
models:
  - name: public.unit
    kind: delete
  - name: public.outcome
    kind: denormalize
relations:
  report.unit_id: CASCADE
`

const runSchema = `
CREATE TABLE unit (id int PRIMARY KEY, name text);
CREATE TABLE outcome (id int PRIMARY KEY, name text);
CREATE TABLE report (id int PRIMARY KEY, unit_id int REFERENCES unit DEFERRABLE INITIALLY DEFERRED);
`

func writeRunConfig(t *testing.T, env, role, dsn, masterConnInfo, slot string) string {
	t.Helper()
	master := ""
	if masterConnInfo != "" {
		master = fmt.Sprintf("master:\n  dsn: %q", masterConnInfo)
	}
	path := filepath.Join(t.TempDir(), role+".yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(runConfig, env, role, dsn, master, slot)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunRefusesBadInvocations(t *testing.T) {
	dir := t.TempDir()
	invalid := filepath.Join(dir, "invalid.yaml")
	if err := os.WriteFile(invalid, []byte("environment: ''\nrole: slave\nsidecar:\n  heartbeat: soon\nmodels:\n  - name: public.x\n    kind: nonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	master := writeRunConfig(t, "prod", "master", "postgres://127.0.0.1:1/x", "", "s")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"invalid configuration lists every problem", []string{"run", "--config", invalid}, []string{"heartbeat", "kind", "environment"}},
		{"master configuration", []string{"run", "--config", master}, []string{"run runs on the slave"}},
		{"unknown sink", []string{"run", "--config", master, "--sink", "kafka"}, []string{`--sink "kafka"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := runCLI(t, tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d\n%s", code, exitUsage, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
				}
			}
		})
	}
}

// runPair makes a master and a slave of runSchema, set up with the
// commands as docs/deploy.md says up to the slave's subscription, ready; it
// returns them with the slave's configuration and its environment.
func runPair(t *testing.T) (master, slave *pgtest.DB, scfg, env string) {
	t.Helper()
	master = pgtest.NewDB(t, pgtest.Master(t))
	slave = pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.Exec(t, master.DSN, runSchema)
	pgtest.Exec(t, slave.DSN, runSchema)
	env = strings.ReplaceAll(slave.Name, "_", "-")
	mcfg := writeRunConfig(t, "prod", "master", master.DSN, "", slave.Name)
	scfg = writeRunConfig(t, env, "slave", slave.DSN, master.ConnInfo(), slave.Name)
	mustRun(t, "queue", "install", "--config", mcfg)
	mustRun(t, "queue", "install", "--config", scfg)
	mustRun(t, "publication", "create", "--config", mcfg)
	mustRun(t, "publication", "update", "--config", mcfg)
	mustRun(t, "subscription", "create", "--config", scfg)
	mustRun(t, "subscription", "update", "--wait", "--timeout", "2m", "--config", scfg)
	return master, slave, scfg, env
}

func TestRunPropagates(t *testing.T) {
	master, slave, scfg, _ := runPair(t)

	pgtest.Exec(t, master.DSN, "INSERT INTO unit VALUES (1, 'one'), (2, 'two')")
	spool := pgtest.Pool(t, slave.DSN)
	waitCount := func(want int, sql string) {
		t.Helper()
		pgtest.Eventually(t, fmt.Sprintf("%s = %d", sql, want), func() bool {
			var n int
			if err := spool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == want
		})
	}
	waitCount(2, "SELECT count(*) FROM unit")
	pgtest.Exec(t, slave.DSN, "INSERT INTO report VALUES (1, 1), (2, 1), (3, 2)")

	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errs pgtest.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errs.String())
		}
	})
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"run", "--config", scfg, "--sink", "log", "--listen", addr, "--shutdown-grace", "5s"}, &out, &errs)
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
	})

	pgtest.Exec(t, master.DSN, "DELETE FROM unit WHERE id = 1")
	pgtest.Exec(t, master.DSN, "INSERT INTO outcome VALUES (7, 'seven')")
	waitCount(0, "SELECT count(*) FROM unit WHERE id = 1")
	waitCount(1, "SELECT count(*) FROM report")
	pgtest.Eventually(t, "the outcome's event on stdout", func() bool {
		return strings.Contains(out.String(), `"table":"public.outcome"`)
	})
	pgtest.Eventually(t, "/readyz to answer 200", func() bool {
		code, _, _ := httpGet(context.Background(), "http://"+addr+"/readyz")
		return code == http.StatusOK
	})
	if code, body, _ := httpGet(context.Background(), "http://"+addr+"/metrics"); code != http.StatusOK || !strings.Contains(body, "pgoutpost_queue_entries_total") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}

	cancel()
	stopped = true
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit %d after the signal, want 0\n%s", code, errs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop within 30s of the signal")
	}
	if strings.Contains(errs.String(), "password") {
		t.Errorf("the logs mention a password:\n%s", errs.String())
	}

	t.Run("starts while NATS is down and is ready once it is back", func(t *testing.T) {
		ns := pgtest.NATS(t)
		ns.Stop()
		t.Setenv("PGOUTPOST_NATS_URL", ns.URL())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out, errs pgtest.Buffer
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("stderr:\n%s", errs.String())
			}
		})
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"run", "--config", scfg, "--listen", addr}, &out, &errs)
		}()
		readyz := func() (int, string) {
			code, body, _ := httpGet(context.Background(), "http://"+addr+"/readyz")
			return code, body
		}
		pgtest.Eventually(t, "/readyz to answer 503 naming nats", func() bool {
			select {
			case code := <-done:
				t.Fatalf("run exited with %d while NATS was down:\n%s", code, errs.String())
			default:
			}
			code, body := readyz()
			return code == http.StatusServiceUnavailable && strings.Contains(body, "nats")
		})
		// Deletes go on without NATS.
		pgtest.Exec(t, master.DSN, "DELETE FROM unit WHERE id = 2")
		waitCount(0, "SELECT count(*) FROM unit WHERE id = 2")
		if err := ns.Restart(); err != nil {
			t.Fatal(err)
		}
		pgtest.Eventually(t, "/readyz to answer 200 once NATS is back", func() bool {
			code, _ := readyz()
			return code == http.StatusOK
		})
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("exit %d, want 0\n%s", code, errs.String())
		}
	})
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
