package queue

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// slaveEnv is a slave database with the reference Django schema, the queue
// installed (role slave) and the registry of ../sidecar.yaml.
type slaveEnv struct {
	db   *pgtest.DB
	pool *pgxpool.Pool
	reg  *registry.Registry
	obs  *recorder
	// engine are the cascade options of the processor's engine.
	engine []cascade.Option
}

// fkCheckModes runs a test with PostgreSQL's own foreign key checks and with
// the engine's batch checks (cascade.BatchReferenceChecks), each on a new
// slave.
func fkCheckModes(t *testing.T, test func(t *testing.T, s *slaveEnv)) {
	for _, m := range []struct {
		name string
		opts []cascade.Option
	}{{"database", nil}, {"batch", []cascade.Option{cascade.BatchReferenceChecks()}}} {
		t.Run("fk_checks="+m.name, func(t *testing.T) {
			s := newSlave(t)
			s.engine = m.opts
			test(t, s)
		})
	}
}

func newSlave(t *testing.T) *slaveEnv {
	t.Helper()
	ctx := context.Background()
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.LoadDjangoSchema(t, db)
	pool := pgtest.Pool(t, db.DSN)
	if _, err := Install(ctx, pool, InstallOptions{Role: registry.RoleSlave}, false); err != nil {
		t.Fatalf("install: %v", err)
	}
	return &slaveEnv{db: db, pool: pool, reg: djangoRegistry(t, pool), obs: newRecorder()}
}

func (s *slaveEnv) processor(opts ProcessorOptions) *Processor {
	opts.Observer = s.obs
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return NewProcessor(s.pool, s.reg, NewEngine(s.reg, s.engine...), nil, opts)
}

// enqueue inserts a queue row as the subscription would, and returns its entry.
func enqueue(t *testing.T, pool *pgxpool.Pool, queue registry.Queue, xid int64, table, pk, op string) Entry {
	t.Helper()
	qt, _ := queueTable(queue)
	e := Entry{Queue: queue, Table: table, PK: []byte(pk), Op: op, Xid: xid}
	err := pool.QueryRow(context.Background(), "INSERT INTO "+qt.Sanitize()+
		" (table_name, pk, op, xid) VALUES ($1, $2::text::jsonb, $3, $4) RETURNING id::text, created_at",
		table, pk, op, xid).Scan(&e.ID, &e.CreatedAt)
	if err != nil {
		t.Fatalf("enqueue %s %s: %v", table, pk, err)
	}
	return e
}

func del(t *testing.T, pool *pgxpool.Pool, xid int64, table string, id int) Entry {
	t.Helper()
	return enqueue(t, pool, registry.DeleteQueue, xid, "public."+table, fmt.Sprintf(`{"id": %d}`, id), OpDelete)
}

func txnOf(entries ...Entry) Txn { return Txn{CommitTime: time.Now(), Entries: entries} }

func apply(t *testing.T, p *Processor, txns ...Txn) {
	t.Helper()
	done, err := p.Apply(context.Background(), txns)
	if err != nil || done != len(txns) {
		t.Fatalf("Apply: done %d of %d, err %v", done, len(txns), err)
	}
}

// recorder is an Observer that counts.
type recorder struct {
	mu      sync.Mutex
	results map[string]int // "queue table result"
	rows    map[string]int // "table action"
}

func newRecorder() *recorder { return &recorder{results: map[string]int{}, rows: map[string]int{}} }

func (r *recorder) EntryDone(queue registry.Queue, table, result string, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results[string(queue)+" "+table+" "+result]++
}

func (r *recorder) CascadeRows(table, action string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows[table+" "+action] += n
}

func (r *recorder) get(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.results[key]
}

// deadLetters returns "queue table pk: error" of every dead letter, by entry id.
func deadLetters(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT entry_id::text, queue || ' ' || coalesce(table_name, '?') || ' ' || coalesce(pk::text, '?') || ': ' || error FROM pgoutpost.dead_letter")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, s string
		if err := rows.Scan(&id, &s); err != nil {
			t.Fatal(err)
		}
		out[id] = s
	}
	return out
}

