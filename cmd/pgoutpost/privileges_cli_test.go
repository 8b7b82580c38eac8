package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/replication"
)

// grantNeeds grants, as the superuser, what MissingPrivileges lists for the
// role of the configuration at cfg (only the needs of commands naming
// one of cmds, when given), and returns what no grant gives.
func grantNeeds(t *testing.T, cfg, role string, super *pgtest.DB, as string, cmds ...string) []replication.Need {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := &env{stdout: io.Discard, stderr: io.Discard}
	reg, _, err := checkRegistry(ctx, e, &globalFlags{config: cfg, logLevel: "error", logFormat: "text"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, as)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	needs, err := replication.MissingPrivileges(ctx, conn, role, reg)
	if err != nil {
		t.Fatal(err)
	}
	var left []replication.Need
	for _, n := range needs {
		if len(cmds) > 0 && !slices.ContainsFunc(cmds, func(c string) bool { return strings.Contains(n.Commands, c) }) {
			continue
		}
		if n.Grant == "" {
			left = append(left, n)
			continue
		}
		t.Logf("grant: %s", n.Grant)
		pgtest.Exec(t, super.DSN, n.Grant)
	}
	return left
}

// TestCommandsAsLeastPrivilegedRoles runs the commands of each role as a role
// granted exactly what `validate` says it lacks, and nothing more: on the
// master queue install and the publication commands, on the slave queue
// install, the subscription commands (16+: only a superuser may on 15), the
// guard, the queue commands, resync-fks and status. Each must succeed and
// validate must end with no privilege warning.
func TestCommandsAsLeastPrivilegedRoles(t *testing.T) {
	master := pgtest.NewDB(t, pgtest.Master(t))
	slave := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.Exec(t, master.DSN, replSchema)
	pgtest.Exec(t, slave.DSN, strings.ReplaceAll(replSchema, "INSERT INTO cat VALUES (1, 'one');", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var version int
	if err := pgtest.Pool(t, slave.DSN).QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		t.Fatal(err)
	}

	// The subscription's master role: REPLICATION, SELECT, asked for its password.
	repl := "lp_r_" + master.Name
	pgtest.Role(t, master, repl, "REPLICATION PASSWORD 'pw'")
	if err := master.Cluster.RequirePassword(ctx, repl); err != nil {
		t.Fatal(err)
	}
	mdsn := pgtest.Role(t, master, "lp_m_"+master.Name, "")
	sdsn := pgtest.Role(t, slave, "lp_s_"+slave.Name, "")
	// As in a real deployment the slave's tables belong to the application's
	// role, not to a superuser (whose role pgoutpost's would then become).
	owner := "lp_o_" + slave.Name
	pgtest.Role(t, slave, owner, "")
	for _, tb := range []string{"cat", "unit", "outcome", "report"} {
		pgtest.Exec(t, slave.DSN, "ALTER TABLE "+tb+" OWNER TO "+pgx.Identifier{owner}.Sanitize())
	}
	env := strings.ReplaceAll(slave.Name, "_", "-")
	mcfg := writeReplConfig(t, "prod", "master", mdsn, "")
	masterConn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=pw dbname=%s sslmode=disable", master.Cluster.Port, repl, master.Name)
	scfg := writeReplConfig(t, env, "slave", sdsn, masterConn)

	// Master.
	if left := grantNeeds(t, mcfg, "master", master, mdsn); len(left) != 0 {
		t.Fatalf("master needs without a grant: %v", left)
	}
	mustRun(t, "queue", "install", "--config", mcfg)
	mustRun(t, "publication", "create", "--config", mcfg)
	mustRun(t, "publication", "update", "--config", mcfg)
	for _, g := range []string{
		"GRANT USAGE ON SCHEMA pgoutpost TO " + pgx.Identifier{repl}.Sanitize(),
		"GRANT SELECT ON ALL TABLES IN SCHEMA public, pgoutpost TO " + pgx.Identifier{repl}.Sanitize(),
	} {
		pgtest.Exec(t, master.DSN, g)
	}
	if out := mustRun(t, "validate", "--config", mcfg); strings.Contains(out, "privileges") {
		t.Errorf("master validate after the grants:\n%s", out)
	}
	mustRun(t, "status", "--config", mcfg)
	mustRun(t, "queue", "expire", "--config", mcfg)

	// Slave: the queue first (its tables are the role's then), then what
	// the rest needs.
	left := grantNeeds(t, scfg, "slave", slave, sdsn, "queue install")
	mustRun(t, "queue", "install", "--config", scfg)
	// The guard's needs last: the owner's privileges would cover the rest.
	left = append(left, grantNeeds(t, scfg, "slave", slave, sdsn, "subscription", "run")...)
	if version >= 160000 && len(left) != 0 {
		t.Fatalf("slave needs without a grant on 16+: %v", left)
	}
	if version < 160000 {
		// Only a superuser creates subscriptions on 15.
		super := writeReplConfig(t, env, "slave", slave.DSN, masterConn)
		mustRun(t, "subscription", "create", "--config", super)
		mustRun(t, "subscription", "update", "--wait", "--timeout", "2m", "--config", super)
	} else {
		mustRun(t, "subscription", "create", "--config", scfg)
		mustRun(t, "subscription", "update", "--wait", "--timeout", "2m", "--config", scfg)
	}
	for _, args := range [][]string{
		{"status"},
		{"queue", "status"},
		{"queue", "retry", "--all"},
		{"resync-fks", "--dry-run"},
		{"resync-fks"},
	} {
		mustRun(t, append(args, "--config", scfg)...)
	}
	if out := mustRun(t, "validate", "--config", scfg); !strings.Contains(out, "guard install|remove") {
		t.Errorf("slave validate does not name the guard's needs:\n%s", out)
	}
	grantNeeds(t, scfg, "slave", slave, sdsn, "guard")
	if out := mustRun(t, "validate", "--config", scfg); strings.Contains(out, "privileges: run") || (version >= 160000 && strings.Contains(out, "privileges")) {
		t.Errorf("slave validate after the grants:\n%s", out)
	}
	mustRun(t, "guard", "install", "--all", "--config", scfg)
	mustRun(t, "guard", "remove", "--all", "--config", scfg)

	// queue.fk_checks: batch also needs SET on session_replication_role,
	// which validate names with its grant, and which that grant gives.
	data, err := os.ReadFile(scfg)
	if err != nil {
		t.Fatal(err)
	}
	bcfg := filepath.Join(t.TempDir(), "batch.yaml")
	if err := os.WriteFile(bcfg, append(data, "queue:\n  fk_checks: batch\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	grant := "GRANT SET ON PARAMETER session_replication_role TO " + pgx.Identifier{"lp_s_" + slave.Name}.Sanitize()
	if out := mustRun(t, "validate", "--config", bcfg); !strings.Contains(out, grant) {
		t.Errorf("validate with fk_checks: batch does not give %q:\n%s", grant, out)
	}
	pgtest.Exec(t, slave.DSN, grant)
	if out := mustRun(t, "validate", "--config", bcfg); strings.Contains(out, "session_replication_role") {
		t.Errorf("validate with fk_checks: batch after the grant:\n%s", out)
	}
	// A foreign key into a table deletes remove, from a table the role may
	// not read: each such deletion would run twice (its batch check cannot
	// read the table). validate names the grant, which ends the warning.
	pgtest.Exec(t, slave.DSN, "CREATE SCHEMA lp_other; CREATE TABLE lp_other.unit_ref (id int PRIMARY KEY, unit_id int REFERENCES public.unit)")
	role := pgx.Identifier{"lp_s_" + slave.Name}.Sanitize()
	refGrant := `GRANT USAGE ON SCHEMA "lp_other" TO ` + role + `; GRANT SELECT ON "lp_other"."unit_ref" TO ` + role
	if out := mustRun(t, "validate", "--config", bcfg); !strings.Contains(out, refGrant) {
		t.Errorf("validate with fk_checks: batch and an unreadable table referencing a delete model does not give %q:\n%s", refGrant, out)
	}
	pgtest.Exec(t, slave.DSN, refGrant)
	if out := mustRun(t, "validate", "--config", bcfg); strings.Contains(out, "unit_ref") {
		t.Errorf("validate with fk_checks: batch after the grant on the referencing table:\n%s", out)
	}
	if version >= 160000 {
		mustRun(t, "subscription", "drop", "--config", scfg)
	}
}
