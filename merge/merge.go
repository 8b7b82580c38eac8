package merge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/internal/connstr"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/replication"
)

// Beginner is the slave: a connection or a pool.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Options say how Join merges.
type Options struct {
	// DryRun merges in a transaction that is rolled back and creates
	// nothing: the report says what a join would do (and a PROTECT that
	// would stop it).
	DryRun bool
	// Progress, when set, is called after each table is read into its
	// temporary copy and updated.
	Progress func(Progress)
}

// Progress is how far a merge is.
type Progress struct {
	Table TableCount // the table just read
	Read  int64      // rows read from the master so far
	// Estimated is the master's estimate of all the rows to read
	// (pg_class.reltuples: about, not exact).
	Estimated int64
	Elapsed   time.Duration
}

// TableCount is what a merge did to one synced table.
type TableCount struct {
	Table    registry.TableName
	Master   int64 // rows the master holds (within the table's row filter)
	Inserted int64 // rows the slave lacked
	Updated  int64 // rows that differed
	Deleted  int64 // rows the master lacks, deleted with their cascade
}

// Report is what a Join did.
type Report struct {
	Tables []TableCount
	// Cascade is the deletion's effect on every table, user tables
	// included: rows deleted and set by the on_delete rules.
	Cascade *cascade.Result
}

// Join merges the master's synced tables into the slave as of a new
// replication slot's snapshot, then calls subscribe, which must create the
// subscription on that slot without copying (create_slot = false,
// copy_data = false). slot is the slot's name, the subscription's. On any
// failure, and after a dry run, the slot is dropped again; the slave is left
// as it was unless the merge committed (then only subscribe failed, and the
// error says so).
func Join(ctx context.Context, slave Beginner, reg *registry.Registry, masterConnInfo, slot string,
	subscribe func(context.Context) error, opts Options) (rep *Report, err error) {
	// Parents first, so that inserts work under foreign keys that are not
	// deferred too.
	tables := replication.InsertOrder(reg)
	rcfg, err := pgconn.ParseConfig(masterConnInfo)
	if err != nil {
		return nil, fmt.Errorf("join: master conninfo: %s", connstr.Scrub(err.Error(), masterConnInfo))
	}
	rcfg.RuntimeParams["replication"] = "database"
	rconn, err := pgconn.ConnectConfig(ctx, rcfg)
	if err != nil {
		return nil, fmt.Errorf("join: connect to the master for replication: %s", connstr.Scrub(err.Error(), masterConnInfo))
	}
	closeRepl := func() { _ = rconn.Close(context.WithoutCancel(ctx)) }
	created, err := pglogrepl.CreateReplicationSlot(ctx, rconn, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		closeRepl()
		return nil, fmt.Errorf("join: create replication slot %s on the master: %w", slot, err)
	}
	keepSlot := false
	defer func() {
		closeRepl()
		if keepSlot {
			return
		}
		if derr := dropSlot(context.WithoutCancel(ctx), masterConnInfo, slot); derr != nil {
			err = errors.Join(err, fmt.Errorf("and dropping replication slot %s on the master failed, drop it there by hand: %w", slot, derr))
		}
	}()

	mconn, err := pgx.Connect(ctx, masterConnInfo)
	if err != nil {
		return nil, fmt.Errorf("join: connect to the master: %s", connstr.Scrub(err.Error(), masterConnInfo))
	}
	defer mconn.Close(context.WithoutCancel(ctx))
	mtx, err := mconn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	defer func() { _ = mtx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := mtx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(created.SnapshotName)); err != nil {
		return nil, fmt.Errorf("join: read the master in the slot's snapshot: %w", err)
	}

	rep, err = merge(ctx, slave, mconn.PgConn(), reg, tables, opts)
	if err != nil || opts.DryRun {
		return rep, err
	}
	// The snapshot has served; the slot must be free for the subscription.
	_ = mtx.Rollback(ctx)
	closeRepl()
	if err := subscribe(ctx); err != nil {
		return rep, fmt.Errorf("join: the slave's tables are merged, but creating the subscription failed (run the join again: it merges what changed since): %w", err)
	}
	keepSlot = true
	return rep, nil
}

