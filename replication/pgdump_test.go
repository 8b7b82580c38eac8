package replication

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakePgDump writes a pg_dump into dir that reports version v.
func fakePgDump(t *testing.T, dir, v string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "pg_dump")
	script := "#!/bin/sh\necho 'pg_dump (PostgreSQL) " + v + "'\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFindPgDump(t *testing.T) {
	root := t.TempDir()
	onPath := filepath.Join(root, "path")
	fakePgDump(t, onPath, "15.14 (Debian 15.14-0+deb12u1)")
	v16 := fakePgDump(t, filepath.Join(root, "lib", "16", "bin"), "16.9")
	v18 := fakePgDump(t, filepath.Join(root, "lib", "18", "bin"), "18.1")
	t.Setenv("PATH", onPath)
	saved := pgDumpDirs
	pgDumpDirs = []string{filepath.Join(root, "lib", "*", "bin")}
	t.Cleanup(func() { pgDumpDirs = saved })
	ctx := context.Background()

	for _, c := range []struct {
		server int
		want   PgDump
	}{
		{15, PgDump{Path: "pg_dump", Major: 15}}, // the PATH's, named as such
		{14, PgDump{Path: "pg_dump", Major: 15}},
		{16, PgDump{Path: v18, Major: 18}}, // the newest that can
		{18, PgDump{Path: v18, Major: 18}},
	} {
		got, err := FindPgDump(ctx, c.server)
		if err != nil || got != c.want {
			t.Errorf("FindPgDump(%d) = %+v, %v; want %+v", c.server, got, err, c.want)
		}
	}
	_, err := FindPgDump(ctx, 19)
	if !errors.Is(err, ErrNoPgDump) {
		t.Fatalf("FindPgDump(19) = %v, want ErrNoPgDump", err)
	}
	for _, w := range []string{"pg_dump 19 or newer", "15 (" + filepath.Join(onPath, "pg_dump") + ")", "16 (" + v16 + ")", "18 (" + v18 + ")"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
}
