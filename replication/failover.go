package replication

import (
	"context"
	"errors"
	"fmt"
)

// ErrFailoverUnsupported is returned when replication.failover is on and the
// slave runs PostgreSQL older than 17, which has no failover slots.
var ErrFailoverUnsupported = errors.New("replication.failover needs PostgreSQL 17 or newer")

// needFailover checks that the slave's server knows the subscription option
// failover.
func needFailover(ctx context.Context, q querier, sub string) error {
	var num int
	if err := q.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		return err
	}
	if num < 170000 {
		return fmt.Errorf("subscription %s: %w (the slave runs %d); turn it off, or see docs/deploy.md for what a failover loses before 17",
			sub, ErrFailoverUnsupported, num/10000)
	}
	return nil
}

// setFailover turns failover on for an existing subscription, which
// PostgreSQL allows only while it is disabled: it is disabled, altered (which
// alters its slot on the master too) and enabled again. It reports whether it
// changed anything.
func setFailover(ctx context.Context, db DB, sub string) (bool, error) {
	err := withConn(ctx, db, func(q querier) error { return needFailover(ctx, q, sub) })
	if err != nil {
		return false, err
	}
	var on bool
	if err := db.QueryRow(ctx, "SELECT subfailover FROM pg_subscription WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())", sub).Scan(&on); err != nil {
		return false, err
	}
	if on {
		return false, nil
	}
	for _, stmt := range []string{"DISABLE", "SET (failover = true)", "ENABLE"} {
		if _, err := db.Exec(ctx, "ALTER SUBSCRIPTION "+ident(sub)+" "+stmt); err != nil {
			if stmt != "DISABLE" {
				_, _ = db.Exec(context.WithoutCancel(ctx), "ALTER SUBSCRIPTION "+ident(sub)+" ENABLE")
			}
			return false, fmt.Errorf("ALTER SUBSCRIPTION %s %s: %w", sub, stmt, err)
		}
	}
	return true, nil
}

// standbyCopyNote is what a slave subscribing to a physical standby must
// know about the initial copy.
const standbyCopyNote = "initial copies taken from a standby were seen to miss rows written since its last restartpoint (on 17 and 18). " +
	"Before subscribing: CHECKPOINT on the primary, wait until the standby has replayed it, CHECKPOINT on the standby. " +
	"If that was not done, compare the copied tables with the master and, if they differ, subscription drop and create again " +
	"after those steps (docs/deploy.md, \"Decoding off the master\")"

// masterIsStandby reports whether the server at conninfo is in recovery.
func masterIsStandby(ctx context.Context, conninfo string) (bool, error) {
	conn, err := connectMaster(ctx, conninfo)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var standby bool
	err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby)
	return standby, err
}