const unitFixture = `
INSERT INTO catalog_category (id, name) VALUES (1, 'c');
INSERT INTO catalog_unit (id, name, category_id) VALUES (1, 'u1', 1), (2, 'u2', 1), (3, 'u3', 1);
INSERT INTO catalog_marker (id, name, unit_id) VALUES (10, 'm10', 1), (20, 'm20', 2), (30, 'm30', 3);
INSERT INTO userapp_report (id, title, unit_id, marker_id) VALUES (100, 'r', 1, NULL), (101, 'r', 1, NULL), (200, 'r', 2, NULL), (300, 'r', 3, 30);
INSERT INTO userapp_reportline (id, text, report_id) VALUES (1000, 'l', 100), (1001, 'l', 100), (1010, 'l', 101), (2000, 'l', 200);
INSERT INTO userapp_comment (id, body, unit_id, parent_id) VALUES (1, 'a', 1, NULL), (2, 'b', NULL, 1), (3, 'c', 2, NULL);
`

func TestApplyDeleteCascades(t *testing.T) {
	fkCheckModes(t, func(t *testing.T, s *slaveEnv) {
		pgtest.Exec(t, s.db.DSN, unitFixture)
		// The slave's synced tables have the write guard, which the processing
		// transactions pass (registry.MarkCascade).
		var synced []registry.TableName
		for _, tb := range s.reg.Tables {
			if tb.Kind.IsSynced() {
				synced = append(synced, tb.Name)
			}
		}
		if _, err := InstallGuard(context.Background(), s.pool, synced, false); err != nil {
			t.Fatal(err)
		}
		if _, err := s.pool.Exec(context.Background(), "DELETE FROM catalog_unit WHERE id = 3"); err == nil {
			t.Fatal("the guard let an ordinary session delete a synced row")
		}
		p := s.processor(ProcessorOptions{})
		e := del(t, s.pool, 7, "catalog_unit", 1)
		gone := del(t, s.pool, 8, "catalog_unit", 99)
		apply(t, p, txnOf(e), txnOf(gone))

		for _, c := range []struct {
			sql  string
			want int64
		}{
			{"SELECT count(*) FROM catalog_unit WHERE id = 1", 0},
			{"SELECT count(*) FROM catalog_marker WHERE unit_id = 1", 0},
			{"SELECT count(*) FROM userapp_report WHERE unit_id = 1", 0},
			{"SELECT count(*) FROM userapp_reportline WHERE report_id IN (100, 101)", 0},
			{"SELECT count(*) FROM userapp_comment WHERE id IN (1, 2)", 0}, // 2 through its parent
			{"SELECT count(*) FROM catalog_unit", 2},
			{"SELECT count(*) FROM userapp_reportline", 1},
			{"SELECT count(*) FROM pgoutpost.delete_queue", 0},
			{"SELECT count(*) FROM pgoutpost.dead_letter", 0},
		} {
			if n := count(t, s.pool, c.sql); n != c.want {
				t.Errorf("%s = %d, want %d", c.sql, n, c.want)
			}
		}
		if n := s.obs.get("delete public.catalog_unit applied"); n != 1 {
			t.Errorf("applied entries: %d, want 1 (%v)", n, s.obs.results)
		}
		if n := s.obs.get("delete public.catalog_unit gone"); n != 1 {
			t.Errorf("gone entries: %d, want 1 (%v)", n, s.obs.results)
		}
		if n := s.obs.rows["public.userapp_reportline deleted"]; n != 3 {
			t.Errorf("cascade rows of userapp_reportline: %d, want 3 (%v)", n, s.obs.rows)
		}
	})
}

