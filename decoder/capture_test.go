package decoder_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgoutpost/pgoutpost/decoder"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

// A capture is the sequence of pgoutput messages (XLogData payloads) one slot
// sent for the golden workload, read with one set of plugin options.
type captureSpec struct {
	name       string
	twoPhase   bool // create the slot with two-phase decoding
	args       []string
	minVersion int // the server_version_num that first speaks it; 0 for any
}

var captureSpecs = []captureSpec{
	{name: "v1", args: []string{"proto_version '1'", "messages 'true'"}},
	{name: "v2_stream", args: []string{"proto_version '2'", "messages 'true'", "streaming 'on'"}},
	{name: "v2_binary", args: []string{"proto_version '2'", "messages 'true'", "streaming 'on'", "binary 'true'"}},
	{name: "v3_twophase", twoPhase: true, args: []string{"proto_version '3'", "messages 'true'", "streaming 'on'", "two_phase 'on'"}},
	// What the sidecar asks of 16+: protocol 4 with parallel streaming,
	// whose Stream Abort carries the abort LSN and time.
	{name: "v4_parallel", args: []string{"proto_version '4'", "messages 'true'", "streaming 'parallel'"}, minVersion: 160000},
}

const (
	publication = "golden"
	endPrefix   = "golden-end" // prefix of the non-transactional message that ends the workload
)

var schemaSQL = []string{
	`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`,
	`CREATE TABLE kinds (
		id int PRIMARY KEY, t text, n numeric(12,3), b bool, ts timestamptz, j jsonb,
		u uuid, by bytea, ia int[], ta text[], f float8, i8 bigint, d date, m mood)`,
	`CREATE TABLE parent (id int PRIMARY KEY, name text)`,
	`CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id), note text)`,
	`CREATE TABLE full_ident (id int PRIMARY KEY, v text)`,
	`ALTER TABLE full_ident REPLICA IDENTITY FULL`,
	`CREATE TABLE toasty (id int PRIMARY KEY, big text, small int)`,
	`ALTER TABLE toasty ALTER big SET STORAGE EXTERNAL`,
	`CREATE TABLE seq_reset (id serial PRIMARY KEY, v text)`,
	`CREATE TABLE bulk (id int PRIMARY KEY, payload text)`,
	`CREATE PUBLICATION golden FOR ALL TABLES`,
}

// workloadSQL runs on one session, in order. Statements between BEGIN and
// COMMIT form one transaction.
var workloadSQL = []string{
	// Every column type, and a row of NULLs.
	`INSERT INTO kinds VALUES (1, e'na\u00efve "quoted"\ttab', 12345.678, true,
		'2026-01-02 03:04:05.000006+00', '{"a": [1, 2, {"b": null}]}',
		'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff10', '{1,2,3}', '{"x","y z",NULL}',
		3.5, 9007199254740993, '2026-01-02', 'happy')`,
	`INSERT INTO kinds (id) VALUES (2)`,
	// Update without and with a key change (old key sent), delete by key.
	`UPDATE kinds SET t = 'changed', n = -0.5 WHERE id = 1`,
	`UPDATE kinds SET id = 3 WHERE id = 2`,
	`DELETE FROM kinds WHERE id = 3`,
	// REPLICA IDENTITY FULL: old tuples on update and delete.
	`INSERT INTO full_ident VALUES (1, 'one'), (2, 'two')`,
	`UPDATE full_ident SET v = 'uno' WHERE id = 1`,
	`DELETE FROM full_ident WHERE id = 2`,
	// An out-of-line TOAST value left unchanged by an update.
	`INSERT INTO toasty SELECT 1, string_agg(md5(g::text), ''), 1 FROM generate_series(1, 100) g`,
	`UPDATE toasty SET small = 2 WHERE id = 1`,
	// A transaction with several changes and a transactional message.
	`BEGIN`,
	`INSERT INTO parent VALUES (1, 'p1'), (2, 'p2')`,
	`INSERT INTO child VALUES (1, 1, 'c1')`,
	`SELECT pg_logical_emit_message(true, 'golden', 'transactional')`,
	`COMMIT`,
	`SELECT pg_logical_emit_message(false, 'golden', '\x00ff'::bytea)`,
	// Truncates: CASCADE takes child along; RESTART IDENTITY.
	`TRUNCATE parent CASCADE`,
	`INSERT INTO seq_reset (v) VALUES ('a')`,
	`TRUNCATE seq_reset RESTART IDENTITY`,
	// Big enough to be streamed (logical_decoding_work_mem = 64kB).
	`INSERT INTO bulk SELECT g, 'row ' || g FROM generate_series(1, 1000) g`,
	// Streamed, then rolled back: Stream Abort of the whole transaction.
	`BEGIN`,
	`INSERT INTO bulk SELECT g, 'doomed ' || g FROM generate_series(10001, 11000) g`,
	`ROLLBACK`,
	// Streamed, with a subtransaction rolled back: Stream Abort of the subxid.
	`BEGIN`,
	`INSERT INTO bulk SELECT g, 'kept ' || g FROM generate_series(20001, 20600) g`,
	`SAVEPOINT s1`,
	`INSERT INTO bulk SELECT g, 'undone ' || g FROM generate_series(21001, 21600) g`,
	`ROLLBACK TO SAVEPOINT s1`,
	`INSERT INTO bulk VALUES (22001, 'after savepoint')`,
	`SELECT pg_logical_emit_message(true, 'golden', 'in a streamed transaction')`,
	`COMMIT`,
	// Two-phase: committed, rolled back, and a big (streamed) prepared one.
	`BEGIN`,
	`INSERT INTO parent VALUES (100, 'prepared')`,
	`PREPARE TRANSACTION 'golden_commit'`,
	`COMMIT PREPARED 'golden_commit'`,
	`BEGIN`,
	`INSERT INTO parent VALUES (101, 'rolled back')`,
	`PREPARE TRANSACTION 'golden_rollback'`,
	`ROLLBACK PREPARED 'golden_rollback'`,
	`BEGIN`,
	`INSERT INTO bulk SELECT g, 'prepared ' || g FROM generate_series(30001, 31000) g`,
	`PREPARE TRANSACTION 'golden_stream'`,
	`COMMIT PREPARED 'golden_stream'`,
	// A transaction from a replication origin: Origin message.
	`SELECT pg_replication_origin_create('golden_origin')`,
	`SELECT pg_replication_origin_session_setup('golden_origin')`,
	`BEGIN`,
	`SELECT pg_replication_origin_xact_setup('0/ABCDEF', '2026-01-02 03:04:05+00')`,
	`INSERT INTO parent VALUES (200, 'from origin')`,
	`COMMIT`,
	`SELECT pg_replication_origin_session_reset()`,
	`SELECT pg_replication_origin_drop('golden_origin')`,
	`SELECT pg_logical_emit_message(false, 'golden-end', '')`,
}

