package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutpost/pgoutpost/registry"
)

// Step is one change of a plan: what it does in words and the SQL that does it.
type Step struct {
	Summary string
	SQL     string
}

// Plan is the list of changes that brings a database to the wanted state, in
// order. An empty plan means there is nothing to do.
type Plan []Step

// Write prints the plan: one line per step, or with withSQL a script of the
// statements with the summaries as comments.
func (p Plan) Write(w io.Writer, withSQL bool) error {
	var b bytes.Buffer
	for _, s := range p {
		if withSQL {
			fmt.Fprintf(&b, "-- %s\n%s;\n\n", s.Summary, s.SQL)
		} else {
			fmt.Fprintf(&b, "%s\n", s.Summary)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// querier is what planning needs: a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// txBeginner is a connection or pool.
type txBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// InstallOptions say what Install sets up.
type InstallOptions struct {
	Role registry.Role
	// Registry gives the master's delete and denormalize models. Unused on a slave.
	Registry *registry.Registry
	// Publication is the slave's local queue publication (sidecar.publication);
	// DefaultLocalPublication when empty. Unused on the master.
	Publication string
	// LockTimeout bounds the wait for each table lock; DefaultLockTimeout when 0.
	LockTimeout time.Duration
	// SeedQueues (queue.seed_queues) adds django-logical-replication's queue
	// tables (registry.SeedDeleteQueue.Table(), registry.SeedDenormalizeQueue.Table()), which must exist, to the
	// slave's local publication, so that the sidecar streams them too.
	SeedQueues bool
}

// installLock is the advisory lock key that serialises pgoutpost's schema
// changes ("pgout" in ASCII), so that two deploys running install at once
// cannot both plan against the same catalog.
const installLock = 0x70676f7574

// DefaultLockTimeout bounds how long install waits for a table's lock.
const DefaultLockTimeout = 10 * time.Second

// Install brings the database to what opts describe (see the package doc) in
// one transaction and returns the plan it applied. With dryRun it only plans
// and changes nothing. Running it again with the same options applies an
// empty plan.
func Install(ctx context.Context, db txBeginner, opts InstallOptions, dryRun bool) (Plan, error) {
	return inTx(ctx, db, dryRun, opts.LockTimeout, func(tx pgx.Tx) (Plan, error) { return planInstall(ctx, tx, opts) })
}

// inTx plans under the install lock and applies the plan unless dryRun.
func inTx(ctx context.Context, db txBeginner, dryRun bool, lockTimeout time.Duration, plan func(pgx.Tx) (Plan, error)) (Plan, error) {
	if lockTimeout <= 0 {
		lockTimeout = DefaultLockTimeout
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, "SELECT pg_catalog.pg_advisory_xact_lock($1)", int64(installLock)); err != nil {
		return nil, fmt.Errorf("take the install lock: %w", err)
	}
	// CREATE and DROP TRIGGER lock their table against writes until commit;
	// queued behind a long transaction, they would block the application's
	// writes to every table already locked. Better to fail and be run again.
	if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config('lock_timeout', $1, true)", strconv.FormatInt(lockTimeout.Milliseconds(), 10)); err != nil {
		return nil, fmt.Errorf("set lock_timeout: %w", err)
	}
	p, err := plan(tx)
	if err != nil || dryRun {
		return p, err
	}
	for _, s := range p {
		if _, err := tx.Exec(ctx, s.SQL); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available
				return nil, fmt.Errorf("%s: a table is busy (waited %s for its lock; nothing was changed): run again: %w", s.Summary, lockTimeout, err)
			}
			return nil, fmt.Errorf("%s: %w", s.Summary, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return p, nil
}

func planInstall(ctx context.Context, q querier, opts InstallOptions) (Plan, error) {
	var serverVersion int
	if err := q.QueryRow(ctx, "SELECT pg_catalog.current_setting('server_version_num')::int").Scan(&serverVersion); err != nil {
		return nil, fmt.Errorf("read the server version: %w", err)
	}
	var (
		fns  = []function{uuidV7(serverVersion)}
		want []triggerSpec
	)
	switch opts.Role {
	case registry.RoleMaster:
		if opts.Registry == nil {
			return nil, errors.New("install on the master needs the registry")
		}
		fns = append(fns, queueRefuseTruncate)
		var errs []error
		for _, t := range opts.Registry.OfKind(registry.KindDelete, registry.KindDenormalize) {
			if len(t.PrimaryKey) == 0 {
				errs = append(errs, fmt.Errorf("%s %s has no primary key: its queue rows could not name the row", t.Kind, t.Name))
				continue
			}
			f, err := tableFunction(ctx, q, t)
			if err != nil {
				return nil, err
			}
			fns = append(fns, f)
			want = append(want, tableTriggers(t, f.name)...)
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	case registry.RoleSlave:
		// A slave has no queue triggers: wanting none drops any it has.
	default:
		return nil, fmt.Errorf("role %q: want master or slave", opts.Role)
	}
	p, fnDrops, err := planBase(ctx, q, fns, true)
	if err != nil {
		return nil, err
	}
	have, err := existingTriggers(ctx, q, `pgoutpost\_queue\_%`)
	if err != nil {
		return nil, err
	}
	steps, err := planTriggers(ctx, q, have, want, true)
	if err != nil {
		return nil, err
	}
	p = append(p, steps...)
	p = append(p, fnDrops...) // after the triggers that used them
	if opts.Role == registry.RoleSlave {
		ixSteps, err := planXidIndexes(ctx, q)
		if err != nil {
			return nil, err
		}
		p = append(p, ixSteps...)
		name := opts.Publication
		if name == "" {
			name = DefaultLocalPublication
		}
		tables := localQueueTables
		if opts.SeedQueues {
			if err := checkTablesExist(ctx, q, []registry.TableName{registry.SeedDeleteQueue.Table(), registry.SeedDenormalizeQueue.Table()}); err != nil {
				return nil, fmt.Errorf("queue.seed_queues: django-logical-replication's queue tables: %w", err)
			}
			tables = append(append([]registry.TableName(nil), tables...), registry.SeedDeleteQueue.Table(), registry.SeedDenormalizeQueue.Table())
			slices.SortFunc(tables, func(a, b registry.TableName) int { return strings.Compare(a.String(), b.String()) })
		}
		steps, err := planPublication(ctx, q, name, tables)
		if err != nil {
			return nil, err
		}
		p = append(p, steps...)
	}
	return p, nil
}

// planBase plans the schema, the functions fns and, with tables, the queue
// tables. It also returns the drops of the tables' queue trigger functions
// that fns no longer lists, to run once their triggers are gone.
func planBase(ctx context.Context, q querier, fns []function, tables bool) (p, fnDrops Plan, err error) {
	var exists bool
	if err := q.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)", Schema).Scan(&exists); err != nil {
		return nil, nil, fmt.Errorf("look up schema %s: %w", Schema, err)
	}
	if !exists {
		p = append(p, Step{"create schema " + Schema, "CREATE SCHEMA " + pgx.Identifier{Schema}.Sanitize()})
	}

	type procInfo struct {
		src     string
		definer bool
		config  []string
	}
	procs := map[string]procInfo{}
	var procNames []string
	rows, err := q.Query(ctx, `SELECT p.proname, p.prosrc, p.prosecdef, coalesce(p.proconfig, '{}')
		FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = $1 ORDER BY 1`, Schema)
	if err != nil {
		return nil, nil, fmt.Errorf("list functions of schema %s: %w", Schema, err)
	}
	for rows.Next() {
		var name string
		var pi procInfo
		if err := rows.Scan(&name, &pi.src, &pi.definer, &pi.config); err != nil {
			return nil, nil, fmt.Errorf("list functions of schema %s: %w", Schema, err)
		}
		procs[name] = pi
		procNames = append(procNames, name)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list functions of schema %s: %w", Schema, err)
	}
	wanted := map[string]bool{}
	for _, f := range fns {
		wanted[f.name] = true
		pi, ok := procs[f.name]
		switch {
		case !ok:
			p = append(p, Step{"create function " + f.display(), f.sql()})
		case pi.src != f.body || pi.definer != f.definer || !slices.Equal(pi.config, f.config):
			p = append(p, Step{"replace function " + f.display() + " (definition changed)", f.sql()})
		}
	}
	if tables {
		for _, name := range procNames {
			if strings.HasPrefix(name, tableFunctionPrefix) && !wanted[name] {
				fnDrops = append(fnDrops, Step{"drop function " + function{name: name}.display(),
					"DROP FUNCTION " + pgx.Identifier{Schema, name}.Sanitize() + "()"})
			}
		}
		for _, f := range obsoleteFunctions {
			if _, ok := procs[f.name]; ok {
				fnDrops = append(fnDrops, Step{"drop function " + f.display() + " (no longer used)",
					"DROP FUNCTION IF EXISTS " + pgx.Identifier{Schema, f.name}.Sanitize() + "(" + f.args + ")"})
			}
		}
	}

	if !tables {
		return p, nil, nil
	}
	present := map[string]bool{}
	rows, err = q.Query(ctx, `SELECT c.relname FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')`, Schema)
	if err != nil {
		return nil, nil, fmt.Errorf("list tables of schema %s: %w", Schema, err)
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, nil, fmt.Errorf("list tables of schema %s: %w", Schema, err)
		}
		present[name] = true
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list tables of schema %s: %w", Schema, err)
	}
	for _, t := range tableDDL {
		if !present[t.name.Name] {
			p = append(p, Step{"create table " + t.name.String(), t.sql})
		}
	}
	return p, fnDrops, nil
}

// pg_trigger.tgtype bits (src/include/catalog/pg_trigger.h).
const (
	tgRow      = 1 << 0
	tgBefore   = 1 << 1
	tgInsert   = 1 << 2
	tgDelete   = 1 << 3
	tgUpdate   = 1 << 4
	tgTruncate = 1 << 5
)

// triggerSpec is one statement-level trigger as pgoutpost wants it, in the
// terms pg_trigger stores, so that existing triggers compare field by field.
type triggerSpec struct {
	table    registry.TableName
	name     string
	function string // in Schema
	tgtype   int16
	oldTable string
	newTable string
	args     []string
	enabled  bool // tgenabled = 'O' (fires in origin and local mode)
}

func (s triggerSpec) equal(o triggerSpec) bool {
	return s.table == o.table && s.name == o.name && s.function == o.function && s.tgtype == o.tgtype &&
		s.oldTable == o.oldTable && s.newTable == o.newTable && slices.Equal(s.args, o.args) && s.enabled == o.enabled
}

// timing renders the tgtype as CREATE TRIGGER spells it.
func (s triggerSpec) timing() string {
	var events []string
	for _, e := range []struct {
		bit  int16
		name string
	}{{tgInsert, "INSERT"}, {tgUpdate, "UPDATE"}, {tgDelete, "DELETE"}, {tgTruncate, "TRUNCATE"}} {
		if s.tgtype&e.bit != 0 {
			events = append(events, e.name)
		}
	}
	when := "AFTER "
	if s.tgtype&tgBefore != 0 {
		when = "BEFORE "
	}
	return when + strings.Join(events, " OR ")
}

// tableTriggers lists the queue triggers of delete or denormalize model t,
// whose trigger function is fn.
func tableTriggers(t *registry.Table, fn string) []triggerSpec {
	out := []triggerSpec{{table: t.Name, name: queueTriggerPrefix + "delete", function: fn,
		tgtype: tgDelete, oldTable: oldRows, enabled: true}}
	if t.OnTruncate == registry.TruncateRefuse {
		out = append(out, triggerSpec{table: t.Name, name: queueTriggerPrefix + "truncate", function: queueRefuseTruncate.name,
			tgtype: tgBefore | tgTruncate, enabled: true})
	} else {
		out = append(out, triggerSpec{table: t.Name, name: queueTriggerPrefix + "truncate", function: fn,
			tgtype: tgBefore | tgTruncate, enabled: true})
	}
	if t.Kind == registry.KindDenormalize {
		out = append(out,
			triggerSpec{table: t.Name, name: queueTriggerPrefix + "insert", function: fn,
				tgtype: tgInsert, newTable: newRows, enabled: true},
			triggerSpec{table: t.Name, name: queueTriggerPrefix + "update", function: fn,
				tgtype: tgUpdate, oldTable: oldRows, newTable: newRows, enabled: true})
	}
	return out
}

// existingTriggers reads the triggers whose name matches the LIKE pattern.
func existingTriggers(ctx context.Context, q querier, like string) ([]triggerSpec, error) {
	rows, err := q.Query(ctx, `SELECT n.nspname, c.relname, t.tgname, pn.nspname, p.proname, t.tgtype,
			t.tgenabled = 'O', coalesce(t.tgoldtable, ''), coalesce(t.tgnewtable, ''), t.tgnargs, t.tgargs
		FROM pg_catalog.pg_trigger t
		JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
		JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
		WHERE NOT t.tgisinternal AND t.tgname LIKE $1
		ORDER BY 1, 2, 3`, like)
	if err != nil {
		return nil, fmt.Errorf("list pgoutpost triggers: %w", err)
	}
	defer rows.Close()
	var out []triggerSpec
	for rows.Next() {
		var (
			s       triggerSpec
			fnNsp   string
			nargs   int16
			rawArgs []byte
		)
		if err := rows.Scan(&s.table.Schema, &s.table.Name, &s.name, &fnNsp, &s.function, &s.tgtype,
			&s.enabled, &s.oldTable, &s.newTable, &nargs, &rawArgs); err != nil {
			return nil, fmt.Errorf("list pgoutpost triggers: %w", err)
		}
		if fnNsp != Schema {
			s.function = fnNsp + "." + s.function // never equal to ours
		}
		// tgargs holds each argument followed by a NUL byte.
		for i := 0; i < int(nargs); i++ {
			arg, rest, _ := bytes.Cut(rawArgs, []byte{0})
			s.args = append(s.args, string(arg))
			rawArgs = rest
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list pgoutpost triggers: %w", err)
	}
	return out, nil
}

// planTriggers plans the drops and creations that turn have into want. With
// dropUnwanted, triggers of have that want lacks are dropped; without, they are
// left (guard install adds, never removes).
func planTriggers(ctx context.Context, q querier, have, want []triggerSpec, dropUnwanted bool) (Plan, error) {
	type key struct {
		table registry.TableName
		name  string
	}
	haveBy := map[key]triggerSpec{}
	for _, s := range have {
		haveBy[key{s.table, s.name}] = s
	}
	wantBy := map[key]bool{}
	var drops, creates Plan
	for _, s := range want {
		wantBy[key{s.table, s.name}] = true
		h, ok := haveBy[key{s.table, s.name}]
		if ok && h.equal(s) {
			continue
		}
		if ok {
			st, err := dropTriggerStep(ctx, q, h, "replace trigger %s on %s (definition changed): drop")
			if err != nil {
				return nil, err
			}
			drops = append(drops, st)
		}
		st, err := createTriggerStep(ctx, q, s)
		if err != nil {
			return nil, err
		}
		creates = append(creates, st)
	}
	if dropUnwanted {
		for _, h := range have {
			if !wantBy[key{h.table, h.name}] {
				st, err := dropTriggerStep(ctx, q, h, "drop trigger %s on %s")
				if err != nil {
					return nil, err
				}
				drops = append(drops, st)
			}
		}
	}
	return append(drops, creates...), nil
}

// createTriggerStep has the server quote the names (%I) and the arguments
// (quote_literal): trigger arguments are literals in the DDL and cannot be
// query parameters.
func createTriggerStep(ctx context.Context, q querier, s triggerSpec) (Step, error) {
	var sql string
	err := q.QueryRow(ctx, `SELECT pg_catalog.format('CREATE TRIGGER %I %s ON %I.%I%s FOR EACH STATEMENT EXECUTE FUNCTION %I.%I(%s)',
			$1::text, $2::text, $3::text, $4::text,
			CASE WHEN $5::text <> '' OR $6::text <> '' THEN ' REFERENCING ' || concat_ws(' ',
				CASE WHEN $5 <> '' THEN pg_catalog.format('OLD TABLE AS %I', $5) END,
				CASE WHEN $6 <> '' THEN pg_catalog.format('NEW TABLE AS %I', $6) END) ELSE '' END,
			$7::text, $8::text,
			(SELECT coalesce(string_agg(pg_catalog.quote_literal(a), ', ' ORDER BY i), '')
			 FROM unnest($9::text[]) WITH ORDINALITY AS u(a, i)))`,
		s.name, s.timing(), s.table.Schema, s.table.Name, s.oldTable, s.newTable, Schema, s.function, s.args).Scan(&sql)
	if err != nil {
		return Step{}, fmt.Errorf("build trigger %s on %s: %w", s.name, s.table, err)
	}
	return Step{fmt.Sprintf("create trigger %s on %s (%s)", s.name, s.table, strings.ToLower(s.timing())), sql}, nil
}

func dropTriggerStep(ctx context.Context, q querier, s triggerSpec, summary string) (Step, error) {
	var sql string
	err := q.QueryRow(ctx, `SELECT pg_catalog.format('DROP TRIGGER %I ON %I.%I', $1::text, $2::text, $3::text)`,
		s.name, s.table.Schema, s.table.Name).Scan(&sql)
	if err != nil {
		return Step{}, fmt.Errorf("build drop of trigger %s on %s: %w", s.name, s.table, err)
	}
	return Step{fmt.Sprintf(summary, s.name, s.table), sql}, nil
}

// xidIndexes index the slave's queue tables by transaction id and, within
// one, by entry id: the drain at start (Processor.Pending) reads every entry
// of the oldest transactions, and without them each batch would scan the
// whole backlog; a large transaction's entries are read a page at a time in
// id order (xid = $1 AND id > $2 ORDER BY id), one range of the index each,
// whatever the planner thinks of the table. The master's tables have none, as
// nothing there reads by xid and its triggers write them.
var xidIndexes = []struct {
	table registry.TableName
	name  string
}{
	{registry.DeleteQueue.Table(), "delete_queue_xid_idx"},
	{registry.DenormalizeQueue.Table(), "denormalize_queue_xid_idx"},
}

func planXidIndexes(ctx context.Context, q querier) (Plan, error) {
	var p Plan
	for _, ix := range xidIndexes {
		state, err := xidIndexState(ctx, q, ix.table, ix.name)
		if err != nil {
			return nil, err
		}
		name := pgx.Identifier{Schema, ix.name}.Sanitize()
		if state == indexWrong {
			p = append(p, Step{"drop index " + ix.name + " (invalid, or not on " + ix.table.String() + " (xid, id))", "DROP INDEX " + name})
		}
		if state != indexOK {
			p = append(p, Step{"create index " + ix.name + " on " + ix.table.String() + " (xid, id)",
				"CREATE INDEX " + pgx.Identifier{ix.name}.Sanitize() + " ON " + ix.table.Sanitize() + " (xid, id)"})
		}
	}
	return p, nil
}

type indexState int

const (
	indexMissing indexState = iota
	indexOK
	indexWrong // exists, but invalid (a failed CREATE INDEX CONCURRENTLY) or not the index wanted
)

type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// xidIndexState says whether index name in Schema is a valid plain btree
// index of table on (xid, id). (One on (xid) alone, as earlier versions made,
// is replaced.)
func xidIndexState(ctx context.Context, q rowQuerier, table registry.TableName, name string) (indexState, error) {
	var ok bool
	err := q.QueryRow(ctx, `SELECT coalesce(i.indisvalid AND i.indrelid = pg_catalog.to_regclass($3)
    AND i.indnatts = 2 AND i.indexprs IS NULL AND i.indpred IS NULL
    AND c.relam = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'btree')
    AND (SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = i.indrelid AND attnum = i.indkey[0]) = 'xid'
    AND (SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = i.indrelid AND attnum = i.indkey[1]) = 'id', false)
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
  WHERE n.nspname = $1 AND c.relname = $2`, Schema, name, table.Sanitize()).Scan(&ok)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return indexMissing, nil
	case err != nil:
		return indexMissing, fmt.Errorf("look up index %s: %w", name, err)
	case ok:
		return indexOK, nil
	}
	return indexWrong, nil
}

// MissingIndexes names the indexes of a slave's queue tables that `queue
// install` creates and the database lacks or has in an unusable state.
// Without them the sidecar works, but draining a backlog takes time that grows
// with its square.
func MissingIndexes(ctx context.Context, q rowQuerier) ([]string, error) {
	var missing []string
	for _, ix := range xidIndexes {
		state, err := xidIndexState(ctx, q, ix.table, ix.name)
		if err != nil {
			return nil, err
		}
		if state != indexOK {
			missing = append(missing, ix.name)
		}
	}
	return missing, nil
}

// localQueueTables are the tables of the slave's local publication.
var localQueueTables = []registry.TableName{registry.DeleteQueue.Table(), registry.DenormalizeQueue.Table()}

// planPublication plans the slave's local queue publication: exactly the
// queue tables given (sorted by name), insert only (the sidecar's own dequeue DELETEs must not come
// back to it as changes).
func planPublication(ctx context.Context, q querier, name string, tables []registry.TableName) (Plan, error) {
	var all, ins, upd, del, trunc bool
	err := q.QueryRow(ctx, `SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate
		FROM pg_catalog.pg_publication WHERE pubname = $1`, name).Scan(&all, &ins, &upd, &del, &trunc)
	tableList := make([]string, len(tables))
	for i, t := range tables {
		tableList[i] = t.Sanitize()
	}
	pubName := pgx.Identifier{name}.Sanitize()
	if errors.Is(err, pgx.ErrNoRows) {
		return Plan{{fmt.Sprintf("create publication %s of %s (insert only)", name, strings.Join(tableNames(tables), ", ")),
			"CREATE PUBLICATION " + pubName + " FOR TABLE " + strings.Join(tableList, ", ") + " WITH (publish = 'insert')"}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up publication %s: %w", name, err)
	}
	if all {
		return nil, fmt.Errorf("publication %s is FOR ALL TABLES: drop it or set sidecar.publication to another name", name)
	}
	var p Plan
	if !ins || upd || del || trunc {
		p = append(p, Step{fmt.Sprintf("set publication %s to publish insert only", name),
			"ALTER PUBLICATION " + pubName + " SET (publish = 'insert')"})
	}
	rows, err := q.Query(ctx, `SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2`, name)
	if err != nil {
		return nil, fmt.Errorf("list tables of publication %s: %w", name, err)
	}
	var have []registry.TableName
	for rows.Next() {
		var t registry.TableName
		if err := rows.Scan(&t.Schema, &t.Name); err != nil {
			return nil, fmt.Errorf("list tables of publication %s: %w", name, err)
		}
		have = append(have, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables of publication %s: %w", name, err)
	}
	if !slices.Equal(have, tables) {
		p = append(p, Step{fmt.Sprintf("set the tables of publication %s to %s (was: %s)", name,
			strings.Join(tableNames(tables), ", "), strings.Join(tableNames(have), ", ")),
			"ALTER PUBLICATION " + pubName + " SET TABLE " + strings.Join(tableList, ", ")})
	}
	return p, nil
}

func tableNames(ts []registry.TableName) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.String()
	}
	return out
}
