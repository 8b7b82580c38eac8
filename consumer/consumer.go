package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/backoff"
)

// Defaults applied to zero Options fields.
const (
	DefaultStream     = "PGOUTPOST" // the sidecar's default stream name
	DefaultAckWait    = 30 * time.Second
	DefaultRetryMin   = time.Second
	DefaultRetryMax   = 5 * time.Minute
	DefaultAckPending = 1000
)

// Options say which events to consume and how.
type Options struct {
	Stream        string // DefaultStream when ""
	SubjectPrefix string // event.DefaultPrefix when ""
	Env           string // the environment whose events to consume; required
	// Durable names the consumer; the server keeps its position, so a
	// restarted service goes on where it stopped. One name per service:
	// instances of a service sharing the name share the work.
	Durable string
	// Tables limits the events to these tables ("schema.table", a bare name
	// is in schema public); empty means every table.
	Tables []string
	// DeliverNew starts a new consumer at events published from now on
	// instead of at the oldest event the stream holds.
	DeliverNew bool
	AckWait    time.Duration // how long the server waits for a handler before redelivering
	// MaxAckPending bounds the events delivered and not yet acked. Events
	// reach the handler one at a time in stream order, but an event that
	// failed is redelivered after later ones; set 1 for strict order at the
	// price of throughput.
	MaxAckPending int
	RetryMin      time.Duration // delay before the first redelivery of a failed event
	RetryMax      time.Duration // ceiling of the delay, which doubles with each delivery
	// MaxDeliver bounds the deliveries of an event whose handler keeps
	// failing: after the MaxDeliver-th failure it goes to DeadLetter and is
	// terminated, and later events are no longer held up by it (with
	// MaxAckPending 1) or repeated around it. 0, the default, retries
	// forever.
	MaxDeliver int
	// DeadLetter records what the consumer gives up on: an event whose
	// handler failed MaxDeliver times, or a message that is no valid event.
	// The message is terminated only once DeadLetter returned nil; an error
	// makes it come back after the backoff for another try, so nothing is
	// given up on without a record. When nil, such messages are logged at
	// ERROR and terminated.
	DeadLetter func(ctx context.Context, d Dead) error
	Logger     *slog.Logger // slog.Default() when nil
}

// Dead is a message the consumer gives up on.
type Dead struct {
	Subject string
	MsgID   string // its Nats-Msg-Id
	Data    []byte // the body as received
	// Event is the decoded event; nil when the body is no valid event.
	Event     *event.Event
	Delivered uint64 // deliveries so far, this one included
	Err       error  // the handler's last error, or why the body is no event
}

// Handler processes one event. Returning nil acks it; an error makes it come
// back later (after a growing delay). Handlers must be idempotent: an event
// can be delivered more than once (a redelivery after a crash of the handler
// before its ack).
type Handler func(ctx context.Context, ev event.Event) error

func (o *Options) setDefaults() {
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = event.DefaultPrefix
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = DefaultAckPending
	}
	if o.RetryMin <= 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(DefaultRetryMax, o.RetryMin)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Consumer creates or updates the durable consumer described by opts on js
// and returns it. Run calls it; it is exported for services that fetch
// messages themselves.
func Consumer(ctx context.Context, js jetstream.JetStream, opts Options) (jetstream.Consumer, error) {
	opts.setDefaults()
	if opts.Durable == "" {
		return nil, errors.New("create consumer: no durable name")
	}
	var filters []string
	if len(opts.Tables) == 0 {
		f, err := event.FilterSubject(opts.SubjectPrefix, opts.Env, "")
		if err != nil {
			return nil, fmt.Errorf("create consumer %s: %w", opts.Durable, err)
		}
		filters = append(filters, f)
	}
	for _, t := range opts.Tables {
		f, err := event.FilterSubject(opts.SubjectPrefix, opts.Env, t)
		if err != nil {
			return nil, fmt.Errorf("create consumer %s: %w", opts.Durable, err)
		}
		filters = append(filters, f)
	}
	deliver := jetstream.DeliverAllPolicy
	if opts.DeliverNew {
		deliver = jetstream.DeliverNewPolicy
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       opts.Durable,
		Description:   "pgoutpost denormalize events of " + opts.Env,
		DeliverPolicy: deliver,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       opts.AckWait,
		MaxAckPending: opts.MaxAckPending,
		// The server never gives up on an event by itself: past
		// Options.MaxDeliver, Handle records it with DeadLetter first.
		MaxDeliver:     -1,
		FilterSubjects: filters,
	}
	if len(filters) == 1 {
		cfg.FilterSubject, cfg.FilterSubjects = filters[0], nil
	}
	c, err := js.CreateOrUpdateConsumer(ctx, opts.Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on stream %s: %w", opts.Durable, opts.Stream, err)
	}
	return c, nil
}

