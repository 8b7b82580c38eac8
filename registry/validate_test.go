package registry_test

import (
	"strings"
	"testing"

	"github.com/pgoutpost/pgoutpost/registry"
)

// TestValidateRules shows each rule of validation firing on a schema or
// configuration that breaks it, and staying quiet on one that does not. Every
// case starts from the reference Django schema and the example sidecar.yaml,
// which validate clean.
func TestValidateRules(t *testing.T) {
	const categoryOwner = "ALTER TABLE catalog_category ADD COLUMN owner_id int REFERENCES userapp_preference (id) DEFERRABLE INITIALLY DEFERRED;"
	for _, tc := range []struct {
		name  string
		sql   string
		edits []edit
		want  []string // one substring per expected problem; none = quiet
	}{
		{name: "reference schema and example config are clean"},

		{name: "user table pointing at a system table that is not a delete model is an error naming the foreign key",
			edits: []edit{{"  - name: catalog.Gene\n    kind: delete", "  - name: catalog.Gene\n    kind: system"}},
			want:  []string{"error: userapp_reportline.gene_id -> catalog_gene.symbol: user table userapp_reportline points at system table catalog_gene, which is not a delete model"}},
		{name: "contrib table a user table points at is promoted, not an error"},
		{name: "contrib table configured as plain system table is an error when a user table points at it",
			edits: []edit{{"models:\n", "models:\n  - name: public.django_content_type\n    kind: system\n"}},
			want:  []string{"error: userapp_taggeditem.content_type_id -> django_content_type.id: user table userapp_taggeditem points at system table django_content_type, which is not a delete model"}},

		{name: "system table pointing at a user table is an error",
			sql:  categoryOwner,
			want: []string{"error: catalog_category.owner_id -> userapp_preference.id: system table catalog_category points at user table userapp_preference, which is not synced"}},
		{name: "system table pointing at a user table is allowed with skip_validation",
			sql:   categoryOwner,
			edits: []edit{{"skip_validation: false", "skip_validation: true"}}},

		{name: "configured table that does not exist",
			edits: []edit{{"models:\n", "models:\n  - name: catalog.Gizmo\n    kind: delete\n"}},
			want:  []string{"error: models: catalog.Gizmo (sidecar.yaml:", "table public.catalog_gizmo does not exist (catalog.Gizmo was read as a Django label, whose default table is public.catalog_gizmo; a table named \"Gizmo\" in schema catalog is written as table: catalog.Gizmo next to the label"}},
		{name: "mixed-case schema.Table is read as a label, and the message says so",
			sql:   `CREATE TABLE "Upper" (id int PRIMARY KEY)`,
			edits: []edit{{"models:\n", "models:\n  - name: public.Upper\n    kind: system\n"}},
			want:  []string{"table public.public_upper does not exist (public.Upper was read as a Django label, whose default table is public.public_upper; a table named \"Upper\" in schema public is written as table: public.Upper next to the label"}},
		{name: "mixed-case table named with table: next to the label",
			sql:   `CREATE TABLE "Upper" (id int PRIMARY KEY)`,
			edits: []edit{{"models:\n", "models:\n  - name: public.Upper\n    table: public.Upper\n    kind: system\n"}}},
		{name: "a label whose default table passes the 63-byte identifier limit",
			edits: []edit{{"models:\n", "models:\n  - name: catalog.AVeryLongModelNameThatDjangoWouldHaveShortenedWithAHashSuffix\n    kind: system\n"}},
			want:  []string{"longer than PostgreSQL's 63-byte limit for identifiers"}},
		{name: "configured table outside the schemas",
			edits: []edit{{"models:\n", "models:\n  - name: other.thing\n    kind: system\n"}},
			want:  []string{"table other.thing is in schema other, which is not in schemas: public"}},
		{name: "configured table without a primary key",
			sql:   "CREATE TABLE catalog_nokey (id int);",
			edits: []edit{{"models:\n", "models:\n  - name: catalog_nokey\n    kind: system\n"}},
			want:  []string{"error: catalog_nokey (sidecar.yaml:", "system table has no primary key"}},

		{name: "pgoutpost's own queue table as a model is an error",
			sql:   "CREATE SCHEMA pgoutpost; CREATE TABLE pgoutpost.delete_queue (id uuid PRIMARY KEY);",
			edits: []edit{{"schemas: [public]", "schemas: [public, pgoutpost]"}, {"models:\n", "models:\n  - name: pgoutpost.delete_queue\n    kind: system\n"}},
			want:  []string{"pgoutpost's own table cannot be a model"}},
		{name: "every foreign key into a delete model without a rule is listed",
			edits: []edit{{"  userapp_report.unit_id: CASCADE\n", ""}, {"  userapp_comment.unit_id: CASCADE\n", ""}},
			want: []string{
				"error: userapp_comment.unit_id -> catalog_unit.id: points at delete model catalog_unit but has no on_delete rule: add `userapp_comment.unit_id: <RULE>` under relations",
				"error: userapp_report.unit_id -> catalog_unit.id: points at delete model catalog_unit but has no on_delete rule: add `userapp_report.unit_id: <RULE>`",
			}},
		{name: "foreign key into a table a cascade reaches needs a rule",
			edits: []edit{{"  userapp_reportline.report_id: CASCADE\n", ""}},
			want:  []string{"error: userapp_reportline.report_id -> userapp_report.id: points at userapp_report, which deletes of delete model catalog_unit reach by cascade, but has no on_delete rule"}},
		{name: "foreign key into a user table no cascade reaches needs no rule",
			edits: []edit{{"  userapp_song.album_id: RESTRICT\n", ""}, {"  userapp_album.artist_id: CASCADE\n", "  userapp_album.artist_id: PROTECT\n"}}},
		{name: "a denormalize model is a delete model: its foreign keys need rules",
			edits: []edit{{"  userapp_report.outcome_id: SET_NULL\n", ""}},
			want:  []string{"error: userapp_report.outcome_id -> catalog_outcome.id: points at delete model catalog_outcome but has no on_delete rule"}},
		{name: "an ON DELETE action in the database is a rule",
			sql: "CREATE TABLE userapp_note (id serial PRIMARY KEY, unit_id int REFERENCES catalog_unit (id) ON DELETE CASCADE);"},
		{name: "NO ACTION in the database is no rule",
			sql:  "CREATE TABLE userapp_note (id serial PRIMARY KEY, unit_id int REFERENCES catalog_unit (id) ON DELETE NO ACTION);",
			want: []string{"error: userapp_note.unit_id -> catalog_unit.id: points at delete model catalog_unit but has no on_delete rule"}},

		{name: "SET_NULL on a NOT NULL column is an error",
			edits: []edit{{"  userapp_report.unit_id: CASCADE\n", "  userapp_report.unit_id: SET_NULL\n"}},
			want:  []string{"error: userapp_report.unit_id -> catalog_unit.id: SET_NULL on column unit_id, which is NOT NULL"}},
		{name: "SET_DEFAULT on a column without a default is an error",
			edits: []edit{{"{on_delete: SET_DEFAULT, default: 1}", "SET_DEFAULT"}},
			want:  []string{`error: userapp_preference.unit_id -> catalog_unit.id: SET_DEFAULT on column unit_id, which has no default in the database: give the application's default as {on_delete: SET_DEFAULT, default: <value>} under relations, or ALTER TABLE "public"."userapp_preference" ALTER COLUMN unit_id SET DEFAULT`}},
		{name: "a SET_DEFAULT value the column cannot hold is an error",
			edits: []edit{{"{on_delete: SET_DEFAULT, default: 1}", "{on_delete: SET_DEFAULT, default: one}"}},
			want:  []string{`error: userapp_preference.unit_id -> catalog_unit.id: SET_DEFAULT: "one" is not a value of column unit_id (integer): invalid input syntax for type integer`}},
		{name: "a SET(…) value the column cannot hold is an error",
			edits: []edit{{"{on_delete: SET_DEFAULT, default: 1}", "SET('text')"}},
			want:  []string{`error: userapp_preference.unit_id -> catalog_unit.id: SET(text): "text" is not a value of column unit_id (integer)`}},
		{name: "SET_DEFAULT on a column with a database default is fine",
			sql:   "ALTER TABLE userapp_preference ALTER COLUMN unit_id SET DEFAULT 1;",
			edits: []edit{{"{on_delete: SET_DEFAULT, default: 1}", "SET_DEFAULT"}}},

		{name: "row filter outside the replica identity warns with the ALTER TABLE that fixes it",
			edits: []edit{{`    row_filter: "id > 0"`, `    row_filter: "name <> 'x' AND id > 0"`}, {"    columns: [id, name]\n", ""}},
			want:  []string{`warning: catalog_category (sidecar.yaml:`, `row_filter uses name, outside the replica identity (id): PostgreSQL refuses UPDATEs of the table on the master once it is published with this filter; fix: ALTER TABLE "public"."catalog_category" REPLICA IDENTITY FULL;`}},
		{name: "row filter outside the replica identity with a column list cannot be fixed by FULL",
			edits: []edit{{`    row_filter: "id > 0"`, `    row_filter: "name <> 'x'"`}},
			want:  []string{"row_filter uses name, outside the replica identity (id): PostgreSQL refuses UPDATEs of the table on the master once it is published with this filter; REPLICA IDENTITY FULL would fix this, but PostgreSQL 15 allows no column list with it"}},
		{name: "row filter with REPLICA IDENTITY FULL is fine",
			sql:   "ALTER TABLE catalog_category REPLICA IDENTITY FULL;",
			edits: []edit{{`    row_filter: "id > 0"`, `    row_filter: "name <> 'x'"`}, {"    columns: [id, name]\n", ""}}},
		{name: "row filter on changing columns of a delete model warns that UPDATEs become DELETEs",
			sql:   "ALTER TABLE catalog_unit REPLICA IDENTITY FULL;",
			edits: []edit{{"    table: catalog_unit\n", "    table: catalog_unit\n    row_filter: \"name <> 'x'\"\n"}},
			want:  []string{"warning: catalog_unit (sidecar.yaml:", "row_filter uses name: an UPDATE that makes a row stop matching the filter reaches the slaves as a DELETE"}},
		{name: "row filter on the primary key is fine",
			edits: []edit{{"    table: catalog_unit\n", "    table: catalog_unit\n    row_filter: 'id > 0 AND ''name'' <> \"id\"::text'\n"}}},
		{name: "column list without the primary key warns",
			edits: []edit{{"    columns: [id, name]", "    columns: [name]"}},
			want:  []string{"warning: catalog_category (sidecar.yaml:", "columns: the column list lacks replica identity column(s) id"}},
		{name: "column list with REPLICA IDENTITY FULL warns",
			sql:  "ALTER TABLE catalog_category REPLICA IDENTITY FULL;",
			want: []string{`columns: a column list with REPLICA IDENTITY FULL makes PostgreSQL 15 refuse UPDATEs of the table on the master; fix: ALTER TABLE "public"."catalog_category" REPLICA IDENTITY DEFAULT;`}},
		{name: "column list naming a missing column is an error",
			edits: []edit{{"    columns: [id, name]", "    columns: [id, title]"}},
			want:  []string{"error: catalog_category (sidecar.yaml:", "columns: table has no column title"}},

		{name: "unconfigured auto-created many-to-many table between synced models is synced with a warning",
			edits: []edit{{"  - name: public.catalog_outcome_sub_outcomes\n    kind: denormalize\n", ""}},
			want:  []string{"warning: public.catalog_outcome_sub_outcomes: auto-created many-to-many table between synced models public.catalog_outcome and public.catalog_outcome is not configured; it is synced as a system table"}},
		{name: "relation on a column without a foreign key must say what it references",
			edits: []edit{{"relations:\n", "relations:\n  userapp_report.title: CASCADE\n"}},
			want:  []string{"error: relations: userapp_report.title (sidecar.yaml:", "public.userapp_report(title) has no foreign key constraint; declare its target with references: table.column"}},
		{name: "relation on a table that does not exist",
			edits: []edit{{"relations:\n", "relations:\n  userapp_gone.x_id: CASCADE\n"}},
			want:  []string{"table public.userapp_gone does not exist"}},
		{name: "declared relation whose target does not exist",
			edits: []edit{{"references: catalog_outcome.id", "references: catalog_outcome.uuid"}},
			want:  []string{"references: table public.catalog_outcome has no column uuid"}},
		{name: "generic relation on a table without the columns",
			edits: []edit{{"object_id_column: object_id", "object_id_column: obj_id"}},
			want:  []string{"generic_relations: userapp_taggeditem on userapp_report (sidecar.yaml:", "table public.userapp_taggeditem has no column obj_id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := load(t, djangoConfig(t, tc.edits...), tc.sql)
			ps := registry.Validate(r)
			if len(tc.want) == 0 {
				if len(ps) > 0 {
					t.Fatalf("want no problem, got:\n%s", ps)
				}
				return
			}
			// Each wanted substring is found in a problem; a case may name
			// one problem by several substrings, so count distinct matches.
			matched := map[int]bool{}
			for _, w := range tc.want {
				found := false
				for i, p := range ps {
					if strings.Contains(p.String(), w) {
						matched[i], found = true, true
					}
				}
				if !found {
					t.Errorf("no problem contains %q; got:\n%s", w, ps)
				}
			}
			if len(matched) != len(ps) {
				t.Errorf("unexpected problems besides the wanted ones:\n%s", ps)
			}
		})
	}
}

func TestFilterColumns(t *testing.T) {
	tb := &registry.Table{Columns: []registry.Column{{Name: "id"}, {Name: "name"}, {Name: "Mixed"}, {Name: "text"}, {Name: "kind"}}}
	for _, tc := range []struct {
		filter string
		want   string
	}{
		{"id > 0", "id"},
		{"name <> 'id' AND kind = 'a''kind'", "name kind"},
		{`"Mixed" IS NULL OR "name" = $$id$$`, "Mixed name"},
		{"NAME::text = lower(E'kind')", "name"},
		{"id::text = 'x'", "id"},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			if got := strings.Join(registry.FilterColumns(tc.filter, tb), " "); got != tc.want {
				t.Errorf("FilterColumns = %q, want %q", got, tc.want)
			}
		})
	}
}
