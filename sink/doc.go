// Package sink publishes denormalize events: the Sink interface, the NATS
// JetStream publisher (NATS), the same connecting in the background when NATS
// is down at start (Deferred) and a JSON-lines sink for debugging (Log). It
// does not read queues or decide what to publish; the queue processor does,
// and dequeues an entry only once the sink reported it done (Publish's
// result, or Pending.Acked for a batch given to PublishAsync).
package sink
