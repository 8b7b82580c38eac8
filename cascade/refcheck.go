package cascade

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutpost/pgoutpost/registry"
)

// Batch reference checks (the BatchReferenceChecks option).
//
// A foreign key constraint of PostgreSQL checks every row a statement
// deletes, one query per deleted row and constraint at the statement's end or
// at COMMIT: a NO ACTION constraint (Django's) even runs two, a look for
// another row with the same key and then one for referencing rows. In
// BenchmarkApplyDeleteEntries those checks take close to half the time. With
// the option, DeleteAll runs its statements under session_replication_role =
// replica, where those checks (and every other trigger that is not ENABLE
// ALWAYS) do not fire, and checks each constraint once for the whole
// deletion instead:
//
//   - every constraint that references a table the deletion deleted rows
//     from, whatever schema its referencing table is in and whether or not
//     the registry knows it: no referencing row may hold a deleted row's
//     referenced values (the deleted statements return them);
//   - every constraint on a table whose rows an update rule (SET_NULL,
//     SET_DEFAULT, SET) changed, over the changed columns: the updated rows'
//     new values must reference an existing row (or be NULL, as MATCH
//     SIMPLE allows; under MATCH FULL all or none).
//
// When both hold, PostgreSQL's own checks would have found nothing either:
// no row is left that a NO ACTION or RESTRICT constraint would refuse, or
// that a constraint's own ON DELETE action (CASCADE, SET NULL, SET DEFAULT
// in the database, e.g. on a table the registry does not read) would have
// changed. When one fails, the deletion is rolled back to its savepoint and
// run again with PostgreSQL's own checks (errRecheck), which raise the
// violation or apply the action exactly as without the option. So the
// option changes only which triggers fire, never the rows left.
//
// The statements are built for the constraints the previous deletion's
// checks read (the Engine keeps them; the first deletion reads them
// first), and the checks read them again after the statements: a set that
// differs — a constraint added or dropped since, even during the deletion
// (its ALTER TABLE waits for the deletion's locks only once the deletion has
// taken them, and from then until COMMIT cannot change what the deletion
// touched) — sends the deletion to PostgreSQL's checks. Which tables have
// inheritance children or row-level security is read then as well.
//
// A deletion that spills (DefaultSpillRows) runs with PostgreSQL's checks,
// and so does one whose checks would read a table whose rows row-level
// security filters for the deleting role: PostgreSQL's checks run as the
// table's owner and see every row.

// constraint is one foreign key constraint as the catalog has it. to is the
// root of the referenced table's partition tree, so that a constraint on one
// partition counts for deletes through the partitioned table.
type constraint struct {
	name      string
	from      registry.TableName
	fromCols  []string
	to        registry.TableName
	toCols    []string
	matchFull bool
}

// refChecks is what a batch-checked deletion has to check.
type refChecks struct {
	sig    string                               // the constraints as read before
	byTo   map[registry.TableName][]*constraint // by referenced table
	byFrom map[registry.TableName][]*constraint // by referencing table
	// retCols are, per table, the referenced columns of the constraints
	// that reference it: what its DELETEs return.
	retCols map[registry.TableName][]string
	// deleted are the retCols values of the deleted rows, per table.
	deleted map[registry.TableName][][]string
	// updated are the rows an update rule changed: table, columns, keys.
	updated []updatedRows
	held    int // values held in deleted, against the engine's spillRows
}

// catalog is what the batch checks read from the system catalogs: every
// foreign key constraint and the tables that need PostgreSQL's checks.
type catalog struct {
	cons []*constraint
	sig  string // the constraints, rendered: equal strings, equal sets
	// inherited are the tables with children by table inheritance (not
	// partitions): a DELETE on one also deletes its children's rows, under
	// the parent's name, so the checks could not tell which constraints
	// they concern. A deletion from one goes to PostgreSQL's checks.
	inherited map[registry.TableName]bool
	// hidden are the tables whose rows row-level security filters for the
	// deleting role. PostgreSQL's checks see every row (they run as the
	// table's owner, bypassing its policies), a batch check only those the
	// role may see: a referencing row hidden from it would be left behind.
	// A check that would read one goes to PostgreSQL's checks.
	hidden map[registry.TableName]bool
}

