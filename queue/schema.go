package queue

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/registry"
)

// Schema is the schema that holds pgoutpost's tables and functions
// (registry.QueueSchema).
const Schema = registry.QueueSchema

// DeadLetter is the slave's dead-letter table (registry.DeadLetter).
var DeadLetter = registry.DeadLetter

// Queue operations (the op column).
const (
	OpDelete = "delete"
	OpInsert = "insert"
	OpUpdate = "update"
)

// Session settings read by the triggers.
const (
	// SkipQueueSetting = on makes the master triggers write nothing (see the
	// package doc for the risk). The slave write guard's setting is
	// registry.CascadeSetting.
	SkipQueueSetting = "pgoutpost.skip_queue"
)

// DefaultLocalPublication is the default name of the slave's publication of
// its queue tables (sidecar.publication).
const DefaultLocalPublication = "pgoutpost_local_queue"

// Trigger names. Install and the guard recognise their own triggers by these
// prefixes, so nothing else may use them.
const (
	queueTriggerPrefix = "pgoutpost_queue_"
	guardTriggerName   = "pgoutpost_guard"

	// Transition table names of the queue triggers.
	oldRows = "pgoutpost_old"
	newRows = "pgoutpost_new"
)

// UUIDv7Floor returns the smallest UUIDv7 of the millisecond of t: every id
// made at t or later sorts after it, every id made before sorts below it.
func UUIDv7Floor(t time.Time) [16]byte {
	var u [16]byte
	binary.BigEndian.PutUint64(u[:8], uint64(t.UnixMilli())<<16)
	return u
}

// UUIDv7Time returns the time encoded in a UUIDv7 id, to the microsecond.
func UUIDv7Time(id [16]byte) time.Time {
	v := binary.BigEndian.Uint64(id[:8])
	ms := int64(v >> 16)
	frac := int64(v & 0x0fff) // 1/4096 ms
	return time.UnixMilli(ms).Add(time.Duration(frac * int64(time.Millisecond) / 4096))
}

// function is a function of the pgoutpost schema. Install compares body,
// security definer and settings with pg_proc and replaces the function only
// when one differs, so that running it twice leaves the catalog untouched.
type function struct {
	name    string // in Schema
	args    string // the argument list, "" for none
	header  string // everything between "CREATE OR REPLACE FUNCTION pgoutpost.name()" and AS
	body    string
	definer bool
	config  []string // proconfig, as the SET clauses of header store them
}

// display is the function's name and arguments for plan summaries.
func (f function) display() string { return Schema + "." + f.name + "(" + f.args + ")" }

func (f function) sql() string {
	return "CREATE OR REPLACE FUNCTION " + pgx.Identifier{Schema, f.name}.Sanitize() + "(" + f.args + ") " + f.header + " AS $fn$" + f.body + "$fn$"
}

// uuidV7 makes a UUIDv7 (RFC 9562): on PostgreSQL 18 and later the server's
// own uuidv7(), before that 48 bits of Unix milliseconds, the version, 12 bits
// of sub-millisecond fraction (method 3, as uuidv7() does) read once from
// clock_timestamp() (the microsecond epoch times 4096/1000 is the 60-bit
// number ms‖fraction, with the version nibble spliced in between by
// overlay(… FOR 0)), the variant and 62 bits from random() (a double: its
// 52 significant bits are random, the lowest 10 are zero).
//
// random() and not gen_random_uuid(): each gen_random_uuid() asks the
// operating system's strong generator, which measured 3.8 µs a call on
// PostgreSQL 15 against under 1 µs for the whole id with random(), a
// per-session generator that PostgreSQL seeds from the strong one when the
// session first uses it. Two ids collide only if they share the same 60 time
// bits (the same 1/4096 ms) and the same 52 random bits. On 18, uuidv7() costs
// 2.6 µs against 1.0 µs, but it also keeps the ids of one session increasing
// within a microsecond; see the package doc.
//
// Every name is schema-qualified, operators too: the body is inlined into the
// SECURITY DEFINER trigger functions, which run with the caller's search_path.
func uuidV7(serverVersion int) function {
	f := function{
		name:   "uuid_v7",
		header: "RETURNS pg_catalog.uuid LANGUAGE sql VOLATILE PARALLEL SAFE",
		body: `
SELECT pg_catalog.encode(
  pg_catalog.int8send(pg_catalog.overlay(pg_catalog.substring(
      pg_catalog.floor(EXTRACT(epoch FROM pg_catalog.clock_timestamp()) OPERATOR(pg_catalog.*) 4096000)::bigint::bit(64), 5),
    B'0111', 49, 0)::bigint)
  OPERATOR(pg_catalog.||) pg_catalog.int8send(
    (pg_catalog.random() OPERATOR(pg_catalog.*) 4611686018427387904::double precision)::bigint
      OPERATOR(pg_catalog.|) (-9223372036854775807 OPERATOR(pg_catalog.-) 1)),
  'hex')::pg_catalog.uuid
`,
	}
	if serverVersion >= 180000 {
		f.body = "\nSELECT pg_catalog.uuidv7()\n"
	}
	return f
}

