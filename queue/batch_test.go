package queue

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// scenario is random data of the reference schema where deletes often meet
// PROTECT (reports on markers) and RESTRICT (songs on albums of other
// artists), and a random sequence of master transactions deleting units,
// markers and artists (some missing, some malformed).
type scenario struct {
	data string
	txns [][][3]string // per transaction, entries of (table, pk, queue)
}

func randomScenario(r *rand.Rand) scenario {
	var b strings.Builder
	b.WriteString("INSERT INTO catalog_category (id, name) VALUES (1, 'c');\n")
	for u := 1; u <= 8; u++ {
		fmt.Fprintf(&b, "INSERT INTO catalog_unit (id, name, category_id) VALUES (%d, 'u', 1);\n", u)
		for m := 0; m < 2; m++ {
			fmt.Fprintf(&b, "INSERT INTO catalog_marker (id, name, unit_id) VALUES (%d, 'm', %d);\n", u*10+m, u)
		}
	}
	for rep := 1; rep <= 10; rep++ {
		marker := "NULL"
		if r.IntN(8) == 0 {
			u := 1 + r.IntN(8)
			marker = fmt.Sprint(u*10 + r.IntN(2))
		}
		outcome := "NULL"
		if r.IntN(2) == 0 {
			outcome = fmt.Sprint(1 + r.IntN(2))
		}
		fmt.Fprintf(&b, "INSERT INTO userapp_report (id, title, unit_id, marker_id, outcome_id) VALUES (%d, 'r', %d, %s, %s);\n", rep, 1+r.IntN(8), marker, outcome)
		fmt.Fprintf(&b, "INSERT INTO userapp_reportline (id, text, report_id) VALUES (%d, 'l', %d);\n", rep, rep)
	}
	for a := 1; a <= 4; a++ {
		fmt.Fprintf(&b, "INSERT INTO catalog_artist (id, name) VALUES (%d, 'a');\n", a)
		fmt.Fprintf(&b, "INSERT INTO userapp_album (id, name, artist_id) VALUES (%d, 'x', %d);\n", a, a)
	}
	for s := 1; s <= 6; s++ {
		fmt.Fprintf(&b, "INSERT INTO userapp_song (id, name, artist_id, album_id) VALUES (%d, 's', %d, %d);\n", s, 1+r.IntN(4), 1+r.IntN(4))
	}
	sc := scenario{data: b.String()}
	for range 4 + r.IntN(8) {
		var txn [][3]string
		for range 1 + r.IntN(3) {
			var e [3]string
			switch r.IntN(13) {
			case 0, 1, 7, 8, 9:
				e = [3]string{"public.catalog_unit", fmt.Sprintf(`{"id": %d}`, 1+r.IntN(9)), string(registry.DeleteQueue)}
			case 2:
				u := 1 + r.IntN(8)
				e = [3]string{"public.catalog_marker", fmt.Sprintf(`{"id": %d}`, u*10+r.IntN(2)), string(registry.DeleteQueue)}
			case 3, 4, 10:
				e = [3]string{"public.catalog_artist", fmt.Sprintf(`{"id": %d}`, 1+r.IntN(4)), string(registry.DeleteQueue)}
			case 5:
				e = [3]string{"public.catalog_outcome", fmt.Sprintf(`{"id": %d}`, 1+r.IntN(2)), string(registry.DeleteQueue)}
			case 11:
				e = [3]string{"public.catalog_unit", `{"id": "bad"}`, string(registry.DeleteQueue)} // fails the deletion
			default:
				e = [3]string{"public.catalog_unit", `{"pk": 1}`, string(registry.DeleteQueue)} // not a key: leaves its transaction at once
			}
			txn = append(txn, e)
		}
		sc.txns = append(sc.txns, txn)
	}
	return sc
}

// run loads the scenario into a fresh slave database, applies it with the
// given batch size and returns the final state.
func (sc scenario) run(t *testing.T, batch int) string {
	s := newSlave(t)
	pgtest.Exec(t, s.db.DSN, "INSERT INTO catalog_outcome (id, name) VALUES (1, 'o'), (2, 'p');\n"+sc.data)
	p := s.processor(ProcessorOptions{BatchSize: batch})
	var txns []Txn
	for i, tx := range sc.txns {
		var es []Entry
		for _, e := range tx {
			es = append(es, enqueue(t, s.pool, registry.Queue(e[2]), int64(i+1), e[0], e[1], OpDelete))
		}
		txns = append(txns, txnOf(es...))
	}
	apply(t, p, txns...)
	return comparable(t, s.pool)
}