func TestApplyDjangoRestrictExample(t *testing.T) {
	fkCheckModes(t, func(t *testing.T, s *slaveEnv) {
		// Django's docs: deleting an artist deletes its albums and songs, though
		// a song's album is RESTRICT, because the song goes too.
		pgtest.Exec(t, s.db.DSN, `
INSERT INTO catalog_artist (id, name) VALUES (1, 'a'), (2, 'b');
INSERT INTO userapp_album (id, name, artist_id) VALUES (1, 'x', 1), (2, 'y', 2);
INSERT INTO userapp_song (id, name, artist_id, album_id) VALUES (1, 's', 1, 1), (2, 't', 1, 2);`)
		p := s.processor(ProcessorOptions{})
		// Artist 1 has a song on artist 2's album: deleting artist 2 alone is
		// restricted by song 2 (album 2 is deleted, song 2 is not: its artist
		// stays), deleting both in one master transaction is not.
		a2 := del(t, s.pool, 1, "catalog_artist", 2)
		apply(t, p, txnOf(a2))
		if dl := deadLetters(t, s.pool); len(dl) != 1 || !strings.Contains(dl[a2.ID], "restricted") || !strings.Contains(dl[a2.ID], "userapp_song(2)") {
			t.Fatalf("dead letters %v, want artist 2 restricted by song 2", dl)
		}
		if _, err := Retry(context.Background(), s.pool, nil, true); err != nil {
			t.Fatal(err)
		}
		a1 := del(t, s.pool, 2, "catalog_artist", 1)
		apply(t, p, txnOf(a1, Entry{Queue: a2.Queue, ID: a2.ID, Table: a2.Table, PK: a2.PK, Op: a2.Op, Xid: 2}))
		if n := count(t, s.pool, "SELECT count(*) FROM catalog_artist") + count(t, s.pool, "SELECT count(*) FROM userapp_album") + count(t, s.pool, "SELECT count(*) FROM userapp_song"); n != 0 {
			t.Errorf("%d artists, albums and songs left, want none", n)
		}
		if dl := deadLetters(t, s.pool); len(dl) != 0 {
			t.Errorf("dead letters: %v", dl)
		}
	})
}

