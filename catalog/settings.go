package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Querier is what the functions of this package read through: a
// connection, a pool or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// WALLogical is the wal_level that logical replication needs: the master's
// publications and the sidecar's slot on a slave.
const WALLogical = "logical"

// Settings are the server settings replication depends on, with how many
// slots and WAL senders are in use.
type Settings struct {
	WalLevel            string `json:"wal_level"`
	MaxReplicationSlots int    `json:"max_replication_slots"`
	MaxWalSenders       int    `json:"max_wal_senders"`
	SlotsUsed           int    `json:"slots_used"`
	WalSendersUsed      int    `json:"wal_senders_used"`
	SynchronousStandbys string `json:"synchronous_standby_names"`
}

// LogicalWAL reports whether wal_level is logical.
func (s Settings) LogicalWAL() bool { return s.WalLevel == WALLogical }

// ReadSettings reads the server's replication settings.
func ReadSettings(ctx context.Context, q Querier) (Settings, error) {
	var s Settings
	err := q.QueryRow(ctx, `
		SELECT pg_catalog.current_setting('wal_level'), pg_catalog.current_setting('max_replication_slots')::int,
		       pg_catalog.current_setting('max_wal_senders')::int,
		       (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int,
		       (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int,
		       pg_catalog.current_setting('synchronous_standby_names')`).
		Scan(&s.WalLevel, &s.MaxReplicationSlots, &s.MaxWalSenders, &s.SlotsUsed, &s.WalSendersUsed, &s.SynchronousStandbys)
	if err != nil {
		return Settings{}, fmt.Errorf("read server settings: %w", err)
	}
	return s, nil
}