// comparable is snapshot without the entry ids, which differ between databases.
func comparable(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var dead string
	err := pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(x, E'\n' ORDER BY x), '') FROM (
  SELECT xid || ' ' || table_name || pk::text || ' ' || regexp_replace(error, '[0-9a-f]{8}-[0-9a-f-]{27}', 'ID', 'g')
  FROM pgoutpost.dead_letter) s(x)`).Scan(&dead)
	if err != nil {
		t.Fatal(err)
	}
	var data string
	if err := pool.QueryRow(context.Background(), `SELECT string_agg(x, E'\n' ORDER BY x) FROM (
  SELECT 'unit ' || to_jsonb(u)::text FROM catalog_unit u UNION ALL
  SELECT 'marker ' || to_jsonb(m)::text FROM catalog_marker m UNION ALL
  SELECT 'artist ' || to_jsonb(m)::text FROM catalog_artist m UNION ALL
  SELECT 'report ' || to_jsonb(r)::text FROM userapp_report r UNION ALL
  SELECT 'line ' || to_jsonb(l)::text FROM userapp_reportline l UNION ALL
  SELECT 'album ' || to_jsonb(c)::text FROM userapp_album c UNION ALL
  SELECT 'song ' || to_jsonb(c)::text FROM userapp_song c UNION ALL
  SELECT 'outcome ' || to_jsonb(c)::text FROM catalog_outcome c UNION ALL
  SELECT 'queued ' || count(*) FROM pgoutpost.delete_queue UNION ALL
  SELECT 'outbox ' || table_name || pk::text FROM pgoutpost.denormalize_queue) s(x)`).Scan(&data); err != nil {
		t.Fatal(err)
	}
	return data + "\n--- dead letters\n" + dead
}

// TestBatchingKeepsOutcome applies random sequences of master transactions
// once in one batch and once transaction by transaction, and compares the
// final states (data, dead letters with their reasons, outbox).
func TestBatchingKeepsOutcome(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			sc := randomScenario(rand.New(rand.NewPCG(seed, 42)))
			batched := sc.run(t, 1000)
			single := sc.run(t, 1)
			if batched != single {
				t.Errorf("batched:\n%s\n\ntransaction by transaction:\n%s", batched, single)
			}
			_, dead, _ := strings.Cut(batched, "--- dead letters\n")
			t.Logf("%d transactions, %d dead letters", len(sc.txns), strings.Count(dead, "\n")+min(len(dead), 1))
		})
	}
}

// TestLaterTransactionDoesNotRescueEarlier: artist 2's deletion is restricted
// by song 2, which artist 1's deletion in the next master transaction
// deletes. One by one, the first fails (song 2 still exists then); a batch
// must not let the second rescue it.
func TestLaterTransactionDoesNotRescueEarlier(t *testing.T) {
	s := newSlave(t)
	pgtest.Exec(t, s.db.DSN, `
