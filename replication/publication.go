package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutpost/pgoutpost/registry"
)

// Member is a table's membership of a publication, in the form PostgreSQL
// stores it, so that the configuration and the catalog compare exactly.
type Member struct {
	Table     registry.TableName
	RowFilter string   // as pg_get_expr deparses it, "" for none
	Columns   []string // in column order, nil for all columns
}

func (m Member) describe() string {
	var b strings.Builder
	b.WriteString(m.Table.String())
	if m.Columns != nil {
		b.WriteString(" (" + strings.Join(m.Columns, ", ") + ")")
	}
	if m.RowFilter != "" {
		b.WriteString(" WHERE " + m.RowFilter)
	}
	return b.String()
}

// ChangeKind is what a planned change does.
type ChangeKind string

// The changes a plan holds, applied in this order.
const (
	ChangeCreate  ChangeKind = "create"  // create the publication
	ChangePublish ChangeKind = "publish" // set its publish option
	ChangeDrop    ChangeKind = "drop"    // drop a table
	ChangeAlter   ChangeKind = "alter"   // a table's row filter or column list changed
	ChangeAdd     ChangeKind = "add"     // add a table
)

// Change is one step of a plan.
type Change struct {
	Kind        ChangeKind
	Publication string
	Publish     string // ChangeCreate, ChangePublish: the publish option
	From, To    Member // ChangeDrop: From; ChangeAdd: To; ChangeAlter: both
}

func (c Change) String() string {
	p := "publication " + c.Publication + ": "
	switch c.Kind {
	case ChangeCreate:
		return p + "create (publish = '" + c.Publish + "')"
	case ChangePublish:
		return p + "set publish = '" + c.Publish + "'"
	case ChangeDrop:
		return p + "drop " + c.From.describe()
	case ChangeAdd:
		return p + "add " + c.To.describe()
	}
	var what []string
	if c.From.RowFilter != c.To.RowFilter {
		what = append(what, fmt.Sprintf("row filter %s -> %s", orNone(c.From.RowFilter), orNone(c.To.RowFilter)))
	}
	if !slices.Equal(c.From.Columns, c.To.Columns) {
		what = append(what, fmt.Sprintf("columns %s -> %s", colsOrAll(c.From.Columns), colsOrAll(c.To.Columns)))
	}
	return p + "change " + c.To.Table.String() + ": " + strings.Join(what, "; ")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func colsOrAll(c []string) string {
	if c == nil {
		return "(all)"
	}
	return "(" + strings.Join(c, ", ") + ")"
}

// PublicationPlan is the difference between the publications the registry
// asks for and the ones the master has.
type PublicationPlan struct {
	Changes []Change
	// UserTables are the tables that will not be synced.
	UserTables []registry.TableName
	// Notes say what the plan leaves out and why (e.g. queue tables not installed).
	Notes []string
}

// Empty reports whether the master already matches the registry.
func (p *PublicationPlan) Empty() bool { return len(p.Changes) == 0 }

// Write prints the plan for a person.
func (p *PublicationPlan) Write(w io.Writer) {
	if p.Empty() {
		fmt.Fprintln(w, "Publications are up to date: no changes.")
	}
	for _, c := range p.Changes {
		fmt.Fprintln(w, c.String())
	}
	for _, n := range p.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	fmt.Fprintf(w, "Not synced (%d user tables):\n", len(p.UserTables))
	for _, t := range p.UserTables {
		fmt.Fprintln(w, "  "+t.String())
	}
}

// desired returns, per publication, the members the registry asks for, with
// their row filters and column lists as written in the configuration.
func desired(reg *registry.Registry, names Names, queueTables []registry.TableName) map[string][]*registry.Table {
	out := map[string][]*registry.Table{}
	for _, t := range reg.Tables {
		if t.Name.Schema == registry.QueueSchema {
			continue
		}
		switch {
		case t.Kind == registry.KindSystem:
			out[names.System.Name] = append(out[names.System.Name], t)
		case t.Kind.IsDeleteModel():
			out[names.Delete.Name] = append(out[names.Delete.Name], t)
		}
	}
	for _, q := range queueTables {
		pub := names.Queue.Name
		if q == registry.SeedDeleteQueue.Table() || q == registry.SeedDenormalizeQueue.Table() {
			pub = names.seedQueuePub
		}
		out[pub] = append(out[pub], &registry.Table{Name: q})
	}
	return out
}

// existingTables returns which of names exist.
func existingTables(ctx context.Context, q querier, names []registry.TableName) (map[registry.TableName]bool, error) {
	out := map[registry.TableName]bool{}
	for _, n := range names {
		var ok bool
		if err := q.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", n.Sanitize()).Scan(&ok); err != nil {
			return nil, fmt.Errorf("look up table %s: %w", n, err)
		}
		out[n] = ok
	}
	return out, nil
}

