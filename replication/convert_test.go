package replication

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

// legacyNames is the earlier two-subscription layout of p's names: a data
// subscription and a queue subscription apart from it.
func legacyNames(n Names) Names {
	l := n
	l.Legacy = LegacyNames{}
	l.Subs = []SubscriptionSpec{
		{Name: n.Legacy.Data, Publications: []string{n.System.Name, n.Delete.Name}},
		{Name: n.Legacy.Queue, Publications: []string{n.Queue.Name}, NoCopy: []string{n.Queue.Name}, SynchronousCommit: true},
	}
	return l
}

// queueReader stands in for the sidecar: it takes the rows out of the
// slave's delete queue as they arrive and counts how often it saw each id.
type queueReader struct {
	mu    sync.Mutex
	seen  map[string]int
	types map[string]int // jsonb_typeof(pk) of the rows read
}

func (r *queueReader) run(ctx context.Context, pool *pgxpool.Pool) {
	for ctx.Err() == nil {
		rows, err := pool.Query(ctx, "DELETE FROM pgoutpost.delete_queue RETURNING id::text, jsonb_typeof(pk)")
		if err == nil {
			for rows.Next() {
				var id, typ string
				if rows.Scan(&id, &typ) == nil {
					r.mu.Lock()
					r.seen[id]++
					r.types[typ]++
					r.mu.Unlock()
				}
			}
			rows.Close()
		}
		time.Sleep(20 * time.Millisecond) // a poll interval, as the sidecar's sweep has one
	}
}

