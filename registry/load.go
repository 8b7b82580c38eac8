package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what Load needs of a connection; *pgx.Conn, *pgxpool.Pool and
// pgx.Tx all have it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Load reads every table of spec's schemas from pg_catalog (columns, primary
// key, replica identity, foreign keys with their column lists) and resolves
// spec against it: kinds, on_delete rules, parent links, declared and generic
// relations. It fails only when the catalog cannot be read; what does not fit
// (a configured table that does not exist, a relation without a foreign key)
// is reported by Validate.
func Load(ctx context.Context, q Querier, spec Spec) (*Registry, error) {
	schemas := spec.Schemas
	if len(schemas) == 0 {
		schemas = []string{"public"}
	}
	l := &loader{spec: spec, schemas: schemas, byOID: map[uint32]*Table{}, byName: map[TableName]*Table{}}
	for _, step := range []struct {
		what string
		fn   func(context.Context, Querier) error
	}{
		{"read tables", l.tables},
		{"read columns", l.columns},
		{"read keys", l.indexes},
		{"read foreign keys", l.foreignKeys},
		{"read content types", l.contentTypes},
	} {
		if err := step.fn(ctx, q); err != nil {
			return nil, fmt.Errorf("%s: %w", step.what, err)
		}
	}
	l.resolve()
	if err := l.checkSetValues(ctx, q); err != nil {
		return nil, fmt.Errorf("check on_delete values: %w", err)
	}
	r := New(l.list)
	r.problems = l.problems
	return r, nil
}

type loader struct {
	spec     Spec
	schemas  []string
	list     []*Table
	byOID    map[uint32]*Table
	byName   map[TableName]*Table
	problems Problems
	// byModelTable maps "<app_label>_<model>" to the django_content_type
	// row's (app_label, model), when the database has that table.
	byModelTable map[string][2]string
}

func (l *loader) errorf(subject, format string, args ...any) {
	l.problems = append(l.problems, Problem{Severity: Error, Subject: subject, Message: fmt.Sprintf(format, args...)})
}

func (l *loader) warnf(subject, format string, args ...any) {
	l.problems = append(l.problems, Problem{Severity: Warning, Subject: subject, Message: fmt.Sprintf(format, args...)})
}

const tablesSQL = `
SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY($1)
ORDER BY 2, 3`

func (l *loader) tables(ctx context.Context, q Querier) error {
	rows, err := q.Query(ctx, tablesSQL, l.schemas)
	if err != nil {
		return err
	}
	var (
		oid          uint32
		schema, name string
		ident        string
	)
	_, err = pgx.ForEachRow(rows, []any{&oid, &schema, &name, &ident}, func() error {
		t := &Table{Name: TableName{Schema: schema, Name: name}, Kind: KindUser, Origin: "not configured"}
		switch ident {
		case "d":
			t.ReplicaIdentity = IdentityDefault
		case "f":
			t.ReplicaIdentity, t.ReplicaIdentityFull = IdentityFull, true
		case "i":
			t.ReplicaIdentity = IdentityIndex
		case "n":
			t.ReplicaIdentity = IdentityNothing
		}
		l.list = append(l.list, t)
		l.byOID[oid] = t
		l.byName[t.Name] = t
		return nil
	})
	return err
}

// The default of a generated column is its expression, not a default.
const columnsSQL = `
SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid, a.attnotnull,
       CASE WHEN a.attgenerated = '' THEN coalesce(pg_get_expr(d.adbin, d.adrelid), '') ELSE '' END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY($1)
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum`

func (l *loader) columns(ctx context.Context, q Querier) error {
	rows, err := q.Query(ctx, columnsSQL, l.schemas)
	if err != nil {
		return err
	}
	var (
		rel uint32
		col Column
	)
	_, err = pgx.ForEachRow(rows, []any{&rel, &col.Name, &col.Type, &col.TypeOID, &col.NotNull, &col.Default}, func() error {
		if t := l.byOID[rel]; t != nil {
			t.Columns = append(t.Columns, col)
		}
		return nil
	})
	return err
}

// indexesSQL reads the primary key and the replica identity index, key
// columns only (INCLUDE columns are not part of either).
const indexesSQL = `
SELECT i.indrelid, i.indisprimary, i.indisreplident,
       array(SELECT a.attname::text
             FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE k.ord <= i.indnkeyatts
             ORDER BY k.ord)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (i.indisprimary OR i.indisreplident) AND n.nspname = ANY($1)`

