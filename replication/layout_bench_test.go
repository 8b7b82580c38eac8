package replication

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Sizes of the workload of BenchmarkSubscriptionLayout: layoutChanges rows
// inserted into outcome (a denormalize model) on the master, layoutTxRows
// per transaction. Each insert is one row change published by the delete
// publication and, through the master's queue trigger, one denormalize_queue
// row published by the queue publication: every transaction goes through
// both the data and the queue.
const (
	layoutChanges = 100_000
	layoutTxRows  = 10
)

// layoutResult is what one layout's run measured on the master and the slave.
type layoutResult struct {
	walsenders int
	cpu        float64 // walsender CPU seconds per layoutChanges changes
	catchUp    time.Duration
}

// BenchmarkSubscriptionLayout compares, in one run, what one slave costs the
// master with the earlier layout of two subscriptions (data and queue apart,
// "legacy") and with the current one (one subscription carrying the queue,
// system and delete publications, "one"): the number of walsenders on the
// master and their CPU time over the same workload, plus how long the slave
// takes to apply everything after the master's last commit.
//
// Each layout runs in a fresh master and slave database pair. The workload
// is done once per call of a sub-benchmark whatever b.N is (it is far longer
// than the default benchtime, so the testing package does not call it again);
// run it with -benchtime 1x:
//
//	go test ./replication -run '^$' -bench SubscriptionLayout -benchtime 1x
//
// The walsenders' CPU time is read from /proc/<pid>/stat on this machine (the
// test clusters run here): the sum of utime and stime of the master's
// walsenders whose application_name is one of the slave's subscription names,
// after the workload minus before it.
func BenchmarkSubscriptionLayout(b *testing.B) {
	results := map[string]layoutResult{}
	layouts := []struct {
		name  string
		names func(Names) Names
	}{
		{"legacy", legacyNames},
		{"one", func(n Names) Names { return n }},
	}
	for _, l := range layouts {
		b.Run(l.name, func(b *testing.B) {
			r := runLayout(b, l.names)
			results[l.name] = r
			b.ReportMetric(float64(r.walsenders), "walsenders")
			b.ReportMetric(r.cpu, "walsender-cpu-s/100k-changes")
			b.ReportMetric(r.catchUp.Seconds(), "catch-up-s")
		})
	}
	legacy, okLegacy := results["legacy"]
	one, okOne := results["one"]
	if okLegacy && okOne {
		ratio := 0.0
		if one.cpu > 0 {
			ratio = legacy.cpu / one.cpu
		}
		fmt.Printf("layout: legacy %d walsenders %.2f cpu-s, one %d walsenders %.2f cpu-s, ratio %.2f (catch-up legacy %.2fs, one %.2fs)\n",
			legacy.walsenders, legacy.cpu, one.walsenders, one.cpu, ratio, legacy.catchUp.Seconds(), one.catchUp.Seconds())
	}
}

// runLayout sets up a master and a slave database with the subscriptions of
// layout, runs the workload and measures it.
func runLayout(b *testing.B, layout func(Names) Names) layoutResult {
	b.StopTimer()
	reg := testRegistry(nil)
	p := newPair(b, reg)
	names := layout(p.names)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	b.Cleanup(cancel)
	if _, err := CreatePublications(ctx, p.mpool, names); err != nil {
		b.Fatal(err)
	}
	plan, err := PlanPublications(ctx, p.mpool, reg, names)
	if err != nil {
		b.Fatal(err)
	}
	if err := plan.Apply(ctx, p.mpool); err != nil {
		b.Fatal(err)
	}
	if _, err := CreateSubscriptions(ctx, p.spool, names, p.master.ConnInfo()); err != nil {
		b.Fatal(err)
	}
	// Registered after both databases and pools: runs before they go, so
	// that each subscription drops its own slot on the master while the
	// master's database still exists.
	b.Cleanup(func() { dropSubscriptions(b, p.spool, names) })
	if err := WaitReady(ctx, p.spool, names, io.Discard, 100*time.Millisecond); err != nil {
		b.Fatal(err)
	}
	subs := names.SubscriptionNames()
	before := waitWalsenders(b, ctx, p.mpool, subs)
	cpu0 := make(map[int]float64, len(before))
	for _, pid := range before {
		cpu0[pid] = procCPUSeconds(b, pid)
	}

	b.StartTimer()
	for i := 0; i < layoutChanges/layoutTxRows; i++ {
		first := i*layoutTxRows + 1
		if _, err := p.mpool.Exec(ctx, "INSERT INTO outcome SELECT g, 'o' || g FROM generate_series($1::int, $1::int + $2::int - 1) g",
			first, layoutTxRows); err != nil {
			b.Fatal(err)
		}
	}
	lastCommit := time.Now()
	waitApplied(b, ctx, p.spool, layoutChanges)
	catchUp := time.Since(lastCommit)
	b.StopTimer()

	after := walsenderPIDs(b, ctx, p.mpool, subs)
	cpu := 0.0
	for _, pid := range after {
		c0, ok := cpu0[pid]
		if !ok {
			// A walsender that started during the workload: all its time is
			// the workload's.
			fmt.Fprintf(os.Stderr, "layout: walsender %d started during the workload\n", pid)
		}
		cpu += procCPUSeconds(b, pid) - c0
	}
	for _, pid := range before {
		if !slices.Contains(after, pid) {
			fmt.Fprintf(os.Stderr, "layout: walsender %d ended during the workload: its CPU time is not counted\n", pid)
		}
	}
	return layoutResult{
		walsenders: len(after),
		cpu:        cpu * 100_000 / layoutChanges,
		catchUp:    catchUp,
	}
}