// Run consumes events until ctx ends, then returns nil after the event being
// handled is done. Events reach h one at a time.
func Run(ctx context.Context, js jetstream.JetStream, opts Options, h Handler) error {
	opts.setDefaults()
	c, err := Consumer(ctx, js, opts)
	if err != nil {
		return err
	}
	it, err := c.Messages()
	if err != nil {
		return fmt.Errorf("consume %s: %w", opts.Durable, err)
	}
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			it.Stop()
		case <-stopped:
		}
	}()
	defer close(stopped)
	defer it.Stop()
	for {
		m, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			// Heartbeat or connection trouble: the iterator recovers by
			// itself; keep going unless we are stopping.
			if ctx.Err() != nil {
				return nil
			}
			opts.Logger.Warn("consume events", "consumer", opts.Durable, "err", err)
			continue
		}
		Handle(ctx, m, opts, h)
	}
}

// Handle processes one delivered message: it decodes the event, calls h and
// acks, or naks with a delay growing with the delivery count. A message that
// is no valid event, or an event that failed Options.MaxDeliver times, goes
// to Options.DeadLetter and is terminated so that it is not redelivered
// forever. Run calls it for each message.
func Handle(ctx context.Context, m jetstream.Msg, opts Options, h Handler) {
	opts.setDefaults()
	log := opts.Logger
	delivered := uint64(1)
	if md, err := m.Metadata(); err == nil {
		delivered = md.NumDelivered
	}
	ev, err := event.Decode(m.Data())
	if err != nil {
		giveUp(ctx, m, opts, Dead{Err: fmt.Errorf("malformed event: %w", err), Delivered: delivered})
		return
	}
	if err := h(ctx, ev); err != nil {
		if opts.MaxDeliver > 0 && delivered >= uint64(opts.MaxDeliver) {
			giveUp(ctx, m, opts, Dead{Event: &ev, Err: err, Delivered: delivered})
			return
		}
		delay := Backoff(delivered, opts.RetryMin, opts.RetryMax)
		log.Warn("event handler failed, will retry", "table", ev.Table, "op", ev.Op,
			"queue_id", ev.QueueID, "delivery", delivered, "retry_in", delay, "err", err)
		if err := m.NakWithDelay(delay); err != nil {
			log.Warn("nak event", "queue_id", ev.QueueID, "err", err)
		}
		return
	}
	if err := m.Ack(); err != nil {
		// The event comes back after AckWait; handlers are idempotent.
		log.Warn("ack event", "queue_id", ev.QueueID, "err", err)
	}
}

// giveUp hands d to the dead-letter hook and terminates the message once the
// hook has it; a failing hook makes the message come back for another try.
func giveUp(ctx context.Context, m jetstream.Msg, opts Options, d Dead) {
	log := opts.Logger
	d.Subject, d.MsgID, d.Data = m.Subject(), m.Headers().Get(event.HeaderMsgID), m.Data()
	if opts.DeadLetter == nil {
		log.Error("event given up on", "subject", d.Subject, "msg_id", d.MsgID, "delivery", d.Delivered, "err", d.Err)
	} else if err := opts.DeadLetter(ctx, d); err != nil {
		delay := Backoff(d.Delivered, opts.RetryMin, opts.RetryMax)
		log.Warn("dead-letter hook failed, will retry", "subject", d.Subject, "msg_id", d.MsgID,
			"delivery", d.Delivered, "retry_in", delay, "err", err)
		if err := m.NakWithDelay(delay); err != nil {
			log.Warn("nak event", "msg_id", d.MsgID, "err", err)
		}
		return
	}
	if err := m.TermWithReason(d.Err.Error()); err != nil {
		log.Warn("terminate event", "subject", d.Subject, "msg_id", d.MsgID, "err", err)
	}
}

// Backoff is the redelivery delay after the given delivery failed: min,
// doubled with each further delivery, at most max. It is a function of the
// delivery count rather than a running backoff because the count lives in the
// server: a redelivery may reach another instance of the service.
func Backoff(delivered uint64, lo, hi time.Duration) time.Duration {
	return backoff.Delay(delivered, lo, hi)
}
