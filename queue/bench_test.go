package queue

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// benchRows is the size of the bulk statements the benchmarks time.
const benchRows = 100_000

// benchSchema has two identical Django-like tables: plain_* without
// triggers, the baseline, and queued_* with the queue triggers.
const benchSchema = `
CREATE TABLE plain_unit (id bigint PRIMARY KEY, name varchar(100) NOT NULL, category_id int NOT NULL, created timestamptz NOT NULL);
CREATE TABLE queued_unit (LIKE plain_unit INCLUDING ALL);
CREATE TABLE rowtrig_unit (LIKE plain_unit INCLUDING ALL);
CREATE TABLE plain_outcome (id bigint PRIMARY KEY, name varchar(100) NOT NULL, score int NOT NULL, created timestamptz NOT NULL);
CREATE TABLE queued_outcome (LIKE plain_outcome INCLUDING ALL);
`

const fillSQL = "SELECT g, 'row ' || g, g % 100, now() FROM generate_series(1, 100000) g"

func benchDB(b *testing.B) *pgxpool.Pool {
	b.Helper()
	db := pgtest.NewDB(b, pgtest.Master(b))
	pgtest.Exec(b, db.DSN, benchSchema)
	pool := pgtest.Pool(b, db.DSN)
	reg := registry.New([]*registry.Table{
		table("plain_unit", registry.KindSystem, "id"),
		table("queued_unit", registry.KindDelete, "id"),
		table("plain_outcome", registry.KindSystem, "id"),
		table("queued_outcome", registry.KindDenormalize, "id"),
	})
	if _, err := Install(context.Background(), pool, InstallOptions{Role: registry.RoleMaster, Registry: reg}, false); err != nil {
		b.Fatal(err)
	}
	// A second baseline: what a row-level trigger (one queue insert per
	// deleted row, as the seed package's signals did from the application)
	// costs inside the database.
	mustExec(b, pool, `CREATE FUNCTION rowtrig_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO pgoutpost.delete_queue (table_name, pk, op) VALUES ('public.rowtrig_unit', jsonb_build_object('id', OLD.id), 'delete');
  RETURN NULL;
END $$`, "CREATE TRIGGER rowtrig AFTER DELETE ON rowtrig_unit FOR EACH ROW EXECUTE FUNCTION rowtrig_delete()")
	return pool
}

func mustExec(b *testing.B, pool *pgxpool.Pool, sqls ...string) {
	b.Helper()
	for _, s := range sqls {
		if _, err := pool.Exec(context.Background(), s); err != nil {
			b.Fatalf("%s: %v", s, err)
		}
	}
}

// timed runs sql and returns how long it took; the benchmark timer runs only
// inside it.
func timed(b *testing.B, pool *pgxpool.Pool, sql string) time.Duration {
	b.Helper()
	b.StartTimer()
	start := time.Now()
	tag, err := pool.Exec(context.Background(), sql)
	d := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatalf("%s: %v", sql, err)
	}
	if tag.RowsAffected() != benchRows {
		b.Fatalf("%s touched %d rows, want %d", sql, tag.RowsAffected(), benchRows)
	}
	return d
}

// report prints both times per operation and their ratio. Each iteration
// times the plain and the queued statement on the same data, alternating
// which goes first.
func report(b *testing.B, plain, queued time.Duration) {
	n := float64(b.N)
	b.ReportMetric(float64(plain.Milliseconds())/n, "plain-ms/op")
	b.ReportMetric(float64(queued.Milliseconds())/n, "queued-ms/op")
	b.ReportMetric(float64(queued)/float64(plain), "overhead-ratio")
}