type updatedRows struct {
	table registry.TableName
	cols  []string
	keys  [][]string
}

// foreignKeys is the FROM and WHERE of the catalog queries over foreign key
// constraints: c the constraint (partitions' inherited copies left out), fc
// and fn the referencing table and its schema, tc and tn the referenced
// table's partition root and its schema.
const foreignKeys = `FROM pg_catalog.pg_constraint c
JOIN pg_catalog.pg_class fc ON fc.oid = c.conrelid
JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
JOIN pg_catalog.pg_class tc ON tc.oid = coalesce(pg_catalog.pg_partition_root(c.confrelid), c.confrelid)
JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
WHERE c.contype = 'f' AND c.conparentid = 0`

// readCatalog reads every foreign key constraint of the database (its
// partitions' inherited copies left out) and the tables with inheritance
// children or row-level security active for the role.
func readCatalog(ctx context.Context, tx pgx.Tx) (*catalog, error) {
	rows, err := tx.Query(ctx, `SELECT c.conname,
       fn.nspname, fc.relname,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(n, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
       tn.nspname, tc.relname,
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(n, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i),
       c.confmatchtype = 'f'
`+foreignKeys+`
ORDER BY c.oid`)
	if err != nil {
		return nil, fmt.Errorf("read the foreign key constraints: %w", err)
	}
	cat := &catalog{inherited: map[registry.TableName]bool{}, hidden: map[registry.TableName]bool{}}
	var sig strings.Builder
	for rows.Next() {
		var k constraint
		if err := rows.Scan(&k.name, &k.from.Schema, &k.from.Name, &k.fromCols, &k.to.Schema, &k.to.Name, &k.toCols, &k.matchFull); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read the foreign key constraints: %w", err)
		}
		fmt.Fprintf(&sig, "%s|%s|%v|%s|%v|%v\n", k.name, k.from, k.fromCols, k.to, k.toCols, k.matchFull)
		cat.cons = append(cat.cons, &k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the foreign key constraints: %w", err)
	}
	cat.sig = sig.String()
	rows, err = tx.Query(ctx, `SELECT n.nspname, c.relname, c.relkind = 'r' AND c.relhassubclass,
       c.relrowsecurity AND pg_catalog.row_security_active(c.oid)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relhassubclass OR c.relkind IN ('r', 'p') AND c.relrowsecurity`)
	if err != nil {
		return nil, fmt.Errorf("read the tables with inheritance children or row-level security: %w", err)
	}
	for rows.Next() {
		var t registry.TableName
		var inherited, hidden bool
		if err := rows.Scan(&t.Schema, &t.Name, &inherited, &hidden); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read the tables with inheritance children or row-level security: %w", err)
		}
		if inherited {
			cat.inherited[t] = true
		}
		if hidden {
			cat.hidden[t] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the tables with inheritance children or row-level security: %w", err)
	}
	return cat, nil
}

// newRefChecks prepares the checks of a deletion for the constraints of
// cat, which the deletion's verify compares with the catalog as it is then.
func newRefChecks(cat *catalog) *refChecks {
	r := &refChecks{sig: cat.sig, byTo: map[registry.TableName][]*constraint{}, byFrom: map[registry.TableName][]*constraint{},
		retCols: map[registry.TableName][]string{}, deleted: map[registry.TableName][][]string{}}
	for _, k := range cat.cons {
		r.byTo[k.to] = append(r.byTo[k.to], k)
		r.byFrom[k.from] = append(r.byFrom[k.from], k)
		for _, col := range k.toCols {
			if !slices.Contains(r.retCols[k.to], col) {
				r.retCols[k.to] = append(r.retCols[k.to], col)
			}
		}
	}
	return r
}