// merge brings the slave's synced tables to what master reads, in one slave
// transaction.
func merge(ctx context.Context, slave Beginner, master *pgconn.PgConn, reg *registry.Registry, tables []*registry.Table, opts Options) (*Report, error) {
	tx, err := slave.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := registry.MarkCascade(ctx, tx); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if _, err := tx.Exec(ctx, "SET CONSTRAINTS ALL DEFERRED"); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	simple := pgx.QueryExecModeSimpleProtocol
	rep := &Report{}
	estimated, err := estimate(ctx, master, tables)
	if err != nil {
		return rep, err
	}
	start, read := time.Now(), int64(0)
	copies := make([]string, len(tables))
	for i, t := range tables {
		c := TableCount{Table: t.Name}
		copies[i] = fmt.Sprintf("pgoutpost_merge_%d", i)
		if c.Master, err = load(ctx, tx, master, t, copies[i]); err != nil {
			return rep, err
		}
		if c.Updated, err = update(ctx, tx, t, copies[i]); err != nil {
			return rep, err
		}
		rep.Tables = append(rep.Tables, c)
		read += c.Master
		if opts.Progress != nil {
			opts.Progress(Progress{Table: c, Read: read, Estimated: max(estimated, read), Elapsed: time.Since(start)})
		}
	}

	// Rows the master lacks go through the cascade engine, as one deletion.
	if _, err := tx.Exec(ctx, "CREATE TEMPORARY TABLE pgoutpost_merge_keys (table_name text, pk jsonb) ON COMMIT DROP", simple); err != nil {
		return rep, fmt.Errorf("join: %w", err)
	}
	for i, t := range tables {
		err := tx.QueryRow(ctx, `WITH k AS (INSERT INTO pgoutpost_merge_keys SELECT $1, `+keyObject(t, "s")+` FROM `+t.Name.Sanitize()+` AS s
WHERE NOT EXISTS (SELECT FROM `+copies[i]+` AS m WHERE `+sameKey(t, "s", "m")+`) RETURNING 1) SELECT count(*) FROM k`,
			simple, t.Name.String()).Scan(&rep.Tables[i].Deleted)
		if err != nil {
			return rep, fmt.Errorf("join: rows of %s the master lacks: %w", t.Name, err)
		}
	}
	eng := queue.NewEngine(reg)
	if rep.Cascade, err = eng.DeleteListed(ctx, tx, "pgoutpost_merge_keys"); err != nil {
		return rep, fmt.Errorf("join: delete the rows the master lacks: %w", err)
	}
	if err := queue.WriteDeleteEvents(ctx, tx, reg, rep.Cascade); err != nil {
		return rep, fmt.Errorf("join: %w", err)
	}

	for i, t := range tables {
		if rep.Tables[i].Inserted, err = insert(ctx, tx, t, copies[i]); err != nil {
			return rep, err
		}
	}
	if opts.DryRun {
		return rep, nil
	}
	if err := tx.Commit(ctx); err != nil {
		return rep, fmt.Errorf("join: commit the merge: %w", cascade.TranslateError(err))
	}
	return rep, nil
}

// estimate is the master's estimate of the rows of tables.
func estimate(ctx context.Context, master *pgconn.PgConn, tables []*registry.Table) (int64, error) {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = quoteLiteral(t.Name.Sanitize())
	}
	res := master.ExecParams(ctx, "SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint::text FROM pg_catalog.pg_class WHERE oid = ANY(ARRAY["+
		strings.Join(names, ", ")+"]::regclass[])", nil, nil, nil, nil).Read()
	if res.Err != nil {
		return 0, fmt.Errorf("join: estimate the master's rows: %w", res.Err)
	}
	if len(res.Rows) != 1 {
		return 0, nil
	}
	n, err := strconv.ParseInt(string(res.Rows[0][0]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("join: estimate the master's rows: %w", err)
	}
	return n, nil
}

// load copies the master's rows of t into a new temporary table named copy,
// streaming them from COPY TO to COPY FROM; it returns how many there were.
func load(ctx context.Context, tx pgx.Tx, master *pgconn.PgConn, t *registry.Table, copy string) (int64, error) {
	cols := columnList(t)
	simple := pgx.QueryExecModeSimpleProtocol
	if _, err := tx.Exec(ctx, "CREATE TEMPORARY TABLE "+copy+" ON COMMIT DROP AS SELECT "+cols+" FROM "+t.Name.Sanitize()+" WITH NO DATA", simple); err != nil {
		return 0, fmt.Errorf("join: copy of %s: %w", t.Name, err)
	}
	where := ""
	if t.RowFilter != "" {
		where = " WHERE (" + t.RowFilter + ")"
	}
	pr, pw := io.Pipe()
	read := make(chan error, 1)
	var n int64
	go func() {
		tag, err := master.CopyTo(ctx, pw, "COPY (SELECT "+cols+" FROM "+t.Name.Sanitize()+where+") TO STDOUT")
		n = tag.RowsAffected()
		pw.CloseWithError(err)
		read <- err
	}()
	_, werr := tx.Conn().PgConn().CopyFrom(ctx, pr, "COPY "+copy+" ("+cols+") FROM STDIN")
	pr.CloseWithError(errors.New("the slave stopped reading"))
	rerr := <-read
	if werr != nil { // the master's side then failed only because the slave stopped reading
		return 0, fmt.Errorf("join: copy %s into the slave: %w", t.Name, werr)
	}
	if rerr != nil {
		return 0, fmt.Errorf("join: read %s on the master: %w", t.Name, rerr)
	}
	if _, err := tx.Exec(ctx, "CREATE UNIQUE INDEX ON "+copy+" ("+keyList(t)+"); ANALYZE "+copy, simple); err != nil {
		return 0, fmt.Errorf("join: index the copy of %s: %w", t.Name, err)
	}
	return n, nil
}

