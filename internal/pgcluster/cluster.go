package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the name of the bootstrap superuser of every cluster.
const Superuser = "postgres"

// ErrNoBinaries is returned when no PostgreSQL server binaries can be found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: " +
	"install them (Debian/Ubuntu: apt-get install -y postgresql) or set PGOUTPOST_PG_BINDIR")

// DefaultSettings are the postgresql.conf settings every cluster gets: logical
// replication with room for the slots, senders and apply workers of a test suite,
// and durability traded for speed (these clusters are thrown away).
var DefaultSettings = map[string]string{
	"wal_level":                         "logical",
	"max_replication_slots":             "32",
	"max_wal_senders":                   "32",
	"max_logical_replication_workers":   "16",
	"max_sync_workers_per_subscription": "4",
	"max_worker_processes":              "32",
	"max_connections":                   "200",
	"fsync":                             "off",
	"synchronous_commit":                "off",
	"full_page_writes":                  "off",
	"shared_buffers":                    "64MB",
	"wal_sender_timeout":                "30s",
	"wal_receiver_status_interval":      "1s",
	"logging_collector":                 "off",
	"log_min_messages":                  "warning",
}

// Options configure a cluster.
type Options struct {
	// Name labels the cluster in its directory name and errors ("master", "slave").
	Name string
	// BaseDir is where the cluster's directory is created; os.TempDir() when empty.
	BaseDir string
	// Settings override or extend DefaultSettings.
	Settings map[string]string
	// BinDir holds initdb and pg_ctl; found automatically when empty.
	BinDir string
}

// Cluster is a running PostgreSQL cluster owned by this process.
type Cluster struct {
	Name    string
	Dir     string // holds data/, the socket and the server log
	DataDir string
	Port    int
	BinDir  string

	cred     *syscall.Credential // non-nil when the server runs as another user
	owner    *os.File            // the locked owner file (see Reap), closed by Stop
	settings map[string]string   // of postgresql.auto.conf
}

var reapOnce sync.Once

// newCluster makes the directory of a new cluster, owned by this process (and
// by the server user when we are root).
func newCluster(ctx context.Context, opts Options) (*Cluster, error) {
	bindir := opts.BinDir
	if bindir == "" {
		var err error
		if bindir, err = FindBinDir(); err != nil {
			return nil, err
		}
	}
	name := opts.Name
	if name == "" {
		name = "pg"
	}
	// Best effort, and briefly: a stale cluster costs memory and ports, not
	// correctness.
	reapOnce.Do(func() {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, _ = Reap(rctx, opts.BaseDir)
	})
	dir, err := os.MkdirTemp(opts.BaseDir, "pgoutpost-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	c := &Cluster{Name: name, Dir: dir, DataDir: filepath.Join(dir, "data"), BinDir: bindir}
	ok := false
	defer func() {
		if !ok {
			_ = c.Stop()
		}
	}()
	if c.owner, err = lockOwner(dir); err != nil {
		return nil, err
	}

	// PostgreSQL refuses to run as root: run it as the unprivileged postgres user.
	if os.Geteuid() == 0 {
		cred, err := unprivileged()
		if err != nil {
			return nil, err
		}
		c.cred = cred
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, err
		}
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("give %s to the postgres user: %w", dir, err)
		}
	}
	ok = true
	return c, nil
}

// Start initialises and starts a new cluster. On error nothing is left behind.
// The first Start of a process reaps the clusters under opts.BaseDir left
// running by processes that died without stopping them (see Reap).
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	c, err := newCluster(ctx, opts)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = c.Stop()
		}
	}()
	name := c.Name
	if out, err := c.command(ctx, "initdb", "-D", c.DataDir, "-U", Superuser, "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb %s cluster: %w\n%s", name, err, out)
	}
	settings := make(map[string]string, len(DefaultSettings)+len(opts.Settings))
	for k, v := range DefaultSettings {
		settings[k] = v
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	if err := c.listenAndStart(ctx, settings); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// listenAndStart writes settings, with a free port and the cluster's own
// socket directory, to postgresql.auto.conf and starts the server, on
// another port if that one was taken meanwhile.
func (c *Cluster) listenAndStart(ctx context.Context, settings map[string]string) error {
	settings["listen_addresses"] = "'127.0.0.1'"
	settings["unix_socket_directories"] = "'" + c.Dir + "'"
	c.settings = settings
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		settings["port"] = strconv.Itoa(port)
		if err := writeConf(filepath.Join(c.DataDir, "postgresql.auto.conf"), settings); err != nil {
			return err
		}
		c.Port = port
		err = c.start(ctx)
		if err == nil {
			return nil
		}
		if attempt == 4 {
			return err
		}
	}
}

