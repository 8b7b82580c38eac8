package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pgoutpost/pgoutpost/internal/backoff"
	"github.com/pgoutpost/pgoutpost/internal/connstr"
)

// The wait between two connection attempts of a Deferred doubles from
// laterFirstWait up to laterMaxWait.
const (
	laterFirstWait = time.Second
	laterMaxWait   = 30 * time.Second
)

// Deferred is the NATS sink of a process that started while NATS was
// unreachable: it connects in the background, and publishing waits until it
// has. Until then Ready says why there is no connection. Create it with
// ConnectLater.
type Deferred struct {
	ready   chan struct{} // closed once connected
	closed  chan struct{} // closed by Close
	stopped chan struct{} // closed when the connecting goroutine ends
	once    sync.Once

	mu  sync.Mutex
	n   *NATS
	err error // why there is no connection yet
}

// ConnectLater returns a sink that calls Connect with opts in the
// background, first after a second and then at doubling intervals up to 30
// seconds, until it succeeds, ctx ends or the sink is closed. cause is why
// the caller's own Connect failed; Ready reports it until the first attempt.
func ConnectLater(ctx context.Context, opts Options, cause error) *Deferred {
	d := &Deferred{ready: make(chan struct{}), closed: make(chan struct{}), stopped: make(chan struct{}), err: cause}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	go d.connect(ctx, opts, logger)
	return d
}

func (d *Deferred) connect(ctx context.Context, opts Options, logger *slog.Logger) {
	defer close(d.stopped)
	waits := backoff.New(laterFirstWait, laterMaxWait)
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.closed:
			return
		case <-time.After(waits.Next()):
		}
		n, err := Connect(ctx, opts)
		if err == nil {
			d.mu.Lock()
			d.n, d.err = n, nil
			d.mu.Unlock()
			close(d.ready)
			logger.Info("connected to NATS", "url", connstr.RedactURLs(opts.URL))
			return
		}
		d.mu.Lock()
		d.err = err
		d.mu.Unlock()
		if errors.Is(err, ErrStreamConfig) {
			// NATS answers, but the stream does not fit: only an operator
			// mends that; say so plainly, and keep trying for when it is.
			logger.Error("NATS is back, but its stream does not fit; fix it (see the error), publishing waits", "err", err)
			continue
		}
		logger.Warn("NATS still unreachable", "err", err)
	}
}

func (d *Deferred) get() *NATS {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

// wait waits until the sink is connected, closed, or ctx ends.
func (d *Deferred) wait(ctx context.Context) error {
	select {
	case <-d.ready:
		return nil
	case <-d.closed:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Publish waits until the sink is connected, then publishes msgs (see
// NATS.Publish).
func (d *Deferred) Publish(ctx context.Context, msgs []Message) (int, error) {
	if err := d.wait(ctx); err != nil {
		return 0, err
	}
	return d.get().Publish(ctx, msgs)
}

// PublishAsync waits until the sink is connected, then submits msgs (see
// NATS.PublishAsync). When ctx ends or the sink is closed first, the batch
// ends at once with nothing acked.
func (d *Deferred) PublishAsync(ctx context.Context, msgs []Message) *Pending {
	if err := d.wait(ctx); err != nil {
		b := newPending(len(msgs))
		b.finish(err)
		return b
	}
	return d.get().PublishAsync(ctx, msgs)
}

// Ready is the connected sink's, or why there is no connection yet.
func (d *Deferred) Ready() error {
	if n := d.get(); n != nil {
		return n.Ready()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return fmt.Errorf("not connected: %w", d.err)
}

// Stats are the connected sink's, or zero (not connected).
func (d *Deferred) Stats() Stats {
	if n := d.get(); n != nil {
		return n.Stats()
	}
	return Stats{}
}

// Close stops connecting, ends the publishing that waits for a connection,
// and closes the connected sink.
func (d *Deferred) Close() error {
	d.once.Do(func() { close(d.closed) })
	<-d.stopped
	if n := d.get(); n != nil {
		return n.Close()
	}
	return nil
}

// Warnings are the connected sink's (see NATS.Warnings); nil until then.
func (d *Deferred) Warnings() []string {
	if n := d.get(); n != nil {
		return n.Warnings()
	}
	return nil
}
