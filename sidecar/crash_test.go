package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/decoder"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

// The crash tests run a producer that commits numbered batches one after the
// other (so batch order is commit order) while a consumer is stopped at random
// points between receiving and acknowledging, and restarted. They check:
//   - every batch is handled at least once;
//   - the slot never confirmed past a batch that was not acknowledged
//     (checked against samples of confirmed_flush_lsn taken at each stop);
//   - no gap: each run of the consumer starts at or before the first batch not
//     yet acknowledged and then receives consecutive batches.

const (
	crashBatches = 120
	crashRounds  = 20
)

// produce commits batches 1..n: mostly small, every 25th big enough to be
// streamed, and reports the first error (or nil) on the returned channel.
func produce(ctx context.Context, dsn string, n int) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			for b := 1; b <= n; b++ {
				rows := int64(1 + rand.IntN(5))
				if b%25 == 0 {
					rows = 2000
				}
				from := int64(b) * 10000
				if _, err := conn.Exec(ctx, ins(b, from, from+rows-1)); err != nil {
					return fmt.Errorf("batch %d: %w", b, err)
				}
				time.Sleep(time.Duration(rand.IntN(8)) * time.Millisecond)
			}
			return nil
		}()
	}()
	return done
}

// sample is the slot's confirmed position at a stop and the batches
// acknowledged (or durably handled) by then.
type sample struct {
	confirmed decoder.LSN
	done      map[int]bool
}

// checkSamples checks that no sample's confirmed position passes a batch
// that was not done at that time.
func checkSamples(t *testing.T, samples []sample, commitLSN map[int]decoder.LSN) {
	t.Helper()
	for i, s := range samples {
		for b, c := range commitLSN {
			if c < s.confirmed && !s.done[b] {
				t.Errorf("stop %d: slot confirmed %s past batch %d (commit %s) that was not acknowledged", i, s.confirmed, b, c)
			}
		}
	}
}

// prefix returns the highest b with 1..b all in done.
func prefix(done map[int]bool) int {
	b := 0
	for done[b+1] {
		b++
	}
	return b
}

