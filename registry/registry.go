package registry

import (
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Kind says how a table travels between environments.
type Kind string

// Table kinds, from least to most synced.
const (
	KindUser        Kind = "user"        // not synced; owned by each environment
	KindSystem      Kind = "system"      // synced with all operations
	KindDelete      Kind = "delete"      // synced without deletes; deletes go through the delete queue
	KindDenormalize Kind = "denormalize" // a delete model whose inserts and updates are also queued
)

// IsSynced reports whether tables of kind k are replicated from the master.
func (k Kind) IsSynced() bool { return k != KindUser && k != "" }

// IsDeleteModel reports whether deletes of tables of kind k go through the delete queue.
func (k Kind) IsDeleteModel() bool { return k == KindDelete || k == KindDenormalize }

// Rule is a Django on_delete rule.
type Rule string

// The on_delete rules, spelled as in sidecar.yaml.
const (
	Cascade    Rule = "CASCADE"
	Protect    Rule = "PROTECT"
	Restrict   Rule = "RESTRICT"
	SetNull    Rule = "SET_NULL"
	SetDefault Rule = "SET_DEFAULT"
	SetValue   Rule = "SET" // SET(<literal>): OnDelete.Value holds the literal
	DoNothing  Rule = "DO_NOTHING"
)

// OnDelete is the rule of one foreign key. Value is the value of SET(<literal>),
// or for SET_DEFAULT the default configured in sidecar.yaml for a column whose
// default lives in the application (Django's default=) rather than in the
// database; "" means the column's own DEFAULT. Value is plain text (quotes
// removed) to be passed as a query parameter.
type OnDelete struct {
	Rule  Rule
	Value string
}

func (o OnDelete) String() string {
	if o.Rule == SetValue {
		return "SET(" + o.Value + ")"
	}
	return string(o.Rule)
}

// TableName is a schema-qualified table name.
type TableName struct {
	Schema string
	Name   string
}

func (n TableName) String() string { return n.Schema + "." + n.Name }

// Sanitize quotes the name for use as an SQL identifier.
func (n TableName) Sanitize() string { return pgx.Identifier{n.Schema, n.Name}.Sanitize() }

// SortedNames returns the keys of m ordered by their String form, so that
// work over a map of tables runs (and takes its locks) in a stable order.
func SortedNames[V any](m map[TableName]V) []TableName {
	out := make([]TableName, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// ParseTableName parses "schema.table"; a bare name is in schema public.
func ParseTableName(s string) (TableName, error) {
	parts, ok := splitQualified(s)
	switch {
	case ok && len(parts) == 1 && parts[0] != "":
		return TableName{Schema: "public", Name: parts[0]}, nil
	case ok && len(parts) == 2 && parts[0] != "" && parts[1] != "":
		return TableName{Schema: parts[0], Name: parts[1]}, nil
	}
	return TableName{}, fmt.Errorf("bad table name %q: want schema.table (double-quote a part that holds a dot or a quote: \"a.b\".\"x\"\"y\")", s)
}

// splitQualified splits s on the dots outside double quotes and removes the
// quotes ("" inside quotes stands for one "). Names are taken as written:
// unquoted parts are not folded to lower case. ok is false for an unclosed
// quote or a quote inside an unquoted part.
func splitQualified(s string) (parts []string, ok bool) {
	var cur strings.Builder
	quoted, wasQuoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '"' && i+1 < len(s) && s[i+1] == '"':
			cur.WriteByte('"')
			i++
		case quoted && c == '"':
			quoted = false
		case quoted:
			cur.WriteByte(c)
		case c == '"':
			if cur.Len() > 0 || wasQuoted {
				return nil, false
			}
			quoted, wasQuoted = true, true
		case c == '.':
			parts = append(parts, cur.String())
			cur.Reset()
			wasQuoted = false
		default:
			if wasQuoted {
				return nil, false
			}
			cur.WriteByte(c)
		}
	}
	if quoted {
		return nil, false
	}
	return append(parts, cur.String()), true
}

// Column is a table column as the catalog describes it.
type Column struct {
	Name    string
	Type    string // format_type(), e.g. "character varying(50)"
	TypeOID uint32
	NotNull bool
	Default string // the default expression, "" when there is none
}

// Table is one table of the database with what the configuration says of it.
type Table struct {
	Name       TableName
	Kind       Kind
	Label      string // Django label (app_label.ModelName) when the model was named by it
	PrimaryKey []string
	Columns    []Column

	// Publication settings from the model's configuration.
	RowFilter  string   // SQL for the publication's WHERE, "" for none
	ColumnList []string // publication column list, nil for all columns

	SkipValidation      bool
	ReplicaIdentityFull bool
	// Contrib marks Django's django_content_type and auth_* tables, synced by default.
	Contrib bool

	// ReplicaIdentity is pg_class.relreplident; IdentityColumns are the
	// columns it covers (the primary key for default, the index's columns,
	// every column for full, none for nothing).
	ReplicaIdentity ReplicaIdentity
	IdentityColumns []string
	// OnTruncate says what a TRUNCATE of a delete model does ("" for others).
	OnTruncate TruncateAction
	// Configured is true when a model of sidecar.yaml names the table; Origin
	// says why the table has its kind ("models", "contrib", "contrib, promoted
	// to delete model", "auto-created many-to-many", "not configured").
	Configured bool
	Origin     string
	// Source says where the model was configured ("sidecar.yaml:42").
	Source string
	// AutoM2M is set for a Django auto-created many-to-many table.
	AutoM2M bool

	// Incoming are the foreign keys that point at this table; Outgoing those it holds.
	Incoming []*ForeignKey
	Outgoing []*ForeignKey
}

// Column returns the column named name, or nil.
func (t *Table) Column(name string) *Column {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i]
		}
	}
	return nil
}

