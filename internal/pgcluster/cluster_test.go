package pgcluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestFindBinDirResolvesLinks(t *testing.T) {
	real, err := FindBinDir()
	if err != nil {
		t.Fatalf("no PostgreSQL binaries: %v", err)
	}
	// A PATH directory holding only a link to initdb (and pg_ctl) must lead to
	// the real bin directory, which has the other tools too.
	links := t.TempDir()
	for _, f := range []string{"initdb", "pg_ctl"} {
		target, err := filepath.EvalSymlinks(filepath.Join(real, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(links, f)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PGOUTPOST_PG_BINDIR", "")
	t.Setenv("PATH", links)
	got, err := FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	// The server itself is in every distribution's bin directory (the npm
	// packages of 16+ carry no client tools such as pg_recvlogical).
	if _, err := os.Stat(filepath.Join(got, "postgres")); err != nil {
		t.Fatalf("FindBinDir() = %s, which lacks the postgres server: %v", got, err)
	}
}

func TestReapStopsClustersOfDeadOwners(t *testing.T) {
	base, err := os.MkdirTemp("", "reaptest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil { // the server user must reach its directory
		t.Fatal(err)
	}
	ctx := context.Background()
	var clusters []*Cluster
	for _, name := range []string{"orphan", "hidden", "owned"} {
		c, err := Start(ctx, Options{Name: name, BaseDir: base})
		if err != nil {
			t.Fatalf("cannot start a PostgreSQL cluster: %v", err)
		}
		t.Cleanup(func() { _ = c.Stop() })
		clusters = append(clusters, c)
	}
	orphan, hidden, owned := clusters[0], clusters[1], clusters[2]
	serverPID, _ := postmasterPID(orphan.DataDir)
	if !serves(serverPID, orphan.DataDir) {
		t.Fatalf("postmaster.pid of %s names pid %d, which is not its server", orphan.Dir, serverPID)
	}

	// The owner of orphan dies: the kernel drops its lock.
	orphan.owner.Close()
	orphan.owner = nil
	// The owner of hidden dies too, and its server runs where this process
	// cannot see its pid (another pid namespace): postmaster.pid names no
	// process here, but the socket answers.
	hidden.owner.Close()
	hidden.owner = nil
	pidFile := filepath.Join(hidden.DataDir, "postmaster.pid")
	orig, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(orig), "\n")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(dead.Process.Pid)+"\n"+rest), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(pidFile, orig, 0o600) }) // so that Stop finds the server

	reaped, err := Reap(ctx, base)
	if len(reaped) != 1 || reaped[0] != orphan.Dir {
		t.Fatalf("Reap = %v (%v), want [%s]", reaped, err, orphan.Dir)
	}
	if err == nil || !strings.Contains(err.Error(), hidden.Dir) || !strings.Contains(err.Error(), "accepts connections") {
		t.Errorf("Reap error = %v, want one naming %s and its live socket", err, hidden.Dir)
	}
	if _, err := os.Stat(orphan.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists (%v)", orphan.Dir, err)
	}
	if processAlive(serverPID) {
		t.Errorf("the orphan's server (pid %d) still runs", serverPID)
	}
	for _, c := range []*Cluster{hidden, owned} {
		if _, err := os.Stat(filepath.Join(c.DataDir, "PG_VERSION")); err != nil {
			t.Errorf("files of %s were touched: %v", c.Name, err)
		}
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err != nil {
			t.Fatalf("the server of %s was touched: %v", c.Name, err)
		}
		conn.Close(ctx)
	}
}