// obsoleteFunctions are functions of Schema that earlier versions installed
// and that nothing calls any more; install drops them after the triggers.
var obsoleteFunctions = []function{{name: "uuid_v7_next", args: "bytea, bigint, bigint"}}

// skipQueue is the PL/pgSQL condition that pgoutpost.skip_queue is on.
// Its operator is qualified (see tableFunctionTemplate).
const skipQueue = `pg_catalog.lower(pg_catalog.current_setting('pgoutpost.skip_queue', true)) OPERATOR(pg_catalog.=) ANY ('{on,true,yes,1}'::pg_catalog.text[])`

// refuseHeader is the header of queue_refuse_truncate: SECURITY DEFINER
// (owned by whoever ran install) so that the application's role needs no
// privilege on the pgoutpost schema, with a fixed search_path.
const refuseHeader = "RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp"

var refuseConfig = []string{"search_path=pg_catalog, pg_temp"}

// tableHeader is the header of the tables' queue trigger functions. They are
// SECURITY DEFINER too, but they run on every write of the application and
// have no SET clause: any SET clause costs a function call a save and a
// restore of the settings, measured at 7 µs a statement on PostgreSQL 15 (it
// walks every setting), more than the queue row's insert. So the body names
// every function, operator and type with its schema and works under whatever
// search_path the caller has (TestMasterTriggers, "a caller's search_path
// changes nothing"). Earlier versions also set jit = off; a 400,000-row
// UPDATE, whose INSERT … SELECT crosses jit_above_cost, measured no
// difference with JIT on or off.
const tableHeader = "RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"

// tableFunctionPrefix starts the name of each table's queue trigger function,
// pgoutpost."queue:schema.table".
const tableFunctionPrefix = "queue:"