// captureAll creates a database with the golden schema and one slot per
// capture spec, runs the workload, and reads every slot up to the end marker.
// It also returns the server's server_version_num.
func captureAll(t *testing.T) (map[string][][]byte, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := pgtest.NewDB(t, pgtest.Master(t))
	conn, err := pgx.Connect(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, sql := range schemaSQL {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("schema: %v\n%s", err, sql)
		}
	}

	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		t.Fatal(err)
	}
	repl := replicationConn(t, ctx, db.DSN)
	slots := make(map[string]string)
	for _, spec := range captureSpecs {
		if version < spec.minVersion {
			continue // not spoken by this server: captureAll's result lacks it
		}
		slot := fmt.Sprintf("golden_%s_%s", db.Name, spec.name)
		if len(slot) > 63 {
			slot = slot[len(slot)-63:]
		}
		slots[spec.name] = slot
		if spec.twoPhase {
			// pglogrepl cannot ask for TWO_PHASE; the SQL function can.
			if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, true)", slot); err != nil {
				t.Fatalf("create two-phase slot: %v", err)
			}
		} else if _, err := pglogrepl.CreateReplicationSlot(ctx, repl, slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication}); err != nil {
			t.Fatalf("create slot: %v", err)
		}
		t.Cleanup(func() { dropSlot(t, db.DSN, slot) })
	}
	if err := repl.Close(ctx); err != nil {
		t.Fatal(err)
	}

	for _, sql := range workloadSQL {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("workload: %v\n%s", err, sql)
		}
	}

	captures := make(map[string][][]byte)
	for _, spec := range captureSpecs {
		if _, ok := slots[spec.name]; !ok {
			continue
		}
		repl := replicationConn(t, ctx, db.DSN)
		captures[spec.name] = drain(t, ctx, repl, slots[spec.name], spec.args)
		if err := repl.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return captures, version
}

func replicationConn(t *testing.T, ctx context.Context, dsn string) *pgconn.PgConn {
	t.Helper()
	conn, err := pgconn.Connect(ctx, dsn+"&replication=database")
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func dropSlot(t *testing.T, dsn, slot string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Errorf("drop slot %s: %v", slot, err)
		return
	}
	defer conn.Close(ctx)
	// A test that failed while streaming leaves the slot active: end its
	// walsender first, then drop the slot once it is released.
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", slot); err != nil {
		t.Errorf("drop slot %s: %v", slot, err)
		return
	}
	pgtest.Eventually(t, "slot "+slot+" to be released", func() bool {
		_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slot)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.ObjectInUse && ctx.Err() == nil {
			return false
		}
		if err != nil {
			t.Errorf("drop slot %s: %v", slot, err)
		}
		return true
	})
}