// BenchmarkBulkDelete deletes 100,000 delete-model rows in one statement with
// and without the queue trigger, and checks that exactly 100,000 queue rows
// were written. It also times a row-level trigger doing the same work, the
// design the statement-level trigger replaces (rowtrigger-ms/op).
//
//	go test ./queue -run '^$' -bench BulkDelete -benchtime 5x
func BenchmarkBulkDelete(b *testing.B) {
	pool := benchDB(b)
	b.StopTimer()
	var plain, queued, rowTrig time.Duration
	for i := 0; i < b.N; i++ {
		mustExec(b, pool,
			"TRUNCATE pgoutpost.delete_queue",
			"INSERT INTO plain_unit "+fillSQL,
			"INSERT INTO queued_unit "+fillSQL,
			"INSERT INTO rowtrig_unit "+fillSQL,
			"VACUUM ANALYZE plain_unit, queued_unit, rowtrig_unit, pgoutpost.delete_queue",
			"CHECKPOINT")
		if i%2 == 0 {
			plain += timed(b, pool, "DELETE FROM plain_unit")
			queued += timed(b, pool, "DELETE FROM queued_unit")
		} else {
			queued += timed(b, pool, "DELETE FROM queued_unit")
			plain += timed(b, pool, "DELETE FROM plain_unit")
		}
		if n := count(b, pool, "SELECT count(*) FROM pgoutpost.delete_queue WHERE table_name = 'public.queued_unit'"); n != benchRows {
			b.Fatalf("delete_queue has %d rows, want %d", n, benchRows)
		}
		rowTrig += timed(b, pool, "DELETE FROM rowtrig_unit")
	}
	report(b, plain, queued)
	b.ReportMetric(float64(rowTrig.Milliseconds())/float64(b.N), "rowtrigger-ms/op")
}

// BenchmarkBulkUpdate updates every one of 100,000 denormalize-model rows in
// one statement with and without the queue trigger, and checks that exactly
// 100,000 queue rows were written.
//
//	go test ./queue -run '^$' -bench BulkUpdate -benchtime 5x
func BenchmarkBulkUpdate(b *testing.B) {
	pool := benchDB(b)
	b.StopTimer()
	// One string, one connection: the setting holds for both inserts.
	mustExec(b, pool, "SET pgoutpost.skip_queue = on; INSERT INTO plain_outcome "+fillSQL+
		"; INSERT INTO queued_outcome "+fillSQL+"; RESET pgoutpost.skip_queue")
	var plain, queued time.Duration
	for i := 0; i < b.N; i++ {
		mustExec(b, pool,
			"TRUNCATE pgoutpost.denormalize_queue",
			"VACUUM ANALYZE plain_outcome, queued_outcome, pgoutpost.denormalize_queue",
			"CHECKPOINT")
		if i%2 == 0 {
			plain += timed(b, pool, "UPDATE plain_outcome SET score = score + 1")
			queued += timed(b, pool, "UPDATE queued_outcome SET score = score + 1")
		} else {
			queued += timed(b, pool, "UPDATE queued_outcome SET score = score + 1")
			plain += timed(b, pool, "UPDATE plain_outcome SET score = score + 1")
		}
		if n := count(b, pool, "SELECT count(*) FROM pgoutpost.denormalize_queue WHERE op = 'update'"); n != benchRows {
			b.Fatalf("denormalize_queue has %d rows, want %d", n, benchRows)
		}
	}
	report(b, plain, queued)
}

// BenchmarkSingleDelete times what an application sees most often: a
// one-row DELETE (a round trip), with and without the queue trigger.
//
//	go test ./queue -run '^$' -bench SingleDelete -benchtime 2000x
func BenchmarkSingleDelete(b *testing.B) {
	pool := benchDB(b)
	ctx := context.Background()
	b.StopTimer()
	var plain, queued time.Duration
	for i := 0; i < b.N; i++ {
		for _, tbl := range []string{"plain_unit", "queued_unit"} {
			if _, err := pool.Exec(ctx, "INSERT INTO "+tbl+" VALUES ($1, 'x', 1, now())", i); err != nil {
				b.Fatal(err)
			}
		}
		order := []string{"plain_unit", "queued_unit"}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, tbl := range order {
			b.StartTimer()
			start := time.Now()
			_, err := pool.Exec(ctx, "DELETE FROM "+tbl+" WHERE id = $1", i)
			d := time.Since(start)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if tbl == "plain_unit" {
				plain += d
			} else {
				queued += d
			}
		}
	}
	if n := count(b, pool, "SELECT count(*) FROM pgoutpost.delete_queue"); n != int64(b.N) {
		b.Fatalf("delete_queue has %d rows, want %d", n, b.N)
	}
	n := float64(b.N)
	b.ReportMetric(float64(plain.Microseconds())/n, "plain-µs/op")
	b.ReportMetric(float64(queued.Microseconds())/n, "queued-µs/op")
	b.ReportMetric(float64(queued)/float64(plain), "overhead-ratio")
}

