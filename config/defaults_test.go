package config_test

import (
	"testing"

	"github.com/pgoutpost/pgoutpost/config"
	"github.com/pgoutpost/pgoutpost/queue"
	"github.com/pgoutpost/pgoutpost/sidecar"
)

// TestDefaultsAreTheLibraries: the defaults config cannot take from the
// queue and sidecar packages by reference (an import cycle through queue's
// tests) are theirs all the same.
func TestDefaultsAreTheLibraries(t *testing.T) {
	for _, c := range []struct {
		name       string
		cfg, owner any
	}{
		{"slot", config.DefaultSlot, sidecar.DefaultSlot},
		{"local publication", config.DefaultLocalPublication, queue.DefaultLocalPublication},
		{"shutdown grace", config.DefaultShutdownGrace, sidecar.DefaultShutdownGrace},
		{"max lag", config.DefaultMaxLag, sidecar.DefaultMaxLag},
		{"heartbeat", config.DefaultHeartbeat, sidecar.DefaultHeartbeat},
		{"spill bytes", int64(config.DefaultSpillBytes), int64(sidecar.DefaultSpillBytes)},
		{"batch size", config.DefaultBatchSize, sidecar.DefaultBatchSize},
		{"large transaction", config.DefaultLargeTransaction, queue.DefaultLargeTxn},
		{"sidecar's large transaction", config.DefaultLargeTransaction, sidecar.DefaultLargeTxn},
		{"sidecar and stream heartbeat", sidecar.DefaultHeartbeat, sidecar.DefaultHeartbeatInterval},
	} {
		if c.cfg != c.owner {
			t.Errorf("%s: config says %v, its package %v", c.name, c.cfg, c.owner)
		}
	}
}
