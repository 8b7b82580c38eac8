package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pg_ctl starts the server as a daemon, so a cluster outlives a process that
// dies without stopping it (SIGKILL, a test binary's -timeout panic). So the
// process that starts a cluster holds an exclusive lock (flock) on the file
// owner in its directory for as long as it runs, and Start first reaps the
// clusters whose lock is free. The kernel drops the lock when the owner dies,
// however it dies; unlike a pid, the lock means the same thing in every pid
// namespace that shares the directory.

// ownerFile, in a cluster's directory, is locked by the process that owns the
// cluster. It also holds that process's pid, for people.
const ownerFile = "owner"

// lockOwner creates dir's owner file and locks it; the returned file must stay
// open while the cluster runs (it is opened close-on-exec, so the server does
// not inherit the lock).
func lockOwner(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ownerFile), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create cluster owner file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock cluster owner file: %w", err)
	}
	if _, err := f.WriteString(strconv.Itoa(os.Getpid()) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("write cluster owner file: %w", err)
	}
	return f, nil
}

// claimOrphan takes the lock of dir's owner file if no live process holds it,
// and returns the locked file; nil when the owner lives or dir has no owner
// file (a cluster being created, or not one of ours).
func claimOrphan(dir string) *os.File {
	f, err := os.OpenFile(filepath.Join(dir, ownerFile), os.O_RDWR, 0)
	if err != nil {
		return nil
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil
	}
	return f
}

// processAlive reports whether process pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if procWorks() {
			return false
		}
		err := syscall.Kill(pid, 0)
		return err == nil || errors.Is(err, syscall.EPERM)
	}
	// The state follows the command name, which is in parentheses and may
	// hold spaces.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 {
		if f := strings.Fields(string(b[i+1:])); len(f) > 0 && (f[0] == "Z" || f[0] == "X") {
			return false // exited, not yet waited for
		}
	}
	return true
}

func procWorks() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// postmasterPID reads the server's pid and port from postmaster.pid in
// dataDir; pid 0 when there is none.
func postmasterPID(dataDir string) (pid, port int) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, 0
	}
	lines := strings.Split(string(b), "\n")
	pid, _ = strconv.Atoi(strings.TrimSpace(lines[0]))
	if len(lines) > 3 {
		port, _ = strconv.Atoi(strings.TrimSpace(lines[3]))
	}
	return pid, port
}

// serves reports whether process pid, in this pid namespace, is a server of
// dataDir: postmaster.pid may outlive its server, and its pid may since name
// another process.
func serves(pid int, dataDir string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return processAlive(pid) && !procWorks()
	}
	return bytes.Contains(b, []byte(dataDir))
}

// listening reports whether a server accepts connections on the cluster's
// socket in dir, wherever that server runs.
func listening(dir string, port int) bool {
	if port == 0 {
		return false
	}
	conn, err := net.DialTimeout("unix", filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// Reap stops and removes the clusters under baseDir (os.TempDir() when empty)
// whose owning process has exited, and returns their directories. It leaves
// every other directory alone: clusters whose owner lives (in any pid
// namespace), directories without an owner file, and a server it cannot show
// to be stopped, whose files it never removes.
func Reap(ctx context.Context, baseDir string) ([]string, error) {
	if baseDir == "" {
		baseDir = os.TempDir()
	}
	dirs, err := filepath.Glob(filepath.Join(baseDir, "pgoutpost-*"))
	if err != nil {
		return nil, err
	}
	var (
		reaped []string
		errs   []error
	)
	for _, dir := range dirs {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		lock := claimOrphan(dir)
		if lock == nil {
			continue
		}
		err := reapOne(ctx, dir)
		lock.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("reap stale cluster %s: %w", dir, err))
			continue
		}
		reaped = append(reaped, dir)
	}
	return reaped, errors.Join(errs...)
}

func reapOne(ctx context.Context, dir string) error {
	c := &Cluster{Name: filepath.Base(dir), Dir: dir, DataDir: filepath.Join(dir, "data")}
	if st, err := os.Stat(dir); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 && sys.Uid != 0 {
			c.cred = &syscall.Credential{Uid: sys.Uid, Gid: sys.Gid}
		}
	}
	pid, port := postmasterPID(c.DataDir)
	if pid > 0 && serves(pid, c.DataDir) {
		bin, err := FindBinDir()
		if err != nil {
			return fmt.Errorf("stop server pid %d: %w", pid, err)
		}
		c.BinDir = bin
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := c.command(sctx, "pg_ctl", "-D", c.DataDir, "-m", "immediate", "-w", "stop").CombinedOutput()
		cancel()
		// pg_ctl returns once the pid file is gone; the postmaster may take
		// a moment more to exit.
		for deadline := time.Now().Add(10 * time.Second); err == nil && serves(pid, c.DataDir) && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		if serves(pid, c.DataDir) {
			return fmt.Errorf("stop server pid %d: %v\n%s", pid, err, out)
		}
	}
	// A server this process cannot see (another pid namespace) may still
	// answer on the socket: its files stay.
	if listening(dir, port) {
		return errors.New("a server still accepts connections on its socket; stop it where it runs")
	}
	return os.RemoveAll(dir)
}