func (l *loader) indexes(ctx context.Context, q Querier) error {
	rows, err := q.Query(ctx, indexesSQL, l.schemas)
	if err != nil {
		return err
	}
	var (
		rel              uint32
		primary, replica bool
		cols             []string
	)
	_, err = pgx.ForEachRow(rows, []any{&rel, &primary, &replica, &cols}, func() error {
		t := l.byOID[rel]
		if t == nil {
			return nil
		}
		if primary {
			t.PrimaryKey = slices.Clone(cols)
		}
		if replica && t.ReplicaIdentity == IdentityIndex {
			t.IdentityColumns = slices.Clone(cols)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, t := range l.list {
		switch t.ReplicaIdentity {
		case IdentityDefault:
			t.IdentityColumns = slices.Clone(t.PrimaryKey)
		case IdentityFull:
			for _, c := range t.Columns {
				t.IdentityColumns = append(t.IdentityColumns, c.Name)
			}
		}
	}
	return nil
}

// foreignKeysSQL reads every foreign key constraint held by a table of the
// schemas, with its column lists in key order. Constraints cloned onto
// partitions (conparentid <> 0) are left out: the partitioned table's own
// constraint stands for them.
const foreignKeysSQL = `
SELECT con.conname::text, con.conrelid, tn.nspname::text, tc.relname::text,
       array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord),
       array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.ord),
       con.condeferrable, con.confdeltype::text
FROM pg_constraint con
JOIN pg_class fc ON fc.oid = con.conrelid
JOIN pg_namespace fn ON fn.oid = fc.relnamespace
JOIN pg_class tc ON tc.oid = con.confrelid
JOIN pg_namespace tn ON tn.oid = tc.relnamespace
WHERE con.contype = 'f' AND con.conparentid = 0 AND fn.nspname = ANY($1)
ORDER BY con.conrelid, con.conkey, con.conname`

// dbRules maps pg_constraint.confdeltype to a rule; 'a' (NO ACTION) is none.
var dbRules = map[string]Rule{"c": Cascade, "r": Restrict, "n": SetNull, "d": SetDefault}

func (l *loader) foreignKeys(ctx context.Context, q Querier) error {
	rows, err := q.Query(ctx, foreignKeysSQL, l.schemas)
	if err != nil {
		return err
	}
	var (
		name, toSchema, toName string
		rel                    uint32
		fromCols, toCols       []string
		deferrable             bool
		delType                string
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &rel, &toSchema, &toName, &fromCols, &toCols, &deferrable, &delType}, func() error {
		t := l.byOID[rel]
		if t == nil {
			return nil
		}
		fk := &ForeignKey{
			Name:        name,
			Kind:        FKConstraint,
			From:        t.Name,
			FromColumns: slices.Clone(fromCols),
			To:          TableName{Schema: toSchema, Name: toName},
			ToColumns:   slices.Clone(toCols),
			Deferrable:  deferrable,
		}
		if r, ok := dbRules[delType]; ok {
			fk.OnDelete, fk.RuleFromDB, fk.RuleSource = OnDelete{Rule: r}, true, "database"
		}
		t.Outgoing = append(t.Outgoing, fk)
		return nil
	})
	return err
}

// resolve applies the spec to the tables read from the catalog.
func (l *loader) resolve() {
	l.models()
	l.contrib()
	l.relations()
	l.genericRelations()
	l.inheritGenericRelations()
	l.manyToMany()
	l.djangoDefaults()
	l.promoteContrib()
	for _, t := range l.list {
		sort.SliceStable(t.Outgoing, func(i, j int) bool {
			return strings.Join(t.Outgoing[i].FromColumns, ",") < strings.Join(t.Outgoing[j].FromColumns, ",")
		})
	}
}

func (l *loader) models() {
	for _, m := range l.spec.Models {
		subject := modelSubject(m)
		t := l.byName[m.Table]
		if t == nil {
			if !slices.Contains(l.schemas, m.Table.Schema) {
				l.errorf(subject, "table %s is in schema %s, which is not in schemas: %s", m.Table, m.Table.Schema, strings.Join(l.schemas, ", "))
			} else {
				l.errorf(subject, "table %s does not exist%s", m.Table, labelHint(m))
			}
			continue
		}
		t.Kind, t.Label, t.Configured, t.Origin, t.Source = m.Kind, m.Label, true, "models", m.Source
		t.RowFilter, t.ColumnList, t.SkipValidation = m.RowFilter, slices.Clone(m.Columns), m.SkipValidation
		if m.Kind.IsDeleteModel() {
			t.OnTruncate = m.OnTruncate
		}
	}
}

// IsContrib reports whether a table is one of Django's contenttypes or auth
// tables, which django-logical-replication syncs by default.
func IsContrib(n TableName) bool {
	return n.Name == "django_content_type" || strings.HasPrefix(n.Name, "auth_")
}

func (l *loader) contrib() {
	for _, t := range l.list {
		if !IsContrib(t.Name) {
			continue
		}
		t.Contrib = true
		if !t.Configured && l.spec.ContribSystemTables {
			t.Kind, t.Origin = KindSystem, "contrib"
		}
	}
}

func (l *loader) relations() {
	for _, rs := range l.spec.Relations {
		subject := fmt.Sprintf("relations: %s.%s (%s)", rs.From.Short(), rs.Column, rs.Source)
		t := l.byName[rs.From]
		if t == nil {
			l.errorf(subject, "table %s does not exist", rs.From)
			continue
		}
		if t.Column(rs.Column) == nil {
			l.errorf(subject, "table %s has no column %s", rs.From, rs.Column)
			continue
		}
		var matched []*ForeignKey
		for _, fk := range t.Outgoing {
			if slices.Contains(fk.FromColumns, rs.Column) {
				matched = append(matched, fk)
			}
		}
		if len(matched) == 0 {
			if rs.To.Name == "" {
				l.errorf(subject, "%s(%s) has no foreign key constraint; declare its target with references: table.column", rs.From, rs.Column)
				continue
			}
			to := l.byName[rs.To]
			switch {
			case to == nil:
				l.errorf(subject, "references: table %s does not exist", rs.To)
				continue
			case to.Column(rs.ToColumn) == nil:
				l.errorf(subject, "references: table %s has no column %s", rs.To, rs.ToColumn)
				continue
			}
			kind := FKDeclared
			if rs.ParentLink {
				kind = FKParentLink
			}
			fk := &ForeignKey{
				Name:        fmt.Sprintf("%s:%s.%s", kind, rs.From.Short(), rs.Column),
				Kind:        kind,
				From:        rs.From,
				FromColumns: []string{rs.Column},
				To:          rs.To,
				ToColumns:   []string{rs.ToColumn},
			}
			t.Outgoing = append(t.Outgoing, fk)
			matched = append(matched, fk)
		} else if rs.To.Name != "" {
			for _, fk := range matched {
				if fk.To != rs.To || !slices.Equal(fk.ToColumns, []string{rs.ToColumn}) {
					l.errorf(subject, "references: %s.%s, but the constraint %s references %s(%s)", rs.To.Short(), rs.ToColumn, fk.Name, fk.To, strings.Join(fk.ToColumns, ","))
				}
			}
		}
		for _, fk := range matched {
			if rs.ParentLink {
				fk.Kind = FKParentLink
			}
			fk.OnDelete, fk.RuleFromDB, fk.RuleSource = rs.OnDelete, false, rs.Source
		}
	}
}

func (l *loader) genericRelations() {
	for _, g := range l.spec.GenericRelations {
		subject := fmt.Sprintf("generic_relations: %s on %s (%s)", g.Table.Short(), g.Target.Short(), g.Source)
		target, t := l.byName[g.Target], l.byName[g.Table]
		switch {
		case target == nil:
			l.errorf(subject, "target table %s does not exist", g.Target)
			continue
		case t == nil:
			l.errorf(subject, "table %s does not exist", g.Table)
			continue
		case len(target.PrimaryKey) != 1:
			l.errorf(subject, "target %s needs a one-column primary key for object ids, has (%s)", g.Target, strings.Join(target.PrimaryKey, ","))
			continue
		}
		bad := false
		for _, c := range []string{g.ContentTypeColumn, g.ObjectIDColumn} {
			if t.Column(c) == nil {
				l.errorf(subject, "table %s has no column %s", g.Table, c)
				bad = true
			}
		}
		if bad {
			continue
		}
		t.Outgoing = append(t.Outgoing, &ForeignKey{
			Name:              fmt.Sprintf("generic:%s(%s,%s)->%s", g.Table.Short(), g.ContentTypeColumn, g.ObjectIDColumn, g.Target.Short()),
			Kind:              FKGeneric,
			From:              g.Table,
			FromColumns:       []string{g.ObjectIDColumn},
			To:                g.Target,
			ToColumns:         slices.Clone(target.PrimaryKey),
			OnDelete:          g.OnDelete,
			RuleSource:        g.Source,
			ContentTypeColumn: g.ContentTypeColumn,
			AppLabel:          g.AppLabel,
			Model:             g.Model,
		})
	}
}

// contentTypes reads django_content_type, when one of the schemas has it,
// to name the content type of a model known only by its table.
func (l *loader) contentTypes(ctx context.Context, q Querier) error {
	var ct *Table
	for _, t := range l.list {
		if t.Name.Name == "django_content_type" && t.Column("app_label") != nil && t.Column("model") != nil {
			ct = t
			break
		}
	}
	if ct == nil {
		return nil
	}
	rows, err := q.Query(ctx, "SELECT app_label::text, model::text FROM "+ct.Name.Sanitize())
	if err != nil {
		return err
	}
	l.byModelTable = map[string][2]string{}
	var app, model string
	_, err = pgx.ForEachRow(rows, []any{&app, &model}, func() error {
		l.byModelTable[app+"_"+model] = [2]string{app, model}
		return nil
	})
	return err
}

// contentTypeOf returns the (app_label, model) of the Django model of t: from
// its label, else from django_content_type by its table name (Django's
// default db_table).
func (l *loader) contentTypeOf(t *Table) (app, model string, ok bool) {
	if label, name, found := strings.Cut(t.Label, "."); found && label != "" && name != "" {
		return label, strings.ToLower(name), true
	}
	if ct, found := l.byModelTable[t.Name.Name]; found {
		return ct[0], ct[1], true
	}
	return "", "", false
}

// inheritGenericRelations gives multi-table-inheritance children the generic
// relations of their parents, as Django does: a GenericRelation is copied to
// each child model, where it matches the child's content type. A child that
// has its own generic relation from the same table and columns keeps it.
// Grandchildren inherit through their parents.
func (l *loader) inheritGenericRelations() {
	warned := map[string]bool{}
	for changed := true; changed; {
		changed = false
		for _, child := range l.list {
			for _, link := range child.Outgoing {
				if link.Kind != FKParentLink || len(child.PrimaryKey) != 1 {
					continue
				}
				for _, g := range l.genericInto(link.To) {
					if l.hasGeneric(child.Name, g) {
						continue
					}
					app, model, ok := l.contentTypeOf(child)
					if !ok {
						if warned[child.Name.String()+" "+g.Name] {
							continue
						}
						warned[child.Name.String()+" "+g.Name] = true
						l.warnf(fmt.Sprintf("generic_relations: %s on %s (%s)", g.From.Short(), g.To.Short(), g.RuleSource),
							"%s is a multi-table-inheritance child of %s, and Django follows this relation from its rows too, with its own content type, "+
								"which pgoutpost cannot tell: name the model by its Django label or add a generic relation with target %s", child.Name, g.To, child.Name)
						continue
					}
					from := l.byName[g.From]
					from.Outgoing = append(from.Outgoing, &ForeignKey{
						Name:              fmt.Sprintf("generic:%s(%s,%s)->%s", g.From.Short(), g.ContentTypeColumn, g.FromColumns[0], child.Name.Short()),
						Kind:              FKGeneric,
						From:              g.From,
						FromColumns:       slices.Clone(g.FromColumns),
						To:                child.Name,
						ToColumns:         slices.Clone(child.PrimaryKey),
						OnDelete:          g.OnDelete,
						RuleSource:        fmt.Sprintf("inherited from %s (%s)", g.To.Short(), g.RuleSource),
						ContentTypeColumn: g.ContentTypeColumn,
						AppLabel:          app,
						Model:             model,
					})
					changed = true
				}
			}
		}
	}
}

// genericInto returns the generic relations whose target is table.
func (l *loader) genericInto(table TableName) []*ForeignKey {
	var out []*ForeignKey
	for _, t := range l.list {
		for _, fk := range t.Outgoing {
			if fk.Kind == FKGeneric && fk.To == table {
				out = append(out, fk)
			}
		}
	}
	return out
}

// hasGeneric reports whether target has a generic relation from the same
// table and columns as g.
func (l *loader) hasGeneric(target TableName, g *ForeignKey) bool {
	for _, fk := range l.genericInto(target) {
		if fk.From == g.From && fk.ContentTypeColumn == g.ContentTypeColumn && slices.Equal(fk.FromColumns, g.FromColumns) {
			return true
		}
	}
	return false
}

// manyToMany finds Django's auto-created many-to-many tables between two
// synced models: named <model table>_<field>, an id primary key and two
// foreign key columns, nothing else. One that is not configured is synced as
// a system table (the seed package silently left it out), with a warning.
func (l *loader) manyToMany() {
	for _, t := range l.list {
		var fks []*ForeignKey
		for _, fk := range t.Outgoing {
			if fk.Kind == FKConstraint && len(fk.FromColumns) == 1 {
				fks = append(fks, fk)
			}
		}
		if len(fks) != 2 || len(t.Outgoing) != 2 || len(t.Columns) != 3 || !slices.Equal(t.PrimaryKey, []string{"id"}) {
			continue
		}
		a, b := l.byName[fks[0].To], l.byName[fks[1].To]
		if a == nil || b == nil || !a.Kind.IsSynced() || !b.Kind.IsSynced() {
			continue
		}
		if !strings.HasPrefix(t.Name.Name, a.Name.Name+"_") && !strings.HasPrefix(t.Name.Name, b.Name.Name+"_") {
			continue
		}
		t.AutoM2M = true
		if t.Configured || t.Contrib && t.Kind.IsSynced() {
			continue
		}
		t.Kind, t.Origin = KindSystem, "auto-created many-to-many"
		l.warnf(t.Name.String(), "auto-created many-to-many table between synced models %s and %s is not configured; it is synced as a system table (add it to models to say so)", a.Name, b.Name)
	}
}

// djangoDefaults gives the foreign keys of Django's own tables (contrib and
// auto-created many-to-many) the rule Django gives them, CASCADE, when
// neither relations: nor the database says otherwise.
func (l *loader) djangoDefaults() {
	for _, t := range l.list {
		if !(t.Contrib || t.AutoM2M) {
			continue
		}
		for _, fk := range t.Outgoing {
			to := l.byName[fk.To]
			if fk.HasRule() || to == nil || (t.Contrib && !to.Contrib) {
				continue
			}
			fk.OnDelete, fk.RuleSource = OnDelete{Rule: Cascade}, "django default"
		}
	}
}

// promoteContrib makes a synced contrib table a delete model when a user
// table points at it, as django-logical-replication does: the user rows
// would otherwise be left pointing at rows deleted by replication.
func (l *loader) promoteContrib() {
	for _, t := range l.list {
		if t.Kind != KindUser {
			continue
		}
		for _, fk := range t.Outgoing {
			to := l.byName[fk.To]
			if fk.Kind == FKGeneric || to == nil || !to.Contrib || to.Configured || to.Kind != KindSystem {
				continue
			}
			to.Kind, to.OnTruncate = KindDelete, TruncateLog
			to.Origin = fmt.Sprintf("contrib, promoted to delete model (%s points at it)", fk.From.Short())
		}
	}
}

func modelSubject(m ModelSpec) string {
	name := m.Table.String()
	if m.Label != "" {
		name = m.Label
	}
	return fmt.Sprintf("models: %s (%s)", name, m.Source)
}

// labelHint explains, for a model named by a Django label, where the missing
// table's name came from.
func labelHint(m ModelSpec) string {
	if m.Label == "" {
		return ""
	}
	app, model, _ := strings.Cut(m.Label, ".")
	hint := fmt.Sprintf(" (%s was read as a Django label, whose default table is %s", m.Label, m.Table)
	if len(m.Table.Name) > maxIdentifier {
		hint += fmt.Sprintf("; that name is longer than PostgreSQL's %d-byte limit for identifiers, so the real table's name differs (Django shortens long names)", maxIdentifier)
	}
	return hint + fmt.Sprintf("; a table named %q in schema %s is written as table: %s.%s next to the label, or as db_table says)", model, app, app, model)
}

// maxIdentifier is PostgreSQL's NAMEDATALEN - 1.
const maxIdentifier = 63

// checkSetValues asks the server to read each SET(<value>) and configured
// SET_DEFAULT value as the type of its column: a value the column cannot
// hold would make every cascade through that foreign key fail. (A CAST, not
// pg_input_is_valid, which 15 lacks: in a transaction, a value that fails
// aborts it.)
func (l *loader) checkSetValues(ctx context.Context, q Querier) error {
	for _, t := range l.list {
		for _, fk := range t.Outgoing {
			r := fk.OnDelete
			if r.Value == "" || (r.Rule != SetValue && r.Rule != SetDefault) {
				continue
			}
			for _, name := range fk.FromColumns {
				c := t.Column(name)
				if c == nil || c.Type == "" {
					continue
				}
				var s *string
				err := q.QueryRow(ctx, "SELECT CAST($1::text AS "+c.Type+")::text", r.Value).Scan(&s)
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgerrcode.IsDataException(pgErr.Code) {
					l.errorf(FKSubject(fk), "%s: %q is not a value of column %s (%s): %s", r, r.Value, c.Name, c.Type, pgErr.Message)
					continue
				}
				if err != nil {
					return err
				}
			}
		}
	}
	return nil
}