func TestProtectGoesToDeadLetterAndRetryApplies(t *testing.T) {
	fkCheckModes(t, func(t *testing.T, s *slaveEnv) {
		ctx := context.Background()
		pgtest.Exec(t, s.db.DSN, unitFixture)
		p := s.processor(ProcessorOptions{})
		// Unit 3's marker 30 is protected by report 300 (which unit 3's own
		// cascade would delete: PROTECT holds all the same, as in Django).
		bad := del(t, s.pool, 1, "catalog_unit", 3)
		later := del(t, s.pool, 2, "catalog_unit", 2)
		apply(t, p, txnOf(bad), txnOf(later))

		dl := deadLetters(t, s.pool)
		reason := dl[bad.ID]
		for _, want := range []string{"protected", "public.userapp_report(300)", "catalog_marker(30)", "PROTECT"} {
			if !strings.Contains(reason, want) {
				t.Errorf("dead letter reason %q lacks %q", reason, want)
			}
		}
		if len(dl) != 1 {
			t.Errorf("dead letters: %v", dl)
		}
		if n := count(t, s.pool, "SELECT count(*) FROM catalog_unit WHERE id IN (2, 3)"); n != 1 {
			t.Errorf("units 2 and 3: %d left, want 1 (3, protected)", n)
		}
		if n := count(t, s.pool, "SELECT count(*) FROM pgoutpost.delete_queue"); n != 0 {
			t.Errorf("delete_queue holds %d entries, want 0", n)
		}
		if n := s.obs.get("delete public.catalog_unit dead"); n != 1 {
			t.Errorf("dead entries: %d (%v)", n, s.obs.results)
		}

		st, err := ReadStatus(ctx, s.pool, false, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.DeadLetters) != 1 || st.DeadLetters[0].EntryID != bad.ID || st.Queues[0].DeadLetters != 1 {
			t.Errorf("status: %+v", st)
		}

		// The user fixes the data, then retries.
		pgtest.Exec(t, s.db.DSN, "UPDATE userapp_report SET marker_id = NULL WHERE id = 300")
		n, err := Retry(ctx, s.pool, []string{bad.ID}, false)
		if err != nil || n != 1 {
			t.Fatalf("Retry: %d, %v", n, err)
		}
		if _, err := Retry(ctx, s.pool, []string{"00000000-0000-7000-8000-000000000000"}, false); err == nil {
			t.Error("Retry of an unknown id: no error")
		}
		txns, err := p.Pending(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(txns) != 1 || len(txns[0].Entries) != 1 || txns[0].Entries[0].ID != bad.ID || txns[0].Entries[0].Xid != 1 {
			t.Fatalf("Pending after retry: %+v", txns)
		}
		apply(t, p, txns...)
		if n := count(t, s.pool, "SELECT count(*) FROM catalog_unit WHERE id = 3"); n != 0 {
			t.Error("unit 3 not deleted after retry")
		}
		if dl := deadLetters(t, s.pool); len(dl) != 0 {
			t.Errorf("dead letters after retry: %v", dl)
		}
	})
}

func TestBadEntriesGoToDeadLetter(t *testing.T) {
	s := newSlave(t)
	pgtest.Exec(t, s.db.DSN, unitFixture)
	p := s.processor(ProcessorOptions{})
	unknown := enqueue(t, s.pool, registry.DeleteQueue, 1, "public.nosuch", `{"id": 1}`, OpDelete)
	noSchema := enqueue(t, s.pool, registry.DeleteQueue, 1, "nodot", `{"id": 1}`, OpDelete)
	userTable := enqueue(t, s.pool, registry.DeleteQueue, 1, "public.userapp_report", `{"id": 100}`, OpDelete)
	wrongCol := enqueue(t, s.pool, registry.DeleteQueue, 1, "public.catalog_unit", `{"pk": 1}`, OpDelete)
	badValue := enqueue(t, s.pool, registry.DeleteQueue, 1, "public.catalog_unit", `{"id": "one"}`, OpDelete)
	good := del(t, s.pool, 1, "catalog_unit", 2)
	apply(t, p, txnOf(unknown, noSchema, userTable, wrongCol, badValue, good))

	dl := deadLetters(t, s.pool)
	for _, c := range []struct {
		e    Entry
		want string
	}{
		{unknown, "not in the registry"},
		{noSchema, "not in the registry"},
		{userTable, "not a delete model"},
		{wrongCol, "malformed key"},
		{badValue, "one"},
	} {
		if !strings.Contains(dl[c.e.ID], c.want) {
			t.Errorf("dead letter of %s %s: %q, want it to mention %q", c.e.Table, c.e.PK, dl[c.e.ID], c.want)
		}
	}
	if len(dl) != 5 {
		t.Errorf("%d dead letters, want 5: %v", len(dl), dl)
	}
	if n := count(t, s.pool, "SELECT count(*) FROM catalog_unit WHERE id = 2"); n != 0 {
		t.Error("the good entry of the transaction was not applied")
	}
	// A table name from a queue row never becomes a metric label.
	if n := s.obs.get("delete " + UnknownTable + " dead"); n != 2 {
		t.Errorf("%d dead entries of unknown tables observed, want 2", n)
	}
	s.obs.mu.Lock()
	for k := range s.obs.results {
		if strings.Contains(k, "nosuch") || strings.Contains(k, "nodot") {
			t.Errorf("an observed series is named by a queue row: %q", k)
		}
	}
	s.obs.mu.Unlock()
}

func TestReplayChangesNothing(t *testing.T) {
	s := newSlave(t)
	pgtest.Exec(t, s.db.DSN, unitFixture)
	p := s.processor(ProcessorOptions{})
	txns := []Txn{txnOf(del(t, s.pool, 1, "catalog_unit", 1)), txnOf(del(t, s.pool, 2, "catalog_unit", 3))}
	apply(t, p, txns...)
	before := snapshot(t, s.pool)
	// The user re-creates a unit 1 (as the master would after the delete):
	// a replay of the old entry must not delete it.
	pgtest.Exec(t, s.db.DSN, "INSERT INTO catalog_unit (id, name) VALUES (1, 'again')")
	apply(t, p, txns...)
	if n := count(t, s.pool, "SELECT count(*) FROM catalog_unit WHERE id = 1"); n != 1 {
		t.Error("a replayed entry deleted the new unit 1")
	}
	pgtest.Exec(t, s.db.DSN, "DELETE FROM catalog_unit WHERE id = 1")
	if after := snapshot(t, s.pool); after != before {
		t.Errorf("replay changed the data:\n%s\nwant\n%s", after, before)
	}
	if n := s.obs.get("delete public.catalog_unit gone"); n != 2 {
		t.Errorf("replayed entries reported gone: %d, want 2 (%v)", n, s.obs.results)
	}
}

// snapshot prints every row of the tables the tests change and the dead
// letters (by entry id and reason), sorted.
func snapshot(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `SELECT string_agg(x, E'\n' ORDER BY x) FROM (
  SELECT 'unit ' || to_jsonb(u)::text FROM catalog_unit u UNION ALL
  SELECT 'marker ' || to_jsonb(m)::text FROM catalog_marker m UNION ALL
  SELECT 'artist ' || to_jsonb(m)::text FROM catalog_artist m UNION ALL
  SELECT 'outcome ' || to_jsonb(m)::text FROM catalog_outcome m UNION ALL
  SELECT 'report ' || to_jsonb(r)::text FROM userapp_report r UNION ALL
  SELECT 'line ' || to_jsonb(l)::text FROM userapp_reportline l UNION ALL
  SELECT 'comment ' || to_jsonb(c)::text FROM userapp_comment c UNION ALL
  SELECT 'album ' || to_jsonb(c)::text FROM userapp_album c UNION ALL
  SELECT 'song ' || to_jsonb(c)::text FROM userapp_song c UNION ALL
  SELECT 'queue ' || table_name || pk::text FROM pgoutpost.delete_queue UNION ALL
  SELECT 'outbox ' || table_name || pk::text || op FROM pgoutpost.denormalize_queue WHERE op = 'delete' UNION ALL
  SELECT 'dead ' || entry_id::text || ' ' || error FROM pgoutpost.dead_letter) s(x)`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDeletedDenormalizeRowWritesOutbox(t *testing.T) {
	s := newSlave(t)
	pgtest.Exec(t, s.db.DSN, `
INSERT INTO catalog_outcome (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c');
INSERT INTO catalog_outcome_sub_outcomes (id, from_outcome_id, to_outcome_id) VALUES (5, 1, 2), (6, 3, 1);
INSERT INTO userapp_report (id, title, unit_id, outcome_id) SELECT 1, 'r', 1, 1 WHERE false;`)
	p := s.processor(ProcessorOptions{})
	apply(t, p, txnOf(del(t, s.pool, 1, "catalog_outcome", 1)))
	got := entries(t, s.pool, registry.DenormalizeQueue.Table())
	var desc []string
	for _, e := range got {
		desc = append(desc, e.Table+" "+e.PK+" "+e.Op)
	}
	want := []string{
		`public.catalog_outcome {"id": 1} delete`,
		`public.catalog_outcome_sub_outcomes {"id": 5} delete`,
		`public.catalog_outcome_sub_outcomes {"id": 6} delete`,
	}
	if strings.Join(sortedCopy(desc), "\n") != strings.Join(want, "\n") {
		t.Errorf("outbox rows:\n%s\nwant\n%s", strings.Join(desc, "\n"), strings.Join(want, "\n"))
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestPendingGroupsByTransaction(t *testing.T) {
	ctx := context.Background()
	s := newSlave(t)
	p := s.processor(ProcessorOptions{})
	var want []string
	for x := int64(1); x <= 3; x++ {
		for i := 0; i < 3; i++ {
			e := del(t, s.pool, x, "catalog_unit", int(x)*10+i)
			want = append(want, fmt.Sprint(x, " ", e.ID))
		}
		e := enqueue(t, s.pool, registry.DenormalizeQueue, x, "public.catalog_outcome", `{"id": 1}`, OpUpdate)
		want = append(want, fmt.Sprint(x, " ", e.ID))
	}
	// A limit inside the second transaction still returns all of it.
	txns, err := p.Pending(ctx, 6)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tx := range txns {
		for _, e := range tx.Entries {
			if e.Xid != tx.Entries[0].Xid {
				t.Errorf("a Txn mixes xids %d and %d", tx.Entries[0].Xid, e.Xid)
			}
			got = append(got, fmt.Sprint(e.Xid, " ", e.ID))
		}
		if !tx.CommitTime.Equal(tx.Entries[0].CreatedAt) {
			t.Errorf("CommitTime %v, want the first entry's created_at %v", tx.CommitTime, tx.Entries[0].CreatedAt)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want[:8], "\n") {
		t.Errorf("pending:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want[:8], "\n"))
	}
}

func TestDeferredConstraintAtCommitGoesToDeadLetter(t *testing.T) {
	fkCheckModes(t, func(t *testing.T, s *slaveEnv) {
		pgtest.Exec(t, s.db.DSN, unitFixture)
		// Configure userapp_report.unit_id as DO_NOTHING: Django leaves the
		// report, and its deferred foreign key fails at COMMIT.
		unit := s.reg.Table(registry.TableName{Schema: "public", Name: "catalog_unit"})
		for _, fk := range unit.Incoming {
			if fk.From.Name == "userapp_report" {
				fk.OnDelete = registry.OnDelete{Rule: registry.DoNothing}
			}
		}
		p := s.processor(ProcessorOptions{})
		// Unit 1 has reports, unit 99 is gone, a unit without reports goes.
		pgtest.Exec(t, s.db.DSN, "INSERT INTO catalog_unit (id, name) VALUES (4, 'u4')")
		withReports := del(t, s.pool, 1, "catalog_unit", 1)
		plain := del(t, s.pool, 1, "catalog_unit", 4)
		apply(t, p, txnOf(withReports, plain), txnOf(del(t, s.pool, 2, "catalog_unit", 99)))
		dl := deadLetters(t, s.pool)
		if len(dl) != 1 || !strings.Contains(dl[withReports.ID], "foreign key") || !strings.Contains(dl[withReports.ID], "userapp_report") {
			t.Errorf("dead letters %v, want unit 1's with the violated foreign key of userapp_report", dl)
		}
		if n := count(t, s.pool, "SELECT count(*) FROM catalog_unit WHERE id IN (1, 4)"); n != 1 {
			t.Errorf("units 1 and 4: %d left, want 1 (unit 1)", n)
		}
	})
}

// TestHugeKeyReasonIsCapped: an entry with a 1 MB key is dead-lettered with
// a reason of a few kilobytes; the whole entry stays in dead_letter.entry.
func TestHugeKeyReasonIsCapped(t *testing.T) {
	s := newSlave(t)
	pgtest.Exec(t, s.db.DSN, unitFixture)
	p := s.processor(ProcessorOptions{})
	huge := `{"id": "` + strings.Repeat("é", 500000) + `"}`
	e := enqueue(t, s.pool, registry.DeleteQueue, 1, "public.catalog_unit", huge, OpDelete)
	apply(t, p, txnOf(e))
	var reasonLen, entryLen int
	if err := s.pool.QueryRow(context.Background(), "SELECT octet_length(error), octet_length(entry::text) FROM pgoutpost.dead_letter WHERE entry_id = $1", e.ID).Scan(&reasonLen, &entryLen); err != nil {
		t.Fatal(err)
	}
	if reasonLen > maxReason+200 || entryLen < 1000000 {
		t.Errorf("reason %d bytes (cap %d), entry %d bytes", reasonLen, maxReason, entryLen)
	}
}
