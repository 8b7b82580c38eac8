package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgoutpost/pgoutpost/internal/promtest"
	"github.com/pgoutpost/pgoutpost/sidecar"
)

// pgoutpostBin is the pgoutpost binary the demo runs, built by TestMain from
// the work tree.
var pgoutpostBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "pgoutpost-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		pgoutpostBin = filepath.Join(dir, "pgoutpost")
		// The PATH's go, as for make demo itself.
		if out, err := exec.Command("go", "build", "-o", pgoutpostBin, "github.com/pgoutpost/pgoutpost/cmd/pgoutpost").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build pgoutpost: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}())
}

// demoTempDir points os.TempDir at a fresh directory that the postgres user
// can traverse, so that the test sees whether the demo leaves anything behind.
// Its name is short: PostgreSQL's socket path must fit in 107 bytes.
func demoTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "demo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", dir)
	return dir
}

func TestDemo(t *testing.T) {
	dir := demoTempDir(t)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--pgoutpost", pgoutpostBin}, &stdout, &stderr)
	out := stdout.String()
	t.Logf("demo output:\n%s\nstderr:\n%s", out, stderr.String())
	if code != exitOK {
		t.Fatalf("pgoutpost-demo exited %d", code)
	}
	want := []string{
		"subscription pgoutpost_staging: created",
		"all 6 tables ready",
		"slave: shop_category=2 shop_unit=3 shop_marker=5 shop_outcome=3 pgoutpost.denormalize_queue=0",
		"slave: app_report=5 app_note=5",
		// Unit 1 with its 2 markers, its 2 reports and their 3 notes.
		"deleted on the slave: shop_unit 1, shop_marker 2, app_report 2, app_note 3",
		`dead letter: queue=delete table=public.shop_marker pk={"id": 3}`,
		"slave: marker 3 still there: 1 row; reports pointing at it: 1; dead letters: 1",
		"the retried delete was applied: marker 3 is gone on the slave; dead letters: 0",
		"event received on NATS: subject pgoutpost.staging.denormalize.public.shop_outcome",
		"2 of 2 reports of outcome 1 now say 'passed'",
		"GET /readyz: 503 nats: ",
		"1 of 1 reports of outcome 3 now say 'rechecked'",
		`pgoutpost_cascade_rows_total{action="deleted",table="public.app_note"} 3`,
		`pgoutpost_queue_entries_total{queue="delete",result="dead",table="public.shop_marker"} 1`,
		`pgoutpost_queue_entries_total{queue="delete",result="applied",table="public.shop_marker"} 3`,
		`pgoutpost_queue_entries_total{queue="denormalize",result="published",table="public.shop_outcome"} 2`,
		`pgoutpost_queue_dead_letters{queue="delete"} 0`,
	}
	// The metrics page shows every metric the sidecar registers after the
	// demo's workload.
	_, line, _ := strings.Cut(out, "pgoutpost metrics on the page")
	line, _, _ = strings.Cut(line, "\n")
	for _, m := range sidecarMetrics(t) {
		if !strings.Contains(line+" ", " "+m+" ") {
			t.Errorf("the metrics page lacks %s", m)
		}
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("the demo's output lacks %q", w)
		}
	}
	if strings.Contains(stderr.String(), "demo cleanup:") {
		t.Errorf("cleanup failed: %s", stderr.String())
	}
	assertEmpty(t, dir)
}

// TestDemoInterrupted cancels the demo in the middle, as Ctrl-C does, and
// checks that it stops and removes everything it started: during the set-up,
// while the sidecar and the consumer run, and while NATS is down.
func TestDemoInterrupted(t *testing.T) {
	for _, c := range []struct{ name, marker string }{
		{"setup", "subscription pgoutpost_staging: created"},
		{"sidecar", "DENORMALIZE: renaming outcome 1"},
		{"nats down", "while NATS is down"},
	} {
		marker := c.marker
		t.Run(c.name, func(t *testing.T) {
			dir := demoTempDir(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stderr bytes.Buffer
			stdout := &cancelOn{marker: marker, cancel: cancel}
			code := run(ctx, []string{"--pgoutpost", pgoutpostBin}, stdout, &stderr)
			out := stdout.String()
			t.Logf("demo output:\n%s\nstderr:\n%s", out, stderr.String())
			if code == exitOK {
				t.Fatal("an interrupted demo exited 0")
			}
			if !strings.Contains(out, "interrupted; cleaning up") {
				t.Error("the demo did not say it was interrupted")
			}
			if strings.Contains(stderr.String(), "demo cleanup:") {
				t.Errorf("cleanup failed: %s", stderr.String())
			}
			assertEmpty(t, dir)
		})
	}
}

// cancelOn records what is written and calls cancel once marker appears.
type cancelOn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	cancel context.CancelFunc
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if strings.Contains(c.buf.String(), c.marker) {
		c.cancel()
	}
	return len(p), nil
}

func (c *cancelOn) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// assertEmpty fails when the demo left files (clusters, NATS store, configs) in dir.
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if len(left) > 0 {
		t.Errorf("the demo left %v in %s", left, dir)
	}
}

// sidecarMetrics returns the names of the metrics sidecar.NewMetrics
// registers.
func sidecarMetrics(t *testing.T) []string {
	t.Helper()
	names, err := promtest.Names(func(r prometheus.Registerer) error { _, err := sidecar.NewMetrics(r); return err })
	if err != nil || len(names) == 0 {
		t.Fatalf("sidecar.NewMetrics registered %v: %v", names, err)
	}
	return names
}
