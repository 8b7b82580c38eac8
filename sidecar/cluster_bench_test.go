package sidecar_test

import (
	"testing"

	"github.com/pgoutpost/pgoutpost/internal/natsembed"
)

// BenchmarkReplicasCommitToConsumer measures, in the same run, the whole
// pipeline (as BenchmarkCommitToConsumer) against a three-node JetStream
// cluster with the stream on one replica (the baseline) and on three, the
// default on a cluster: events a second reaching the consumer and the p99
// of commit-to-consumer time of each, and their ratios R3/R1. The master
// produces 5,000 changes a second for benchDuration. Run with -benchtime=1x:
//
//	go test ./sidecar -run '^$' -bench ReplicasCommitToConsumer -benchtime=1x
func BenchmarkReplicasCommitToConsumer(b *testing.B) {
	const rate = 5000
	for range b.N {
		var r [2]latencyResult
		for i, replicas := range []int{1, 3} {
			r[i] = measureLatency(b, rate, benchDuration(b), func(e *e2e) {
				c, err := natsembed.StartCluster(b.TempDir(), 3)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(c.Shutdown)
				e.natsURL, e.replicas = c.URLs(), replicas
			})
		}
		b.ReportMetric(r[0].eventsPerSec, "R1_events/s")
		b.ReportMetric(r[1].eventsPerSec, "R3_events/s")
		b.ReportMetric(r[0].p99, "R1_p99_ms")
		b.ReportMetric(r[1].p99, "R3_p99_ms")
		b.ReportMetric(r[1].eventsPerSec/r[0].eventsPerSec, "events/s_R3/R1")
		b.ReportMetric(r[1].p99/r[0].p99, "p99_R3/R1")
		b.ReportMetric(0, "ns/op")
	}
}
