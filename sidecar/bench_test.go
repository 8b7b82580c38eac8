package sidecar

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/decoder"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

const (
	benchTxs       = 10000
	benchRowsPerTx = 100
)

// BenchmarkStreamVsRecvlogical commits 1,000,000 rows of ~150 bytes in
// 100-row transactions, then drains them through a Stream to an acknowledging
// no-op consumer and, from a second slot created at the same point, with
// pg_recvlogical (pgoutput, protocol 1, to /dev/null). It reports the rows per
// second of both and their ratio (pg_recvlogical's time / the stream's). Each
// iteration loads a new million rows; the two drains alternate in order, since
// the first drain after a load tends to be the slower one. Run it alone:
//
//	go test ./sidecar -run '^$' -bench StreamVsRecvlogical -benchtime 2x -cpu 1,2 -v
//
// On a small machine that also runs the server, GOMAXPROCS matters: the
// walsender needs a whole core, and with two Ps the Go runtime's extra
// threads (network poller, idle Ps spinning on every wake-up) take CPU from
// it; with one P the stream keeps pace with pg_recvlogical.
func BenchmarkStreamVsRecvlogical(b *testing.B) {
	f := newFixture(b)
	pgtest.Exec(b, f.db.DSN, `
CREATE TABLE bench (id bigint PRIMARY KEY, payload text NOT NULL) WITH (autovacuum_enabled = off);
CREATE PUBLICATION bench_pub FOR TABLE bench;
CREATE PROCEDURE bench_load(base bigint, txs int, rows int) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 0..txs-1 LOOP
		INSERT INTO bench SELECT g, repeat(md5(g::text), 4)
			FROM generate_series(base + i::bigint*rows + 1, base + (i::bigint+1)*rows) g;
		COMMIT;
	END LOOP;
END $$;`)
	const rows = benchTxs * benchRowsPerTx
	conn := connect(b, f.db.DSN)
	var ours, theirs time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		slot, rslot := f.slot+"_s"+strconv.Itoa(i), f.slot+"_r"+strconv.Itoa(i)
		for _, s := range []string{slot, rslot} {
			pgtest.Exec(b, f.db.DSN, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", s)
		}
		pgtest.Exec(b, f.db.DSN, "CALL bench_load($1, $2, $3)", int64(i)*rows, benchTxs, benchRowsPerTx)
		// pg_recvlogical stops at the first position at or past this mark.
		var mark string
		if err := conn.QueryRow(context.Background(), "SELECT pg_logical_emit_message(false, 'bench.end', '')::text").Scan(&mark); err != nil {
			b.Fatal(err)
		}
		pgtest.Exec(b, f.db.DSN, "CHECKPOINT")
		b.StartTimer()

		// Alternate the order, so that neither always runs on a colder cache.
		if i%2 == 0 {
			ours += drainStream(b, f, slot, rows)
			theirs += drainRecvlogical(b, f, rslot, mark)
		} else {
			theirs += drainRecvlogical(b, f, rslot, mark)
			ours += drainStream(b, f, slot, rows)
		}
		for _, s := range []string{slot, rslot} {
			pgtest.Exec(b, f.db.DSN, "SELECT pg_drop_replication_slot($1)", s)
		}
	}
	total := float64(b.N * rows)
	b.ReportMetric(total/ours.Seconds(), "rows/s")
	b.ReportMetric(total/theirs.Seconds(), "recvlogical_rows/s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "ratio")
}

// drainStream runs a Stream on slot until rows inserts were delivered and
// acknowledged, and returns the time it took.
func drainStream(b *testing.B, f *fixture, slot string, rows int) time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		s        *Stream
		n        int
		took     time.Duration
		streamed int
	)
	began := time.Now()
	s, err := NewStream(StreamConfig{
		DSN:               f.db.DSN,
		Slot:              slot,
		Publications:      []string{"bench_pub"},
		HeartbeatInterval: -1,
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Consumer: func(_ context.Context, tx *Tx) error {
			if tx.Streamed {
				streamed++
			}
			for m, err := range tx.Messages() {
				if err != nil {
					return err
				}
				if decoder.MessageType(m[0]) == decoder.TypeInsert {
					n++
				}
			}
			s.Ack(tx.EndLSN)
			if n >= rows {
				took = time.Since(began)
				cancel()
			}
			return nil
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Run(ctx); ctx.Err() == nil {
		b.Fatalf("stream: %v", err)
	}
	b.Logf("stream: %v, %d transactions streamed by the server, stats %+v", took, streamed, s.Stats())
	if n < rows {
		b.Fatalf("stream delivered %d rows, want %d", n, rows)
	}
	return took
}

// drainRecvlogical runs pg_recvlogical on slot up to end.
func drainRecvlogical(b *testing.B, f *fixture, slot string, end string) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	args := []string{"-d", f.db.ConnInfo(), "--slot", slot, "--start", "--no-loop",
		"--plugin", "pgoutput", "-o", "proto_version=1", "-o", "publication_names=bench_pub",
		"--endpos", end, "-f", "/dev/null"}
	cmd := f.db.Cluster.Command(ctx, "pg_recvlogical", args...)
	if _, err := os.Stat(cmd.Path); err != nil {
		// The cluster's bin directory may be a directory of links to initdb
		// and pg_ctl only: take pg_recvlogical from beside the real initdb.
		initdb, err := filepath.EvalSymlinks(filepath.Join(f.db.Cluster.BinDir, "initdb"))
		if err != nil {
			b.Fatal(err)
		}
		cmd = exec.CommandContext(ctx, filepath.Join(filepath.Dir(initdb), "pg_recvlogical"), args...)
	}
	if _, err := os.Stat(cmd.Path); err != nil {
		// The npm builds of 16+ carry no client tools: any installed
		// pg_recvlogical speaks the protocol to a newer server.
		found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_recvlogical")
		if p, err := exec.LookPath("pg_recvlogical"); err == nil {
			found = append([]string{p}, found...)
		}
		if len(found) == 0 {
			b.Fatalf("no pg_recvlogical beside the server (%s) nor installed: the baseline needs it (Debian: apt-get install postgresql-client)", f.db.Cluster.BinDir)
		}
		b.Logf("baseline: %s (the server's bin directory has none)", found[0])
		cmd = exec.CommandContext(ctx, found[0], args...)
	}
	began := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("pg_recvlogical: %v\n%s", err, out)
	}
	took := time.Since(began)
	b.Logf("pg_recvlogical: %v", took)
	return took
}
