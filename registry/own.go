package registry

import (
	"context"
	"fmt"

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

// pgoutpost's own tables, in QueueSchema: the queues the master's triggers
// fill and the slave processes, and the slave's dead letters. They are not
// models of the configuration.
var (
	DeleteQueue      = TableName{Schema: QueueSchema, Name: "delete_queue"}
	DenormalizeQueue = TableName{Schema: QueueSchema, Name: "denormalize_queue"}
	DeadLetter       = TableName{Schema: QueueSchema, Name: "dead_letter"}
)

// The queue tables of django-logical-replication, which pgoutpost can process
// and keep published while a deployment switches over from it.
var (
	SeedDeleteQueue      = TableName{Schema: "public", Name: "logical_replication_deletequeue"}
	SeedDenormalizeQueue = TableName{Schema: "public", Name: "logical_replication_denormalizequeue"}
)

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