// PlanPublications compares the master's publications with what reg asks
// for. It changes nothing: row filters and column lists are normalised by
// PostgreSQL inside a transaction that is rolled back.
func PlanPublications(ctx context.Context, db DB, reg *registry.Registry, names Names) (*PublicationPlan, error) {
	plan := &PublicationPlan{}
	for _, t := range reg.OfKind(registry.KindUser) {
		plan.UserTables = append(plan.UserTables, t.Name)
	}
	queues := []registry.TableName{registry.DeleteQueue.Table(), registry.DenormalizeQueue.Table()}
	if names.SeedQueues {
		queues = append(queues, registry.SeedDeleteQueue.Table(), registry.SeedDenormalizeQueue.Table())
	}
	exists, err := existingTables(ctx, db, queues)
	if err != nil {
		return nil, err
	}
	var present []registry.TableName
	for _, q := range queues {
		switch {
		case exists[q]:
			present = append(present, q)
		case q.Schema == registry.QueueSchema:
			plan.Notes = append(plan.Notes, fmt.Sprintf("queue table %s does not exist: run `pgoutpost queue install` on the master, then `publication update` again", q))
		default:
			plan.Notes = append(plan.Notes, fmt.Sprintf("queue.seed_queues is on but the seed's queue table %s does not exist on the master", q))
		}
	}
	want := desired(reg, names, present)

	var synced []*registry.Table
	for _, p := range []string{names.System.Name, names.Delete.Name} {
		synced = append(synced, want[p]...)
	}
	if err := checkReplicaIdentity(ctx, db, synced); err != nil {
		return nil, err
	}
	var schemaPubs []string
	if err := db.QueryRow(ctx, `SELECT coalesce(array_agg(DISTINCT p.pubname::text), '{}') FROM pg_publication_namespace n
		JOIN pg_publication p ON p.oid = n.pnpubid WHERE p.pubname = ANY($1)`, names.PublicationNames()).Scan(&schemaPubs); err != nil {
		return nil, fmt.Errorf("read publication schemas: %w", err)
	}
	if len(schemaPubs) > 0 {
		return nil, fmt.Errorf("publication %s publishes whole schemas (FOR TABLES IN SCHEMA): pgoutpost manages table lists; drop it or choose another replication prefix", strings.Join(schemaPubs, ", "))
	}
	wantMembers, err := normalise(ctx, db, want)
	if err != nil {
		return nil, err
	}
	have, err := readPublications(ctx, db, names.PublicationNames())
	if err != nil {
		return nil, err
	}

	var drops, alters, adds []Change
	for _, spec := range names.Publications() {
		cur, ok := have[spec.Name]
		if !ok {
			plan.Changes = append(plan.Changes, Change{Kind: ChangeCreate, Publication: spec.Name, Publish: spec.Publish})
			cur = &pubState{members: map[registry.TableName]Member{}}
		} else {
			if cur.allTables {
				return nil, fmt.Errorf("publication %s is FOR ALL TABLES: pgoutpost manages its table list; drop it or choose another replication prefix", spec.Name)
			}
			if cur.publish != spec.Publish {
				plan.Changes = append(plan.Changes, Change{Kind: ChangePublish, Publication: spec.Name, Publish: spec.Publish})
			}
		}
		wm := wantMembers[spec.Name]
		for _, name := range registry.SortedNames(cur.members) {
			if _, ok := wm[name]; !ok {
				drops = append(drops, Change{Kind: ChangeDrop, Publication: spec.Name, From: cur.members[name]})
			}
		}
		for _, name := range registry.SortedNames(wm) {
			m := wm[name]
			old, ok := cur.members[name]
			switch {
			case !ok:
				adds = append(adds, Change{Kind: ChangeAdd, Publication: spec.Name, To: m})
			case old.RowFilter != m.RowFilter || !slices.Equal(old.Columns, m.Columns):
				alters = append(alters, Change{Kind: ChangeAlter, Publication: spec.Name, From: old, To: m})
			}
		}
	}
	// A table that leaves one subscription for another is copied again by the
	// new one and fails on a duplicate key (only the seed's layout has two
	// data subscriptions).
	for _, d := range drops {
		for _, a := range adds {
			if a.To.Table == d.From.Table && names.subscriptionOf(a.Publication) != names.subscriptionOf(d.Publication) {
				plan.Notes = append(plan.Notes, fmt.Sprintf("%s moves from %s to %s, which slaves receive through another subscription: "+
					"its initial copy there fails on a duplicate key unless the slave's rows are deleted first (see `pgoutpost print-delete-sql`)",
					a.To.Table, d.Publication, a.Publication))
			}
		}
	}
	plan.Changes = append(plan.Changes, drops...)
	plan.Changes = append(plan.Changes, alters...)
	plan.Changes = append(plan.Changes, adds...)
	return plan, nil
}

