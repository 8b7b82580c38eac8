package pgtest

import (
	"context"
	_ "embed"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/natsembed"
	"github.com/pgoutpost/pgoutpost/internal/pgcluster"
)

// DjangoSchema is the reference schema: what Django's migrate created for the
// catalog (system) and userapp (user) apps plus contenttypes and auth. See
// testdata/django/README.md for its model kinds and on_delete rules.
//
//go:embed testdata/django/schema.sql
var DjangoSchema string

// ClusterSettings are extra postgresql.conf settings for the shared clusters.
// A package may change it in TestMain before calling Main.
var ClusterSettings = map[string]string{}

type lazyCluster struct {
	once sync.Once
	c    *pgcluster.Cluster
	err  error
}

var (
	master, slave lazyCluster
	dbSeq         atomic.Int64
)

// Main runs the package's tests and then stops the clusters they started.
func Main(m *testing.M) {
	code := m.Run()
	for _, lc := range []*lazyCluster{&master, &slave} {
		if lc.c != nil {
			if err := lc.c.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "pgtest:", err)
			}
		}
	}
	os.Exit(code)
}

// Master returns the package's master cluster, starting it on first use.
func Master(t testing.TB) *pgcluster.Cluster { return get(t, &master, "master") }

// Slave returns the package's slave cluster, starting it on first use.
func Slave(t testing.TB) *pgcluster.Cluster { return get(t, &slave, "slave") }

func get(t testing.TB, lc *lazyCluster, name string) *pgcluster.Cluster {
	t.Helper()
	lc.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		lc.c, lc.err = pgcluster.Start(ctx, pgcluster.Options{Name: name, Settings: ClusterSettings})
	})
	if lc.err != nil {
		t.Fatalf("pgtest: cannot start the %s PostgreSQL cluster these tests need: %v\n"+
			"Install the PostgreSQL server (Debian/Ubuntu: apt-get install -y postgresql) "+
			"or point PGOUTPOST_PG_BINDIR at its bin directory.", name, lc.err)
	}
	return lc.c
}

// DB is a database created for one test.
type DB struct {
	Cluster *pgcluster.Cluster
	Name    string
	DSN     string // URL form, for pgx
}

// ConnInfo is the keyword/value connection string of the database (the form
// CREATE SUBSCRIPTION takes).
func (d *DB) ConnInfo() string { return d.Cluster.ConnInfo(d.Name) }

var unsafeName = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDB creates an empty database on c for this test and drops it (with its
// subscriptions and replication slots) when the test ends.
func NewDB(t testing.TB, c *pgcluster.Cluster) *DB {
	t.Helper()
	name := unsafeName.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t%d_%s", dbSeq.Add(1), name)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("pgtest: create database %s on %s: %v", name, c.Name, err)
	}
	db := &DB{Cluster: c, Name: name, DSN: c.DSN(name)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.DropDatabase(ctx, name); err != nil {
			t.Errorf("pgtest: drop database %s on %s: %v", name, c.Name, err)
		}
	})
	return db
}

// Pool opens a connection pool to dsn, closed when the test ends.
func Pool(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Exec runs sql (which may hold several statements) on dsn or fails the test.
func Exec(t testing.TB, dsn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if len(args) == 0 {
		// The simple protocol runs multi-statement scripts such as DjangoSchema.
		if _, err := conn.PgConn().Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatalf("pgtest: exec: %v\n%s", err, abbreviate(sql))
		}
		return
	}
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("pgtest: exec: %v\n%s", err, abbreviate(sql))
	}
}

// LoadDjangoSchema creates the reference Django schema in db.
func LoadDjangoSchema(t testing.TB, db *DB) { t.Helper(); Exec(t, db.DSN, DjangoSchema) }

// NATS starts an in-process NATS server with JetStream for this test and shuts
// it down when the test ends.
func NATS(t testing.TB) *natsembed.Server {
	t.Helper()
	s, err := natsembed.Start(t.TempDir())
	if err != nil {
		t.Fatalf("pgtest: start nats server: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func abbreviate(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// Role creates a login role named name with attrs (e.g. "REPLICATION") on
// db's cluster, with no privileges, and returns db's DSN as that role. When
// the test ends, what the role owns in db is given to the superuser and the
// role is dropped (roles are the cluster's: the name must be unique, e.g.
// from db.Name).
func Role(t testing.TB, db *DB, name, attrs string) string {
	t.Helper()
	ident := pgx.Identifier{name}.Sanitize()
	Exec(t, db.DSN, "CREATE ROLE "+ident+" LOGIN "+attrs)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, dbname := range []string{db.Name, "postgres"} {
			conn, err := pgx.Connect(ctx, db.Cluster.DSN(dbname))
			if err != nil {
				continue // the test's database is gone already
			}
			for _, s := range []string{"REASSIGN OWNED BY " + ident + " TO " + pgx.Identifier{pgcluster.Superuser}.Sanitize(), "DROP OWNED BY " + ident} {
				_, _ = conn.Exec(ctx, s)
			}
			conn.Close(ctx)
		}
		conn, err := pgx.Connect(ctx, db.Cluster.DSN("postgres"))
		if err != nil {
			t.Errorf("pgtest: drop role %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP ROLE "+ident); err != nil {
			t.Errorf("pgtest: drop role %s: %v", name, err)
		}
	})
	u, err := url.Parse(db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(name)
	return u.String()
}

// Eventually polls cond until it holds, failing the test after a minute: the
// tests' one way to wait for a positive signal.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for wait := 5 * time.Millisecond; !cond(); wait = min(2*wait, 100*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after a minute waiting for %s", what)
		}
		time.Sleep(wait)
	}
}