// Unreadable is a foreign key constraint into a table that deletes can
// remove, from a table the role may not read.
type Unreadable struct {
	Constraint string
	From, To   registry.TableName
}

// UnreadableReferences lists the foreign key constraints into the tables
// that reg's deletes can remove (registry.DeleteReach) whose referencing
// table the connected role may not read. With BatchReferenceChecks, a
// deletion from such a table fails its batch check and runs again with
// PostgreSQL's checks: it is done twice.
func UnreadableReferences(ctx context.Context, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, reg *registry.Registry) ([]Unreadable, error) {
	rows, err := db.Query(ctx, `SELECT c.conname, fn.nspname, fc.relname, tn.nspname, tc.relname
`+foreignKeys+`
  AND NOT (pg_catalog.has_schema_privilege(fn.oid, 'USAGE') AND pg_catalog.has_table_privilege(fc.oid, 'SELECT'))
ORDER BY fn.nspname, fc.relname, c.conname`)
	if err != nil {
		return nil, fmt.Errorf("read the foreign keys from tables the role may not read: %w", err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Unreadable, error) {
		var u Unreadable
		err := r.Scan(&u.Constraint, &u.From.Schema, &u.From.Name, &u.To.Schema, &u.To.Name)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the foreign keys from tables the role may not read: %w", err)
	}
	reach := reg.DeleteReach()
	var out []Unreadable
	for _, u := range all {
		if _, ok := reach[u.To]; ok {
			out = append(out, u)
		}
	}
	return out, nil
}

// replicaRole switches the transaction to session_replication_role =
// replica until it ends (or its savepoint is rolled back) and returns the
// setting it had.
func replicaRole(ctx context.Context, tx pgx.Tx) (string, error) {
	var prev string
	err := tx.QueryRow(ctx, `SELECT pg_catalog.current_setting('session_replication_role'),
		pg_catalog.set_config('session_replication_role', 'replica', true)`).Scan(&prev, new(string))
	if err != nil {
		return "", fmt.Errorf("batch reference checks: set session_replication_role = replica (the role needs superuser or, on PostgreSQL 15 and later, GRANT SET ON PARAMETER session_replication_role): %w", err)
	}
	return prev, nil
}

// CheckReplicaRole reports whether db's role may run BatchReferenceChecks:
// set session_replication_role to replica. It changes nothing.
func CheckReplicaRole(ctx context.Context, db interface {
	Begin(context.Context) (pgx.Tx, error)
}) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	_, err = replicaRole(ctx, tx)
	return err
}

func restoreRole(ctx context.Context, tx pgx.Tx, prev string) error {
	if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config('session_replication_role', $1, true)", prev); err != nil {
		return fmt.Errorf("batch reference checks: restore session_replication_role: %w", err)
	}
	return nil
}

