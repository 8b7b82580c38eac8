package cascade_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/cascade"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// baseFixture is in every case's transaction, before the case's own rows.
const baseFixture = `
INSERT INTO django_content_type (id, app_label, model) VALUES (50, 'userapp', 'report'), (51, 'userapp', 'comment');
INSERT INTO catalog_category (id, name) VALUES (1, 'category');
INSERT INTO catalog_unit (id, name, category_id) VALUES (1, 'kept', NULL), (2, 'doomed', NULL);
`

const artists = `
INSERT INTO catalog_artist (id, name) VALUES (1, 'artist one'), (2, 'artist two');
INSERT INTO userapp_album (id, name, artist_id) VALUES (1, 'album one', 1), (2, 'album two', 2);
INSERT INTO userapp_song (id, name, artist_id, album_id) VALUES (1, 'song one', 1, 1), (2, 'song two', 1, 2);
`

const documents = `
INSERT INTO userapp_document (id, title, unit_id) VALUES (30, 'd30', 2), (31, 'd31', 1);
INSERT INTO userapp_signeddocument (document_ptr_id, signer) VALUES (30, 's30'), (31, 's31');
`

// taggedDocuments tags document 31 with the parent's content type (item 1)
// and the child's (item 2), and document 30 with the child's (item 3).
const taggedDocuments = `
INSERT INTO django_content_type (id, app_label, model) VALUES (60, 'userapp', 'document'), (61, 'userapp', 'signeddocument');
INSERT INTO userapp_taggeditem (id, object_id, label, content_type_id) VALUES (1, 31, 'parent', 60), (2, 31, 'child', 61), (3, 30, 'child', 61);
`

// documentTags is a GenericRelation declared on the MTI parent Document.
var documentTags = registry.GenericRelationSpec{
	Target: public("userapp_document"), Table: public("userapp_taggeditem"), ContentTypeColumn: "content_type_id", ObjectIDColumn: "object_id",
	AppLabel: "userapp", Model: "document", OnDelete: on(registry.Cascade), Source: "test",
}

const boxes = `
CREATE TABLE t_box (a integer, b varchar(10), PRIMARY KEY (a, b));
CREATE TABLE t_item (id integer PRIMARY KEY, box_a integer, box_b varchar(10),
	FOREIGN KEY (box_a, box_b) REFERENCES t_box DEFERRABLE INITIALLY DEFERRED);
INSERT INTO t_box VALUES (1, 'x'), (1, 'y'), (2, 'x');
INSERT INTO t_item VALUES (1, 1, 'x'), (2, 1, 'y'), (3, 2, 'x'), (4, 1, 'x');
`

type target struct {
	table string
	keys  []string
}

type deleteCase struct {
	name     string
	fixture  string                         // SQL run in the case's transaction after baseFixture
	declared []registry.RelationSpec        // relations without a constraint, added to the reference schema's
	generic  []registry.GenericRelationSpec // generic relations added to Report.tags
	rules    map[string]registry.OnDelete   // rule overrides by table.column
	mutate   func(*registry.Registry)       // changes to the registry before the engine is built
	opts     []cascade.Option
	table    string
	keys     []string // primary keys as the delete queue holds them (JSON)
	also     []target // more rows deleted in the same deletion (DeleteAll)

	wantErr     error            // matched with errors.Is; nil for success
	wantRefs    []string         // the rows a ProtectedError/RestrictedError lists
	deleted     map[string]int64 // Result.Deleted by table name
	updated     map[string]int64 // Result.Updated by table name
	missing     int
	deletedKeys map[string]string // Result.DeletedKeys by table name, keys joined with " "
	steps       []string          // Result.Steps as "ACTION table [via column]", in order
	// after maps a query to its single text result once Delete returned
	// (on error too: then it shows that nothing changed).
	after map[string]string
}

func ids(table string) string {
	return "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM " + table
}

