package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/replication"
)

var publicationCreateCommand = command{
	name:    "publication create",
	summary: "create the master's publications (empty) if missing",
	run:     runPublicationCreate,
}

var publicationUpdateCommand = command{
	name:    "publication update",
	summary: "make the master's publications match the models [--dry-run]",
	run:     runPublicationUpdate,
}

func runPublicationCreate(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	fs := newFlagSet(e, "publication create", `publication create [--synchronous --slave-environments a,b]

Creates, on the master, the publications that are missing: system tables (all
operations), delete and denormalize models (insert, update) and the queue
tables (insert), named from replication.prefix or replication.seed_slug (see
docs/deploy.md). They are created empty: publication update adds the tables.

With --synchronous it also sets synchronous_standby_names to ANY n (...) over
the subscriptions of the --slave-environments, so that every master commit
waits for those slaves: a slave that is down then blocks master commits.`, &g)
	synchronous := fs.Bool("synchronous", false, "also make every master commit wait for the slaves' subscriptions (synchronous_standby_names); default replication.synchronous")
	slaves := new(listFlag)
	fs.Var(slaves, "slave-environments", "with --synchronous: the environments whose subscriptions the master waits for (repeat or separate with commas)")
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := openRepl(ctx, e, &g, "publication create", registry.RoleMaster)
	if err != nil {
		return err
	}
	defer s.close()
	if !fs.Changed("synchronous") {
		*synchronous = s.cfg.Replication.Synchronous
	}
	created, err := replication.CreatePublications(ctx, s.conn, s.names)
	for _, c := range created {
		fmt.Fprintf(e.stdout, "created publication %s\n", c)
	}
	if err != nil {
		return err
	}
	if len(created) == 0 {
		fmt.Fprintln(e.stdout, "publications exist: nothing to create")
	}
	if *synchronous {
		return setSynchronous(ctx, e, s, *slaves)
	}
	return nil
}

// setSynchronous points synchronous_standby_names at the subscriptions of the
// given slave environments.
func setSynchronous(ctx context.Context, e *env, s *replSession, slaves []string) error {
	if len(slaves) == 0 {
		return usagef("--synchronous needs --slave-environments: the master cannot know its slaves' subscription names otherwise")
	}
	var subs []string
	byName := map[string]string{} // subscription -> the environment that named it
	var missing []string
	for _, env := range slaves {
		n, err := replication.NewNames(s.cfg.Replication.Prefix, s.cfg.Replication.SeedSlug, env)
		if err != nil {
			return usagef("--slave-environments %s: %v", env, err)
		}
		for _, name := range n.SubscriptionNames() {
			if other, ok := byName[name]; ok && other != env && s.cfg.Replication.SeedSlug == "" {
				return usagef("--slave-environments %s and %s both make subscription %s (characters other than a-z0-9_ become _): name each slave once", other, env, name)
			}
			byName[name] = env
			if !slices.Contains(subs, name) { // the seed's data subscriptions have no environment
				subs = append(subs, name)
			}
		}
		// A typo would make every master commit wait forever: the
		// environment's subscription must have its slot here already (a
		// converted slave's still has its earlier data subscription's name).
		slots := append(n.SubscriptionNames(), n.Legacy.Data)
		var found bool
		if err := s.conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_catalog.pg_replication_slots WHERE slot_name = ANY($1))", slots).Scan(&found); err != nil {
			return fmt.Errorf("look up the slots of environment %s: %w", env, err)
		}
		if !found {
			missing = append(missing, fmt.Sprintf("%s (no slot %s)", env, strings.Join(n.SubscriptionNames(), " or ")))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("--slave-environments: no subscription of %s reaches this master yet; synchronous_standby_names is unchanged "+
			"(naming a slave that is not there would make every master commit wait): run `pgoutpost subscription create` on it first, or check the spelling",
			strings.Join(missing, ", "))
	}
	value := replication.SynchronousStandbyNames(subs)
	old, err := replication.SetSynchronous(ctx, s.conn, value)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "synchronous_standby_names = %s (was %q)\n", value, old)
	fmt.Fprintln(e.stderr, "warning: synchronous replication: every commit on the master now waits until each of these "+
		"subscriptions has confirmed it. A slow slave slows every master write; a slave that is down or "+
		"disconnected blocks master commits (they wait, they do not fail) until it is back or the setting is "+
		"cleared: ALTER SYSTEM RESET synchronous_standby_names; SELECT pg_reload_conf();")
	return nil
}

func runPublicationUpdate(ctx context.Context, e *env, args []string) error {
	var g globalFlags
	fs := newFlagSet(e, "publication update", `publication update [--dry-run]

Makes the master's publications match the configured models, in one
transaction: adds and drops tables, sets row filters and column lists. With
--dry-run it prints the plan and the tables that will not be synced, and
changes nothing. Run queue install first: the queue publication carries the
queue tables it creates. Then run subscription update on each slave so that
new tables get their initial copy.`, &g)
	dryRun := fs.Bool("dry-run", false, "print the plan and the tables that will not be synced; change nothing")
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := openRepl(ctx, e, &g, "publication update", registry.RoleMaster)
	if err != nil {
		return err
	}
	defer s.close()
	reg, err := s.registry(ctx)
	if err != nil {
		return err
	}
	plan, err := replication.PlanPublications(ctx, s.conn, reg, s.names)
	if err != nil {
		return err
	}
	plan.Write(e.stdout)
	if *dryRun || plan.Empty() {
		if *dryRun && !plan.Empty() {
			fmt.Fprintln(e.stdout, "dry run: nothing changed")
		}
		return nil
	}
	if err := plan.Apply(ctx, s.conn); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "applied %d change(s) in one transaction; on each slave run `pgoutpost subscription update --wait`\n", len(plan.Changes))
	return nil
}