// checkReplicaIdentity refuses tables that a publication of updates would
// break: PostgreSQL rejects every UPDATE and DELETE of a published table that
// has no replica identity.
func checkReplicaIdentity(ctx context.Context, q querier, tables []*registry.Table) error {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.Name.Sanitize()
	}
	rows, err := q.Query(ctx, `
		SELECT n.nspname, c.relname
		FROM unnest($1::text[]) AS t(name)
		JOIN pg_class c ON c.oid = to_regclass(t.name)
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relreplident = 'n'
		   OR (c.relreplident = 'd' AND NOT EXISTS (
		        SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
		ORDER BY 1, 2`, names)
	if err != nil {
		return fmt.Errorf("check replica identities: %w", err)
	}
	bad, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var n registry.TableName
		err := r.Scan(&n.Schema, &n.Name)
		return n.String(), err
	})
	if err != nil {
		return fmt.Errorf("check replica identities: %w", err)
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s (publishing it would make its UPDATEs and DELETEs fail on the master; add a primary key or ALTER TABLE ... REPLICA IDENTITY FULL)",
			ErrNoReplicaIdentity, strings.Join(bad, ", "))
	}
	return nil
}

// scratchPublication is created and rolled back to let PostgreSQL check and
// deparse the configured row filters and column lists.
const scratchPublication = "pgoutpost_plan_scratch"

