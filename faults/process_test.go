//go:build faults

package faults

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/consumer"
	"github.com/pgoutpost/pgoutpost/event"
)

// sidecar is `pgoutpost run` as a child process, killed and restarted by the
// suite. Its output goes to one log file across restarts.
type sidecar struct {
	bin, config, log string

	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{} // closed when cmd has exited
	killed     bool          // the suite killed cmd
	starts     int
	kills      int
	unexpected []string // exits the suite did not cause
}

func (s *sidecar) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked()
}

func (s *sidecar) startLocked() error {
	f, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "----- start %d at %s\n", s.starts+1, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(s.bin, "run", "--config", s.config, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start the sidecar: %w", err)
	}
	done := make(chan struct{})
	s.cmd, s.done, s.killed = cmd, done, false
	s.starts++
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	return nil
}

// exited reports whether the current process has exited, recording an exit
// the suite did not cause.
func (s *sidecar) exitedLocked() bool {
	select {
	case <-s.done:
		if !s.killed {
			s.unexpected = append(s.unexpected, s.cmd.ProcessState.String())
			s.killed = true // counted once
		}
		return true
	default:
		return false
	}
}

// ensure restarts the sidecar when it exited on its own.
func (s *sidecar) ensure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exitedLocked() {
		return s.startLocked()
	}
	return nil
}

// kill sends SIGKILL and waits for the process to go. It reports false
// when the process had already exited.
func (s *sidecar) kill() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exitedLocked() {
		return false
	}
	s.killed = true
	_ = s.cmd.Process.Kill()
	<-s.done
	s.kills++
	return true
}

// stop sends SIGTERM and waits up to grace; it returns the exit status.
func (s *sidecar) stop(grace time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.exitedLocked() {
		return nil
	}
	s.killed = true
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		if !s.cmd.ProcessState.Success() {
			return fmt.Errorf("the sidecar exited with %s after SIGTERM", s.cmd.ProcessState)
		}
		return nil
	case <-time.After(grace):
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("the sidecar did not stop within %s of SIGTERM", grace)
	}
}

// delivery is one message the consumer handled.
type delivery struct {
	queueID, msgID string
	table          string
	op             event.Op
	pk             string
}

// received records what a durable JetStream consumer handled, by stream
// sequence: a redelivery of the same stream message (after a lost ack) is
// not a duplicate; the same event stored twice in the stream is.
type received struct {
	mu           sync.Mutex
	bySeq        map[uint64]delivery
	handled      int // successful handlings, redeliveries included
	redeliveries int // deliveries with NumDelivered > 1
}

func (r *received) record(m jetstream.Msg, ev event.Event) error {
	md, err := m.Metadata()
	if err != nil {
		return err // nak: handled again later
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handled++
	if md.NumDelivered > 1 {
		r.redeliveries++
	}
	if _, ok := r.bySeq[md.Sequence.Stream]; !ok {
		r.bySeq[md.Sequence.Stream] = delivery{
			queueID: ev.QueueID, msgID: m.Headers().Get(event.HeaderMsgID),
			table: ev.Table, op: ev.Op, pk: string(ev.PK),
		}
	}
	return nil
}

// tally counts the distinct stream messages, the distinct queue ids and
// message ids among them, and the duplicates: stream messages beyond the
// first with the same queue id.
func (r *received) tally() (queueIDs map[string]int, msgs, distinctMsgIDs, duplicated int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	queueIDs = map[string]int{}
	msgIDs := map[string]bool{}
	for _, d := range r.bySeq {
		queueIDs[d.queueID]++
		if queueIDs[d.queueID] > 1 {
			duplicated++
		}
		msgIDs[d.msgID] = true
	}
	return queueIDs, len(r.bySeq), len(msgIDs), duplicated
}

// consume runs the consumer until ctx ends. It creates the durable consumer
// once the sidecar has made the stream.
func consume(ctx context.Context, js jetstream.JetStream, opts consumer.Options, r *received) error {
	var c jetstream.Consumer
	for {
		var err error
		if c, err = consumer.Consumer(ctx, js, opts); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
	consumeMsgs(ctx, c, opts, func(m jetstream.Msg, ev event.Event, _ time.Time) error { return r.record(m, ev) })
	return nil
}

// consumeMsgs handles c's messages as consumer.Run does, until ctx ends,
// passing each event to rec with the time its message was received.
func consumeMsgs(ctx context.Context, c jetstream.Consumer, opts consumer.Options, rec func(jetstream.Msg, event.Event, time.Time) error) {
	for ctx.Err() == nil {
		it, err := c.Messages()
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		stop := context.AfterFunc(ctx, it.Stop)
		for {
			m, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				break
			}
			if err != nil {
				continue // the iterator recovers from heartbeat and connection trouble
			}
			at := time.Now()
			consumer.Handle(ctx, m, opts, func(_ context.Context, ev event.Event) error { return rec(m, ev, at) })
		}
		stop()
	}
}

// stopMeasured stops the sidecar and returns its peak resident set and its
// resource usage. The peak is the process's own VmHWM, read while it runs:
// the maxrss of an exited child is no measure, since Go starts it with vfork
// and its maxrss starts at this test process's own peak.
func (s *sidecar) stopMeasured(tb testing.TB) (peakBytes int64, ru *syscall.Rusage) {
	tb.Helper()
	peakBytes, err := peakRSS(s.cmd.Process.Pid)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.stop(time.Minute); err != nil {
		tb.Fatal(err)
	}
	ru, ok := s.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		tb.Fatal("no resource usage for the sidecar process")
	}
	return peakBytes, ru
}

// logCount is how often the sidecar's log since its last start
// holds substr: the suite's signal that it has done something it logs.
func logCount(s *sidecar, substr string) int {
	b, err := os.ReadFile(s.log)
	if err != nil {
		return 0
	}
	log := string(b)
	if i := strings.LastIndex(log, "----- start "); i >= 0 {
		log = log[i:]
	}
	return strings.Count(log, substr)
}
