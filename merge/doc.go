// Package merge lets a slave that already holds rows in its synced tables
// join the master's replication without emptying them, and resyncs a slave
// that drifted. Join creates the subscription's replication slot on the
// master with an exported snapshot, reads every synced table in that
// snapshot and merges it into the slave in one transaction: rows the master
// lacks are deleted through the cascade engine with the configured on_delete
// rules (so user rows are handled as Django would, and PROTECT or RESTRICT
// stops the merge with nothing done), differing rows are updated, missing
// rows inserted, and the denormalize models' changes are queued as events.
// The subscription is then created on that slot without a copy: it streams
// exactly the master's commits after the snapshot, so no write of the master
// is lost or applied twice, and a reader of the slave never sees a synced
// table empty.
package merge
