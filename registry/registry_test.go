package registry_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/config"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

// The connections of pgx all satisfy Querier.
var (
	_ registry.Querier = (*pgx.Conn)(nil)
	_ registry.Querier = (*pgxpool.Pool)(nil)
	_ registry.Querier = pgx.Tx(nil)
)

// edit is a change to the example configuration: replace old by new.
type edit struct{ old, new string }

// djangoConfig returns the example sidecar.yaml (which describes the
// reference Django schema) with edits applied, as a registry.Spec.
func djangoConfig(t testing.TB, edits ...edit) registry.Spec {
	t.Helper()
	data, err := os.ReadFile("../sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, e := range edits {
		if !strings.Contains(s, e.old) {
			t.Fatalf("edit: sidecar.yaml has no %q", e.old)
		}
		s = strings.Replace(s, e.old, e.new, 1)
	}
	cfg, err := config.Parse("sidecar.yaml", []byte(s), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.RegistrySpec()
}

// load creates the Django schema plus extra SQL in a fresh database and
// resolves spec against it.
func load(t *testing.T, spec registry.Spec, extraSQL string) *registry.Registry {
	t.Helper()
	db := pgtest.NewDB(t, pgtest.Master(t))
	pgtest.LoadDjangoSchema(t, db)
	if extraSQL != "" {
		pgtest.Exec(t, db.DSN, extraSQL)
	}
	r, err := registry.Load(context.Background(), pgtest.Pool(t, db.DSN), spec)
	if err != nil {
		t.Fatalf("load registry: %v", err)
	}
	return r
}

func table(t *testing.T, r *registry.Registry, name string) *registry.Table {
	t.Helper()
	n, err := registry.ParseTableName(name)
	if err != nil {
		t.Fatal(err)
	}
	tb := r.Table(n)
	if tb == nil {
		t.Fatalf("no table %s", name)
	}
	return tb
}

func fk(t *testing.T, tb *registry.Table, column string) *registry.ForeignKey {
	t.Helper()
	for _, fk := range tb.Outgoing {
		if fk.Kind != registry.FKGeneric && slices.Contains(fk.FromColumns, column) {
			return fk
		}
	}
	t.Fatalf("%s has no foreign key on %s", tb.Name, column)
	return nil
}

func TestLoadResolvesDjangoSchema(t *testing.T) {
	const extra = `
CREATE TABLE userapp_pair (a int, b int, note text, loud text GENERATED ALWAYS AS (upper(note)) STORED, PRIMARY KEY (b, a));
CREATE TABLE userapp_log (id int, at date, unit_id int REFERENCES catalog_unit (id) ON DELETE CASCADE, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE userapp_log_2026 PARTITION OF userapp_log FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE userapp_pairref (id serial PRIMARY KEY, code int NOT NULL, pa int, pb int,
    FOREIGN KEY (pb, pa) REFERENCES userapp_pair (b, a) ON DELETE SET NULL);
CREATE TABLE userapp_note (id serial PRIMARY KEY, unit_id int REFERENCES catalog_unit (id) ON DELETE CASCADE,
    artist_id int REFERENCES catalog_artist (id) ON DELETE CASCADE);
CREATE UNIQUE INDEX userapp_pairref_ident ON userapp_pairref (code);
ALTER TABLE userapp_pairref REPLICA IDENTITY USING INDEX userapp_pairref_ident;
ALTER TABLE catalog_artist REPLICA IDENTITY FULL;
`
	spec := djangoConfig(t, edit{"  userapp_album.artist_id: CASCADE\n", "  userapp_album.artist_id: CASCADE\n  userapp_note.artist_id: PROTECT\n"})
	r := load(t, spec, extra)

	t.Run("kinds from models, contrib defaults and promotion", func(t *testing.T) {
		for name, want := range map[string]registry.Kind{
			"catalog_category":             registry.KindSystem,
			"catalog_unit":                 registry.KindDelete,
			"catalog_gene":                 registry.KindDelete,
			"catalog_outcome":              registry.KindDenormalize,
			"catalog_outcome_sub_outcomes": registry.KindDenormalize,
			"auth_user":                    registry.KindSystem,
			"auth_permission":              registry.KindSystem,
			"django_content_type":          registry.KindDelete, // userapp_taggeditem points at it
			"django_migrations":            registry.KindUser,
			"userapp_report":               registry.KindUser,
		} {
			if got := table(t, r, name).Kind; got != want {
				t.Errorf("%s kind = %s, want %s", name, got, want)
			}
		}
		ct := table(t, r, "django_content_type")
		if !ct.Contrib || !strings.Contains(ct.Origin, "promoted to delete model (userapp_taggeditem") {
			t.Errorf("django_content_type contrib %v origin %q", ct.Contrib, ct.Origin)
		}
		if u := table(t, r, "catalog_unit"); u.Label != "catalog.Unit" || !u.Configured || u.Source != "sidecar.yaml:"+lineOf(t, "  - name: catalog.Unit") || u.OnTruncate != registry.TruncateLog {
			t.Errorf("catalog_unit label %q configured %v source %q truncate %q", u.Label, u.Configured, u.Source, u.OnTruncate)
		}
		if c := table(t, r, "catalog_category"); c.RowFilter != "id > 0" || !slices.Equal(c.ColumnList, []string{"id", "name"}) {
			t.Errorf("catalog_category filter %q columns %v", c.RowFilter, c.ColumnList)
		}
	})

	t.Run("primary keys, composite in key order", func(t *testing.T) {
		for name, want := range map[string][]string{
			"catalog_unit":           {"id"},
			"userapp_signeddocument": {"document_ptr_id"},
			"userapp_pair":           {"b", "a"},
		} {
			if got := table(t, r, name).PrimaryKey; !slices.Equal(got, want) {
				t.Errorf("%s primary key = %v, want %v", name, got, want)
			}
		}
	})

	t.Run("columns with types, nullability and defaults", func(t *testing.T) {
		line := table(t, r, "userapp_reportline")
		gene := line.Column("gene_id")
		if gene == nil || gene.Type != "character varying(20)" || gene.TypeOID != 1043 || gene.NotNull || gene.Default != "" {
			t.Errorf("userapp_reportline.gene_id = %+v", gene)
		}
		id := table(t, r, "catalog_unit").Column("id")
		if id == nil || id.Type != "integer" || !id.NotNull || !strings.HasPrefix(id.Default, "nextval(") {
			t.Errorf("catalog_unit.id = %+v", id)
		}
		if loud := table(t, r, "userapp_pair").Column("loud"); loud == nil || loud.Default != "" {
			t.Errorf("generated column userapp_pair.loud = %+v, want no default", loud)
		}
		if names := len(table(t, r, "auth_user").Columns); names != 11 {
			t.Errorf("auth_user has %d columns, want 11", names)
		}
	})

	t.Run("replica identity", func(t *testing.T) {
		for name, want := range map[string]struct {
			ident registry.ReplicaIdentity
			cols  []string
		}{
			"catalog_unit":    {registry.IdentityDefault, []string{"id"}},
			"catalog_artist":  {registry.IdentityFull, []string{"id", "name"}},
			"userapp_pairref": {registry.IdentityIndex, []string{"code"}},
		} {
			tb := table(t, r, name)
			if tb.ReplicaIdentity != want.ident || !slices.Equal(tb.IdentityColumns, want.cols) || tb.ReplicaIdentityFull != (want.ident == registry.IdentityFull) {
				t.Errorf("%s replica identity %s %v, want %s %v", name, tb.ReplicaIdentity, tb.IdentityColumns, want.ident, want.cols)
			}
		}
	})

	t.Run("foreign keys with rules from relations", func(t *testing.T) {
		f := fk(t, table(t, r, "userapp_report"), "unit_id")
		if f.Kind != registry.FKConstraint || f.To.Name != "catalog_unit" || !slices.Equal(f.ToColumns, []string{"id"}) ||
			f.OnDelete.Rule != registry.Cascade || f.RuleFromDB || !f.Deferrable || !strings.HasPrefix(f.RuleSource, "sidecar.yaml:") ||
			!strings.HasSuffix(f.Name, "_fk_catalog_unit_id") {
			t.Errorf("userapp_report.unit_id = %+v", f)
		}
		if !slices.Contains(table(t, r, "catalog_unit").Incoming, f) {
			t.Error("catalog_unit.Incoming lacks userapp_report.unit_id")
		}
	})

	t.Run("to_field foreign key references a unique non-key column", func(t *testing.T) {
		f := fk(t, table(t, r, "userapp_reportline"), "gene_id")
		if f.To.Name != "catalog_gene" || !slices.Equal(f.ToColumns, []string{"symbol"}) || f.OnDelete.Rule != registry.SetNull {
			t.Errorf("userapp_reportline.gene_id = %s %s", f, f.OnDelete)
		}
	})

	t.Run("composite foreign key keeps column order", func(t *testing.T) {
		f := fk(t, table(t, r, "userapp_pairref"), "pa")
		if !slices.Equal(f.FromColumns, []string{"pb", "pa"}) || !slices.Equal(f.ToColumns, []string{"b", "a"}) {
			t.Errorf("userapp_pairref fk = %s", f)
		}
	})

	t.Run("partitioned table stands for its partitions", func(t *testing.T) {
		if r.Table(registry.TableName{Schema: "public", Name: "userapp_log_2026"}) != nil {
			t.Error("partition userapp_log_2026 is in the registry")
		}
		log := table(t, r, "userapp_log")
		if len(log.Outgoing) != 1 || !slices.Equal(log.PrimaryKey, []string{"id", "at"}) {
			t.Errorf("userapp_log: %d foreign keys, primary key %v", len(log.Outgoing), log.PrimaryKey)
		}
	})

	t.Run("database ON DELETE action is the default rule, relations win", func(t *testing.T) {
		note := table(t, r, "userapp_note")
		if f := fk(t, note, "unit_id"); f.OnDelete.Rule != registry.Cascade || !f.RuleFromDB || f.RuleSource != "database" {
			t.Errorf("userapp_note.unit_id rule %s from db %v source %q", f.OnDelete, f.RuleFromDB, f.RuleSource)
		}
		if f := fk(t, note, "artist_id"); f.OnDelete.Rule != registry.Protect || f.RuleFromDB {
			t.Errorf("userapp_note.artist_id rule %s from db %v", f.OnDelete, f.RuleFromDB)
		}
		if f := fk(t, table(t, r, "userapp_pairref"), "pa"); f.OnDelete.Rule != registry.SetNull || !f.RuleFromDB {
			t.Errorf("userapp_pairref rule %s", f.OnDelete)
		}
	})

	t.Run("multi-table inheritance parent link", func(t *testing.T) {
		f := fk(t, table(t, r, "userapp_signeddocument"), "document_ptr_id")
		if f.Kind != registry.FKParentLink || f.To.Name != "userapp_document" || f.OnDelete.Rule != registry.Cascade {
			t.Errorf("parent link = %+v", f)
		}
	})

	t.Run("foreign key declared without a constraint", func(t *testing.T) {
		f := fk(t, table(t, r, "userapp_preference"), "outcome_id")
		if f.Kind != registry.FKDeclared || f.To.Name != "catalog_outcome" || !slices.Equal(f.ToColumns, []string{"id"}) || f.OnDelete.Rule != registry.DoNothing {
			t.Errorf("declared = %+v", f)
		}
		if !slices.Contains(table(t, r, "catalog_outcome").Incoming, f) {
			t.Error("catalog_outcome.Incoming lacks the declared key")
		}
	})

	t.Run("SET_DEFAULT carries the application's default", func(t *testing.T) {
		if f := fk(t, table(t, r, "userapp_preference"), "unit_id"); f.OnDelete != (registry.OnDelete{Rule: registry.SetDefault, Value: "1"}) {
			t.Errorf("userapp_preference.unit_id = %+v", f.OnDelete)
		}
	})

	t.Run("generic relation", func(t *testing.T) {
		var g *registry.ForeignKey
		for _, f := range table(t, r, "userapp_report").Incoming {
			if f.Kind == registry.FKGeneric {
				g = f
			}
		}
		if g == nil || g.From.Name != "userapp_taggeditem" || !slices.Equal(g.FromColumns, []string{"object_id"}) ||
			!slices.Equal(g.ToColumns, []string{"id"}) || g.ContentTypeColumn != "content_type_id" ||
			g.AppLabel != "userapp" || g.Model != "report" || g.OnDelete.Rule != registry.Cascade {
			t.Errorf("generic relation = %+v", g)
		}
	})

	t.Run("Django defaults: contrib and many-to-many keys cascade", func(t *testing.T) {
		if f := fk(t, table(t, r, "auth_permission"), "content_type_id"); f.OnDelete.Rule != registry.Cascade || f.RuleSource != "django default" {
			t.Errorf("auth_permission.content_type_id = %s from %q", f.OnDelete, f.RuleSource)
		}
		if !table(t, r, "catalog_outcome_sub_outcomes").AutoM2M || !table(t, r, "auth_user_groups").AutoM2M {
			t.Error("auto-created many-to-many tables not recognised")
		}
	})

	t.Run("user tables are what is not synced", func(t *testing.T) {
		var names []string
		for _, u := range r.UserTables() {
			names = append(names, u.Name.Short())
		}
		want := "django_migrations userapp_album userapp_comment userapp_document userapp_log userapp_note userapp_pair userapp_pairref userapp_preference userapp_report userapp_reportline userapp_signeddocument userapp_song userapp_taggeditem"
		if got := strings.Join(names, " "); got != want {
			t.Errorf("user tables\n got %s\nwant %s", got, want)
		}
	})

	t.Run("the extra tables keep the registry valid", func(t *testing.T) {
		if ps := registry.Validate(r); len(ps) > 0 {
			t.Errorf("problems:\n%s", ps)
		}
	})
}

// lineOf returns the line number of the first line of ../sidecar.yaml that is s.
func lineOf(t *testing.T, s string) string {
	t.Helper()
	data, err := os.ReadFile("../sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(data), "\n") {
		if l == s {
			return strconv.Itoa(i + 1)
		}
	}
	t.Fatalf("sidecar.yaml has no line %q", s)
	return ""
}

func TestLoadWorksInATransaction(t *testing.T) {
	db := pgtest.NewDB(t, pgtest.Master(t))
	pgtest.LoadDjangoSchema(t, db)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "CREATE SCHEMA extra; CREATE TABLE extra.thing (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	r, err := registry.Load(ctx, tx, registry.Spec{Schemas: []string{"extra"}, Models: []registry.ModelSpec{
		{Table: registry.TableName{Schema: "extra", Name: "thing"}, Kind: registry.KindSystem},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Tables) != 1 || r.Tables[0].Kind != registry.KindSystem {
		t.Errorf("schema extra read as %v", r.Tables)
	}
}

