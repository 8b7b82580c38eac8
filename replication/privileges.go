package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/registry"
)

// Need is a privilege that the connected role lacks and a command needs.
type Need struct {
	Commands string // the commands that need it
	What     string // what is missing, in words
	Grant    string // the SQL statement that gives it; "" when none can
	Or       string // another way, in words
}

func (n Need) String() string {
	s := n.Commands + " needs " + n.What
	switch {
	case n.Grant != "" && n.Or != "":
		return s + ": " + n.Grant + " (or " + n.Or + ")"
	case n.Grant != "":
		return s + ": " + n.Grant
	}
	return s + ": " + n.Or
}

// MissingPrivileges lists what the connected role (the one of database:)
// lacks for pgoutpost's commands on a server of role ("master" or "slave"),
// for the tables of reg. A superuser lacks nothing. The needs, which are the
// least a role must have:
//
// Master: CREATE on the database (publication create; queue install, unless
// it owns schema pgoutpost), ownership of every synced table (publication
// update adds them) and TRIGGER on the models (queue install).
//
// Slave: subscription create|update|drop need a superuser on 15; on 16+
// membership in pg_create_subscription, CREATE on the database, SET on the
// statement-logging parameters that quietly turns off, and SET ROLE to the
// owners of the synced and queue tables (the apply worker writes as them);
// a non-superuser's subscription also needs a password in master:'s
// conninfo (password_required). run needs REPLICATION (its slot; RDS:
// rds_replication), USAGE on schema pgoutpost with SELECT, INSERT and DELETE
// on its tables (or CREATE on the database before queue install),
// TEMPORARY on the database (large transactions), and on
// the synced and user tables: SELECT, UPDATE (its row locks) and DELETE on
// every table a delete can reach (the delete models and what CASCADE leads
// to), SELECT and UPDATE on those whose foreign key into them is SET_NULL,
// SET_DEFAULT or SET(…), SELECT on those that PROTECT or RESTRICT. guard
// install|remove need the privileges of the synced tables' owners.
func MissingPrivileges(ctx context.Context, db DB, role string, reg *registry.Registry) ([]Need, error) {
	var user, database string
	var super, replication bool
	var version int
	err := db.QueryRow(ctx, `SELECT current_user, current_database(), rolsuper, rolreplication, current_setting('server_version_num')::int
		FROM pg_catalog.pg_roles WHERE rolname = current_user`).Scan(&user, &database, &super, &replication, &version)
	if err != nil {
		return nil, fmt.Errorf("read the role: %w", err)
	}
	if super {
		return nil, nil
	}
	c := &privChecker{ctx: ctx, db: db, user: pgx.Identifier{user}.Sanitize()}
	var createDB, ownsSchema bool
	if err := db.QueryRow(ctx, `SELECT has_database_privilege(current_database(), 'CREATE'),
		coalesce((SELECT pg_has_role(nspowner, 'USAGE') FROM pg_catalog.pg_namespace WHERE nspname = $1), false)`,
		registry.QueueSchema).Scan(&createDB, &ownsSchema); err != nil {
		return nil, fmt.Errorf("read database privileges: %w", err)
	}
	grantCreate := "GRANT CREATE ON DATABASE " + pgx.Identifier{database}.Sanitize() + " TO " + c.user
	if role == "master" {
		if !createDB {
			cmds := "publication create"
			if !ownsSchema {
				cmds += ", queue install"
			}
			c.need(cmds, "CREATE on the database", grantCreate)
		}
		for _, t := range syncedTables(reg) {
			if err := c.owner(t.Name, "publication update"); err != nil {
				return nil, err
			}
			if t.Kind == registry.KindDelete || t.Kind == registry.KindDenormalize {
				if err := c.table(t.Name, "queue install", "TRIGGER"); err != nil {
					return nil, err
				}
			}
		}
		return c.needs, nil
	}

	// Slave.
	var subscriber bool
	if version >= 160000 {
		if err := db.QueryRow(ctx, "SELECT pg_has_role('pg_create_subscription', 'MEMBER')").Scan(&subscriber); err != nil {
			return nil, fmt.Errorf("read role membership: %w", err)
		}
	}
	switch {
	case version < 160000:
		c.needOr("subscription create|update|drop", "a superuser (PostgreSQL 15 lets no other role create subscriptions)", "", "run them as a superuser")
	case !subscriber:
		c.need("subscription create|update|drop", "membership in pg_create_subscription", "GRANT pg_create_subscription TO "+c.user)
	}
	var createFor []string
	if version >= 160000 {
		createFor = append(createFor, "subscription create")
		// The statement that holds the master's password is sent only with
		// the slave's statement logging off for it (see quietly).
		var lack []string
		for _, param := range quietParams {
			var ok bool
			if err := db.QueryRow(ctx, "SELECT has_parameter_privilege($1, 'SET')", param).Scan(&ok); err != nil {
				return nil, fmt.Errorf("read parameter privileges: %w", err)
			}
			if !ok {
				lack = append(lack, param)
			}
		}
		if len(lack) > 0 {
			c.need("subscription create|update", "SET on "+strings.Join(lack, ", ")+" (statement logging is turned off for the statement that holds the master's password)",
				"GRANT SET ON PARAMETER "+strings.Join(lack, ", ")+" TO "+c.user)
		}
		// The apply worker writes each table as its owner (run_as_owner =
		// false): the subscription's owner must be able to SET ROLE to it.
		owners, err := c.tableOwners(append(syncedTableNames(reg), registry.DeleteQueue.Table(), registry.DenormalizeQueue.Table()), "SET")
		if err != nil {
			return nil, err
		}
		for _, o := range owners {
			// WITH INHERIT FALSE: the right to become the owner, not its
			// privileges (16+).
			c.needOr("subscription create (its apply worker)", "SET ROLE to "+o+", the owner of synced tables", "GRANT "+pgx.Identifier{o}.Sanitize()+" TO "+c.user+" WITH INHERIT FALSE",
				"have the tables owned by a role that is no superuser: a member of a superuser's role can become it")
		}
	}
	if !replication {
		var rds bool
		if err := db.QueryRow(ctx, "SELECT coalesce((SELECT pg_has_role(oid, 'MEMBER') FROM pg_catalog.pg_roles WHERE rolname = 'rds_replication'), false)").Scan(&rds); err != nil {
			return nil, fmt.Errorf("read role membership: %w", err)
		}
		if !rds {
			c.needOr("run", "REPLICATION (the sidecar's slot and stream)", "ALTER ROLE "+c.user+" REPLICATION", "on RDS: GRANT rds_replication TO "+c.user)
		}
	}
	// The write guard's triggers: CREATE TRIGGER needs TRIGGER, DROP
	// TRIGGER the owner's privileges.
	owners, err := c.tableOwners(syncedTableNames(reg), "USAGE")
	if err != nil {
		return nil, err
	}
	inherit := ""
	if version >= 160000 {
		inherit = " WITH INHERIT TRUE"
	}
	for _, o := range owners {
		c.needOr("guard install|remove (if you use the write guard)", "the privileges of "+o+", the owner of synced tables (dropping a trigger is the owner's)",
			"GRANT "+pgx.Identifier{o}.Sanitize()+" TO "+c.user+inherit, "run the guard commands as the tables' owner")
	}
	var queues bool
	// Looked up in the catalog: to_regclass needs USAGE on the schema.
	if err := db.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)",
		registry.DeleteQueue.Table().Schema, registry.DeleteQueue.Table().Name).Scan(&queues); err != nil {
		return nil, fmt.Errorf("read queues: %w", err)
	}
	if queues {
		for _, t := range []registry.TableName{registry.DeleteQueue.Table(), registry.DenormalizeQueue.Table(), registry.DeadLetter} {
			if err := c.table(t, "run", "SELECT", "INSERT", "DELETE"); err != nil {
				return nil, err
			}
		}
		var usage bool
		if err := db.QueryRow(ctx, "SELECT has_schema_privilege($1, 'USAGE')", registry.QueueSchema).Scan(&usage); err != nil {
			return nil, fmt.Errorf("read schema privileges: %w", err)
		}
		if !usage {
			c.need("run", "USAGE on schema "+registry.QueueSchema, "GRANT USAGE ON SCHEMA "+pgx.Identifier{registry.QueueSchema}.Sanitize()+" TO "+c.user)
		}
	} else {
		createFor = append(createFor, "queue install")
	}
	// A large master transaction is applied through temporary tables
	// (queue.large_transaction); PUBLIC has TEMPORARY by default.
	var temp bool
	if err := db.QueryRow(ctx, "SELECT has_database_privilege(current_database(), 'TEMPORARY')").Scan(&temp); err != nil {
		return nil, fmt.Errorf("read database privileges: %w", err)
	}
	if !temp {
		c.need("run (large master transactions)", "TEMPORARY on the database", "GRANT TEMPORARY ON DATABASE "+pgx.Identifier{database}.Sanitize()+" TO "+c.user)
	}
	if !createDB && len(createFor) > 0 {
		c.need(strings.Join(createFor, ", "), "CREATE on the database", grantCreate)
	}
	want := map[registry.TableName][]string{}
	add := func(t registry.TableName, privs ...string) {
		for _, p := range privs {
			if !slices.Contains(want[t], p) {
				want[t] = append(want[t], p)
			}
		}
	}
	reach := reg.DeleteReach()
	for n := range reach {
		// The cascade locks the rows it deletes (SELECT … FOR UPDATE),
		// which PostgreSQL allows only with UPDATE.
		add(n, "SELECT", "UPDATE", "DELETE")
		for _, fk := range reg.Table(n).Incoming {
			switch fk.OnDelete.Rule {
			case registry.SetNull, registry.SetDefault, registry.SetValue:
				add(fk.From, "SELECT", "UPDATE")
			case registry.Protect, registry.Restrict:
				add(fk.From, "SELECT")
			}
		}
	}
	for _, t := range reg.OfKind(registry.KindDenormalize) {
		add(t.Name, "SELECT")
	}
	names := make([]registry.TableName, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return names[i].String() < names[j].String() })
	for _, n := range names {
		if err := c.table(n, "run", want[n]...); err != nil {
			return nil, err
		}
	}
	return c.needs, nil
}