func TestStreamCrashSafetyCancel(t *testing.T) {
	f := newFixture(t)
	f.createSlot(t)
	ctx, cancelProducer := context.WithCancel(context.Background())
	defer cancelProducer()
	produced := produce(ctx, f.db.DSN, crashBatches)

	var (
		mu        sync.Mutex
		handled   = map[int]int{} // batch → times handled
		acked     = map[int]bool{}
		commitLSN = map[int]decoder.LSN{}
		samples   []sample
		producing = true
	)
	for round := 0; ; round++ {
		select {
		case err := <-produced:
			if err != nil {
				t.Fatalf("producer: %v", err)
			}
			producing = false
		default:
		}
		final := !producing && round >= crashRounds
		rctx, stop := context.WithCancel(context.Background())
		stopAfter := 1 + rand.IntN(12)
		var (
			s        *Stream
			dec      = decoder.NewDecoder()
			pending  []int
			lastEnd  decoder.LSN
			first    = true
			prev     int
			roundErr error
		)
		fail := func(format string, args ...any) error {
			roundErr = fmt.Errorf(format, args...)
			stop()
			return roundErr
		}
		cfg := f.config(func(ctx context.Context, tx *Tx) error {
			d, err := decodeTx(dec, tx)
			if err != nil {
				return err
			}
			if len(d.Batches) != 1 {
				return fail("transaction %d holds batches %v", tx.Xid, d.Batches)
			}
			b := d.Batches[0]
			mu.Lock()
			defer mu.Unlock()
			if first {
				if p := prefix(acked); b > p+1 {
					return fail("round %d started at batch %d, but batch %d was never acknowledged", round, b, p+1)
				}
			} else if b != prev+1 {
				return fail("round %d: batch %d after %d", round, b, prev)
			}
			first, prev = false, b
			if c, ok := commitLSN[b]; ok && c != tx.CommitLSN {
				return fail("batch %d: commit LSN %s, earlier %s", b, tx.CommitLSN, c)
			}
			commitLSN[b] = tx.CommitLSN
			handled[b]++
			pending = append(pending, b)
			lastEnd = tx.EndLSN
			// Acknowledge now, later, or never (stopped first).
			if final || rand.IntN(3) == 0 {
				s.Ack(lastEnd)
				for _, p := range pending {
					acked[p] = true
				}
				pending = pending[:0]
			}
			if !final {
				if stopAfter--; stopAfter == 0 {
					stop()
				}
			}
			return nil
		})
		var err error
		if s, err = NewStream(cfg); err != nil {
			t.Fatal(err)
		}
		if !final {
			time.AfterFunc(time.Duration(50+rand.IntN(400))*time.Millisecond, stop)
		} else {
			go func() {
				for rctx.Err() == nil {
					mu.Lock()
					all := prefix(acked) == crashBatches
					mu.Unlock()
					if all {
						stop()
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
		err = s.Run(rctx)
		stop()
		if roundErr != nil {
			t.Fatal(roundErr)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: %v", round, err)
		}
		mu.Lock()
		done := make(map[int]bool, len(acked))
		for b := range acked {
			done[b] = true
		}
		mu.Unlock()
		samples = append(samples, sample{confirmed: f.confirmed(t), done: done})
		if final {
			break
		}
	}
	for b := 1; b <= crashBatches; b++ {
		if handled[b] == 0 {
			t.Errorf("batch %d never handled", b)
		}
	}
	checkSamples(t, samples, commitLSN)
	redelivered := 0
	for _, n := range handled {
		redelivered += n - 1
	}
	t.Logf("%d rounds, %d batches, %d redeliveries", len(samples), crashBatches, redelivered)
}

// The killed-child variant: the test binary runs itself as a consumer that
// records each batch in the table "handled" (durably, before acknowledging)
// and is SIGKILLed at random points.

const (
	childEnv     = "PGOUTPOST_STREAM_CHILD"
	childDSNEnv  = "PGOUTPOST_STREAM_CHILD_DSN"
	childSlotEnv = "PGOUTPOST_STREAM_CHILD_SLOT"
	childDirEnv  = "PGOUTPOST_STREAM_CHILD_SPILL"
)

const handledDDL = `CREATE TABLE handled (batch int NOT NULL, pid int NOT NULL, seq int NOT NULL,
	commit_lsn pg_lsn NOT NULL, end_lsn pg_lsn NOT NULL)`

func childMain() int {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dsn := os.Getenv(childDSNEnv)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		log.Error("connect", "err", err)
		return 1
	}
	var (
		s   *Stream
		dec = decoder.NewDecoder()
		seq int
	)
	s, err = NewStream(StreamConfig{
		DSN:               dsn,
		Slot:              os.Getenv(childSlotEnv),
		Publications:      []string{"items_pub"},
		StatusInterval:    200 * time.Millisecond,
		FlushDelay:        10 * time.Millisecond,
		HeartbeatInterval: -1,
		ReconnectMin:      50 * time.Millisecond,
		ReconnectMax:      500 * time.Millisecond,
		SpillThreshold:    64 << 10,
		SpillDir:          os.Getenv(childDirEnv),
		Logger:            log,
		Consumer: func(ctx context.Context, tx *Tx) error {
			d, err := decodeTx(dec, tx)
			if err != nil {
				return err
			}
			for _, b := range d.Batches {
				seq++
				if _, err := conn.Exec(ctx, "INSERT INTO handled VALUES ($1, $2, $3, $4::text::pg_lsn, $5::text::pg_lsn)",
					b, os.Getpid(), seq, tx.CommitLSN.String(), tx.EndLSN.String()); err != nil {
					return err
				}
			}
			if rand.IntN(2) == 0 {
				s.Ack(tx.EndLSN) // otherwise with a later one, or never
			}
			return nil
		},
	})
	if err != nil {
		log.Error("stream", "err", err)
		return 1
	}
	err = s.Run(ctx)
	log.Error("stream stopped", "err", err)
	return 1
}

func TestStreamCrashSafetyKill(t *testing.T) {
	f := newFixture(t)
	f.createSlot(t)
	conn := connect(t, f.db.DSN)
	if _, err := conn.Exec(context.Background(), handledDDL); err != nil {
		t.Fatal(err)
	}
	ctx, cancelProducer := context.WithCancel(context.Background())
	defer cancelProducer()
	produced := produce(ctx, f.db.DSN, crashBatches)
	spill := t.TempDir()

	handledBatches := func() map[int]bool {
		rows, _ := conn.Query(context.Background(), "SELECT DISTINCT batch FROM handled")
		bs, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			t.Fatal(err)
		}
		m := map[int]bool{}
		for _, b := range bs {
			m[int(b)] = true
		}
		return m
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", childDSNEnv+"="+f.db.DSN, childSlotEnv+"="+f.slot, childDirEnv+"="+spill)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	kill := func(cmd *exec.Cmd) {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}

	var (
		samples []sample
		pids    []int
	)
	producing := true
	for round := 0; producing || round < crashRounds; round++ {
		select {
		case err := <-produced:
			if err != nil {
				t.Fatalf("producer: %v", err)
			}
			producing = false
		default:
		}
		cmd := start()
		pids = append(pids, cmd.Process.Pid)
		time.Sleep(time.Duration(100+rand.IntN(500)) * time.Millisecond)
		kill(cmd)
		samples = append(samples, sample{confirmed: f.confirmed(t), done: handledBatches()})
	}
	// A last run to the end, then one more stop.
	cmd := start()
	pids = append(pids, cmd.Process.Pid)
	t.Cleanup(func() { kill(cmd) })
	pgtest.Eventually(t, "every batch to be handled", func() bool { return len(handledBatches()) == crashBatches })
	kill(cmd)
	samples = append(samples, sample{confirmed: f.confirmed(t), done: handledBatches()})

	type row struct {
		batch, pid, seq int
		commit          decoder.LSN
	}
	rows, _ := conn.Query(context.Background(), "SELECT batch, pid, seq, commit_lsn::text FROM handled ORDER BY pid, seq")
	var all []row
	for rows.Next() {
		var b, pid, seq int32
		var c string
		if err := rows.Scan(&b, &pid, &seq, &c); err != nil {
			t.Fatal(err)
		}
		l, err := pglogrepl.ParseLSN(c)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, row{int(b), int(pid), int(seq), decoder.LSN(l)})
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	commitLSN := map[int]decoder.LSN{}
	byPid := map[int][]row{}
	for _, r := range all {
		if c, ok := commitLSN[r.batch]; ok && c != r.commit {
			t.Errorf("batch %d: commit LSN %s and %s", r.batch, r.commit, c)
		}
		commitLSN[r.batch] = r.commit
		byPid[r.pid] = append(byPid[r.pid], r)
	}
	for b := 1; b <= crashBatches; b++ {
		if _, ok := commitLSN[b]; !ok {
			t.Errorf("batch %d never handled", b)
		}
	}
	checkSamples(t, samples, commitLSN)
	// No gap: each child starts at or before the first batch not handled by
	// the children before it, then handles consecutive batches.
	before := map[int]bool{}
	for i, pid := range pids {
		rs := byPid[pid]
		sort.Slice(rs, func(a, b int) bool { return rs[a].seq < rs[b].seq })
		for j, r := range rs {
			if j == 0 {
				if p := prefix(before); r.batch > p+1 {
					t.Errorf("child %d started at batch %d, batch %d not handled before", i, r.batch, p+1)
				}
			} else if r.batch != rs[j-1].batch+1 {
				t.Errorf("child %d: batch %d after %d", i, r.batch, rs[j-1].batch)
			}
		}
		for _, r := range rs {
			before[r.batch] = true
		}
	}
	t.Logf("%d children, %d batches, %d handled rows", len(pids), crashBatches, len(all))
}
