package pgcluster

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// StandbyOptions configure a physical standby.
type StandbyOptions struct {
	// Name labels the standby ("standby").
	Name string
	// Slot is the physical replication slot on the primary the standby
	// streams from; created when missing.
	Slot string
	// Settings override or extend the primary's settings on the standby.
	Settings map[string]string
}

// StartStandby starts a physical streaming standby of c. It copies c's data
// directory while c is briefly stopped (a cold base backup: no pg_basebackup
// is needed, which the npm builds do not carry), then starts c again on its
// port and the standby, with hot_standby_feedback on, streaming from the
// physical slot opts.Slot. On error nothing of the standby is left behind.
func (c *Cluster) StartStandby(ctx context.Context, opts StandbyOptions) (*Cluster, error) {
	if opts.Slot == "" {
		return nil, fmt.Errorf("standby of %s: no slot named", c.Name)
	}
	if err := c.exec(ctx, fmt.Sprintf(
		"SELECT pg_create_physical_replication_slot(%s, true) WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = %[1]s)",
		quoteLiteral(opts.Slot))); err != nil {
		return nil, fmt.Errorf("create physical slot %s on %s: %w", opts.Slot, c.Name, err)
	}
	name := opts.Name
	if name == "" {
		name = "standby"
	}
	s, err := newCluster(ctx, Options{Name: name, BaseDir: filepath.Dir(c.Dir), BinDir: c.BinDir})
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = s.Stop()
		}
	}()
	if out, err := c.command(ctx, "pg_ctl", "-D", c.DataDir, "-m", "fast", "-w", "stop").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("stop %s for the base backup: %w\n%s", c.Name, err, out)
	}
	// cp -a keeps the server user's ownership and modes.
	out, cpErr := exec.CommandContext(ctx, "cp", "-a", c.DataDir, s.DataDir).CombinedOutput()
	if err := c.start(ctx); err != nil {
		return nil, fmt.Errorf("start %s again after the base backup: %w", c.Name, err)
	}
	if cpErr != nil {
		return nil, fmt.Errorf("copy the data directory of %s: %w\n%s", c.Name, cpErr, out)
	}
	// The primary's slots are its own (pg_basebackup leaves them out too):
	// a copy would hold WAL on the standby for nobody.
	slots, _ := filepath.Glob(filepath.Join(s.DataDir, "pg_replslot", "*"))
	for _, d := range slots {
		if err := os.RemoveAll(d); err != nil {
			return nil, err
		}
	}
	signal := filepath.Join(s.DataDir, "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		return nil, err
	}
	if s.cred != nil {
		if err := os.Chown(signal, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return nil, err
		}
	}
	settings := maps.Clone(c.settings)
	maps.Copy(settings, map[string]string{
		"primary_conninfo":     quoteLiteral(fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres application_name=%s", c.Port, Superuser, name)),
		"primary_slot_name":    quoteLiteral(opts.Slot),
		"hot_standby":          "on",
		"hot_standby_feedback": "on",
	})
	maps.Copy(settings, opts.Settings)
	if err := s.listenAndStart(ctx, settings); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// Promote ends recovery on a standby and waits until it accepts writes.
func (c *Cluster) Promote(ctx context.Context) error {
	if out, err := c.command(ctx, "pg_ctl", "-D", c.DataDir, "-w", "-t", "60", "promote").CombinedOutput(); err != nil {
		return fmt.Errorf("promote %s: %w\n%s", c.Name, err, out)
	}
	return nil
}

// Set changes one setting in postgresql.auto.conf, reloads the server and
// waits until new sessions see it (a reload is asynchronous). value is
// written as postgresql.conf takes it: quote strings ('standby1').
func (c *Cluster) Set(ctx context.Context, key, value string) error {
	c.settings[key] = value
	if err := writeConf(filepath.Join(c.DataDir, "postgresql.auto.conf"), c.settings); err != nil {
		return err
	}
	if err := c.exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return err
	}
	want := strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(value, "'"), "'"), "''", "'")
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err != nil {
			return err
		}
		var got string
		err = conn.QueryRow(ctx, "SELECT current_setting($1)", key).Scan(&got)
		conn.Close(ctx)
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s is %q after the reload, want %q", c.Name, key, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quoteLiteral quotes s as an SQL (and postgresql.conf) string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// RequirePassword makes the server ask role for its password (SCRAM) on TCP
// connections; every other role keeps trust authentication.
func (c *Cluster) RequirePassword(ctx context.Context, role string) error {
	path := filepath.Join(c.DataDir, "pg_hba.conf")
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	line := fmt.Sprintf("host all %s 127.0.0.1/32 scram-sha-256\n", quoteHBA(role))
	if err := writeServerFile(path, line+string(old)); err != nil {
		return err
	}
	if err := c.exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return err
	}
	// The reload is asynchronous: wait until a connection without a
	// password is refused.
	deadline := time.Now().Add(30 * time.Second)
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=disable", c.Port, quoteConnValue(role))
	for {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return nil
		}
		conn.Close(ctx)
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s still connects without a password after the reload", c.Name, role)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quoteConnValue quotes a keyword/value conninfo value.
func quoteConnValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'"
}

func quoteHBA(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