// count is the number of distinct queue rows read so far.
func (r *queueReader) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// TestConvertLegacyLayout converts a slave whose queue subscription ran
// ahead of its blocked data subscription, then fell behind it, while the
// master deletes rows throughout and a reader takes the queue rows as the
// sidecar would: every master queue row reaches the reader exactly once,
// the data is the master's, and one subscription is left.
func TestConvertLegacyLayout(t *testing.T) {
	reg := testRegistry(nil)
	p := newPair(t, reg)
	p.publish(t, reg)
	old := legacyNames(p.names)
	ctx := ctxT(t, 4*time.Minute)
	if _, err := CreateSubscriptions(ctx, p.spool, old, p.master.ConnInfo()); err != nil {
		t.Fatal(err)
	}
	if err := WaitReady(ctx, p.spool, old, ioDiscard{}, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo()); !errors.Is(err, ErrLegacyLayout) {
		t.Fatalf("create on the legacy layout = %v, want ErrLegacyLayout", err)
	}

	reader := &queueReader{seen: map[string]int{}, types: map[string]int{}}
	rctx, stopReader := context.WithCancel(ctx)
	readerDone := make(chan struct{})
	go func() { defer close(readerDone); reader.run(rctx, p.spool) }()
	defer func() { stopReader(); <-readerDone }()

	// The master writes throughout: a cat change and a unit created and
	// deleted in each transaction.
	wctx, stopWriter := context.WithCancel(ctx)
	writerDone := make(chan int)
	pgtest.Exec(t, p.master.DSN, "INSERT INTO cat VALUES (1, 'c0')")
	go func() {
		n := 0
		defer func() { writerDone <- n }()
		for wctx.Err() == nil {
			n++
			_, err := p.mpool.Exec(wctx, fmt.Sprintf("UPDATE cat SET name = 'c%d' WHERE id = 1; INSERT INTO unit VALUES (%d, 1, 'u'); DELETE FROM unit WHERE id = %d", n, n, n))
			if err != nil && wctx.Err() == nil {
				t.Errorf("writer: %v", err)
				return
			}
			time.Sleep(5 * time.Millisecond) // paces the workload, no wait for anything
		}
	}()
	// written is the writer's last transaction that pool's cat 1 shows.
	written := func(ctx context.Context, pool *pgxpool.Pool) (int, error) {
		var n int
		err := pool.QueryRow(ctx, "SELECT substr(name, 2)::int FROM cat WHERE id = 1").Scan(&n)
		return n, err
	}

	// The queue subscription runs ahead: the data one stops on a column the
	// slave lacks.
	pgtest.Exec(t, p.master.DSN, "ALTER TABLE cat ADD COLUMN extra text")
	eventually(t, "the data subscription to fail", func(ctx context.Context) (bool, error) {
		var n int64
		err := p.spool.QueryRow(ctx, "SELECT coalesce(sum(apply_error_count), 0) FROM pg_stat_subscription_stats WHERE subname = $1", old.Subs[0].Name).Scan(&n)
		return n > 0, err
	})
	ahead := reader.count() + 20
	pgtest.Eventually(t, "queue rows of transactions the data subscription has not applied", func() bool { return reader.count() >= ahead })
	pgtest.Exec(t, p.slave.DSN, "ALTER TABLE cat ADD COLUMN extra text")
	// Then it falls behind: the queue subscription is stopped while the
	// data one applies transactions the master commits after that.
	pgtest.Exec(t, p.slave.DSN, "ALTER SUBSCRIPTION "+ident(old.Subs[1].Name)+" DISABLE")
	stopped, err := written(ctx, p.mpool)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the data subscription to apply writes made after the queue subscription stopped", func(ctx context.Context) (bool, error) {
		n, err := written(ctx, p.spool)
		return n >= stopped+20, err
	})

	res, err := UpdateSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo())
	if err != nil {
		t.Fatalf("convert: %v (results %+v)", err, res)
	}
	t.Logf("conversion: %+v", res)
	if len(res) == 0 || !strings.HasPrefix(res[0].Action, "queue rows of ") {
		t.Errorf("the conversion copied no queue rows between the positions: the test did not make a gap")
	}
	// The writer goes on after the conversion, through the merged subscription.
	converted, err := written(ctx, p.mpool)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the merged subscription to apply writes made after the conversion", func(ctx context.Context) (bool, error) {
		n, err := written(ctx, p.spool)
		return n >= converted+20, err
	})
	stopWriter()
	writes := <-writerDone
	if writes < 20 {
		t.Fatalf("the writer made only %d transactions", writes)
	}

	// Everything the master queued reaches the reader exactly once.
	var masterIDs []string
	eventually(t, "every master queue row read on the slave", func(ctx context.Context) (bool, error) {
		rows, err := p.mpool.Query(ctx, "SELECT id::text FROM pgoutpost.delete_queue")
		if err != nil {
			return false, err
		}
		masterIDs = masterIDs[:0]
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return false, err
			}
			masterIDs = append(masterIDs, id)
		}
		reader.mu.Lock()
		defer reader.mu.Unlock()
		for _, id := range masterIDs {
			if reader.seen[id] == 0 {
				return false, rows.Err()
			}
		}
		return true, rows.Err()
	})
	reader.mu.Lock()
	dup := 0
	for _, n := range reader.seen {
		if n > 1 {
			dup++
		}
	}
	if dup > 0 || len(reader.seen) != len(masterIDs) {
		t.Errorf("queue rows: master %d, read on the slave %d, read twice %d", len(masterIDs), len(reader.seen), dup)
	}
	// Copied rows are the master's rows, keys as JSON objects.
	if len(reader.types) != 1 || reader.types["object"] == 0 {
		t.Errorf("the slave's queue rows have keys of JSON types %v, want objects only", reader.types)
	}
	reader.mu.Unlock()
	// The writer's last transaction may have been cancelled with it: the
	// slave must hold what the master holds.
	last, err := queryString(ctx, p.mpool, "SELECT name FROM cat WHERE id = 1")
	if err != nil || (last != fmt.Sprintf("c%d", writes) && last != fmt.Sprintf("c%d", writes-1)) {
		t.Fatalf("the master's cat 1 is %q (%v) after %d writes", last, err, writes)
	}
	waitValue(t, p.spool, last, "SELECT name FROM cat WHERE id = 1")

	// One subscription, enabled, on the data subscription's slot; the
	// legacy ones and the queue slot are gone.
	var subs []string
	rows, err := p.spool.Query(ctx, "SELECT subname || ':' || subenabled || ':' || subslotname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	if want := p.names.Subs[0].Name + ":true:" + old.Subs[0].Name; len(subs) != 1 || subs[0] != want {
		t.Errorf("subscriptions %v, want [%s]", subs, want)
	}
	if rowExists(t, p.mpool, "SELECT FROM pg_replication_slots WHERE slot_name = $1", old.Subs[1].Name) {
		t.Errorf("the legacy queue slot is left on the master")
	}
	// A second update is a plain refresh.
	if res, err := UpdateSubscriptions(ctx, p.spool, p.names, p.master.ConnInfo()); err != nil || countAction(res, "refreshed") != 1 {
		t.Errorf("update after the conversion: %+v, %v", res, err)
	}
}

type ioDiscard struct{}

func (ioDiscard) Write(b []byte) (int, error) { return len(b), nil }
