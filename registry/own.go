package registry

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

// CascadeSetting is the session setting that, set to on for one transaction
// (set_config(…, 'on', true), i.e. SET LOCAL), marks the transaction as
// pgoutpost's own cascade: the slave write guard lets it write to the tables
// it protects.
const CascadeSetting = "pgoutpost.cascade"