var deleteCases = []deleteCase{
	{
		name: "cascade deletes referencing rows over several levels",
		fixture: `
			INSERT INTO catalog_marker (id, name, unit_id) VALUES (20, 'm20', 2), (21, 'm21', 1);
			INSERT INTO userapp_report (id, title, unit_id) VALUES (10, 'r10', 2), (11, 'r11', 1);
			INSERT INTO userapp_reportline (id, text, report_id) VALUES (1, 'l', 10), (2, 'l', 10), (3, 'l', 11);
			INSERT INTO userapp_comment (id, body, unit_id, parent_id) VALUES (1, 'c', 2, NULL), (2, 'reply', NULL, 1), (3, 'c', 1, NULL);`,
		table: "catalog_unit", keys: []string{`{"id": 2}`},
		deleted: map[string]int64{"catalog_unit": 1, "catalog_marker": 1, "userapp_report": 1, "userapp_reportline": 2, "userapp_comment": 2},
		after: map[string]string{
			ids("catalog_unit"): "1", ids("catalog_marker"): "21", ids("userapp_report"): "11",
			ids("userapp_reportline"): "3", ids("userapp_comment"): "3",
		},
	},
	{
		name:    "protect blocks the delete and lists every protected row",
		fixture: `INSERT INTO catalog_unit (id, name, category_id) VALUES (3, 'u3', 1), (4, 'u4', 1);`,
		table:   "catalog_category", keys: []string{`{"id": 1}`},
		wantErr: cascade.ErrProtected, wantRefs: []string{"public.catalog_unit(3)", "public.catalog_unit(4)"},
		after: map[string]string{ids("catalog_category"): "1", ids("catalog_unit"): "1,2,3,4"},
	},
	{
		name: "protect counts a row that is itself cascaded on another path",
		fixture: `
			INSERT INTO catalog_marker (id, name, unit_id) VALUES (20, 'm20', 2), (21, 'm21', 2);
			INSERT INTO userapp_report (id, title, unit_id, marker_id) VALUES (10, 'r10', 2, 20), (11, 'r11', 1, 21), (12, 'r12', 1, 20);`,
		table: "catalog_unit", keys: []string{`{"id": 2}`},
		wantErr: cascade.ErrProtected, wantRefs: []string{"public.userapp_report(10)", "public.userapp_report(11)", "public.userapp_report(12)"},
		after: map[string]string{ids("userapp_report"): "10,11,12", ids("catalog_marker"): "20,21", ids("catalog_unit"): "1,2"},
	},
	{
		name: "protect reports rows of several relations and levels at once",
		fixture: `
			CREATE TABLE t_pin (id integer PRIMARY KEY, unit_id integer);
			INSERT INTO t_pin VALUES (1, 2), (2, 1);
			INSERT INTO catalog_marker (id, name, unit_id) VALUES (20, 'm20', 2);
			INSERT INTO userapp_report (id, title, unit_id, marker_id) VALUES (11, 'r11', 1, 20);`,
		declared: []registry.RelationSpec{{From: public("t_pin"), Column: "unit_id", OnDelete: on(registry.Protect), To: public("catalog_unit"), ToColumn: "id"}},
		table:    "catalog_unit", keys: []string{`{"id": 2}`},
		wantErr: cascade.ErrProtected, wantRefs: []string{"public.t_pin(1)", "public.userapp_report(11)"},
	},
	{
		name:    "restrict: deleting album one directly fails (Django docs)",
		fixture: artists, table: "userapp_album", keys: []string{`{"id": 1}`},
		wantErr: cascade.ErrRestricted, wantRefs: []string{"public.userapp_song(1)"},
		after: map[string]string{ids("userapp_album"): "1,2", ids("userapp_song"): "1,2"},
	},
	{
		name:    "restrict: deleting artist two fails, song two is not deleted with it (Django docs)",
		fixture: artists, table: "catalog_artist", keys: []string{`{"id": 2}`},
		wantErr: cascade.ErrRestricted, wantRefs: []string{"public.userapp_song(2)"},
		after: map[string]string{ids("catalog_artist"): "1,2", ids("userapp_album"): "1,2"},
	},
	{
		name:    "restrict: deleting artist one deletes its album and both songs (Django docs)",
		fixture: artists, table: "catalog_artist", keys: []string{`{"id": 1}`},
		deleted: map[string]int64{"catalog_artist": 1, "userapp_album": 1, "userapp_song": 2},
		after:   map[string]string{ids("catalog_artist"): "2", ids("userapp_album"): "2", ids("userapp_song"): ""},
	},
	{
		name:    "restrict: deleting both artists in one delete succeeds",
		fixture: artists, table: "catalog_artist", keys: []string{`{"id": 2}`, `{"id": 1}`},
		deleted: map[string]int64{"catalog_artist": 2, "userapp_album": 2, "userapp_song": 2},
	},
	{
		name:    "restrict: album one and artist one in one deletion succeed together",
		fixture: artists, table: "userapp_album", keys: []string{`{"id": 1}`},
		also:    []target{{"catalog_artist", []string{`{"id": 1}`}}},
		deleted: map[string]int64{"catalog_artist": 1, "userapp_album": 1, "userapp_song": 2},
	},
	{
		name:    "restrict: album one and artist two in one deletion still fail on song one",
		fixture: artists, table: "userapp_album", keys: []string{`{"id": 1}`},
		also:    []target{{"catalog_artist", []string{`{"id": 2}`}}},
		wantErr: cascade.ErrRestricted, wantRefs: []string{"public.userapp_song(1)", "public.userapp_song(2)"},
	},
	{
		name: "a row deleted as a target and reached by a cascade is deleted once",
		fixture: `
			INSERT INTO catalog_marker (id, name, unit_id) VALUES (20, 'm20', 2), (21, 'm21', 1);`,
		table: "catalog_marker", keys: []string{`{"id": 20}`, `{"id": 21}`},
		also:    []target{{"catalog_unit", []string{`{"id": 2}`}}},
		deleted: map[string]int64{"catalog_unit": 1, "catalog_marker": 2},
		after:   map[string]string{ids("catalog_marker"): "", ids("catalog_unit"): "1"},
	},
	{
		name: "set null clears the referencing column and keeps the row",
		fixture: `
			INSERT INTO catalog_outcome (id, name) VALUES (7, 'o7'), (8, 'o8');
			INSERT INTO userapp_report (id, title, unit_id, outcome_id) VALUES (10, 'r10', 1, 7), (11, 'r11', 1, 8);`,
		table: "catalog_outcome", keys: []string{`{"id": 7}`},
		deleted: map[string]int64{"catalog_outcome": 1}, updated: map[string]int64{"userapp_report": 1},
		steps: []string{"SET_NULL userapp_report via outcome_id", "DELETE catalog_outcome"},
		after: map[string]string{"SELECT string_agg(coalesce(outcome_id::text, 'null'), ',' ORDER BY id) FROM userapp_report": "null,8"},
	},
	{
		name: "many-to-many rows of both sides cascade, reported keys list the denormalize rows",
		fixture: `
			INSERT INTO catalog_outcome (id, name) VALUES (7, 'o7'), (8, 'o8'), (9, 'o9');
			INSERT INTO catalog_outcome_sub_outcomes (id, from_outcome_id, to_outcome_id) VALUES (1, 7, 8), (2, 9, 7), (3, 8, 9);`,
		opts:  []cascade.Option{cascade.ReportKeys(registry.KindDenormalize)},
		table: "catalog_outcome", keys: []string{`{"id": 7}`},
		deleted:     map[string]int64{"catalog_outcome": 1, "catalog_outcome_sub_outcomes": 2},
		deletedKeys: map[string]string{"catalog_outcome": "(7)", "catalog_outcome_sub_outcomes": "(1) (2)"},
		steps: []string{
			"DELETE catalog_outcome_sub_outcomes via from_outcome_id",
			"DELETE catalog_outcome_sub_outcomes via to_outcome_id",
			"DELETE catalog_outcome",
		},
		after: map[string]string{ids("catalog_outcome_sub_outcomes"): "3", ids("catalog_outcome"): "8,9"},
	},
	{
		name: "do nothing leaves referencing rows without a constraint as they are",
		fixture: `
			INSERT INTO catalog_outcome (id, name) VALUES (7, 'o7');
			INSERT INTO userapp_preference (id, value, outcome_id, unit_id) VALUES (1, 'v', 7, 1);`,
		table: "catalog_outcome", keys: []string{`{"id": 7}`},
		deleted: map[string]int64{"catalog_outcome": 1},
		after:   map[string]string{"SELECT outcome_id::text FROM userapp_preference": "7"},
	},
	{
		name:    "set default without a database default fails before changing anything",
		fixture: `INSERT INTO userapp_preference (id, value, unit_id) VALUES (1, 'v', 2);`,
		table:   "catalog_unit", keys: []string{`{"id": 2}`},
		wantErr: cascade.ErrNoDefault,
		after:   map[string]string{"SELECT unit_id::text FROM userapp_preference": "2", ids("catalog_unit"): "1,2"},
	},
	{
		name: "set default writes the column's database default",
		fixture: `
			ALTER TABLE userapp_preference ALTER COLUMN unit_id SET DEFAULT 1;
			INSERT INTO userapp_preference (id, value, unit_id) VALUES (1, 'v', 2), (2, 'w', 1);`,
		table: "catalog_unit", keys: []string{`{"id": 2}`},
		deleted: map[string]int64{"catalog_unit": 1}, updated: map[string]int64{"userapp_preference": 1},
		after: map[string]string{"SELECT string_agg(unit_id::text, ',' ORDER BY id) FROM userapp_preference": "1,1"},
	},
	{
		name:    "set default writes the application's default given in relations (default: 1)",
		fixture: `INSERT INTO userapp_preference (id, value, unit_id) VALUES (1, 'v', 2);`,
		rules:   map[string]registry.OnDelete{"userapp_preference.unit_id": {Rule: registry.SetDefault, Value: "1"}},
		table:   "catalog_unit", keys: []string{`{"id": 2}`},
		deleted: map[string]int64{"catalog_unit": 1}, updated: map[string]int64{"userapp_preference": 1},
		after: map[string]string{"SELECT unit_id::text FROM userapp_preference": "1"},
	},
	{
		name: "a relation without a rule fails only when rows reference the deleted rows",
		fixture: `
			CREATE TABLE t_loose (id integer PRIMARY KEY, unit_id integer REFERENCES catalog_unit DEFERRABLE INITIALLY DEFERRED);
			INSERT INTO t_loose VALUES (1, 1);`,
		table: "catalog_unit", keys: []string{`{"id": 2}`},
		deleted: map[string]int64{"catalog_unit": 1},
	},
	{
		name: "a relation without a rule and a referencing row is an error",
		fixture: `
			CREATE TABLE t_loose (id integer PRIMARY KEY, unit_id integer REFERENCES catalog_unit DEFERRABLE INITIALLY DEFERRED);
			INSERT INTO t_loose VALUES (1, 2);`,
		table: "catalog_unit", keys: []string{`{"id": 2}`},
		wantErr: cascade.ErrNoRule,
		after:   map[string]string{ids("catalog_unit"): "1,2"},
	},
	{
		name:    "set(1) writes the configured value (Django's model default)",
		fixture: `INSERT INTO userapp_preference (id, value, unit_id) VALUES (1, 'v', 2);`,
		rules:   map[string]registry.OnDelete{"userapp_preference.unit_id": {Rule: registry.SetValue, Value: "1"}},
		table:   "catalog_unit", keys: []string{`{"id": 2}`},
		deleted: map[string]int64{"catalog_unit": 1}, updated: map[string]int64{"userapp_preference": 1},
		after: map[string]string{"SELECT unit_id::text FROM userapp_preference": "1"},
	},
	{
		name:    "set null on a not-null column fails clearly and changes nothing",
		fixture: `INSERT INTO userapp_preference (id, value, unit_id) VALUES (1, 'v', 2);`,
		rules:   map[string]registry.OnDelete{"userapp_preference.unit_id": on(registry.SetNull)},
		table:   "catalog_unit", keys: []string{`{"id": 2}`},
		wantErr: cascade.ErrNotNull,
		after:   map[string]string{"SELECT unit_id::text FROM userapp_preference": "2", ids("catalog_unit"): "1,2"},
	},
	{
		name: "set null on a not-null column the registry thinks nullable: the server's error is translated",
		fixture: `
			INSERT INTO catalog_marker (id, name, unit_id) VALUES (20, 'm20', 2);
			INSERT INTO userapp_preference (id, value, unit_id) VALUES (1, 'v', 2);`,
		rules: map[string]registry.OnDelete{"userapp_preference.unit_id": on(registry.SetNull)},
		mutate: func(r *registry.Registry) {
			r.Table(registry.TableName{Schema: "public", Name: "userapp_preference"}).Column("unit_id").NotNull = false
		},
		table: "catalog_unit", keys: []string{`{"id": 2}`},
		wantErr: cascade.ErrNotNull,
		after:   map[string]string{"SELECT unit_id::text FROM userapp_preference": "2", ids("catalog_marker"): "20"},
	},
	{
		name: "to_field relation matches on the referenced column",
		fixture: `
			INSERT INTO catalog_gene (id, symbol) VALUES (5, 'BRCA1'), (6, 'TP53');
			INSERT INTO userapp_report (id, title, unit_id) VALUES (11, 'r11', 1);
			INSERT INTO userapp_reportline (id, text, gene_id, report_id) VALUES (1, 'l', 'BRCA1', 11), (2, 'l', 'TP53', 11), (3, 'l', '5', 11);`,
		table: "catalog_gene", keys: []string{`{"id": 5}`},
		deleted: map[string]int64{"catalog_gene": 1}, updated: map[string]int64{"userapp_reportline": 1},
		after: map[string]string{"SELECT string_agg(coalesce(gene_id, 'null'), ',' ORDER BY id) FROM userapp_reportline": "null,TP53,5"},
	},
	{
		name:    "mti: deleting a child deletes its parent row",
		fixture: documents, table: "userapp_signeddocument", keys: []string{`{"document_ptr_id": 31}`},
		deleted: map[string]int64{"userapp_signeddocument": 1, "userapp_document": 1},
		after:   map[string]string{ids("userapp_document"): "30"},
	},
	{
		name: "mti: deleting a child also deletes a sibling child of the same parent row",
		fixture: documents + `
			CREATE TABLE t_draft (document_ptr_id integer PRIMARY KEY REFERENCES userapp_document DEFERRABLE INITIALLY DEFERRED, note text);
			INSERT INTO t_draft VALUES (31, 'd'), (30, 'd');`,
		declared: []registry.RelationSpec{{From: public("t_draft"), Column: "document_ptr_id", ParentLink: true, OnDelete: on(registry.Cascade)}},
		table:    "userapp_signeddocument", keys: []string{`{"document_ptr_id": 31}`},
		deleted: map[string]int64{"userapp_signeddocument": 1, "userapp_document": 1, "t_draft": 1},
		after:   map[string]string{"SELECT string_agg(document_ptr_id::text, ',') FROM t_draft": "30"},
	},
	{
		name:    "mti: deleting a parent cascades to its child",
		fixture: documents, table: "userapp_document", keys: []string{`{"id": 31}`},
		deleted: map[string]int64{"userapp_signeddocument": 1, "userapp_document": 1},
		after:   map[string]string{"SELECT string_agg(document_ptr_id::text, ',') FROM userapp_signeddocument": "30"},
	},
	{
		name:    "mti: a generic relation of the parent is followed from a deleted child with the child's content type only",
		fixture: documents + taggedDocuments,
		generic: []registry.GenericRelationSpec{documentTags},
		table:   "userapp_signeddocument", keys: []string{`{"document_ptr_id": 31}`},
		deleted: map[string]int64{"userapp_signeddocument": 1, "userapp_document": 1, "userapp_taggeditem": 1},
		after:   map[string]string{ids("userapp_taggeditem"): "1,3"}, // the parent's own tag stays, as in Django
	},
	{
		name:    "mti: deleting the parent follows its generic relation with both content types",
		fixture: documents + taggedDocuments,
		generic: []registry.GenericRelationSpec{documentTags},
		table:   "userapp_document", keys: []string{`{"id": 31}`},
		deleted: map[string]int64{"userapp_signeddocument": 1, "userapp_document": 1, "userapp_taggeditem": 2},
		after:   map[string]string{ids("userapp_taggeditem"): "3"},
	},
	{
		name:    "mti: a child's own generic relation replaces the inherited one",
		fixture: documents + taggedDocuments,
		generic: []registry.GenericRelationSpec{documentTags, {
			Target: public("userapp_signeddocument"), Table: public("userapp_taggeditem"), ContentTypeColumn: "content_type_id", ObjectIDColumn: "object_id",
			AppLabel: "userapp", Model: "signeddocument", OnDelete: on(registry.Cascade),
		}},
		table: "userapp_signeddocument", keys: []string{`{"document_ptr_id": 31}`},
		deleted: map[string]int64{"userapp_signeddocument": 1, "userapp_document": 1, "userapp_taggeditem": 1},
		after:   map[string]string{ids("userapp_taggeditem"): "1,3"},
	},
	{
		name:    "mti: a cascade into the parent reaches the child",
		fixture: documents, table: "catalog_unit", keys: []string{`{"id": 2}`},
		deleted: map[string]int64{"catalog_unit": 1, "userapp_signeddocument": 1, "userapp_document": 1},
	},
	{
		name: "generic relation deletes the target's tagged items of its content type only",
		fixture: `
			INSERT INTO userapp_report (id, title, unit_id) VALUES (10, 'r10', 1), (11, 'r11', 1);
			INSERT INTO userapp_comment (id, body, unit_id) VALUES (10, 'c10', 1);
			INSERT INTO userapp_taggeditem (id, object_id, label, content_type_id) VALUES (1, 10, 'a', 50), (2, 10, 'b', 51), (3, 11, 'c', 50);`,
		table: "userapp_report", keys: []string{`{"id": 10}`},
		deleted: map[string]int64{"userapp_report": 1, "userapp_taggeditem": 1},
		after:   map[string]string{ids("userapp_taggeditem"): "2,3"},
	},
	{
		name: "generic relation with a text object_id matches the key's text",
		fixture: `
			CREATE TABLE t_note_tag (id integer PRIMARY KEY, content_type_id integer, object_id varchar(40));
			INSERT INTO userapp_report (id, title, unit_id) VALUES (10, 'r10', 1);
			INSERT INTO t_note_tag VALUES (1, 50, '10'), (2, 50, '010'), (3, 51, '10');`,
		generic: []registry.GenericRelationSpec{{
			Target: public("userapp_report"), Table: public("t_note_tag"), ContentTypeColumn: "content_type_id", ObjectIDColumn: "object_id",
			AppLabel: "userapp", Model: "report", OnDelete: on(registry.Cascade),
		}},
		table: "userapp_report", keys: []string{`{"id": 10}`},
		deleted: map[string]int64{"userapp_report": 1, "t_note_tag": 1},
		after:   map[string]string{ids("t_note_tag"): "2,3"},
	},
	{
		name: "generic relation with an integer object_id to a bigint key skips keys it cannot hold",
		fixture: `
			CREATE TABLE t_big (id bigint PRIMARY KEY);
			CREATE TABLE t_big_tag (id integer PRIMARY KEY, content_type_id integer, object_id integer);
			INSERT INTO django_content_type (id, app_label, model) VALUES (52, 'test', 'big');
			INSERT INTO t_big VALUES (5), (5000000000);
			INSERT INTO t_big_tag VALUES (1, 52, 5), (2, 52, 6), (3, 50, 5);`,
		generic: []registry.GenericRelationSpec{{
			Target: public("t_big"), Table: public("t_big_tag"), ContentTypeColumn: "content_type_id", ObjectIDColumn: "object_id",
			AppLabel: "test", Model: "big", OnDelete: on(registry.Cascade),
		}},
		table: "t_big", keys: []string{`{"id": 5000000000}`, `{"id": 5}`},
		deleted: map[string]int64{"t_big": 2, "t_big_tag": 1},
		after:   map[string]string{ids("t_big_tag"): "2,3"},
	},
	{
		name: "generic relation with an integer object_id to a text key that is no integer fails, as in Django",
		fixture: `
			CREATE TABLE t_word (code varchar(10) PRIMARY KEY);
			CREATE TABLE t_word_tag (id integer PRIMARY KEY, content_type_id integer, object_id integer);
			INSERT INTO django_content_type (id, app_label, model) VALUES (53, 'test', 'word');
			INSERT INTO t_word VALUES ('7'), ('seven');
			INSERT INTO t_word_tag VALUES (1, 53, 7);`,
		generic: []registry.GenericRelationSpec{{
			Target: public("t_word"), Table: public("t_word_tag"), ContentTypeColumn: "content_type_id", ObjectIDColumn: "object_id",
			AppLabel: "test", Model: "word", OnDelete: on(registry.Cascade),
		}},
		table: "t_word", keys: []string{`{"code": "7"}`, `{"code": "seven"}`},
		wantErr: cascade.ErrBadKey,
		after:   map[string]string{"SELECT string_agg(code, ',' ORDER BY code) FROM t_word": "7,seven", ids("t_word_tag"): "1"},
	},
	{
		name: "generic relation is followed from a cascade",
		fixture: `
			INSERT INTO userapp_report (id, title, unit_id) VALUES (10, 'r10', 2), (11, 'r11', 1);
			INSERT INTO userapp_taggeditem (id, object_id, label, content_type_id) VALUES (1, 10, 'a', 50), (2, 11, 'b', 50);`,
		table: "catalog_unit", keys: []string{`{"id": 2}`},
		deleted: map[string]int64{"catalog_unit": 1, "userapp_report": 1, "userapp_taggeditem": 1},
	},
	{
		name: "self reference cycle terminates",
		fixture: `
			INSERT INTO userapp_comment (id, body, parent_id) VALUES (1, 'a', 2), (2, 'b', 1), (3, 'c', 2), (4, 'd', NULL);`,
		table: "userapp_comment", keys: []string{`{"id": 1}`},
		deleted: map[string]int64{"userapp_comment": 3},
		after:   map[string]string{ids("userapp_comment"): "4"},
	},
	{
		name:  "keys of rows already gone are counted, not an error",
		table: "catalog_unit", keys: []string{`{"id": 2}`, `{"id": 99}`, `{"id": 2}`},
		deleted: map[string]int64{"catalog_unit": 1}, missing: 1,
	},
	{
		name:  "a key the column type rejects is a bad key",
		table: "catalog_unit", keys: []string{`{"id": "two"}`},
		wantErr: cascade.ErrBadKey,
	},
	{
		name:  "a key with the wrong columns is a bad key",
		table: "catalog_unit", keys: []string{`{"pk": 2}`},
		wantErr: cascade.ErrBadKey,
	},
	{
		name:  "an unknown table is an error",
		table: "no_such_table", keys: []string{`{"id": 2}`},
		wantErr: cascade.ErrUnknownTable,
	},
	{
		name: "a table without a primary key that nothing references cascades",
		fixture: `
			CREATE TABLE t_log (unit_id integer REFERENCES catalog_unit DEFERRABLE INITIALLY DEFERRED, note text);
			INSERT INTO t_log VALUES (2, 'a'), (2, 'a'), (1, 'b');`,
		rules: map[string]registry.OnDelete{"t_log.unit_id": on(registry.Cascade)},
		table: "catalog_unit", keys: []string{`{"id": 2}`},
		deleted: map[string]int64{"catalog_unit": 1, "t_log": 2},
		after:   map[string]string{"SELECT string_agg(note, ',') FROM t_log": "b"},
	},
	{
		name: "set null on a table without a primary key is refused",
		fixture: `
			CREATE TABLE t_log (unit_id integer REFERENCES catalog_unit DEFERRABLE INITIALLY DEFERRED, note text);
			INSERT INTO t_log VALUES (2, 'a');`,
		rules: map[string]registry.OnDelete{"t_log.unit_id": on(registry.SetNull)},
		table: "catalog_unit", keys: []string{`{"id": 2}`},
		wantErr: cascade.ErrNoPrimaryKey,
	},
	{
		name:    "composite keys cascade through a composite foreign key",
		fixture: boxes,
		rules:   map[string]registry.OnDelete{"t_item.box_a": on(registry.Cascade)},
		table:   "t_box", keys: []string{`{"a": 1, "b": "x"}`, `{"a": 2, "b": "y"}`},
		deleted: map[string]int64{"t_box": 1, "t_item": 2}, missing: 1,
		after: map[string]string{ids("t_item"): "2,3"},
	},
	{
		name:    "composite foreign key set null",
		fixture: boxes,
		rules:   map[string]registry.OnDelete{"t_item.box_a": on(registry.SetNull)},
		table:   "t_box", keys: []string{`{"a": 1, "b": "x"}`},
		deleted: map[string]int64{"t_box": 1}, updated: map[string]int64{"t_item": 2},
		after: map[string]string{"SELECT count(*)::text FROM t_item WHERE box_a IS NULL AND box_b IS NULL": "2"},
	},
	{
		name:  "guard option sets the guard for the rest of the transaction",
		opts:  []cascade.Option{cascade.Guard()},
		table: "catalog_unit", keys: []string{`{"id": 2}`},
		deleted: map[string]int64{"catalog_unit": 1},
		after:   map[string]string{"SELECT current_setting('" + registry.CascadeSetting + "', true)": "on"},
	},
}

