package sidecar

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgoutpost/pgoutpost/decoder"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/registry"
)

// Namespace is the Prometheus namespace of every pgoutpost metric.
const Namespace = "pgoutpost"

// walStatuses are the values of pg_replication_slots.wal_status.
var walStatuses = []string{"reserved", "extended", "unreserved", "lost"}

// Metrics are the sidecar's Prometheus metrics. It implements queue.Observer
// (pass it in queue.ProcessorOptions) and ObserveAck is the sink's publish
// latency hook (sink.Options.ObserveAck). Create it with NewMetrics on a
// registry of your own; the Sidecar updates the gauges.
type Metrics struct {
	messages       *prometheus.CounterVec
	entries        *prometheus.CounterVec
	pending        *prometheus.GaugeVec
	dead           *prometheus.GaugeVec
	commitToDone   *prometheus.HistogramVec
	cascadeRows    *prometheus.CounterVec
	slotLag        prometheus.Gauge
	safeWAL        prometheus.Gauge
	walStatus      *prometheus.GaugeVec
	flushLSN       prometheus.Gauge
	natsPublish    prometheus.Histogram
	natsAcks       prometheus.Gauge
	natsUp         prometheus.Gauge
	reconnects     *prometheus.CounterVec
	ready          prometheus.Gauge
	lag            prometheus.Gauge
	queueLag       prometheus.Gauge
	swept          prometheus.Counter
	slotRecoveries prometheus.Counter

	// messageCounters caches the counter of each message type, so that
	// counting a decoded message costs no label lookup.
	messageCounters [256]prometheus.Counter
}

// latencyBuckets cover 1 ms to about 2 minutes.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2, 18)

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	name := func(sub, n string) string { return prometheus.BuildFQName(Namespace, sub, n) }
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("stream", "messages_total"),
			Help: "pgoutput messages decoded, by type (Begin and Commit count each delivered transaction)."}, []string{"type"}),
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("queue", "entries_total"),
			Help: "Queue entries handled, by queue, table and result (applied, gone, dead, published)."}, []string{"queue", "table", "result"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name("queue", "pending_entries"),
			Help: "Rows waiting in the slave's queue tables, counted up to 1,000,000."}, []string{"queue"}),
		dead: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name("queue", "dead_letters"),
			Help: "Rows in pgoutpost.dead_letter, by queue."}, []string{"queue"}),
		commitToDone: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name("queue", "commit_to_done_seconds"),
			Help: "Time from the master's commit to the entry applied (delete) or published and acked (denormalize).", Buckets: latencyBuckets}, []string{"queue"}),
		cascadeRows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("cascade", "rows_total"),
			Help: "Rows deleted or updated by cascades, by table and action."}, []string{"table", "action"}),
		slotLag: prometheus.NewGauge(prometheus.GaugeOpts{Name: name("slot", "lag_bytes"),
			Help: "WAL between the slave's current position and the sidecar slot's confirmed_flush_lsn."}),
		safeWAL: prometheus.NewGauge(prometheus.GaugeOpts{Name: name("slot", "safe_wal_size_bytes"),
			Help: "WAL that can still be written before the sidecar slot is in danger of losing WAL (pg_replication_slots.safe_wal_size; -1 when unlimited)."}),
		walStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name("slot", "wal_status"),
			Help: "1 for the sidecar slot's current wal_status."}, []string{"status"}),
		flushLSN: prometheus.NewGauge(prometheus.GaugeOpts{Name: name("stream", "flush_lsn"),
			Help: "The position the sidecar acknowledged to its slot, as a number."}),
		natsPublish: prometheus.NewHistogram(prometheus.HistogramOpts{Name: name("nats", "publish_seconds"),
			Help: "Time from sending an event to its JetStream ack.", Buckets: latencyBuckets}),
		natsAcks: prometheus.NewGauge(prometheus.GaugeOpts{Name: name("nats", "outstanding_acks"),
			Help: "Events sent and waiting for their JetStream ack."}),
		natsUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: name("nats", "connected"),
			Help: "1 when connected to NATS."}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("", "reconnects_total"),
			Help: "Reconnections, by target (postgres: the replication stream; nats)."}, []string{"target"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Name: name("", "ready"),
			Help: "1 when /readyz reports ready."}),
		queueLag: prometheus.NewGauge(prometheus.GaugeOpts{Name: name("queue", "lag_seconds"),
			Help: "Age of the oldest row in the slave's queue tables, from its master write time (0 when empty): the work not done yet, whatever the stream saw."}),
		swept: prometheus.NewCounter(prometheus.CounterOpts{Name: name("queue", "swept_entries_total"),
			Help: "Entries the periodic sweep found in the queue tables that the stream never delivered, then processed; should stay 0."}),
		slotRecoveries: prometheus.NewCounter(prometheus.CounterOpts{Name: name("slot", "recoveries_total"),
			Help: "Times the sidecar's slot vanished or was replaced while running, and the sidecar drained the queue tables and streamed again."}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: name("stream", "lag_seconds"),
			Help: "Age of the oldest master transaction received and not finished (0 when none)."}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.entries, m.pending, m.dead, m.commitToDone, m.cascadeRows,
		m.slotLag, m.safeWAL, m.walStatus, m.flushLSN, m.natsPublish, m.natsAcks, m.natsUp, m.reconnects, m.ready, m.lag, m.queueLag, m.swept, m.slotRecoveries} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	// Series that exist from the start, so that dashboards and alerts see
	// zeros instead of nothing.
	for _, q := range []registry.Queue{registry.DeleteQueue, registry.DenormalizeQueue} {
		m.pending.WithLabelValues(string(q))
		m.dead.WithLabelValues(string(q))
		m.commitToDone.WithLabelValues(string(q))
	}
	for _, s := range walStatuses {
		m.walStatus.WithLabelValues(s)
	}
	for _, t := range []string{"postgres", "nats"} {
		m.reconnects.WithLabelValues(t)
	}
	return m, nil
}

// EntryDone implements queue.Observer.
func (m *Metrics) EntryDone(q registry.Queue, table, result string, commitToDone time.Duration) {
	m.entries.WithLabelValues(string(q), table, result).Inc()
	if (result == queue.ResultApplied || result == queue.ResultPublished) && commitToDone > 0 {
		m.commitToDone.WithLabelValues(string(q)).Observe(commitToDone.Seconds())
	}
}

// CascadeRows implements queue.Observer.
func (m *Metrics) CascadeRows(table, action string, n int) {
	m.cascadeRows.WithLabelValues(table, action).Add(float64(n))
}

// ObserveAck records a publish's send-to-ack time (sink.Options.ObserveAck).
func (m *Metrics) ObserveAck(d time.Duration) { m.natsPublish.Observe(d.Seconds()) }

// countMessage counts one decoded message of type t.
func (m *Metrics) countMessage(t decoder.MessageType) {
	c := m.messageCounters[t]
	if c == nil {
		c = m.messages.WithLabelValues(t.String())
		m.messageCounters[t] = c
	}
	c.Inc()
}

func (m *Metrics) setWALStatus(status string) {
	for _, s := range walStatuses {
		v := 0.0
		if s == status {
			v = 1
		}
		m.walStatus.WithLabelValues(s).Set(v)
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var _ queue.Observer = (*Metrics)(nil)
