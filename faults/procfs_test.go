//go:build faults

package faults

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat: 100
// on every architecture Linux runs PostgreSQL on (getconf CLK_TCK), and Go
// has no sysconf without cgo.
const clockTicks = 100

// procStat is what the benchmark reads from /proc/<pid>/stat.
type procStat struct {
	ppid int
	cpu  time.Duration // utime + stime
	// children is cutime + cstime: the CPU time of the children the process
	// has waited for (PostgreSQL's postmaster reaps its backends).
	children time.Duration
}

// readStat reads /proc/<pid>/stat; ok is false when the process is gone.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, false
	}
	// The command name, in parentheses, may hold spaces and parentheses:
	// the fields are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return procStat{}, false
	}
	// f[0] is field 3 of proc(5): state, ppid, ..., utime (14), stime,
	// cutime, cstime (17).
	n := func(k int) int64 { v, _ := strconv.ParseInt(f[k-3], 10, 64); return v }
	tick := time.Second / clockTicks
	return procStat{
		ppid:     int(n(4)),
		cpu:      time.Duration(n(14)+n(15)) * tick,
		children: time.Duration(n(16)+n(17)) * tick,
	}, true
}

// cpuOf is the CPU time the processes pids have used so far; the gone ones
// count nothing.
func cpuOf(pids []int) map[int]time.Duration {
	out := make(map[int]time.Duration, len(pids))
	for _, pid := range pids {
		if st, ok := readStat(pid); ok {
			out[pid] = st.cpu
		}
	}
	return out
}

// cpuSince sums, over the processes of now, the CPU time used since before:
// a process absent from before is counted from its start.
func cpuSince(before, now map[int]time.Duration) time.Duration {
	var d time.Duration
	for pid, t := range now {
		d += t - before[pid]
	}
	return d
}

// clusterCPU is the CPU time a PostgreSQL cluster has used so far: its
// postmaster's, its live processes' and that of the processes it has reaped
// (backends and workers that came and went). The difference of two readings
// is the cluster's CPU time in between.
func clusterCPU(dataDir string) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("read the postmaster's pid: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	postmaster, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid of %s: %w", dataDir, err)
	}
	st, ok := readStat(postmaster)
	if !ok {
		return 0, fmt.Errorf("the postmaster of %s (pid %d) is gone", dataDir, postmaster)
	}
	total := st.cpu + st.children
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		// Live children only: an exited one not yet reaped is in neither
		// sum, for a moment.
		if st, ok := readStat(pid); ok && st.ppid == postmaster {
			total += st.cpu
		}
	}
	return total, nil
}

// peakRSS is the peak resident set of process pid so far, VmHWM of
// /proc/<pid>/status. Not the rusage of the exited child: Go starts a child
// with vfork, and exec records the parent's peak as the child's starting
// ru_maxrss, so that figure is never below the test process's own.
func peakRSS(pid int) (bytes int64, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, fmt.Errorf("read the status of process %d: %w", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM of process %d: %q: %w", pid, v, err)
			}
			return kib * 1024, nil
		}
	}
	return 0, fmt.Errorf("process %d: no VmHWM in its status", pid)
}