// dropSubscriptions drops the subscriptions of names on the slave, and with
// them their slots on the master.
func dropSubscriptions(b *testing.B, spool *pgxpool.Pool, names Names) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range names.SubscriptionNames() {
		if _, err := spool.Exec(ctx, "DROP SUBSCRIPTION IF EXISTS "+ident(s)); err != nil {
			b.Errorf("drop subscription %s: %v", s, err)
		}
	}
}

// walsenderPIDs returns the pids of the master's walsenders of subs.
func walsenderPIDs(b *testing.B, ctx context.Context, mpool *pgxpool.Pool, subs []string) []int {
	b.Helper()
	rows, err := mpool.Query(ctx, "SELECT pid FROM pg_stat_replication WHERE application_name = ANY($1) AND state = 'streaming' ORDER BY pid", subs)
	if err != nil {
		b.Fatal(err)
	}
	var pids []int
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			b.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return pids
}

// waitWalsenders waits until every subscription of subs has exactly one
// streaming walsender on the master (the apply workers restart when a
// subscription's publications change) and returns their pids.
func waitWalsenders(b *testing.B, ctx context.Context, mpool *pgxpool.Pool, subs []string) []int {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var n, distinct int
		err := mpool.QueryRow(ctx, "SELECT count(*), count(DISTINCT application_name) FROM pg_stat_replication WHERE application_name = ANY($1)", subs).Scan(&n, &distinct)
		if err != nil {
			b.Fatal(err)
		}
		if n == len(subs) && distinct == len(subs) {
			if pids := walsenderPIDs(b, ctx, mpool, subs); len(pids) == len(subs) {
				return pids
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("walsenders of %v: %d, want one each", subs, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitApplied waits until the slave holds the workload's rows and its queue
// rows (nothing consumes the slave's queue in this benchmark).
func waitApplied(b *testing.B, ctx context.Context, spool *pgxpool.Pool, want int) {
	b.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var rows, queued int
		err := spool.QueryRow(ctx, `SELECT (SELECT count(*) FROM outcome),
			(SELECT count(*) FROM pgoutpost.denormalize_queue WHERE table_name = 'public.outcome' AND op = 'insert')`).Scan(&rows, &queued)
		if err != nil {
			b.Fatal(err)
		}
		if rows == want && queued == want {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the slave has %d outcome rows and %d queue rows, want %d of each", rows, queued, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var clockTicks = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || n <= 0 {
		return 100
	}
	return n
}()

// procCPUSeconds returns the user and system CPU time of process pid so far.
func procCPUSeconds(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("read the CPU time of walsender %d (the servers must run on this machine): %v", pid, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces: the
	// fields after it start after the last ')'. utime and stime are fields
	// 14 and 15, so 11 and 12 after the state (field 3).
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		b.Fatalf("/proc/%d/stat: unexpected format %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: unexpected format %q", pid, s)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: unexpected format %q", pid, s)
	}
	return (utime + stime) / clockTicks
}