// FKKind says where a foreign key comes from.
type FKKind string

// Foreign key kinds.
const (
	FKConstraint FKKind = "constraint" // a FOREIGN KEY constraint in the catalog
	FKDeclared   FKKind = "declared"   // declared in sidecar.yaml, no constraint (Django's db_constraint=False)
	FKParentLink FKKind = "parent"     // multi-table inheritance link from child to parent
	FKGeneric    FKKind = "generic"    // generic relation: (content_type_id, object_id) pair
)

// ForeignKey is a reference from rows of From to rows of To. A row of From
// references the row of To whose ToColumns equal its FromColumns (ToColumns are
// the primary key, or a unique column for Django's to_field).
type ForeignKey struct {
	Name        string // constraint name, or a generated name for declared relations
	Kind        FKKind
	From        TableName
	FromColumns []string
	To          TableName
	ToColumns   []string
	OnDelete    OnDelete
	// RuleFromDB is true when OnDelete came from the constraint's own ON DELETE action.
	RuleFromDB bool
	Deferrable bool
	// RuleSource says where OnDelete came from: "sidecar.yaml:70" for
	// relations:, "database" for the constraint's action, "django default"
	// for Django's own contrib and auto-created many-to-many tables, "" when
	// the foreign key has no rule.
	RuleSource string

	// Generic relations only: the referencing rows are those of From whose
	// ContentTypeColumn holds the id of django_content_type (AppLabel, Model)
	// and whose FromColumns[0] (object_id) equals the target's ToColumns[0].
	ContentTypeColumn string
	AppLabel, Model   string
}

func (fk *ForeignKey) String() string {
	return fmt.Sprintf("%s(%s) -> %s(%s)", fk.From, strings.Join(fk.FromColumns, ","), fk.To, strings.Join(fk.ToColumns, ","))
}

// Registry is the resolved set of tables: every table of the database's
// schemas with its kind, keys and foreign keys.
type Registry struct {
	Tables []*Table // sorted by name
	byName map[TableName]*Table
	// problems found while resolving the spec, reported by Validate.
	problems Problems
}

// New indexes tables and links every foreign key into its target's Incoming
// list. Tables' Outgoing lists must be set; Incoming lists are rebuilt.
func New(tables []*Table) *Registry {
	r := &Registry{Tables: append([]*Table(nil), tables...), byName: make(map[TableName]*Table, len(tables))}
	sort.Slice(r.Tables, func(i, j int) bool { return r.Tables[i].Name.String() < r.Tables[j].Name.String() })
	for _, t := range r.Tables {
		t.Incoming = nil
		r.byName[t.Name] = t
	}
	for _, t := range r.Tables {
		for _, fk := range t.Outgoing {
			if to := r.byName[fk.To]; to != nil {
				to.Incoming = append(to.Incoming, fk)
			}
		}
	}
	return r
}

// Table returns the table named n, or nil.
func (r *Registry) Table(n TableName) *Table { return r.byName[n] }

// OfKind returns the tables whose kind is one of kinds, in name order.
func (r *Registry) OfKind(kinds ...Kind) []*Table {
	var out []*Table
	for _, t := range r.Tables {
		for _, k := range kinds {
			if t.Kind == k {
				out = append(out, t)
				break
			}
		}
	}
	return out
}

// ReplicaIdentity is a table's REPLICA IDENTITY setting (pg_class.relreplident).
type ReplicaIdentity string

// Replica identity settings.
const (
	IdentityDefault ReplicaIdentity = "default" // the primary key
	IdentityFull    ReplicaIdentity = "full"    // every column
	IdentityIndex   ReplicaIdentity = "index"   // a unique index
	IdentityNothing ReplicaIdentity = "nothing" // no old row at all
)

// Short returns the name without its schema when the schema is public, the
// form sidecar.yaml's relations: keys use.
func (n TableName) Short() string {
	if n.Schema == "public" {
		return n.Name
	}
	return n.String()
}

// HasRule reports whether the foreign key has an on_delete rule.
func (fk *ForeignKey) HasRule() bool { return fk.OnDelete.Rule != "" }

// Rule is the relation's rule as it is applied: parent links and generic
// relations given without one cascade, as Django's do.
func (fk *ForeignKey) Rule() OnDelete {
	if fk.OnDelete.Rule == "" && (fk.Kind == FKParentLink || fk.Kind == FKGeneric) {
		return OnDelete{Rule: Cascade}
	}
	return fk.OnDelete
}