func TestContribSwitchOffLeavesContribTablesUserTables(t *testing.T) {
	r := load(t, djangoConfig(t, edit{"contrib_system_tables: true", "contrib_system_tables: false"}), "")
	for _, name := range []string{"django_content_type", "auth_user", "auth_permission", "auth_user_groups"} {
		if tb := table(t, r, name); tb.Kind != registry.KindUser || !tb.Contrib {
			t.Errorf("%s kind %s contrib %v, want a user table marked contrib", name, tb.Kind, tb.Contrib)
		}
	}
	if ps := registry.Validate(r); len(ps) > 0 {
		t.Errorf("problems:\n%s", ps)
	}
}

// TestMTIChildInheritsGenericRelation: Django copies a GenericRelation
// declared on a multi-table-inheritance parent to each child model, where it
// matches the child's content type; the registry does the same, naming the
// child's content type from django_content_type by its table, or warns when
// it cannot.
func TestMTIChildInheritsGenericRelation(t *testing.T) {
	onDocument := edit{"generic_relations:\n", `generic_relations:
  - {target: public.userapp_document, table: userapp_taggeditem, content_type_column: content_type_id, object_id_column: object_id, content_type: userapp.document}
`}
	inherited := func(r *registry.Registry) *registry.ForeignKey {
		for _, f := range table(t, r, "userapp_signeddocument").Incoming {
			if f.Kind == registry.FKGeneric {
				return f
			}
		}
		return nil
	}

	r := load(t, djangoConfig(t, onDocument), "INSERT INTO django_content_type (app_label, model) VALUES ('userapp', 'document'), ('userapp', 'signeddocument')")
	g := inherited(r)
	if g == nil || g.From.Name != "userapp_taggeditem" || g.AppLabel != "userapp" || g.Model != "signeddocument" ||
		!slices.Equal(g.ToColumns, []string{"document_ptr_id"}) || g.OnDelete.Rule != registry.Cascade || !strings.HasPrefix(g.RuleSource, "inherited from userapp_document") {
		t.Errorf("inherited generic relation = %+v", g)
	}
	if ps := registry.Validate(r); len(ps) > 0 {
		t.Errorf("problems:\n%s", ps)
	}

	// Without a content type row for the child, it cannot be named.
	r = load(t, djangoConfig(t, onDocument), "")
	if g := inherited(r); g != nil {
		t.Errorf("inherited generic relation without a content type: %+v", g)
	}
	if ps := registry.Validate(r); !strings.Contains(ps.String(), "userapp_signeddocument is a multi-table-inheritance child of public.userapp_document") {
		t.Errorf("problems lack the warning about the child:\n%s", ps)
	}
}

func TestParseTableName(t *testing.T) {
	for in, want := range map[string]registry.TableName{
		"cat":                 {"public", "cat"},
		"app.cat":             {"app", "cat"},
		`public."Upper"`:      {"public", "Upper"},
		`"my.schema"."a,b"`:   {"my.schema", "a,b"},
		`public."say ""hi"""`: {"public", `say "hi"`},
		`"Mixed"`:             {"public", "Mixed"},
		"public.catalog_Unit": {"public", "catalog_Unit"}, // as written: no folding
	} {
		got, err := registry.ParseTableName(in)
		if err != nil || got != want {
			t.Errorf("ParseTableName(%s) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", ".", "a.", ".b", "a.b.c", `"open`, `a"b`, `"a"b`, `public."x"y`} {
		if got, err := registry.ParseTableName(bad); err == nil {
			t.Errorf("ParseTableName(%s) = %v, want an error", bad, got)
		}
	}
}