// tableFunctionTemplate is the body of a table's queue trigger function, a
// format() template that the server fills (so names are quoted by %I and
// values by %L): 1 the jsonb_build_object arguments over the old row o, 2 the
// same over the new row n, 3 the join of o and n on the key, 4 the first key
// column (unused), 5 argument 1 again as a literal. Only the key columns are
// baked in: the table is named at run time, so a renamed table keeps logging
// under its new name (the key's column names must still be right: run queue
// install after every migration, as the deploy order says).
//
// Each table gets its own function with static SQL rather than one generic
// function with EXECUTE: PL/pgSQL caches the plans of static statements, and
// EXECUTE's parse and plan on every statement tripled the cost of a one-row
// DELETE. One function serves all four triggers of its table (PL/pgSQL
// compiles a function separately for each trigger, so each trigger's
// statements are planned against its own transition tables).
//
// Each queue row takes its id from pgoutpost.uuid_v7(), a row at a time.
//
// The UPDATE branch logs the new rows that have no old row with the same key
// and the same image: an UPDATE that changes nothing logs nothing, and a row
// whose key itself was updated is logged under its new key. It compares whole
// rows with the record image operator *= (as REFRESH MATERIALIZED VIEW
// CONCURRENTLY does): unlike IS DISTINCT FROM it needs no equality operator
// for every column type (json, point, xml have none), and it is cheaper.
// Written as NOT EXISTS, the planner estimates at most one output row per new
// row and picks an anti join; a LEFT JOIN … WHERE o IS NULL OR o *<> n was
// estimated at millions of rows for lack of statistics on transition tables
// and got a needlessly expensive plan. The key's = is pg_catalog's, as it was
// when the functions set search_path to pg_catalog.
//
// TRUNCATE fires it BEFORE, after TRUNCATE has taken its ACCESS EXCLUSIVE
// lock, so it logs exactly the rows that are about to go.
const tableFunctionTemplate = `
#variable_conflict use_variable
DECLARE
  pgoutpost_table pg_catalog.text := TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME;
BEGIN
  IF ` + skipQueue + ` THEN
    RETURN NULL;
  END IF;
  IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
    INSERT INTO pgoutpost.delete_queue (id, table_name, pk, op)
    SELECT pgoutpost.uuid_v7(), pgoutpost_table, pg_catalog.jsonb_build_object(%1$s), 'delete'
    FROM pgoutpost_old AS o;
  ELSIF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
    INSERT INTO pgoutpost.denormalize_queue (id, table_name, pk, op)
    SELECT pgoutpost.uuid_v7(), pgoutpost_table, pg_catalog.jsonb_build_object(%2$s), 'insert'
    FROM pgoutpost_new AS n;
  ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
    INSERT INTO pgoutpost.denormalize_queue (id, table_name, pk, op)
    SELECT pgoutpost.uuid_v7(), pgoutpost_table, pg_catalog.jsonb_build_object(%2$s), 'update'
    FROM pgoutpost_new AS n
    WHERE NOT EXISTS (SELECT FROM pgoutpost_old AS o WHERE %3$s AND o OPERATOR(pg_catalog.*=) n);
  ELSIF TG_OP OPERATOR(pg_catalog.=) 'TRUNCATE' THEN
    -- Rare: EXECUTE, so that the table is named as it is now.
    EXECUTE 'INSERT INTO pgoutpost.delete_queue (id, table_name, pk, op) '
      OPERATOR(pg_catalog.||) 'SELECT pgoutpost.uuid_v7(), $1, pg_catalog.jsonb_build_object(' OPERATOR(pg_catalog.||) %5$L OPERATOR(pg_catalog.||) '), ''delete'' '
      OPERATOR(pg_catalog.||) pg_catalog.format('FROM %%I.%%I AS o', TG_TABLE_SCHEMA, TG_TABLE_NAME)
      USING pgoutpost_table;
  END IF;
  RETURN NULL;
END
`

// tableFunctionName names the queue trigger function of table t. Names are
// limited to 63 bytes: a longer one keeps its start and gets a hash of the
// whole name, so it stays unique and stable.
func tableFunctionName(t registry.TableName) string {
	name := tableFunctionPrefix + t.String()
	if len(name) <= maxIdentifier {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:8])
	return strings.ToValidUTF8(name[:maxIdentifier-len(h)-1], "") + "~" + h
}

// maxIdentifier is PostgreSQL's identifier length limit (NAMEDATALEN - 1).
const maxIdentifier = 63

// tableFunction has the server fill tableFunctionTemplate for table t.
func tableFunction(ctx context.Context, q querier, t *registry.Table) (function, error) {
	f := function{name: tableFunctionName(t.Name), header: tableHeader, definer: true}
	err := q.QueryRow(ctx, `WITH k AS (SELECT c, i FROM unnest($2::text[]) WITH ORDINALITY AS u(c, i)),
		e AS (SELECT string_agg(pg_catalog.format('%L, o.%I', c, c), ', ' ORDER BY i) AS old_pk,
			string_agg(pg_catalog.format('%L, n.%I', c, c), ', ' ORDER BY i) AS new_pk,
			string_agg(pg_catalog.format('o.%1$I OPERATOR(pg_catalog.=) n.%1$I', c), ' AND ' ORDER BY i) AS same_key FROM k)
		SELECT pg_catalog.format($1::text, old_pk, new_pk, same_key, ($2::text[])[1], old_pk) FROM e`,
		tableFunctionTemplate, t.PrimaryKey).Scan(&f.body)
	if err != nil {
		return function{}, fmt.Errorf("build the queue trigger function of %s: %w", t.Name, err)
	}
	return f, nil
}