// engineModes are the engine's ways of holding what it collects: in memory,
// and spilled to temporary tables (as DeleteListed always does), and of
// checking foreign keys: PostgreSQL's per-row checks or its own batch checks.
var engineModes = []struct {
	name string
	opts []cascade.Option
}{
	{"memory", nil},
	{"spilled", []cascade.Option{cascade.SpillAbove(0)}},
	// Every deletion that collects more than two rows starts in memory,
	// outgrows it and starts again spilled.
	{"outgrown", []cascade.Option{cascade.SpillRowsAbove(2)}},
	// In memory under the replica role, each constraint checked once at
	// the end (BatchReferenceChecks); and the same outgrowing memory.
	{"batch-checked", []cascade.Option{cascade.BatchReferenceChecks()}},
	{"batch-checked-outgrown", []cascade.Option{cascade.BatchReferenceChecks(), cascade.SpillRowsAbove(2)}},
}

func TestDelete(t *testing.T) {
	db := pgtest.NewDB(t, pgtest.Slave(t))
	pgtest.LoadDjangoSchema(t, db)
	pool := pgtest.Pool(t, db.DSN)
	for _, mode := range engineModes {
		t.Run(mode.name, func(t *testing.T) { testDelete(t, pool, mode.opts) })
	}
}

func testDelete(t *testing.T, pool *pgxpool.Pool, modeOpts []cascade.Option) {
	for _, tc := range deleteCases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, baseFixture+tc.fixture); err != nil {
				t.Fatalf("fixture: %v", err)
			}
			reg := buildRegistryGeneric(t, tx, tc.rules, tc.generic, tc.declared...)
			if tc.mutate != nil {
				tc.mutate(reg)
			}
			e := cascade.New(reg, append(append([]cascade.Option(nil), tc.opts...), modeOpts...)...)
			res, err := deleteJSON(ctx, e, tx, append([]target{{tc.table, tc.keys}}, tc.also...))
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("Delete: %v", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("Delete: got error %v, want %v", err, tc.wantErr)
			case tc.wantErr != nil:
				t.Logf("error as expected: %v", err)
				if tc.wantRefs != nil {
					if got := refNames(err); !reflect.DeepEqual(got, tc.wantRefs) {
						t.Errorf("referencing rows in error = %v, want %v", got, tc.wantRefs)
					}
				}
			default:
				if got := byName(res.Deleted); !reflect.DeepEqual(got, nonNil(tc.deleted)) {
					t.Errorf("deleted = %v, want %v", got, tc.deleted)
				}
				if got := byName(res.Updated); !reflect.DeepEqual(got, nonNil(tc.updated)) {
					t.Errorf("updated = %v, want %v", got, tc.updated)
				}
				if res.Missing != tc.missing {
					t.Errorf("missing = %d, want %d", res.Missing, tc.missing)
				}
				if tc.steps != nil {
					var got []string
					for _, st := range res.Steps {
						s := st.Action + " " + st.Table.Name
						if st.FK != nil {
							s += " via " + strings.Join(st.FK.FromColumns, ",")
						}
						got = append(got, s)
					}
					if !reflect.DeepEqual(got, tc.steps) {
						t.Errorf("steps = %q, want %q", got, tc.steps)
					}
				}
				if tc.deletedKeys != nil {
					got := map[string]string{}
					for n, keys := range res.DeletedKeys {
						got[n.Name] = joinKeys(keys)
					}
					if !reflect.DeepEqual(got, tc.deletedKeys) {
						t.Errorf("deleted keys = %v, want %v", got, tc.deletedKeys)
					}
				}
			}
			// The transaction stays usable after an error: the engine rolled
			// back to its savepoint.
			for q, want := range tc.after {
				var got string
				if err := tx.QueryRow(ctx, q).Scan(&got); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				if got != want {
					t.Errorf("%s = %q, want %q", q, got, want)
				}
			}
		})
	}
}

