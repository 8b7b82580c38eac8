// Package consumer is the helper for application services that react to
// pgoutpost's denormalize events: it creates or binds a durable JetStream
// consumer for an environment, decodes each event and calls a handler, acking
// on success and retrying with backoff on error. It is kept apart from the
// sink package so that services import only this, package event and nats.go,
// none of the sidecar's publishing machinery.
//
//	nc, _ := nats.Connect(url)
//	js, _ := jetstream.New(nc)
//	err := consumer.Run(ctx, js, consumer.Options{Env: "staging", Durable: "reports",
//		Tables: []string{"public.shop_outcome"}},
//		func(ctx context.Context, ev event.Event) error { ... })
//
// # Order
//
// The sidecar publishes a row's events in the order the master committed
// them, and the stream keeps that order. What the handler sees:
//   - MaxAckPending 1: events in stream order, one at a time; a failing
//     event is retried before any later one, so it holds up the rest
//     (until MaxDeliver, if set, gives up on it).
//   - MaxAckPending > 1 (default 1000): a failed event is redelivered after
//     later ones, so a row's older event can arrive after its newer one; so
//     can the events of instances that share a durable consumer and work in
//     parallel. Keep, per row, the newest event applied and skip one that is
//     not newer: event.Event.After compares committed_at and, within one
//     master transaction, queue_id.
//   - Any setting: an event can come twice (a handler that crashed before
//     its ack, or the sidecar's re-published copies, see event/README.md),
//     so handlers are idempotent.
//
// # Giving up
//
// By default a failing event is retried forever, with a delay that doubles
// from RetryMin to RetryMax. With MaxDeliver, the MaxDeliver-th failure hands
// it to DeadLetter (with the handler's error and the raw message) and
// terminates it; a message that is no valid event goes there at once. The
// message is terminated only after DeadLetter returned nil, and the server
// itself never gives up on one (its MaxDeliver is unlimited), so an event is
// never dropped without a record.
package consumer