// normalise returns the wanted members with row filters and column lists as
// the catalog would store them. A filter or column list PostgreSQL rejects is
// an error naming the table.
func normalise(ctx context.Context, db DB, want map[string][]*registry.Table) (map[string]map[registry.TableName]Member, error) {
	out := map[string]map[registry.TableName]Member{}
	var special []*registry.Table
	for pub, tables := range want {
		out[pub] = map[registry.TableName]Member{}
		for _, t := range tables {
			out[pub][t.Name] = Member{Table: t.Name}
			if t.RowFilter != "" || t.ColumnList != nil {
				special = append(special, t)
			}
		}
	}
	if len(special) == 0 {
		return out, nil
	}
	var errs []error
	for _, t := range special {
		if t.RowFilter == "" {
			continue
		}
		if err := registry.CheckFilter(t.RowFilter); err != nil {
			errs = append(errs, fmt.Errorf("row filter of %s: %w", t.Name, err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("check row filters: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // always rolled back: nothing may change
	// A name of its own per run: one left by an older version, which could
	// be made to commit, does not block the check.
	scratch := fmt.Sprintf("%s_%d_%d", scratchPublication, os.Getpid(), time.Now().UnixNano()%1e9)
	if err := execOne(ctx, tx, "CREATE PUBLICATION "+ident(scratch)); err != nil {
		return nil, fmt.Errorf("check row filters: %w", err)
	}
	added := 0
	for _, t := range special {
		if err := execOne(ctx, tx, "SAVEPOINT member"); err != nil {
			return nil, fmt.Errorf("check row filters: %w", err)
		}
		err := execOne(ctx, tx, "ALTER PUBLICATION "+ident(scratch)+" ADD "+memberSQL(t.Name, t.ColumnList, t.RowFilter))
		if err != nil {
			err = fmt.Errorf("row filter or column list of %s: %w", t.Name, err)
		} else if err = scratchHolds(ctx, tx, scratch, added+1); err != nil {
			err = fmt.Errorf("row filter of %s is not one SQL expression: %w", t.Name, err)
		} else if err = checkUpdatable(ctx, tx, t.Name); err != nil {
			err = fmt.Errorf("row filter or column list of %s: publishing it would make PostgreSQL refuse every UPDATE and DELETE of the table on the master: %w", t.Name, err)
		}
		if err != nil {
			errs = append(errs, err)
			if err := execOne(ctx, tx, "ROLLBACK TO SAVEPOINT member"); err != nil {
				return nil, fmt.Errorf("check row filters: %w", err)
			}
			continue
		}
		added++
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// What is published from now on is PostgreSQL's own deparsed form of
	// each filter, never the configuration's text.
	got, err := readPublications(ctx, tx, []string{scratch})
	if err != nil {
		return nil, err
	}
	for pub, tables := range want {
		for _, t := range tables {
			if m, ok := got[scratch].members[t.Name]; ok {
				out[pub][t.Name] = m
			}
		}
	}
	return out, nil
}

// execOne runs one statement over the extended protocol, which refuses a
// string of several statements: text from the configuration (a row filter)
// can never add a statement of its own. (pgx sends a statement without
// arguments over the simple protocol, which runs them all.)
func execOne(ctx context.Context, tx pgx.Tx, sql string) error {
	return tx.Conn().PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read().Err
}

// scratchHolds checks that the scratch publication holds exactly n tables
// and no schema: a filter that closed pgoutpost's parenthesis could have
// added others in the same statement.
func scratchHolds(ctx context.Context, tx pgx.Tx, scratch string, n int) error {
	var tables, schemas int
	err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_catalog.pg_publication_rel r JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid WHERE p.pubname = $1),
		(SELECT count(*) FROM pg_catalog.pg_publication_namespace s JOIN pg_catalog.pg_publication p ON p.oid = s.pnpubid WHERE p.pubname = $1)`, scratch).Scan(&tables, &schemas)
	if err != nil {
		return err
	}
	if tables != n || schemas != 0 {
		return fmt.Errorf("adding it put %d tables and %d schemas in the publication, want %d and none", tables, schemas, n)
	}
	return nil
}

// checkUpdatable asks PostgreSQL whether the table, now in the scratch
// publication (which publishes everything), can still be updated: PostgreSQL
// checks at executor start, even for no row, that a row filter uses only
// replica identity columns and that a column list holds them all. The
// statement matches no row, and the transaction is rolled back.
func checkUpdatable(ctx context.Context, tx pgx.Tx, t registry.TableName) error {
	var col string
	err := tx.QueryRow(ctx, `SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1)
		AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum LIMIT 1`, t.Sanitize()).Scan(&col)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, "UPDATE "+t.Sanitize()+" SET "+ident(col)+" = "+ident(col)+" WHERE false")
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Detail != "" {
		return fmt.Errorf("%w: %s", err, pe.Detail)
	}
	return err
}

// memberSQL is "TABLE t (cols) WHERE (filter)" for ALTER PUBLICATION ... ADD.
// The row filter is SQL by definition (an expression, not a value), so it is
// the one piece of text inserted as written: from the configuration only in
// normalise's rolled-back check, after registry.CheckFilter and over the
// extended protocol; what is published is PostgreSQL's deparsed form.
func memberSQL(t registry.TableName, cols []string, filter string) string {
	var b strings.Builder
	b.WriteString("TABLE " + t.Sanitize())
	if cols != nil {
		q := make([]string, len(cols))
		for i, c := range cols {
			q[i] = ident(c)
		}
		b.WriteString(" (" + strings.Join(q, ", ") + ")")
	}
	if filter != "" {
		b.WriteString(" WHERE (" + filter + ")")
	}
	return b.String()
}

type pubState struct {
	publish   string
	allTables bool
	members   map[registry.TableName]Member
}

// readPublications reads the named publications and their tables.
func readPublications(ctx context.Context, q querier, names []string) (map[string]*pubState, error) {
	out := map[string]*pubState{}
	rows, err := q.Query(ctx, `
		SELECT pubname, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate
		FROM pg_publication WHERE pubname = ANY($1)`, names)
	if err != nil {
		return nil, fmt.Errorf("read publications: %w", err)
	}
	for rows.Next() {
		var name string
		var all, ins, upd, del, trunc bool
		if err := rows.Scan(&name, &all, &ins, &upd, &del, &trunc); err != nil {
			return nil, fmt.Errorf("read publications: %w", err)
		}
		var ops []string
		for _, o := range []struct {
			on   bool
			name string
		}{{ins, "insert"}, {upd, "update"}, {del, "delete"}, {trunc, "truncate"}} {
			if o.on {
				ops = append(ops, o.name)
			}
		}
		out[name] = &pubState{publish: strings.Join(ops, ", "), allTables: all, members: map[registry.TableName]Member{}}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read publications: %w", err)
	}
	rows, err = q.Query(ctx, `
		SELECT p.pubname, n.nspname, c.relname,
		       coalesce(pg_get_expr(r.prqual, r.prrelid), ''),
		       (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
		         WHERE a.attrelid = r.prrelid AND a.attnum = ANY(r.prattrs::int2[]))
		FROM pg_publication_rel r
		JOIN pg_publication p ON p.oid = r.prpubid
		JOIN pg_class c ON c.oid = r.prrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE p.pubname = ANY($1)`, names)
	if err != nil {
		return nil, fmt.Errorf("read publication tables: %w", err)
	}
	for rows.Next() {
		var pub string
		var m Member
		if err := rows.Scan(&pub, &m.Table.Schema, &m.Table.Name, &m.RowFilter, &m.Columns); err != nil {
			return nil, fmt.Errorf("read publication tables: %w", err)
		}
		out[pub].members[m.Table] = m
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read publication tables: %w", err)
	}
	return out, nil
}

// Apply makes the changes of the plan in one transaction.
func (p *PublicationPlan) Apply(ctx context.Context, db DB) error {
	if p.Empty() {
		return nil
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("apply publication changes: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	for _, c := range p.Changes {
		var stmts []string
		pub := "PUBLICATION " + ident(c.Publication)
		switch c.Kind {
		case ChangeCreate:
			stmts = []string{"CREATE " + pub + " WITH (publish = " + publishLiteral(c.Publish) + ")"}
		case ChangePublish:
			stmts = []string{"ALTER " + pub + " SET (publish = " + publishLiteral(c.Publish) + ")"}
		case ChangeDrop:
			stmts = []string{"ALTER " + pub + " DROP TABLE " + c.From.Table.Sanitize()}
		case ChangeAlter:
			stmts = []string{
				"ALTER " + pub + " DROP TABLE " + c.From.Table.Sanitize(),
				"ALTER " + pub + " ADD " + memberSQL(c.To.Table, c.To.Columns, c.To.RowFilter),
			}
		case ChangeAdd:
			stmts = []string{"ALTER " + pub + " ADD " + memberSQL(c.To.Table, c.To.Columns, c.To.RowFilter)}
		}
		for _, s := range stmts {
			if err := execOne(ctx, tx, s); err != nil {
				return fmt.Errorf("apply %q: %w", c.String(), err)
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("apply publication changes: %w", err)
	}
	return nil
}

// publishLiteral returns the publish option as an SQL literal. Only the three
// constants of this package reach it, never configuration text.
func publishLiteral(p string) string {
	switch p {
	case PublishAll, PublishUpsert, PublishInsert:
		return "'" + p + "'"
	}
	panic("replication: unknown publish option " + p)
}

// CreatePublications creates the publications that do not exist yet, empty,
// and returns their names. Existing ones are left as they are (`publication
// update` fixes their options and tables).
func CreatePublications(ctx context.Context, db DB, names Names) ([]string, error) {
	have, err := readPublications(ctx, db, names.PublicationNames())
	if err != nil {
		return nil, err
	}
	var created []string
	for _, p := range names.Publications() {
		if _, ok := have[p.Name]; ok {
			continue
		}
		if _, err := db.Exec(ctx, "CREATE PUBLICATION "+ident(p.Name)+" WITH (publish = "+publishLiteral(p.Publish)+")"); err != nil {
			return created, fmt.Errorf("create publication %s: %w", p.Name, err)
		}
		created = append(created, p.Name)
	}
	return created, nil
}

// SynchronousStandbyNames is the synchronous_standby_names value that makes
// each master commit wait for every one of the subscriptions (their apply
// workers connect with the subscription name as application_name).
func SynchronousStandbyNames(subscriptions []string) string {
	q := make([]string, len(subscriptions))
	for i, s := range subscriptions {
		q[i] = ident(s)
	}
	return fmt.Sprintf("ANY %d (%s)", len(q), strings.Join(q, ", "))
}

// SetSynchronous sets the master's synchronous_standby_names to value (ALTER
// SYSTEM, then a configuration reload). It returns the previous value.
func SetSynchronous(ctx context.Context, db DB, value string) (string, error) {
	var old, stmt string
	if err := db.QueryRow(ctx, "SELECT current_setting('synchronous_standby_names')").Scan(&old); err != nil {
		return "", fmt.Errorf("read synchronous_standby_names: %w", err)
	}
	// ALTER SYSTEM takes no parameters: let the server quote the value.
	if err := db.QueryRow(ctx, "SELECT format('ALTER SYSTEM SET synchronous_standby_names = %L', $1::text)", value).Scan(&stmt); err != nil {
		return old, fmt.Errorf("set synchronous_standby_names: %w", err)
	}
	if _, err := db.Exec(ctx, stmt); err != nil {
		return old, fmt.Errorf("set synchronous_standby_names: %w", err)
	}
	if _, err := db.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return old, fmt.Errorf("reload configuration: %w", err)
	}
	return old, nil
}
