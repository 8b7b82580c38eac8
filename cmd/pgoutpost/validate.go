package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/catalog"
	"github.com/pgoutpost/pgoutpost/config"
	"github.com/pgoutpost/pgoutpost/registry"
)

var validateCommand = command{
	name:    "validate",
	summary: "check sidecar.yaml against the database; list what will not be synced",
	run:     runValidate,
}

func runValidate(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	fs := newFlagSet(e, "validate", `validate [flags]

Loads the configuration, connects to database: and resolves the models against
the catalog. Prints every problem, one per line (errors, then warnings), then
the user tables: those that will NOT be synced. The warnings include each
privilege the configured role lacks for the commands of its role (master or
slave), with the GRANT that gives it. Exits 0 when the configuration is valid
(warnings allowed), 2 when it is not.

`+overridesHelp(), &g)
	if err := parse(fs, args); err != nil {
		return err
	}
	reg, problems, err := checkRegistry(ctx, e, &g, "validate")
	if err != nil {
		return err
	}
	for _, p := range problems.Errors() {
		fmt.Fprintln(e.stdout, p)
	}
	for _, p := range problems.Warnings() {
		fmt.Fprintln(e.stdout, p)
	}
	if len(problems) > 0 {
		fmt.Fprintln(e.stdout)
	}
	users := reg.UserTables()
	fmt.Fprintf(e.stdout, "User tables, not synced (%d):\n", len(users))
	for _, t := range users {
		fmt.Fprintf(e.stdout, "  %s\n", t.Name)
	}
	synced := len(reg.Tables) - len(users)
	if err := problems.Err(); err != nil {
		return &replConfigError{fmt.Sprintf("%s is not valid: %d errors, %d warnings", g.config, len(problems.Errors()), len(problems.Warnings()))}
	}
	fmt.Fprintf(e.stdout, "\n%s is valid: %d synced tables (%d system, %d delete, %d denormalize), %d warnings\n",
		g.config, synced, len(reg.OfKind(registry.KindSystem)), len(reg.OfKind(registry.KindDelete)),
		len(reg.OfKind(registry.KindDenormalize)), len(problems.Warnings()))
	return nil
}

// serverProblems checks the settings both roles need: publications (master)
// and the sidecar's slot (slave) need wal_level = logical, and a slot and a
// sender to stream.
func serverProblems(ctx context.Context, conn *pgx.Conn) (registry.Problems, error) {
	s, err := catalog.ReadSettings(ctx, conn)
	if err != nil {
		return nil, err
	}
	var ps registry.Problems
	if !s.LogicalWAL() {
		ps = append(ps, registry.Problem{Severity: registry.Error, Subject: "database",
			Message: fmt.Sprintf("wal_level is %s; publications and the sidecar's slot need logical: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL", s.WalLevel)})
	}
	if s.MaxReplicationSlots < 1 || s.MaxWalSenders < 1 {
		ps = append(ps, registry.Problem{Severity: registry.Error, Subject: "database",
			Message: fmt.Sprintf("max_replication_slots is %d and max_wal_senders is %d; each needs at least 1 for the sidecar (plus one per subscription on the master)", s.MaxReplicationSlots, s.MaxWalSenders)})
	}
	return ps, nil
}

// overridesHelp lists the environment variables that override sidecar.yaml.
func overridesHelp() string {
	var b strings.Builder
	b.WriteString("Environment variables override the configuration file:\n")
	for _, o := range config.Overrides {
		fmt.Fprintf(&b, "  %-24s %s\n", o.Env, o.Help)
	}
	return strings.TrimSuffix(b.String(), "\n")
}