var queueRefuseTruncate = function{
	name: "queue_refuse_truncate", header: refuseHeader, definer: true, config: refuseConfig,
	body: `
BEGIN
  IF ` + skipQueue + ` THEN
    RETURN NULL;
  END IF;
  RAISE EXCEPTION 'pgoutpost: TRUNCATE of %.% refused: it is a delete model with on_truncate: refuse', TG_TABLE_SCHEMA, TG_TABLE_NAME
    USING ERRCODE = 'feature_not_supported',
      DETAIL = 'Slaves learn of deleted rows only through pgoutpost.delete_queue, which TRUNCATE would bypass.',
      HINT = 'Delete the rows with DELETE, or set on_truncate: log for this model and run pgoutpost queue install again.';
END
`,
}

// guardFn rejects writes on a slave's synced table. It is a plain (origin)
// trigger, so it does not fire in the subscription's apply worker
// (session_replication_role = replica); pgoutpost's cascade transactions pass
// by registry.MarkCascade.
var guardFn = function{
	name: "guard", header: "RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp", config: []string{"search_path=pg_catalog, pg_temp"},
	body: `
BEGIN
  IF current_setting('` + registry.CascadeSetting + `', true) = 'on' THEN
    RETURN NULL;
  END IF;
  RAISE EXCEPTION 'pgoutpost: % on %.% refused: it is a system table synced from the master', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege',
      DETAIL = 'A row written here would conflict with the rows the subscription applies and can stop replication.',
      HINT = 'Write to the master instead. pgoutpost guard remove lifts the guard.';
END
`,
}

// Table DDL. No unique constraint other than the id: the same row may be
// queued any number of times.
const (
	createDeleteQueue = `CREATE TABLE pgoutpost.delete_queue (
  id uuid PRIMARY KEY DEFAULT pgoutpost.uuid_v7(),
  table_name text NOT NULL,
  pk jsonb NOT NULL,
  op text NOT NULL DEFAULT 'delete' CHECK (op IN ('delete')),
  xid bigint NOT NULL DEFAULT txid_current(),
  created_at timestamptz NOT NULL DEFAULT now()
)`
	createDenormalizeQueue = `CREATE TABLE pgoutpost.denormalize_queue (
  id uuid PRIMARY KEY DEFAULT pgoutpost.uuid_v7(),
  table_name text NOT NULL,
  pk jsonb NOT NULL,
  op text NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
  xid bigint NOT NULL DEFAULT txid_current(),
  created_at timestamptz NOT NULL DEFAULT now()
)`
	// dead_letter keeps the whole entry as it was (entry) besides its parsed
	// fields, which may be NULL for an entry too malformed to parse (e.g. a
	// seed-queue row of an unknown content type). (queue, entry_id) is unique
	// so that failing the same entry again counts attempts instead of adding a
	// row.
	createDeadLetter = `CREATE TABLE pgoutpost.dead_letter (
  id uuid PRIMARY KEY DEFAULT pgoutpost.uuid_v7(),
  queue text NOT NULL,
  entry_id uuid NOT NULL,
  table_name text,
  pk jsonb,
  op text,
  xid bigint,
  created_at timestamptz,
  entry jsonb NOT NULL,
  error text NOT NULL,
  attempts integer NOT NULL DEFAULT 1,
  failed_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (queue, entry_id)
)`
)

// tableDDL lists the tables in creation order.
var tableDDL = []struct {
	name registry.TableName
	sql  string
}{
	{registry.DeleteQueue.Table(), createDeleteQueue},
	{registry.DenormalizeQueue.Table(), createDenormalizeQueue},
	{DeadLetter, createDeadLetter},
}
