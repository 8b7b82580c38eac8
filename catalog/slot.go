package catalog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Slot is a replication slot's row of pg_replication_slots, with the lag it
// implies.
type Slot struct {
	Name      string `json:"name"`
	Plugin    string `json:"plugin,omitempty"`   // "" for a physical slot
	Database  string `json:"database,omitempty"` // "" for a physical slot
	Active    bool   `json:"active"`
	WalStatus string `json:"wal_status,omitempty"` // reserved, extended, unreserved or lost
	// SafeWalSize is how many more bytes of WAL may be written before the slot
	// is lost (null when max_slot_wal_keep_size is unlimited).
	SafeWalSize *int64 `json:"safe_wal_size"`
	// LagBytes is the WAL not yet confirmed by the consumer
	// (pg_current_wal_lsn() - confirmed_flush_lsn); RetainedBytes the WAL the
	// slot keeps (pg_current_wal_lsn() - restart_lsn). Both are null on a
	// server in recovery.
	LagBytes      *int64 `json:"lag_bytes"`
	RetainedBytes *int64 `json:"retained_bytes"`
	// ActivePID is the server process that streams the slot, 0 when none;
	// Holder names its application and client address ("app from 10.0.0.7").
	ActivePID uint32 `json:"-"`
	Holder    string `json:"-"`
}

// slotColumns reads a Slot from pg_replication_slots r.
const slotColumns = `SELECT r.slot_name::text, coalesce(r.plugin::text, ''), coalesce(r.database::text, ''), r.active,
	coalesce(r.wal_status, ''), r.safe_wal_size,
	(CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL ELSE pg_catalog.pg_current_wal_lsn() - r.confirmed_flush_lsn END)::int8,
	(CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL ELSE pg_catalog.pg_current_wal_lsn() - r.restart_lsn END)::int8,
	coalesce(r.active_pid, 0)::int8,
	coalesce((SELECT coalesce(nullif(a.application_name, ''), '?') || ' from ' || coalesce(host(a.client_addr), 'a local socket')
	          FROM pg_catalog.pg_stat_activity a WHERE a.pid = r.active_pid), '')
FROM pg_catalog.pg_replication_slots r`

func scanSlot(row pgx.Row) (Slot, error) {
	var s Slot
	var pid int64
	err := row.Scan(&s.Name, &s.Plugin, &s.Database, &s.Active, &s.WalStatus, &s.SafeWalSize, &s.LagBytes, &s.RetainedBytes, &pid, &s.Holder)
	s.ActivePID = uint32(pid)
	return s, err
}

// Slots returns every replication slot of the server, by name.
func Slots(ctx context.Context, q Querier) ([]Slot, error) {
	rows, err := q.Query(ctx, slotColumns+" ORDER BY r.slot_name")
	if err != nil {
		return nil, fmt.Errorf("read replication slots: %w", err)
	}
	slots, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Slot, error) { return scanSlot(row) })
	if err != nil {
		return nil, fmt.Errorf("read replication slots: %w", err)
	}
	return slots, nil
}

// FindSlot returns the replication slot name of the database q is connected
// to; ok is false when there is none (a slot of that name in another
// database of the cluster is not this database's).
func FindSlot(ctx context.Context, q Querier, name string) (s Slot, ok bool, err error) {
	s, err = scanSlot(q.QueryRow(ctx, slotColumns+" WHERE r.slot_name = $1 AND r.database = pg_catalog.current_database()", name))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Slot{}, false, nil
	case err != nil:
		return Slot{}, false, fmt.Errorf("read replication slot %q: %w", name, err)
	}
	return s, true, nil
}