// quietParams are the settings quietly turns off.
var quietParams = []string{"log_min_error_statement", "log_statement", "log_min_duration_statement", "log_min_duration_sample"}

func syncedTableNames(reg *registry.Registry) []registry.TableName {
	var out []registry.TableName
	for _, t := range syncedTables(reg) {
		out = append(out, t.Name)
	}
	return out
}

// tableOwners returns the owners of tables of whom the role lacks mode:
// "SET" (may SET ROLE to it) or "USAGE" (has its privileges).
func (c *privChecker) tableOwners(tables []registry.TableName, mode string) ([]string, error) {
	var out []string
	for _, t := range tables {
		var ok bool
		var owner string
		err := c.db.QueryRow(c.ctx, "SELECT pg_has_role(c.relowner, $3), pg_get_userbyid(c.relowner) FROM "+relation, t.Schema, t.Name, mode).Scan(&ok, &owner)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // not there yet: its own problem, reported elsewhere
		}
		if err != nil {
			return nil, fmt.Errorf("read the owner of %s: %w", t, err)
		}
		if !ok && !slices.Contains(out, owner) {
			out = append(out, owner)
		}
	}
	return out, nil
}

// relation finds table $1.$2 as c in the catalog (to_regclass would need
// USAGE on its schema, which may be what is missing).
const relation = "pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2"

