// Package queue owns pgoutpost's queue schema (schema pgoutpost: delete_queue,
// denormalize_queue, dead_letter), the master triggers that fill the queues,
// the slave's local queue publication, the slave write guard and queue expiry.
// On a slave, its Processor applies queue entries: delete entries with the
// cascade engine, denormalize entries through a sink, with dead letters for
// what cannot be applied. It does not decide which tables are synced
// (registry does), does not manage the publications and subscriptions between
// master and slaves (replication does) and does not read the stream (the
// sidecar hands it the entries).
//
// # Queue rows
//
// A row of delete_queue or denormalize_queue is
//
//	id          uuid        UUIDv7 made by pgoutpost.uuid_v7(): unique across environments
//	table_name  text        "schema.table", unquoted
//	pk          jsonb       {"column": value, ...} over the primary key (composite keys work)
//	op          text        'delete' (delete_queue), 'insert' or 'update' (denormalize_queue;
//	                        the slave's own outbox also writes 'delete' there)
//	xid         bigint      txid_current() of the writing transaction
//	created_at  timestamptz now(): the writing transaction's START time
//
// The id must never collide: a slave's queue tables receive the master's rows
// through the subscription and also the slave's own outbox rows, and a
// duplicate key would stop the subscription. UUIDv7 makes them unique without
// coordination and orders them by time: 48 bits of milliseconds and 12 bits of
// sub-millisecond fraction from the clock, then 62 bits with at least 52
// random ones (all 62 with PostgreSQL 18's uuidv7()). Every row,
// the triggers' and the outbox's, draws its own from pgoutpost.uuid_v7(),
// which is PostgreSQL 18's uuidv7() where the server has it. Ids of later
// statements sort after earlier ones (a statement takes more than the
// microsecond the clock resolves); within one statement they follow the
// clock too, and on PostgreSQL 18 uuidv7() keeps a session's ids increasing
// even within a microsecond, while before 18 rows drawn in the same
// microsecond order by their random bits. Nothing depends on the order of
// the rows of one statement: one statement never queues the same row twice.
// created_at is the transaction's start time, not its commit
// time: the master's commit time reaches the sidecar in the Begin message of
// the slave's decoded stream (logical decoding reports the origin's commit
// timestamp for transactions that a subscription applied), which is where
// commit order comes from too.
//
// # Master triggers
//
// Install (role master) puts statement-level triggers with transition tables
// on the registry's delete and denormalize models, so a 100,000-row DELETE or
// UPDATE is logged by one INSERT … SELECT rather than 100,000 trigger calls:
//
//	pgoutpost_queue_delete    AFTER DELETE      → delete_queue      (delete and denormalize models)
//	pgoutpost_queue_truncate  BEFORE TRUNCATE   → delete_queue, one row per row removed,
//	                                              or an error when on_truncate is refuse
//	pgoutpost_queue_insert    AFTER INSERT      → denormalize_queue (denormalize models)
//	pgoutpost_queue_update    AFTER UPDATE      → denormalize_queue, only rows whose
//	                                              image changed (an UPDATE that changes
//	                                              nothing logs nothing)
//
// Each table has its own trigger function, pgoutpost."queue:schema.table"(),
// with static SQL so that PL/pgSQL caches its plans; a model with on_truncate:
// refuse gets pgoutpost.queue_refuse_truncate() for TRUNCATE instead. The
// functions are SECURITY DEFINER, so the application's role needs no
// privilege on the pgoutpost schema. There is no unique constraint on
// (table_name, pk): deleting a row, inserting it again and deleting it again
// logs twice and never makes the master's DELETE fail. Install finds its
// triggers by name (pgoutpost_queue_*) and its functions by prefix (queue:),
// adds, replaces and drops them to match the registry in one transaction, and
// changes nothing when they already match.
//
// # Skipping the queue
//
// A session with pgoutpost.skip_queue = on (SET pgoutpost.skip_queue = on)
// writes no queue rows and may TRUNCATE a model whose on_truncate is refuse.
// It is for maintenance and test fixtures. The risk: deletes made that way
// never reach the slaves, whose copies of the rows (and the user rows pointing
// at them) stay until a resync; inserts and updates of denormalize models
// produce no events.
//
// # Slave
//
// Install (role slave) creates the same tables, which the queue subscription
// fills, an index on xid on each queue (the drain at start, Pending, reads
// whole transactions) and the local publication (insert only) that the
// sidecar streams; nothing else, and it drops any pgoutpost_queue_* trigger
// it finds (a slave restored from a dump of the master would otherwise queue
// its own deletes). The index build locks its queue table against the
// subscription's inserts until the install commits: 0.2 s for a million
// waiting entries on a 2-core machine.
// The write guard (InstallGuard) rejects writes to synced tables except from
// the subscription's apply worker, which runs with session_replication_role =
// replica so that ordinary triggers do not fire for it, and from transactions
// that called registry.MarkCascade (or a session that SET pgoutpost.cascade = on on
// purpose, e.g. for a manual resync).
//
// # Processing on a slave
//
// The sidecar hands Processor.Apply the entries of consecutive master
// transactions (Txn) as its stream decodes them, and at start those already
// waiting in the tables (Processor.Pending). Apply returns once every entry is
// durably done, so the sidecar may then acknowledge the stream:
//
//   - a delete entry is applied in a slave transaction that dequeues it
//     (DELETE … RETURNING: an entry already gone was applied before a crash,
//     so a replay changes nothing) and runs the cascade; the entries of one
//     master transaction are one deletion (cascade.Engine.DeleteAll), as one
//     QuerySet.delete() over them would be. Several master transactions go in
//     one slave transaction, with one deletion when that cannot change the
//     outcome (see deleteTx); when a batch fails, its master transactions are
//     applied one by one, and when one of those fails, its entries one by one
//     (what the seed package's cron did — the seed is django-logical-replication,
//     the Django package pgoutpost takes over from), each in its own transaction. An
//     entry that still fails goes to dead_letter with the error as reason
//     (which rule, which referencing rows), an unknown table or malformed
//     key at once. A row already gone is no failure.
//   - a deleted row of a denormalize model gets a 'delete' row in the slave's
//     own denormalize_queue in the same transaction (an outbox: the local
//     publication streams it back), with an id from uuid_v7().
//   - a denormalize entry is published (sink.Sink) with the row as the slave
//     holds it then (absent when the row is gone: its delete event follows),
//     Nats-Msg-Id event.MsgID(SystemID, Env, queue table, id), e.g.
//     "7300…:staging:pgoutpost.denormalize_queue:0192…", and dequeued once acked.
//     In a batch, the delete entries are applied before the denormalize
//     entries are published, so an event never precedes the deletes of its
//     own master transaction.
//
// Retry puts dead letters back (the local publication streams the
// re-inserted row to the sidecar); ReadStatus reports the queues, their
// depths as package catalog reads them.
// With ProcessorOptions.SeedQueues the tables of django-logical-replication
// (registry.SeedDeleteQueue.Table(), registry.SeedDenormalizeQueue.Table()) are read as well, their content
// types resolved to the registry's models by Django label; InstallOptions
// .SeedQueues adds them to the local publication.
package queue
