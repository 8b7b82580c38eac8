package config

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/connsource"
	"github.com/pgoutpost/pgoutpost/registry"
	"github.com/pgoutpost/pgoutpost/sink"
)

// Defaults. Default() sets them before the file is decoded, and list items
// (models, generic relations, an aws_secret) get theirs as they are created,
// so each default is applied exactly once and the file always wins. Those of
// a library package are that package's own and config refers to them, except
// the queue's and the sidecar's: config cannot import those packages (queue's
// own tests read configurations), and TestDefaultsAreTheLibraries keeps them
// equal.
const (
	DefaultSchema              = "public"
	DefaultContribSystemTables = true
	DefaultPrefix              = "pgoutpost"
	DefaultSlot                = "pgoutpost_sidecar"
	DefaultLocalPublication    = "pgoutpost_local_queue"
	DefaultListen              = ":9187"
	DefaultShutdownGrace       = 30 * time.Second
	DefaultMaxLag              = time.Minute
	DefaultHeartbeat           = 10 * time.Second
	DefaultSpillBytes          = 16 << 20
	DefaultNATSURL             = sink.DefaultURL
	DefaultStream              = sink.DefaultStream
	DefaultSubjectPrefix       = event.DefaultPrefix
	DefaultDuplicateWindow     = sink.DefaultDuplicateWindow
	DefaultCreateStream        = true
	DefaultStorage             = sink.DefaultStorage
	DefaultMaxInFlight         = sink.DefaultMaxInFlight
	DefaultBatchSize           = 500
	DefaultLargeTransaction    = 50000
	DefaultAWSRegion           = connsource.DefaultAWSRegion
	DefaultOnTruncate          = registry.TruncateLog
	DefaultContentTypeColumn   = "content_type_id"
	DefaultObjectIDColumn      = "object_id"
	DefaultGenericOnDelete     = registry.Cascade
)

// Config is sidecar.yaml. The annotated example at the repository root
// documents every field.
type Config struct {
	// Environment is this environment's name: a NATS subject token and part of
	// subscription names.
	Environment string        `yaml:"environment"`
	Role        registry.Role `yaml:"role"`
	// Database is this environment's own database.
	Database connsource.Source `yaml:"database"`
	// Master is the master database as a slave's subscriptions reach it.
	Master connsource.Source `yaml:"master"`
	// Schemas are the schemas the registry reads.
	Schemas []string `yaml:"schemas"`
	// ContribSystemTables makes django_content_type and auth_* system tables.
	ContribSystemTables bool `yaml:"contrib_system_tables"`

	Replication Replication `yaml:"replication"`
	Sidecar     Sidecar     `yaml:"sidecar"`
	NATS        NATS        `yaml:"nats"`
	Queue       Queue       `yaml:"queue"`

	Models []Model `yaml:"models"`
	// Relations are on_delete rules keyed by table.column or schema.table.column.
	Relations        map[string]Relation `yaml:"relations"`
	GenericRelations []GenericRelation   `yaml:"generic_relations"`

	// file is the path the configuration was read from; lines maps a key path
	// ("models[2].kind") to its line there; env maps a key path to the
	// environment variable that overrode it.
	file  string
	lines map[string]int
	env   map[string]string
}

// Replication names the publications and subscriptions.
type Replication struct {
	// Prefix of publication and subscription names.
	Prefix string `yaml:"prefix"`
	// SeedSlug, when set, selects django-logical-replication's names instead.
	SeedSlug    string `yaml:"seed_slug"`
	Synchronous bool   `yaml:"synchronous"`
	// Failover creates the slave's subscription with failover = true
	// (PostgreSQL 17+): its slot on the master is synchronized to the
	// master's physical standbys, so the slave can follow a promoted standby.
	Failover bool `yaml:"failover"`
}

// Sidecar configures `pgoutpost run` on a slave.
type Sidecar struct {
	Slot          string        `yaml:"slot"`
	Publication   string        `yaml:"publication"`
	Listen        string        `yaml:"listen"`
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	MaxLag        time.Duration `yaml:"max_lag"`
	Heartbeat     time.Duration `yaml:"heartbeat"`
	SpillBytes    int64         `yaml:"spill_bytes"`
	// SweepInterval is the period of the sweep that processes queue entries
	// the stream missed; zero takes the sidecar's default
	// (sidecar.DefaultSweepInterval, 30s).
	SweepInterval time.Duration `yaml:"sweep_interval"`
}