// verify checks what the deletion did against the constraints (see the
// comment at the top of this file).
func (r *refChecks) verify(ctx context.Context, e *Engine, tx pgx.Tx, res *Result) error {
	cat, err := readCatalog(ctx, tx)
	if err != nil {
		return err
	}
	e.catalog.Store(cat)
	if cat.sig != r.sig {
		return fmt.Errorf("%w: the foreign key constraints changed during the deletion", errRecheck)
	}
	for t, n := range res.Deleted {
		if n > 0 && cat.inherited[t] {
			return fmt.Errorf("%w: %s has children by table inheritance", errRecheck, t)
		}
	}
	for _, t := range registry.SortedNames(r.deleted) {
		vals := r.deleted[t]
		cols := r.retCols[t]
		for _, k := range r.byTo[t] {
			if cat.hidden[k.from] {
				return fmt.Errorf("%w: row-level security hides rows of %s from the check of %s", errRecheck, k.from, k.name)
			}
			idx := make([]int, len(k.toCols))
			for i, c := range k.toCols {
				idx[i] = slices.Index(cols, c)
			}
			seen := make(map[string]bool, len(vals))
			tuples := make([][]string, 0, len(vals))
			for _, v := range vals {
				tuple := make([]string, len(idx))
				null := false
				for i, j := range idx {
					tuple[i] = v[j]
					null = null || v[j] == nullText
				}
				id := Key(tuple).ID()
				if null || seen[id] {
					continue
				}
				seen[id] = true
				tuples = append(tuples, tuple)
			}
			for _, chunk := range chunks(tuples, e.maxArray) {
				cond, arg := match(k.fromCols, k.to, k.toCols, chunk, 1)
				var ref string
				err := tx.QueryRow(ctx, "SELECT ROW("+textList(k.fromCols)+")::text FROM "+k.from.Sanitize()+" WHERE "+cond+" LIMIT 1", arg).Scan(&ref)
				if err == pgx.ErrNoRows {
					continue
				}
				if err != nil {
					return checkFailed(k, err)
				}
				return fmt.Errorf("%w: %s on %s: a row still references (%s) = %s", errRecheck, k.name, k.from, strings.Join(k.fromCols, ", "), ref)
			}
		}
	}
	for _, u := range r.updated {
		t := e.plans[u.table].t
		for _, k := range r.byFrom[u.table] {
			if !slices.ContainsFunc(k.fromCols, func(c string) bool { return slices.Contains(u.cols, c) }) {
				continue
			}
			for _, t := range []registry.TableName{u.table, k.to} {
				if cat.hidden[t] {
					return fmt.Errorf("%w: row-level security hides rows of %s from the check of %s", errRecheck, t, k.name)
				}
			}
			var join, cols []string
			for i := range k.fromCols {
				join = append(join, "p."+ident(k.toCols[i])+" = c."+ident(k.fromCols[i]))
				cols = append(cols, "c."+ident(k.fromCols[i]))
			}
			list := strings.Join(cols, ", ")
			bad := "(pg_catalog.num_nulls(" + list + ") = 0 AND NOT EXISTS (SELECT FROM " + k.to.Sanitize() + " AS p WHERE " + strings.Join(join, " AND ") + "))"
			if k.matchFull {
				bad += " OR pg_catalog.num_nulls(" + list + ") NOT IN (0, " + fmt.Sprint(len(cols)) + ")"
			}
			for _, chunk := range chunks(u.keys, e.maxArray) {
				cond, arg := match(t.PrimaryKey, t.Name, t.PrimaryKey, chunk, 1)
				var ref string
				err := tx.QueryRow(ctx, "SELECT ROW("+list+")::text FROM "+u.table.Sanitize()+" AS c WHERE "+cond+" AND ("+bad+") LIMIT 1", arg).Scan(&ref)
				if err == pgx.ErrNoRows {
					continue
				}
				if err != nil {
					return checkFailed(k, err)
				}
				return fmt.Errorf("%w: %s on %s: an updated row references (%s) = %s, which %s lacks", errRecheck, k.name, k.from, strings.Join(k.fromCols, ", "), ref, k.to)
			}
		}
	}
	return nil
}

// checkFailed is the error of a check query of constraint k that failed
// with err. A role that may not read a table the check reads (one outside
// the registry's schemas, say) sends the deletion to PostgreSQL's checks,
// which run as the table's owner and need no privilege of the role's.
func checkFailed(k *constraint, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == pgerrcode.InsufficientPrivilege {
		return fmt.Errorf("%w: the role may not read the tables of the check of %s on %s: %s", errRecheck, k.name, k.from, pe.Message)
	}
	return fmt.Errorf("batch reference check of %s on %s: %w", k.name, k.from, err)
}

// errRecheck sends a deletion back to PostgreSQL's own checks.
var errRecheck = errors.New("batch reference check failed; running the deletion again with the database's own checks")

// nullText is how a NULL reads back in a row's text values.
const nullText = "\x00null"