func (c *Cluster) start(ctx context.Context) error {
	logfile := filepath.Join(c.Dir, "server.log")
	out, err := c.command(ctx, "pg_ctl", "-D", c.DataDir, "-l", logfile, "-w", "-t", "60", "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(logfile)
		return fmt.Errorf("start %s cluster on port %d: %w\n%s\n%s", c.Name, c.Port, err, out, tail(log, 2000))
	}
	return nil
}

// Stop stops the server immediately and removes its directory.
func (c *Cluster) Stop() error {
	var errs []error
	if _, err := os.Stat(filepath.Join(c.DataDir, "postmaster.pid")); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := c.command(ctx, "pg_ctl", "-D", c.DataDir, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("stop %s cluster: %w\n%s", c.Name, err, out))
		}
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, err)
	}
	if c.owner != nil {
		c.owner.Close()
		c.owner = nil
	}
	return errors.Join(errs...)
}

// DSN returns a URL connection string to database db as the superuser.
func (c *Cluster) DSN(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// ConnInfo returns a keyword/value connection string to database db, the form
// CREATE SUBSCRIPTION expects.
func (c *Cluster) ConnInfo(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable", c.Port, Superuser, db)
}

// CreateDatabase creates database name.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	return c.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// DropDatabase drops database name with everything that pins it: its
// subscriptions (without touching their remote slots), its replication slots and
// its sessions.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.DSN(name))
	if err == nil {
		rows, _ := conn.Query(ctx, "SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())")
		subs, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, s := range subs {
			id := pgx.Identifier{s}.Sanitize()
			_, _ = conn.Exec(ctx, "ALTER SUBSCRIPTION "+id+" DISABLE")
			_, _ = conn.Exec(ctx, "ALTER SUBSCRIPTION "+id+" SET (slot_name = NONE)")
			if _, err := conn.Exec(ctx, "DROP SUBSCRIPTION "+id); err != nil {
				_ = conn.Close(ctx)
				return fmt.Errorf("drop subscription %q: %w", s, err)
			}
		}
		_ = conn.Close(ctx)
	}
	conn, err = pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for i := 0; i < 50; i++ {
		_, _ = conn.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL", name)
		_, err = conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active", name)
		if err == nil {
			var left int
			if err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE database = $1", name).Scan(&left); err == nil && left == 0 {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %q: %w", name, err)
	}
	return nil
}

func (c *Cluster) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// Command returns a command running PostgreSQL tool name (pg_dump, pg_recvlogical,
// psql if installed beside the server) from the cluster's bin directory, as the
// user that owns the cluster.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return c.command(ctx, name, args...)
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, name), args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		cmd.Dir = "/"
	}
	return cmd
}

// FindBinDir finds the directory of initdb and pg_ctl: $PGOUTPOST_PG_BINDIR, the
// PATH, `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin.
func FindBinDir() (string, error) {
	has := func(dir string) bool {
		for _, f := range []string{"initdb", "pg_ctl"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				return false
			}
		}
		return true
	}
	if d := os.Getenv("PGOUTPOST_PG_BINDIR"); d != "" {
		if has(d) {
			return d, nil
		}
		return "", fmt.Errorf("PGOUTPOST_PG_BINDIR=%s has no initdb and pg_ctl: %w", d, ErrNoBinaries)
	}
	// initdb on the PATH is often a link (Debian's wrappers, /usr/local/bin):
	// the bin directory we want is the one of the real binary, which also
	// holds pg_recvlogical, pg_dump and the server.
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if has(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); has(d) {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func version(bindir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return v
}

func unprivileged() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root and no unprivileged 'postgres' user to run PostgreSQL as "+
			"(PostgreSQL refuses to run as root; installing the postgresql package creates it): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func writeConf(path string, settings map[string]string) error {
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, settings[k])
	}
	return writeServerFile(path, b.String())
}

// writeServerFile writes a file of the data directory, owned like it.
func writeServerFile(path, content string) error {
	// The file belongs to the server user; write it through a temp file we can
	// chown rather than assume we are that user.
	info, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		return os.Chown(path, int(st.Uid), int(st.Gid))
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