// update sets the rows of t that differ from the master's copy, queueing an
// update event for each of a denormalize model.
func update(ctx context.Context, tx pgx.Tx, t *registry.Table, copy string) (int64, error) {
	var set []string
	for _, c := range columns(t) {
		if !isKey(t, c) {
			set = append(set, c)
		}
	}
	if len(set) == 0 {
		return 0, nil
	}
	quoted := quoteAll(set)
	sql := `UPDATE ` + t.Name.Sanitize() + ` AS s SET (` + strings.Join(quoted, ", ") + `) = ROW(` + prefixed("m", quoted) + `)
FROM ` + copy + ` AS m WHERE ` + sameKey(t, "s", "m") + ` AND ROW(` + prefixed("s", quoted) + `)::text IS DISTINCT FROM ROW(` + prefixed("m", quoted) + `)::text
RETURNING ` + prefixed("s", quoteAll(t.PrimaryKey))
	return changed(ctx, tx, t, sql, "update")
}

// insert adds the master's rows the slave lacks, queueing an insert event
// for each of a denormalize model.
func insert(ctx context.Context, tx pgx.Tx, t *registry.Table, copy string) (int64, error) {
	cols := columnList(t)
	sql := `INSERT INTO ` + t.Name.Sanitize() + ` AS s (` + cols + `) SELECT ` + cols + ` FROM ` + copy + ` AS m
WHERE NOT EXISTS (SELECT FROM ` + t.Name.Sanitize() + ` AS s WHERE ` + sameKey(t, "s", "m") + `)
RETURNING ` + prefixed("s", quoteAll(t.PrimaryKey))
	return changed(ctx, tx, t, sql, "insert")
}

// changed runs the data-modifying statement sql, which returns the changed
// rows' keys as s.<key columns>, and counts them; for a denormalize model it
// queues an op event per row in the slave's denormalize queue, which the
// sidecar publishes.
func changed(ctx context.Context, tx pgx.Tx, t *registry.Table, sql, op string) (int64, error) {
	outbox := ""
	if t.Kind == registry.KindDenormalize {
		outbox = `, o AS (INSERT INTO pgoutpost.denormalize_queue (table_name, pk, op, xid)
SELECT ` + quoteLiteral(t.Name.String()) + `, ` + keyObject(t, "c") + `, ` + quoteLiteral(op) + `, ` + queue.OutboxXid + ` FROM c)`
	}
	var n int64
	if err := tx.QueryRow(ctx, "WITH c AS ("+sql+")"+outbox+" SELECT count(*) FROM c", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil {
		return 0, fmt.Errorf("join: %s rows of %s: %w", op, t.Name, cascade.TranslateError(err))
	}
	return n, nil
}

// columns are the columns the subscription carries: the publication's
// column list, or every column.
func columns(t *registry.Table) []string {
	if len(t.ColumnList) > 0 {
		return t.ColumnList
	}
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = c.Name
	}
	return out
}

func columnList(t *registry.Table) string { return strings.Join(quoteAll(columns(t)), ", ") }

func keyList(t *registry.Table) string { return strings.Join(quoteAll(t.PrimaryKey), ", ") }

func isKey(t *registry.Table, c string) bool {
	for _, k := range t.PrimaryKey {
		if k == c {
			return true
		}
	}
	return false
}

// keyObject is the key of alias's row as the queue tables write it.
func keyObject(t *registry.Table, alias string) string {
	parts := make([]string, len(t.PrimaryKey))
	for i, c := range t.PrimaryKey {
		parts[i] = quoteLiteral(c) + ", " + alias + "." + pgx.Identifier{c}.Sanitize()
	}
	return "pg_catalog.jsonb_build_object(" + strings.Join(parts, ", ") + ")"
}

// sameKey matches the rows of aliases a and b by key.
func sameKey(t *registry.Table, a, b string) string {
	conds := make([]string, len(t.PrimaryKey))
	for i, c := range t.PrimaryKey {
		col := pgx.Identifier{c}.Sanitize()
		conds[i] = a + "." + col + " = " + b + "." + col
	}
	return strings.Join(conds, " AND ")
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = pgx.Identifier{n}.Sanitize()
	}
	return out
}

func prefixed(alias string, quoted []string) string {
	out := make([]string, len(quoted))
	for i, q := range quoted {
		out[i] = alias + "." + q
	}
	return strings.Join(out, ", ")
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// dropSlot drops the slot on the master, once the walsender of the closed
// replication connection has let go of it.
func dropSlot(ctx context.Context, masterConnInfo, slot string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, masterConnInfo)
	if err != nil {
		return errors.New(connstr.Scrub(err.Error(), masterConnInfo))
	}
	defer conn.Close(ctx)
	return replication.DropSlot(ctx, conn, slot)
}