type privChecker struct {
	ctx   context.Context
	db    DB
	user  string // quoted
	needs []Need
}

func (c *privChecker) need(cmds, what, grant string) {
	c.needs = append(c.needs, Need{Commands: cmds, What: what, Grant: grant})
}

func (c *privChecker) needOr(cmds, what, grant, or string) {
	c.needs = append(c.needs, Need{Commands: cmds, What: what, Grant: grant, Or: or})
}

// table adds a Need for the privileges of privs that the role lacks on t.
func (c *privChecker) table(t registry.TableName, cmds string, privs ...string) error {
	rows, err := c.db.Query(c.ctx, "SELECT p FROM unnest($3::text[]) WITH ORDINALITY AS u(p, i), "+relation+
		" AND NOT has_table_privilege(c.oid, p) ORDER BY i", t.Schema, t.Name, privs)
	if err != nil {
		return fmt.Errorf("read privileges on %s: %w", t, err)
	}
	lack, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read privileges on %s: %w", t, err)
	}
	if len(lack) > 0 {
		c.need(cmds, strings.Join(lack, ", ")+" on "+t.String(), "GRANT "+strings.Join(lack, ", ")+" ON "+t.Sanitize()+" TO "+c.user)
	}
	return nil
}

// owner adds a Need when the role does not own t (directly or through a role
// it is a member of).
func (c *privChecker) owner(t registry.TableName, cmds string) error {
	var owns bool
	var owner string
	err := c.db.QueryRow(c.ctx, "SELECT pg_has_role(c.relowner, 'USAGE'), pg_get_userbyid(c.relowner) FROM "+relation, t.Schema, t.Name).Scan(&owns, &owner)
	if err != nil {
		return fmt.Errorf("read the owner of %s: %w", t, err)
	}
	if !owns {
		c.needOr(cmds, "ownership of "+t.String(), "ALTER TABLE "+t.Sanitize()+" OWNER TO "+c.user, "membership in its owner: GRANT "+pgx.Identifier{owner}.Sanitize()+" TO "+c.user)
	}
	return nil
}
