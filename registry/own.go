package registry

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgoutpost's own objects: the schema, tables and session setting that the
// queue, cascade and replication packages all name. They are defined here, at
// the bottom of the import graph, so that those packages agree on them without
// importing one another.

// QueueSchema is the schema that holds pgoutpost's own tables and functions.
// It is fixed so that every environment agrees on the subscription's target
// tables.
const QueueSchema = "pgoutpost"

// Queue is one of the queues entries come from: pgoutpost's two, which the
// master's triggers fill and the slave processes, and the two of
// django-logical-replication (the seed), which pgoutpost processes and keeps
// published while a deployment switches over from it. Its value is how
// dead_letter.queue, the metrics' queue label and an event's Nats-Msg-Id
// spell it; Table is where its rows are.
type Queue string

// The queues.
const (
	DeleteQueue          Queue = "delete"
	DenormalizeQueue     Queue = "denormalize"
	SeedDeleteQueue      Queue = "logical_replication_deletequeue"
	SeedDenormalizeQueue Queue = "logical_replication_denormalizequeue"
)

// Queues are all queues, in the order they are reported.
var Queues = []Queue{DeleteQueue, DenormalizeQueue, SeedDeleteQueue, SeedDenormalizeQueue}

// Table is the queue's table: in QueueSchema for pgoutpost's, in public for
// the seed's.
func (q Queue) Table() TableName {
	if q.Seed() {
		return TableName{Schema: "public", Name: string(q)}
	}
	return TableName{Schema: QueueSchema, Name: string(q) + "_queue"}
}

// Seed reports whether q is one of the seed's queues.
func (q Queue) Seed() bool { return q == SeedDeleteQueue || q == SeedDenormalizeQueue }

// Deletes reports whether q holds deletes (the others hold inserts and
// updates).
func (q Queue) Deletes() bool { return q == DeleteQueue || q == SeedDeleteQueue }

// Known reports whether q is one of Queues.
func (q Queue) Known() bool { return slices.Contains(Queues, q) }

// QueueOf returns the queue whose table is t.
func QueueOf(t TableName) (Queue, bool) {
	for _, q := range Queues {
		if q.Table() == t {
			return q, true
		}
	}
	return "", false
}

// DeadLetter is the slave's table of entries that could not be applied, in
// QueueSchema. Like the queue tables, it is not a model of the
// configuration.
var DeadLetter = TableName{Schema: QueueSchema, Name: "dead_letter"}

// Role says which side of replication a database is on, spelled as
// sidecar.yaml's role.
type Role string

// Roles.
const (
	RoleMaster Role = "master"
	RoleSlave  Role = "slave"
)

// CascadeSetting is the session setting that, set to on for one transaction
// (set_config(…, 'on', true), i.e. SET LOCAL), marks the transaction as
// pgoutpost's own cascade: the slave write guard lets it write to the tables
// it protects. Set it with MarkCascade.
const CascadeSetting = "pgoutpost.cascade"

// MarkCascade sets CascadeSetting for the rest of the transaction tx, so that
// the slave write guard lets it delete and update synced rows. The setting
// ends with the transaction and never leaks into a pooled session. The
// sidecar's cascade transactions, the cascade engine's Guard option and
// resync-fks all call it first.
func MarkCascade(ctx context.Context, tx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}) error {
	if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config($1, 'on', true)", CascadeSetting); err != nil {
		return fmt.Errorf("set %s: %w", CascadeSetting, err)
	}
	return nil
}
