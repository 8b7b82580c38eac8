package replication

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrNoPgDump is returned by FindPgDump when no pg_dump on this machine is
// as new as the server: pg_dump refuses to dump a server of a newer major
// version than its own.
var ErrNoPgDump = errors.New("no pg_dump as new as the server")

// PgDump is a pg_dump program found on this machine.
type PgDump struct {
	Path  string // "pg_dump" for the one on the PATH, else the full path
	Major int    // its major version (15, 16 …)
}

// pgDumpDirs are the bin directories of PostgreSQL versions installed side by
// side (Debian/Ubuntu, RHEL's PGDG packages, Homebrew), searched after the PATH.
var pgDumpDirs = []string{
	"/usr/lib/postgresql/*/bin",
	"/usr/pgsql-*/bin",
	"/opt/homebrew/opt/postgresql@*/bin",
	"/usr/local/opt/postgresql@*/bin",
}

var pgDumpVersion = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// FindPgDump returns a pg_dump that can dump a server of major version
// serverMajor: the PATH's pg_dump when it is new enough, else the newest one
// installed beside other PostgreSQL versions. The error, wrapping ErrNoPgDump,
// names the version needed and the ones found.
func FindPgDump(ctx context.Context, serverMajor int) (PgDump, error) {
	var found []PgDump
	if p, err := exec.LookPath("pg_dump"); err == nil {
		if m, err := pgDumpMajor(ctx, p); err == nil {
			if m >= serverMajor {
				return PgDump{Path: "pg_dump", Major: m}, nil
			}
			found = append(found, PgDump{Path: p, Major: m})
		}
	}
	var best PgDump
	for _, pattern := range pgDumpDirs {
		dirs, _ := filepath.Glob(pattern)
		for _, d := range dirs {
			p := filepath.Join(d, "pg_dump")
			m, err := pgDumpMajor(ctx, p)
			if err != nil || slices.ContainsFunc(found, func(f PgDump) bool { return f.Path == p }) {
				continue
			}
			found = append(found, PgDump{Path: p, Major: m})
			if m >= serverMajor && m > best.Major {
				best = PgDump{Path: p, Major: m}
			}
		}
	}
	if best.Path != "" {
		return best, nil
	}
	have := "none found"
	if len(found) > 0 {
		var names []string
		for _, f := range found {
			names = append(names, fmt.Sprintf("%d (%s)", f.Major, f.Path))
		}
		have = "found " + strings.Join(names, ", ")
	}
	return PgDump{}, fmt.Errorf("%w: the server runs PostgreSQL %d, so pg_dump %d or newer is needed (%s); install that version's client (Debian/Ubuntu: postgresql-client-%d from apt.postgresql.org)",
		ErrNoPgDump, serverMajor, serverMajor, have, serverMajor)
}

func pgDumpMajor(ctx context.Context, path string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return 0, err
	}
	m := pgDumpVersion.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("%s --version printed %q", path, out)
	}
	return strconv.Atoi(string(m[1]))
}

// MasterMajor connects to the master at conninfo and returns its PostgreSQL
// major version.
func MasterMajor(ctx context.Context, conninfo string) (int, error) {
	conn, err := connectMaster(ctx, conninfo)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var num int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		return 0, fmt.Errorf("read the master's version: %w", err)
	}
	return num / 10000, nil
}