// NATS configures the JetStream sink of denormalize events.
type NATS struct {
	URL             string        `yaml:"url"`
	CredentialsFile string        `yaml:"credentials_file"`
	TokenEnv        string        `yaml:"token_env"`
	Stream          string        `yaml:"stream"`
	SubjectPrefix   string        `yaml:"subject_prefix"`
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	CreateStream    bool          `yaml:"create_stream"`
	MaxInFlight     int           `yaml:"max_in_flight"`
	// Replicas of the stream the sidecar creates; 0 takes
	// sink.DefaultClusterReplicas (3) when the server is part of a
	// cluster and 1 otherwise. Set, it also rescales an existing stream
	// (with create_stream).
	Replicas  int       `yaml:"replicas"`
	Placement Placement `yaml:"placement"`
	Storage   string    `yaml:"storage"` // file or memory, for a created stream
	// MaxAge and MaxBytes limit a created stream; 0 is no limit.
	MaxAge   time.Duration `yaml:"max_age"`
	MaxBytes int64         `yaml:"max_bytes"`
}

// Placement picks the servers of a created stream: those of a cluster, with
// every tag.
type Placement struct {
	Cluster string   `yaml:"cluster"`
	Tags    []string `yaml:"tags"`
}

// Queue configures the delete and denormalize queues.
type Queue struct {
	BatchSize int `yaml:"batch_size"`
	// LargeTransaction is the most entries of one master transaction the
	// sidecar holds in memory; a larger one is applied from the queue
	// tables (queue.ProcessorOptions.LargeTxn).
	LargeTransaction int `yaml:"large_transaction"`
	// Expire-after durations; 0 keeps queue rows forever.
	DeleteExpireAfter      time.Duration `yaml:"delete_expire_after"`
	DenormalizeExpireAfter time.Duration `yaml:"denormalize_expire_after"`
	SeedQueues             bool          `yaml:"seed_queues"`
	// FKChecks is who checks the foreign keys of the rows the delete queue's
	// cascades delete and update: FKChecksDatabase (PostgreSQL, per row) or
	// FKChecksBatch (pgoutpost, per constraint and batch, under the replica
	// role: cascade.BatchReferenceChecks).
	FKChecks string `yaml:"fk_checks"`
}

// The values of queue.fk_checks.
const (
	FKChecksDatabase = "database"
	FKChecksBatch    = "batch"
)

// Model is one synced table. It is named by Name, which is a Django label
// (app_label.ModelName) when its part after the dot has an upper-case letter
// and schema.table (or a bare table in public) otherwise; or by Label, which is
// always a Django label (for models named in lower case).
type Model struct {
	Name  string `yaml:"name"`
	Label string `yaml:"label"`
	// Table overrides a Django label's default table (app_label_modelname);
	// "table" or "schema.table".
	Table          string                  `yaml:"table"`
	Kind           registry.Kind           `yaml:"kind"`
	RowFilter      string                  `yaml:"row_filter"`
	Columns        []string                `yaml:"columns"`
	SkipValidation bool                    `yaml:"skip_validation"`
	OnTruncate     registry.TruncateAction `yaml:"on_truncate"`
}

func (m *Model) setDefaults() { m.OnTruncate = DefaultOnTruncate }

// GenericRelation is a Django GenericRelation.
type GenericRelation struct {
	// Target is the model that declares the GenericRelation (label or table).
	Target string `yaml:"target"`
	// Table holds the (content type, object id) pairs (label or table).
	Table             string `yaml:"table"`
	ContentTypeColumn string `yaml:"content_type_column"`
	ObjectIDColumn    string `yaml:"object_id_column"`
	// ContentType is the target's django_content_type as app_label.model;
	// derived from Target when that is a Django label.
	ContentType string            `yaml:"content_type"`
	OnDelete    registry.OnDelete `yaml:"on_delete"`
}

func (g *GenericRelation) setDefaults() {
	g.ContentTypeColumn = DefaultContentTypeColumn
	g.ObjectIDColumn = DefaultObjectIDColumn
	g.OnDelete = registry.OnDelete{Rule: DefaultGenericOnDelete}
}

// Default returns a configuration holding every default, the starting point
// that a file is decoded onto.
func Default() *Config {
	return &Config{
		Schemas:             []string{DefaultSchema},
		ContribSystemTables: DefaultContribSystemTables,
		Replication:         Replication{Prefix: DefaultPrefix},
		Sidecar: Sidecar{
			Slot:          DefaultSlot,
			Publication:   DefaultLocalPublication,
			Listen:        DefaultListen,
			ShutdownGrace: DefaultShutdownGrace,
			MaxLag:        DefaultMaxLag,
			Heartbeat:     DefaultHeartbeat,
			SpillBytes:    DefaultSpillBytes,
		},
		NATS: NATS{
			URL:             DefaultNATSURL,
			Stream:          DefaultStream,
			SubjectPrefix:   DefaultSubjectPrefix,
			DuplicateWindow: DefaultDuplicateWindow,
			CreateStream:    DefaultCreateStream,
			MaxInFlight:     DefaultMaxInFlight,
			Storage:         DefaultStorage,
		},
		Queue: Queue{BatchSize: DefaultBatchSize, LargeTransaction: DefaultLargeTransaction, FKChecks: FKChecksDatabase},
	}
}