INSERT INTO catalog_artist (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c');
INSERT INTO userapp_album (id, name, artist_id) VALUES (1, 'x', 1), (2, 'y', 2), (3, 'z', 3);
INSERT INTO userapp_song (id, name, artist_id, album_id) VALUES (1, 's', 1, 1), (2, 't', 1, 2), (3, 'u', 3, 3);`)
	p := s.processor(ProcessorOptions{BatchSize: 100})
	a2 := del(t, s.pool, 1, "catalog_artist", 2)
	a1 := del(t, s.pool, 2, "catalog_artist", 1)
	a3 := del(t, s.pool, 3, "catalog_artist", 3)
	apply(t, p, txnOf(a2), txnOf(a1), txnOf(a3))
	if dl := deadLetters(t, s.pool); len(dl) != 1 || !strings.Contains(dl[a2.ID], "restricted") {
		t.Errorf("dead letters %v, want artist 2's (restricted)", dl)
	}
	if n := count(t, s.pool, "SELECT count(*) FROM catalog_artist"); n != 1 {
		t.Errorf("%d artists left, want 1 (artist 2)", n)
	}
}

// TestLaterTransactionDoesNotRescueEarlierAtCommit: report 100 references unit
// 1 through a DO_NOTHING relation (a deferred foreign key) and marker 20
// through a CASCADE one. Deleting unit 1 alone fails at COMMIT; the next
// master transaction deletes marker 20 and with it report 100. However the
// entries are batched, the first must fail as it does on its own: no shared
// COMMIT may let the second clear its dangling reference.
func TestLaterTransactionDoesNotRescueEarlierAtCommit(t *testing.T) {
	for _, batch := range []int{1, 100} {
		t.Run(fmt.Sprint("batch ", batch), func(t *testing.T) {
			s := newSlave(t)
			for _, fk := range s.reg.Table(registry.TableName{Schema: "public", Name: "userapp_report"}).Outgoing {
				switch fk.FromColumns[0] {
				case "unit_id":
					fk.OnDelete = registry.OnDelete{Rule: registry.DoNothing}
				case "marker_id":
					fk.OnDelete = registry.OnDelete{Rule: registry.Cascade}
				}
			}
			pgtest.Exec(t, s.db.DSN, `
INSERT INTO catalog_unit (id, name) VALUES (1, 'u'), (2, 'v');
INSERT INTO catalog_marker (id, name, unit_id) VALUES (20, 'm', 2);
INSERT INTO userapp_report (id, title, unit_id, marker_id) VALUES (100, 'r', 1, 20);`)
			p := s.processor(ProcessorOptions{BatchSize: batch})
			u1 := del(t, s.pool, 1, "catalog_unit", 1)
			m20 := del(t, s.pool, 2, "catalog_marker", 20)
			apply(t, p, txnOf(u1), txnOf(m20))
			if dl := deadLetters(t, s.pool); len(dl) != 1 || !strings.Contains(dl[u1.ID], "userapp_report") {
				t.Errorf("dead letters %v, want unit 1's (a foreign key of userapp_report at commit)", dl)
			}
			if n := count(t, s.pool, "SELECT count(*) FROM catalog_unit WHERE id = 1"); n != 1 {
				t.Error("unit 1 was deleted")
			}
			if n := count(t, s.pool, "SELECT count(*) FROM userapp_report"); n != 0 {
				t.Error("report 100 was not deleted with marker 20")
			}
		})
	}
}

// TestBadEntryLeavesItsTransactionWhole: a master transaction deletes
// artists 2 and 1 and carries an entry whose key names no key column. The malformed one is
// dead-lettered; the two artists are still one deletion, in which song 2
// (restricting album 2) is deleted through artist 1, as Django's
// QuerySet.delete() over both would. Applied one by one, artist 2 would fail.
func TestBadEntryLeavesItsTransactionWhole(t *testing.T) {
	for _, large := range []bool{false, true} {
		t.Run(fmt.Sprint("large ", large), func(t *testing.T) { testBadEntryLeavesItsTransactionWhole(t, large) })
	}
}

func testBadEntryLeavesItsTransactionWhole(t *testing.T, large bool) {
	s := newSlave(t)
	pgtest.Exec(t, s.db.DSN, `
INSERT INTO catalog_artist (id, name) VALUES (1, 'a'), (2, 'b');
INSERT INTO userapp_album (id, name, artist_id) VALUES (1, 'x', 1), (2, 'y', 2);
INSERT INTO userapp_song (id, name, artist_id, album_id) VALUES (1, 's', 1, 1), (2, 't', 1, 2);`)
	p := s.processor(ProcessorOptions{BatchSize: 100})
	bad := enqueue(t, s.pool, registry.DeleteQueue, 1, "public.catalog_artist", `{"artist": 2}`, OpDelete) // no such key column
	a2 := del(t, s.pool, 1, "catalog_artist", 2)
	a1 := del(t, s.pool, 1, "catalog_artist", 1)
	txn := txnOf(bad, a2, a1)
	if large {
		txn = Txn{CommitTime: time.Now(), Large: true, Xid: 1, Count: 3}
	}
	apply(t, p, txn)
	if dl := deadLetters(t, s.pool); len(dl) != 1 || dl[bad.ID] == "" {
		t.Errorf("dead letters %v, want only the malformed entry's", dl)
	}
	if n := count(t, s.pool, "SELECT count(*) FROM catalog_artist"); n != 0 {
		t.Errorf("%d artists left, want none", n)
	}
}

// TestLargeTransactionKeepsOutcome applies random sequences of master
// transactions once as small transactions (entries in memory) and once as
// large ones (entries read from the queue tables, one spilled deletion each),
// and compares the final states: data, dead letters with their reasons,
// outbox.
func TestLargeTransactionKeepsOutcome(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			sc := randomScenario(rand.New(rand.NewPCG(seed, 42)))
			small := sc.run(t, 1)
			large := sc.runLarge(t)
			if small != large {
				t.Errorf("small:\n%s\n\nlarge:\n%s", small, large)
			}
		})
	}
}

// runLarge is run with every transaction handed over as a large Txn.
func (sc scenario) runLarge(t *testing.T) string {
	s := newSlave(t)
	pgtest.Exec(t, s.db.DSN, "INSERT INTO catalog_outcome (id, name) VALUES (1, 'o'), (2, 'p');\n"+sc.data)
	p := s.processor(ProcessorOptions{BatchSize: 2})
	var txns []Txn
	for i, tx := range sc.txns {
		for _, e := range tx {
			enqueue(t, s.pool, registry.Queue(e[2]), int64(i+1), e[0], e[1], OpDelete)
		}
		txns = append(txns, Txn{CommitTime: time.Now(), Large: true, Xid: int64(i + 1), Count: len(tx)})
	}
	apply(t, p, txns...)
	return comparable(t, s.pool)
}
