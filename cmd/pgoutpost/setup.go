package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/config"
	"github.com/pgoutpost/pgoutpost/internal/connstr"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/replication"
)

// replSession is what the commands that work on this environment's database
// share: the configuration, the publication and subscription names it
// derives, and a connection to the database.
type replSession struct {
	cfg    *config.Config
	names  replication.Names
	conn   *pgx.Conn
	logger *slog.Logger
}

// replConfigError is a configuration that cannot be used (or is invalid and
// its problems have been printed): exit code 2.
type replConfigError struct{ msg string }

func (e *replConfigError) Error() string { return e.msg }
func (e *replConfigError) ExitCode() int { return exitUsage }

// loadConfig loads the configuration, builds the logger the global flags ask
// for and resolves the database's DSN. A role other than want (when want is
// set) is a usage error: publications live on the master, subscriptions and
// the sidecar on a slave.
func loadConfig(ctx context.Context, e *env, g *globalFlags, cmd string, want registry.Role) (*config.Config, *slog.Logger, string, error) {
	logger, err := g.logger(e)
	if err != nil {
		return nil, nil, "", err
	}
	cfg, err := config.LoadContext(ctx, g.config)
	if err != nil {
		return nil, nil, "", err
	}
	if want != "" && cfg.Role != want {
		return nil, nil, "", &replConfigError{fmt.Sprintf("%s runs on the %s; %s says role: %s", cmd, want, g.config, cfg.Role)}
	}
	dsn, err := cfg.Database.Resolve(ctx, "")
	if err != nil {
		return nil, nil, "", &replConfigError{fmt.Sprintf("database: %v", err)}
	}
	return cfg, logger, dsn, nil
}

// openRepl loads the configuration (see loadConfig) and connects to its
// database.
func openRepl(ctx context.Context, e *env, g *globalFlags, cmd string, want registry.Role) (*replSession, error) {
	cfg, logger, dsn, err := loadConfig(ctx, e, g, cmd, want)
	if err != nil {
		return nil, err
	}
	names, err := replication.NewNames(cfg.Replication.Prefix, cfg.Replication.SeedSlug, cfg.Environment)
	if err != nil {
		return nil, &replConfigError{err.Error()}
	}
	names.SeedQueues = cfg.Queue.SeedQueues
	names.SetFailover(cfg.Replication.Failover)
	logger.Debug("connecting", "database", cfg.Database)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %s", connstr.Scrub(err.Error(), dsn))
	}
	return &replSession{cfg: cfg, names: names, conn: conn, logger: logger}, nil
}

func (s *replSession) close() { _ = s.conn.Close(context.Background()) }

// registry resolves the models against the database and refuses a registry
// that does not validate (see validRegistry).
func (s *replSession) registry(ctx context.Context) (*registry.Registry, error) {
	return validRegistry(ctx, s.conn, s.cfg, s.logger)
}

// loadRegistry resolves the models against the database, unvalidated.
func (s *replSession) loadRegistry(ctx context.Context) (*registry.Registry, error) {
	return loadRegistry(ctx, s.conn, s.cfg, s.logger)
}

// validRegistry resolves the models against the database and refuses a
// registry that does not validate, listing every problem (publishing it could
// break the slaves' user data; the sidecar would apply wrong rules); warnings
// are logged.
func validRegistry(ctx context.Context, db registry.Querier, cfg *config.Config, logger *slog.Logger) (*registry.Registry, error) {
	reg, err := loadRegistry(ctx, db, cfg, logger)
	if err != nil {
		return nil, err
	}
	problems := registry.Validate(reg)
	for _, w := range problems.Warnings() {
		logger.Warn(w.Message, "subject", w.Subject)
	}
	if err := problems.Err(); err != nil {
		return nil, err
	}
	return reg, nil
}

// loadRegistry resolves the models against the database, unvalidated.
func loadRegistry(ctx context.Context, db registry.Querier, cfg *config.Config, logger *slog.Logger) (*registry.Registry, error) {
	reg, err := registry.Load(ctx, db, cfg.RegistrySpec())
	if err != nil {
		return nil, fmt.Errorf("load registry: %w", err)
	}
	logger.Debug("registry loaded", "tables", len(reg.Tables))
	return reg, nil
}

// catalogTimeout bounds connecting to the database and reading its catalog.
const catalogTimeout = 30 * time.Second

// checkRegistry loads the configuration, connects to its database and
// resolves the registry for the commands that report problems rather than
// refuse them (validate, registry show): problems are Validate's plus the
// server's settings and, as warnings, the privileges the connected role lacks
// for the commands of its role (replication.MissingPrivileges). A configuration that does not load is an error with exit
// code 2; so is a database DSN that cannot be resolved.
func checkRegistry(ctx context.Context, e *env, g *globalFlags, cmd string) (*registry.Registry, registry.Problems, error) {
	ctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	s, err := openRepl(ctx, e, g, cmd, "")
	if err != nil {
		return nil, nil, err
	}
	defer s.close()
	reg, err := s.loadRegistry(ctx)
	if err != nil {
		return nil, nil, err
	}
	problems, err := serverProblems(ctx, s.conn)
	if err != nil {
		return nil, nil, err
	}
	role := "slave"
	if s.cfg.Role == registry.RoleMaster {
		role = "master"
	}
	needs, err := replication.MissingPrivileges(ctx, s.conn, role, reg)
	if err != nil {
		return nil, nil, err
	}
	if role == "slave" && s.cfg.Queue.FKChecks == config.FKChecksBatch {
		var user string
		if err := s.conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil {
			return nil, nil, err
		}
		grantee := pgx.Identifier{user}.Sanitize()
		if err := cascade.CheckReplicaRole(ctx, s.conn); err != nil {
			needs = append(needs, replication.Need{Commands: "run (queue.fk_checks: batch)", What: "SET on session_replication_role",
				Grant: "GRANT SET ON PARAMETER session_replication_role TO " + grantee, Or: "a superuser, or queue.fk_checks: database"})
		}
		unreadable, err := cascade.UnreadableReferences(ctx, s.conn, reg)
		if err != nil {
			return nil, nil, err
		}
		for _, u := range unreadable {
			needs = append(needs, replication.Need{Commands: "run (queue.fk_checks: batch)",
				What: fmt.Sprintf("SELECT on %s, whose foreign key %s references %s (without it every deletion from %s is done twice: checked by pgoutpost, which cannot read %s, then again with PostgreSQL's checks)",
					u.From, u.Constraint, u.To, u.To, u.From),
				Grant: fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s; GRANT SELECT ON %s TO %s", pgx.Identifier{u.From.Schema}.Sanitize(), grantee, u.From.Sanitize(), grantee),
				Or:    "queue.fk_checks: database"})
		}
	}
	for _, n := range needs {
		problems = append(problems, registry.Problem{Severity: registry.Warning, Subject: "privileges", Message: n.String()})
	}
	return reg, append(problems, registry.Validate(reg)...), nil
}