// Load reads the configuration at path, applies the PGOUTPOST_* environment
// overrides and validates it. Every problem is reported, each naming the file,
// line and key; the error is an *InvalidError (exit code 2) unless the file
// could not be read.
func Load(path string) (*Config, error) {
	data, err := readBounded(path)
	if err != nil {
		// A configuration that cannot be read is a usage problem (exit 2),
		// like one that does not validate.
		return nil, &InvalidError{Problems: []error{fmt.Errorf("read configuration: %w", err)}}
	}
	return Parse(path, data, os.LookupEnv)
}

// LoadContext is Load that returns ctx's error when ctx ends first: opening
// or reading a FIFO, or a file on a hung network mount, blocks, and a signal
// must still stop the command. (The blocked read is left to the exiting
// process.)
func LoadContext(ctx context.Context, path string) (*Config, error) {
	type result struct {
		c   *Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := Load(path)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		return r.c, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("read configuration %s: %w", path, ctx.Err())
	}
}

// MaxFileBytes bounds the size of a configuration file; a real one is a few
// kilobytes (--config /dev/zero would otherwise be read until memory runs out).
const MaxFileBytes = 1 << 20

// readBounded reads at most MaxFileBytes of the file at path.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a pgoutpost configuration", path, MaxFileBytes)
	}
	return data, nil
}

// Parse is Load for a configuration already in memory; lookupEnv supplies the
// environment overrides (nil for none). filename is used in messages.
func Parse(filename string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	c, problems := decode(filename, data)
	if c == nil {
		return nil, &InvalidError{Problems: problems}
	}
	if lookupEnv != nil {
		c.applyEnv(lookupEnv)
	}
	if err := c.Validate(); err != nil {
		var inv *InvalidError
		if errors.As(err, &inv) {
			problems = append(problems, withoutRepeats(inv.Problems, problems)...)
		}
	}
	if len(problems) > 0 {
		return c, &InvalidError{Problems: byLine(problems)}
	}
	return c, nil
}

// byLine orders problems by their line in the file, as an editor shows them;
// those without a line (from the environment, or about the whole file) come
// last, in the order found.
func byLine(problems []error) []error {
	line := func(err error) int {
		var p *Problem
		if errors.As(err, &p) && p.Line > 0 && p.Env == "" {
			return p.Line
		}
		return math.MaxInt
	}
	sort.SliceStable(problems, func(i, j int) bool { return line(problems[i]) < line(problems[j]) })
	return problems
}

// File returns the path the configuration was read from.
func (c *Config) File() string { return c.file }

// Overrides are the PGOUTPOST_* environment variables that override the file.
var Overrides = []struct {
	Env, Key, Help string
}{
	{"PGOUTPOST_ENVIRONMENT", "environment", "environment:"},
	{"PGOUTPOST_ROLE", "role", "role: (master or slave)"},
	{"PGOUTPOST_DATABASE_DSN", "database", "database:, as an inline DSN"},
	{"PGOUTPOST_MASTER_DSN", "master", "master:, as an inline DSN"},
	{"PGOUTPOST_NATS_URL", "nats.url", "nats.url:"},
	{"PGOUTPOST_LISTEN", "sidecar.listen", "sidecar.listen:"},
}

func (c *Config) applyEnv(lookupEnv func(string) (string, bool)) {
	for _, o := range Overrides {
		v, ok := lookupEnv(o.Env)
		if !ok || v == "" {
			continue
		}
		switch o.Key {
		case "environment":
			c.Environment = v
		case "role":
			c.Role = registry.Role(v)
		case "database":
			c.Database = connsource.Source{DSN: v}
		case "master":
			c.Master = connsource.Source{DSN: v}
		case "nats.url":
			c.NATS.URL = v
		case "sidecar.listen":
			c.Sidecar.Listen = v
		}
		if c.env == nil {
			c.env = map[string]string{}
		}
		c.env[o.Key] = o.Env
	}
}

// withoutRepeats drops the validation problems of keys that already have a
// decoding problem: a rule that did not parse is not also "missing".
func withoutRepeats(validation, decoding []error) []error {
	var out []error
next:
	for _, err := range validation {
		var vp *Problem
		if errors.As(err, &vp) && vp.Key != "" {
			for _, d := range decoding {
				var dp *Problem
				if errors.As(d, &dp) && (dp.Key == vp.Key || strings.HasPrefix(dp.Key, vp.Key+".")) {
					continue next
				}
			}
		}
		out = append(out, err)
	}
	return out
}
