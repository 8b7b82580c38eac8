package replication

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrSlotNotDropped is returned by DropSubscriptions when a subscription is
// gone from the slave but its slot could not be dropped on the master: the
// slot then retains the master's WAL until someone drops it.
var ErrSlotNotDropped = errors.New("replication slot left on the master")

// slotDropWait bounds how long DropSubscriptions waits for the master's
// walsender of a disabled subscription to let its slot go.
var slotDropWait = 30 * time.Second

// DropSubscriptions retires this slave: it drops the subscriptions of names
// (and those of the earlier two-subscription layout) on the slave, then their
// replication slots, the tables' copy slots included, on the master at
// conninfo. Unlike a bare DROP SUBSCRIPTION it does not depend on the
// connection stored in the subscription, and a master it cannot reach leaves
// the slave's side done and an error, wrapping ErrSlotNotDropped, that names
// each slot and how to drop it.
func DropSubscriptions(ctx context.Context, db DB, names Names, conninfo string) ([]SubscriptionResult, error) {
	var all []string
	for _, s := range names.Subs {
		all = append(all, s.Name)
	}
	for _, n := range []string{names.Legacy.Data, names.Legacy.Queue} {
		if n != "" {
			all = append(all, n)
		}
	}
	type dropped struct {
		name, slot string
		oid        uint32
	}
	have, err := readSubscriptions(ctx, db, all)
	if err != nil {
		return nil, err
	}
	var gone []dropped
	var results []SubscriptionResult
	for _, name := range all {
		cur, ok := have[name]
		if !ok {
			results = append(results, SubscriptionResult{Name: name, Action: "absent"})
			continue
		}
		// Detached from its slot first, so that DROP SUBSCRIPTION does not
		// need the master; the slot is dropped below with conninfo.
		for _, stmt := range []string{
			"ALTER SUBSCRIPTION " + ident(name) + " DISABLE",
			"ALTER SUBSCRIPTION " + ident(name) + " SET (slot_name = NONE)",
			"DROP SUBSCRIPTION " + ident(name),
		} {
			if _, err := db.Exec(ctx, stmt); err != nil {
				return results, fmt.Errorf("drop subscription %s: %s: %w", name, stmt, err)
			}
		}
		d := dropped{name: name, oid: cur.oid}
		if cur.slot != nil {
			d.slot = *cur.slot
		}
		gone = append(gone, d)
		results = append(results, SubscriptionResult{Name: name, Action: "dropped"})
	}
	if len(gone) == 0 {
		return results, nil
	}
	conn, err := connectMaster(ctx, conninfo)
	if err != nil {
		var slots []string
		var oids []string
		for _, d := range gone {
			if d.slot != "" {
				slots = append(slots, "'"+d.slot+"'")
			}
			oids = append(oids, fmt.Sprint(d.oid))
		}
		return results, fmt.Errorf("%w: %v; on the master, drop %s with SELECT pg_drop_replication_slot(name), and any slot named pg_<oid>_sync_… for oid %s (copies that had not finished)",
			ErrSlotNotDropped, err, strings.Join(slots, ", "), strings.Join(oids, ", "))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var errs []error
	for _, d := range gone {
		// The slot itself, and the copy slots of tables whose initial copy
		// had not finished (pg_<subscription oid>_sync_<table oid>_<system id>).
		rows, err := conn.Query(ctx, `
			SELECT slot_name::text FROM pg_replication_slots
			WHERE slot_name = $1 OR slot_name LIKE 'pg\_' || $2::text || '\_sync\_%'`, d.slot, fmt.Sprint(d.oid))
		if err != nil {
			errs = append(errs, fmt.Errorf("read the master's slots: %w", err))
			break
		}
		slots, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			errs = append(errs, fmt.Errorf("read the master's slots: %w", err))
			break
		}
		if len(slots) == 0 && d.slot != "" {
			results = append(results, SubscriptionResult{Name: d.name, Action: "slot " + d.slot + " was already gone on the master"})
		}
		for _, s := range slots {
			if err := DropSlot(ctx, conn, s); err != nil {
				errs = append(errs, fmt.Errorf("%w: %s: %v; drop it on the master with SELECT pg_drop_replication_slot('%s')", ErrSlotNotDropped, s, err, s))
				continue
			}
			results = append(results, SubscriptionResult{Name: d.name, Action: "slot " + s + " dropped on the master"})
		}
	}
	return results, errors.Join(errs...)
}

// DropSlot drops slot on the master once no walsender holds it (a slot that
// is not there is no error): a walsender lets go when its client's
// connection closes, which can take a moment. One that still holds it after
// slotDropWait is ended.
func DropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	deadline := time.Now().Add(slotDropWait)
	for {
		var pid *int32
		err := conn.QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if pid == nil {
			_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NULL", slot)
			if err == nil {
				continue // gone, or taken again meanwhile: look again
			}
			return err
		}
		if time.Now().After(deadline) {
			if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", *pid); err != nil {
				return fmt.Errorf("end walsender %d that still holds the slot: %w", *pid, err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
