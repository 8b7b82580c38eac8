// Package catalog answers the questions about a database that the sidecar,
// `status` and `validate` all ask, so that each has one answer: the server's
// replication settings (is wal_level logical?), a replication slot's row, and
// the depth, oldest entry and dead letters of the queue tables, the seed
// queues of django-logical-replication included. It only reads: creating,
// dropping and recovering slots and queue tables is the job of their owners
// (sidecar, replication, queue).
//
// Every function takes a Querier: a *pgx.Conn, a *pgxpool.Pool or a pgx.Tx.
//
//	s, err := catalog.ReadSettings(ctx, pool)
//	if err == nil && !s.LogicalWAL() {
//		// publications send nothing and no logical slot can be created
//	}
package catalog
