// Package natsembed runs a real NATS server with JetStream inside the current
// process, for tests and the demo, and a three-node JetStream cluster whose
// nodes can be stopped, restarted and partitioned away. It is a thin wrapper
// over nats-server's own server package; it does not configure streams.
package natsembed