func deleteJSON(ctx context.Context, e *cascade.Engine, tx pgx.Tx, targets []target) (*cascade.Result, error) {
	var all []cascade.Target
	for _, tg := range targets {
		name := registry.TableName{Schema: "public", Name: tg.table}
		raw := make([][]byte, len(tg.keys))
		for i, d := range tg.keys {
			raw[i] = []byte(d)
		}
		keys, err := e.KeysFromJSON(name, raw...)
		if err != nil {
			return nil, err
		}
		all = append(all, cascade.Target{Table: name, Keys: keys})
	}
	if len(all) == 1 {
		return e.Delete(ctx, tx, all[0].Table, all[0].Keys)
	}
	return e.DeleteAll(ctx, tx, all)
}

func refNames(err error) []string {
	var refs []cascade.Ref
	var pe *cascade.ProtectedError
	var re *cascade.RestrictedError
	switch {
	case errors.As(err, &pe):
		refs = pe.Refs
	case errors.As(err, &re):
		refs = re.Refs
	}
	var out []string
	for _, r := range refs {
		out = append(out, r.Table.String()+r.Key.String())
	}
	return out
}

func byName(m map[registry.TableName]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range m {
		out[k.Name] = v
	}
	return out
}

func nonNil(m map[string]int64) map[string]int64 {
	if m == nil {
		return map[string]int64{}
	}
	return m
}

func joinKeys(keys []cascade.Key) string {
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = k.String()
	}
	// Order within a table is not part of the contract.
	sortStrings(s)
	return strings.Join(s, " ")
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

var _ = fmt.Sprint