var (
	flagWritesRows     = flag.Int("queue.writes.rows", 20000, "BenchmarkMasterWrites: rows each operation and transaction size writes to each table")
	flagWritesPipeline = flag.Bool("queue.writes.pipeline", false, "BenchmarkMasterWrites: send each transaction's statements in one round trip (as one implicit transaction), as bench-e2e does")
)

// BenchmarkMasterWrites is what the queue triggers cost an application on
// the master: single-row INSERTs, UPDATEs and DELETEs sent one by one (each
// a round trip, prepared as pgx does) in 1-row and 10-row transactions, on a
// denormalize model (queued_outcome, whose triggers log all three) and on
// its bare twin (plain_outcome). Transactions alternate between the two
// tables, so the machine's noise falls on both alike. It reports each
// table's rows per second over the time spent in its transactions and their
// ratio (queued/bare, 1 would be free), and checks that the queue got
// exactly one row per write. With -queue.writes.pipeline a transaction's
// statements go in one round trip instead, as an application batching its
// writes sends them: the server's work is then nearly all of a row's time,
// and the triggers' share of it shows undiluted.
//
//	go test ./queue -run '^$' -bench MasterWrites -benchtime 1x [-queue.writes.rows 20000] [-queue.writes.pipeline]
func BenchmarkMasterWrites(b *testing.B) {
	pool := benchDB(b)
	ctx := context.Background()
	rows := *flagWritesRows
	c, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Release()
	conn := c.Conn()
	ops := []struct{ name, sql string }{
		{"insert", "INSERT INTO %s (id, name, score, created) VALUES ($1, 'x', 0, now())"},
		{"update", "UPDATE %s SET score = score + 1 WHERE id = $1"},
		{"delete", "DELETE FROM %s WHERE id = $1"},
	}
	b.ResetTimer()
	for range b.N {
		mustExec(b, pool, "TRUNCATE plain_outcome, queued_outcome, pgoutpost.denormalize_queue, pgoutpost.delete_queue")
		for _, size := range []int{1, 10} {
			for _, op := range ops {
				mustExec(b, pool, "VACUUM ANALYZE plain_outcome, queued_outcome", "CHECKPOINT")
				var spent [2]time.Duration // bare, queued
				for k := range rows / size {
					for i := range 2 {
						side := (i + k) % 2 // alternate which table goes first
						table := []string{"plain_outcome", "queued_outcome"}[side]
						sql := fmt.Sprintf(op.sql, table)
						ids := make([]int, size)
						for j := range ids {
							ids[j] = (size/10)*rows + k*size + j // the 10-row transactions use ids after the 1-row ones
						}
						start := time.Now()
						if err := writeTxn(ctx, conn, sql, ids, *flagWritesPipeline); err != nil {
							b.Fatalf("%s on %s: %v", op.name, table, err)
						}
						spent[side] += time.Since(start)
					}
				}
				written := float64(rows / size * size)
				bare, queued := written/spent[0].Seconds(), written/spent[1].Seconds()
				name := fmt.Sprintf("%s-%drow", op.name, size)
				b.ReportMetric(bare, name+"-bare-rows/s")
				b.ReportMetric(queued, name+"-queued-rows/s")
				b.ReportMetric(queued/bare, name+"-ratio")
			}
		}
		written := int64(rows/10*10 + rows)
		if n := count(b, pool, "SELECT count(*) FROM pgoutpost.denormalize_queue WHERE table_name = 'public.queued_outcome'"); n != 2*written {
			b.Fatalf("denormalize_queue has %d rows, want %d (an insert and an update a row)", n, 2*written)
		}
		if n := count(b, pool, "SELECT count(*) FROM pgoutpost.delete_queue WHERE table_name = 'public.queued_outcome'"); n != written {
			b.Fatalf("delete_queue has %d rows, want %d", n, written)
		}
	}
}

// writeTxn runs sql once for each id in one transaction: statement by
// statement between BEGIN and COMMIT, or pipelined in one batch.
func writeTxn(ctx context.Context, conn *pgx.Conn, sql string, ids []int, pipeline bool) error {
	if pipeline {
		var batch pgx.Batch
		for _, id := range ids {
			batch.Queue(sql, id)
		}
		return conn.SendBatch(ctx, &batch).Close()
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	for _, id := range ids {
		if _, err := tx.Exec(ctx, sql, id); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}
