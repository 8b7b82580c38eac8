package main

import (
	"testing"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

func TestMain(m *testing.M) {
	// events replay takes a snapshot row's committed_at from the slave's
	// commit timestamps (TestEventsReplay).
	pgtest.ClusterSettings["track_commit_timestamp"] = "on"
	pgtest.Main(m)
}