// drain streams slot with the plugin args and returns the messages up to (not
// including) the end marker.
func drain(t *testing.T, ctx context.Context, conn *pgconn.PgConn, slot string, args []string) [][]byte {
	t.Helper()
	args = append([]string{"publication_names '" + publication + "'"}, args...)
	if err := pglogrepl.StartReplication(ctx, conn, slot, 0,
		pglogrepl.StartReplicationOptions{Mode: pglogrepl.LogicalReplication, PluginArgs: args}); err != nil {
		t.Fatalf("start replication on %s: %v", slot, err)
	}
	var msgs [][]byte
	for {
		raw, err := conn.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("receive from %s after %d messages: %v", slot, len(msgs), err)
		}
		switch m := raw.(type) {
		case *pgproto3.ErrorResponse:
			t.Fatalf("replication from %s: %v", slot, pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyData:
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					t.Fatal(err)
				}
				if ka.ReplyRequested {
					// Nothing is acknowledged: the slot is thrown away.
					if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: 0}); err != nil {
						t.Fatal(err)
					}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					t.Fatal(err)
				}
				data := append([]byte(nil), xld.WALData...)
				if isEndMarker(data) {
					return msgs
				}
				msgs = append(msgs, data)
			}
		}
	}
}

func isEndMarker(data []byte) bool {
	if len(data) == 0 || data[0] != byte(decoder.TypeMessage) {
		return false
	}
	m, err := decoder.NewDecoder().Decode(data)
	return err == nil && m.(*decoder.LogicalMessage).Prefix == endPrefix
}

// Capture files hold each message as a 4-byte big-endian length and the bytes.

func writeCapture(path string, msgs [][]byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, m := range msgs {
		w.Write(binary.BigEndian.AppendUint32(nil, uint32(len(m))))
		w.Write(m)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readCapture(t testing.TB, name string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".bin"))
	if err != nil {
		t.Fatalf("read capture (regenerate with go test ./decoder -run Golden -update): %v", err)
	}
	msgs, err := splitCapture(data)
	if err != nil {
		t.Fatalf("capture %s: %v", name, err)
	}
	return msgs
}

func splitCapture(data []byte) ([][]byte, error) {
	var msgs [][]byte
	for len(data) > 0 {
		if len(data) < 4 {
			return nil, io.ErrUnexpectedEOF
		}
		n := binary.BigEndian.Uint32(data)
		if uint64(n) > uint64(len(data)-4) {
			return nil, errors.New("message length beyond end of file")
		}
		msgs = append(msgs, data[4:4+n:4+n])
		data = data[4+n:]
	}
	return msgs, nil
}

// The benchmark fixture: 1,000 rows of a 10-column table (bigint, int,
// numeric, text, timestamptz, bool) in 100-row transactions, each Insert
// message about 150 bytes, read with protocol v1.
var benchSQL = []string{
	`CREATE TABLE orders (
		id bigint PRIMARY KEY, qty int, price numeric(12,2), name text, sku text,
		note text, created timestamptz, updated timestamptz, active bool, score numeric)`,
	`CREATE PUBLICATION golden FOR TABLE orders`,
}

func captureBench(t *testing.T) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := pgtest.NewDB(t, pgtest.Master(t))
	conn, err := pgx.Connect(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, sql := range benchSQL {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("bench schema: %v\n%s", err, sql)
		}
	}
	repl := replicationConn(t, ctx, db.DSN)
	slot := "bench_" + db.Name
	if _, err := pglogrepl.CreateReplicationSlot(ctx, repl, slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication}); err != nil {
		t.Fatalf("create slot: %v", err)
	}
	t.Cleanup(func() { dropSlot(t, db.DSN, slot) })
	for tx := 0; tx < 10; tx++ {
		if _, err := conn.Exec(ctx, `INSERT INTO orders
			SELECT g, g % 97, (g * 7919 % 100000) / 100.0, 'product ' || g, 'SKU-' || lpad(g::text, 8, '0'),
				'note ' || md5(g::text)::varchar(12), '2026-01-01 00:00:00+00'::timestamptz + g * interval '1.000123 s',
				'2026-02-01 00:00:00+00'::timestamptz + g * interval '2.5 s', g % 3 = 0, g / 7.0
			FROM generate_series($1::bigint, $2::bigint) g`, tx*100+1, tx*100+100); err != nil {
			t.Fatalf("bench rows: %v", err)
		}
	}
	if _, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(false, $1, '')", endPrefix); err != nil {
		t.Fatal(err)
	}
	msgs := drain(t, ctx, repl, slot, []string{"proto_version '1'", "messages 'true'"})
	if err := repl.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return msgs
}
