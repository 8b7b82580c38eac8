package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/internal/connsource"
	"github.com/pgoutpost/pgoutpost/registry"
)

const minimal = `environment: staging
role: slave
database:
  dsn: postgres://app:s3cret@db.example:5432/app
master:
  dsn_env: MASTER_DSN
`

func parse(t *testing.T, yaml string, env map[string]string) (*Config, error) {
	t.Helper()
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	return Parse("sidecar.yaml", []byte(yaml), lookup)
}

func problems(t *testing.T, err error) []string {
	t.Helper()
	var inv *InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("error %v is not an *InvalidError", err)
	}
	var out []string
	for _, p := range inv.Problems {
		out = append(out, p.Error())
	}
	return out
}

func TestDefaultsAppliedOnce(t *testing.T) {
	c, err := parse(t, minimal+`models:
  - name: catalog.Unit
    kind: delete
generic_relations:
  - target: userapp.Report
    table: userapp_taggeditem
nats:
  create_stream: false
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"schemas", strings.Join(c.Schemas, ","), DefaultSchema},
		{"contrib on", c.ContribSystemTables, true},
		{"create_stream false from file wins", c.NATS.CreateStream, false},
		{"stream", c.NATS.Stream, DefaultStream},
		{"duplicate window", c.NATS.DuplicateWindow, DefaultDuplicateWindow},
		{"duplicate window outlasts a crash loop", c.NATS.DuplicateWindow >= 10*time.Minute, true},
		{"replicas follow the server", c.NATS.Replicas, 0},
		{"storage", c.NATS.Storage, DefaultStorage},
		{"batch size", c.Queue.BatchSize, DefaultBatchSize},
		{"slot", c.Sidecar.Slot, DefaultSlot},
		{"model on_truncate", c.Models[0].OnTruncate, DefaultOnTruncate},
		{"generic content type column", c.GenericRelations[0].ContentTypeColumn, DefaultContentTypeColumn},
		{"generic on_delete", c.GenericRelations[0].OnDelete, registry.OnDelete{Rule: registry.Cascade}},
		{"expire after keeps forever", c.Queue.DeleteExpireAfter, time.Duration(0)},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestStrictDecodingNamesLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown top-level key", minimal + "colour: blue\n", []string{`sidecar.yaml:7: colour: unknown key "colour"`}},
		{"unknown key in a model", minimal + "models:\n  - name: catalog.Unit\n    kind: delete\n    knd: system\n",
			[]string{`sidecar.yaml:10: models[0].knd: unknown key "knd"`}},
		{"wrong type: string for an integer", minimal + "queue:\n  batch_size: many\n",
			[]string{`sidecar.yaml:8: queue.batch_size: want an integer, got the string "many"`}},
		{"wrong type: scalar for a list", minimal + "schemas: public\n",
			[]string{`sidecar.yaml:7: schemas: want a list, got the string "public"`}},
		{"wrong type: bad duration", minimal + "nats:\n  duplicate_window: 2 minutes\n",
			[]string{`sidecar.yaml:8: nats.duplicate_window: want a duration`}},
		{"unknown on_delete rule", minimal + "relations:\n  userapp_report.unit_id: CASCADES\n",
			[]string{`sidecar.yaml:8: relations.userapp_report.unit_id: unknown on_delete rule "CASCADES"`}},
		{"unknown on_delete rule in a mapping", minimal + "relations:\n  userapp_x.y_id:\n    on_delete: SET_ZERO\n",
			[]string{`sidecar.yaml:9: relations.userapp_x.y_id.on_delete: unknown on_delete rule "SET_ZERO"`}},
		{"unknown kind", minimal + "models:\n  - name: catalog.Unit\n    kind: deleted\n",
			[]string{`sidecar.yaml:9: models[0].kind: unknown kind "deleted"`}},
		{"every problem is reported", minimal + "colour: blue\nqueue:\n  batch_size: x\nrelations:\n  a.b: NOPE\n", []string{
			`sidecar.yaml:7: colour: unknown key`,
			`sidecar.yaml:9: queue.batch_size: want an integer`,
			`sidecar.yaml:11: relations.a.b: unknown on_delete rule "NOPE"`,
		}},
		{"problems come in line order whoever finds them", minimal + "models:\n  - {name: a.B, label: a.B, kind: system}\ncolour: blue\n", []string{
			`sidecar.yaml:8: models[0]: set name or label, not both`,
			`sidecar.yaml:9: colour: unknown key`,
		}},
		{"missing required keys", "nats:\n  url: nats://x:4222\n", []string{
			`sidecar.yaml: environment: required`,
			`sidecar.yaml: role: required`,
			`sidecar.yaml: database: required`,
		}},
		{"syntax error", "environment: [staging\n", []string{`sidecar.yaml:1: bad YAML`}},
		{"syntax error on its own line", "environment: staging\nrole: slave\nmodels:\n  - name: a\n  - name: [b\nqueue: {}\n", []string{`sidecar.yaml:5: bad YAML: did not find expected ',' or ']'`}},
		{"tab in an indentation", "environment: staging\nmodels:\n  - name: a\n\tkind: delete\n", []string{`sidecar.yaml:4: bad YAML: found a tab character`}},
		{"integer beyond int64", minimal + "sidecar:\n  spill_bytes: 99999999999999999999\n", []string{`sidecar.yaml:8: sidecar.spill_bytes: the integer 99999999999999999999 is too large (at most 9223372036854775807)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.yaml, nil)
			got := problems(t, err)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("problem %d = %q, want prefix %q", i, got[i], w)
				}
			}
		})
	}
}

func TestInvalidErrorExitCode(t *testing.T) {
	_, err := parse(t, "role: boss\n", nil)
	var ec interface{ ExitCode() int }
	if !errors.As(err, &ec) || ec.ExitCode() != 2 {
		t.Fatalf("error %v has no exit code 2", err)
	}
	var p *Problem
	if !errors.As(err, &p) {
		t.Fatalf("error %v does not unwrap to a *Problem", err)
	}
}

// TestInvalidValuesNeverShowPassword checks the problems of a DSN or a NATS
// URL too malformed to parse: where their password is cannot be known.
func TestInvalidValuesNeverShowPassword(t *testing.T) {
	for _, tc := range []struct{ yaml, key string }{
		{strings.Replace(minimal, "postgres://app:s3cret@db.example:5432/app", "'postgresql:/alice:S3cretPW@127.0.0.1/db'", 1), "database.dsn: not a PostgreSQL URL"},
		{minimal + "nats: {url: 'nats://u:S3cretPW@ho st:4222,::bad'}\n", "nats.url: \"redacted@ho st:4222,::bad\""},
	} {
		_, err := parse(t, tc.yaml, nil)
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("error %v, want a problem with %s", err, tc.key)
			continue
		}
		if strings.Contains(err.Error(), "S3cretPW") {
			t.Errorf("the problem shows the password: %v", err)
		}
	}
}

func TestValidateRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		env  map[string]string
		want string // "" = valid
	}{
		{"minimal is valid", minimal, nil, ""},
		{"two dsn sources", strings.Replace(minimal, "  dsn: postgres", "  dsn_env: X\n  dsn: postgres", 1), nil, "database: set only one of"},
		{"slave without master", "environment: staging\nrole: slave\ndatabase: {dsn: 'host=x'}\n", nil, "master: required on a slave"},
		{"master role needs no master", "environment: prod\nrole: master\ndatabase: {dsn: 'host=x'}\n", nil, ""},
		{"aws secret only for master", minimal + "  aws_secret: {name: x}\n", nil, "master: set only one of"},
		{"aws secret on database refused", "environment: p\nrole: master\ndatabase:\n  aws_secret: {name: prod/db}\n", nil, "database.aws_secret: only master:"},
		{"aws secret needs name", "environment: p\nrole: slave\ndatabase: {dsn: 'host=x'}\nmaster:\n  aws_secret: {region: eu-west-1}\n", nil, "master.aws_secret.name: required"},
		{"environment must be a subject token", strings.Replace(minimal, "staging", "stag.ing", 1), nil, `environment: "stag.ing"`},
		{"env override fixes role", strings.Replace(minimal, "role: slave", "role: boss", 1), map[string]string{"PGOUTPOST_ROLE": "slave"}, ""},
		{"env override is named in the problem", minimal, map[string]string{"PGOUTPOST_ROLE": "boss"}, `PGOUTPOST_ROLE: role: unknown role "boss"`},
		{"label and name both set", minimal + "models:\n  - {name: a.B, label: a.B, kind: system}\n", nil, "sidecar.yaml:8: models[0]: set name or label, not both"},
		{"table override needs a label", minimal + "models:\n  - {name: public.t, table: u, kind: system}\n", nil, "overrides the table of a Django label"},
		{"same table twice", minimal + "models:\n  - {name: catalog.Unit, kind: delete}\n  - {name: public.catalog_unit, kind: system}\n", nil, "models[1]: table public.catalog_unit is already configured by models[0] (sidecar.yaml:8)"},
		{"relation needs a rule", minimal + "relations:\n  t.c: {references: u.id}\n", nil, "relations.t.c: needs on_delete"},
		{"parent link is cascade", minimal + "relations:\n  t.c: {parent_link: true, on_delete: PROTECT}\n", nil, "a parent link is CASCADE"},
		{"default only with SET_DEFAULT", minimal + "relations:\n  t.c: {on_delete: CASCADE, default: 1}\n", nil, "default is only for SET_DEFAULT"},
		{"one column keyed twice", minimal + "relations:\n  t.c: CASCADE\n  public.t.c: PROTECT\n", nil, "relations.t.c: same column as relations.public.t.c"},
		{"bad relation key", minimal + "relations:\n  nodot: CASCADE\n", nil, `relations.nodot: bad column "nodot"`},
		{"generic relation needs content type for a table target", minimal + "generic_relations:\n  - {target: userapp_report, table: userapp_taggeditem}\n", nil, "generic_relations[0].content_type: required"},
		{"SET(NULL) is refused", minimal + "relations:\n  t.c: SET(NULL)\n", nil, "use SET_NULL"},
		{"batch size positive", minimal + "queue: {batch_size: 0}\n", nil, "queue.batch_size: must be greater than zero"},
		{"fk checks named", minimal + "queue: {fk_checks: sometimes}\n", nil, `queue.fk_checks: "sometimes": want database or batch`},
		{"stream settings of a cluster", minimal + "nats:\n  replicas: 3\n  placement: {cluster: east, tags: [ssd]}\n  storage: file\n  max_age: 168h\n  max_bytes: 1073741824\n", nil, ""},
		{"at most 5 replicas", minimal + "nats: {replicas: 7}\n", nil, "nats.replicas: 7: want 1 to 5"},
		{"storage file or memory", minimal + "nats: {storage: disk}\n", nil, `nats.storage: "disk": want file or memory`},
		{"max bytes not negative", minimal + "nats: {max_bytes: -1}\n", nil, "nats.max_bytes: must not be negative"},
		{"max age covers the duplicate window", minimal + "nats: {max_age: 5m}\n", nil, "nats.max_age: 5m0s is shorter than nats.duplicate_window (10m0s)"},
		{"duplicate window exceeds the shutdown grace", minimal + "sidecar: {shutdown_grace: 5m}\nnats: {duplicate_window: 2m}\n", nil, "nats.duplicate_window: 2m0s does not exceed sidecar.shutdown_grace (5m0s)"},
		{"placement tags not empty", minimal + "nats: {placement: {tags: [' ']}}\n", nil, "nats.placement.tags[0]: empty tag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.yaml, tc.env)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n%v\nlacks %q", err, tc.want)
			}
		})
	}
}

func TestModelNames(t *testing.T) {
	for _, tc := range []struct {
		model Model
		table string
		label string
	}{
		{Model{Name: "catalog.Unit"}, "public.catalog_unit", "catalog.Unit"},
		{Model{Name: "catalog.OutcomeGroup"}, "public.catalog_outcomegroup", "catalog.OutcomeGroup"},
		{Model{Name: "catalog.Unit", Table: "units"}, "public.units", "catalog.Unit"},
		{Model{Name: "catalog.Unit", Table: "legacy.units"}, "legacy.units", "catalog.Unit"},
		{Model{Name: "catalog.unit"}, "catalog.unit", ""},
		{Model{Name: "catalog_unit"}, "public.catalog_unit", ""},
		{Model{Label: "catalog.unit"}, "public.catalog_unit", "catalog.unit"},
	} {
		t.Run(fmt.Sprintf("%s%s names %s", tc.model.Name, tc.model.Label, tc.table), func(t *testing.T) {
			tn, label, err := tc.model.Resolve()
			if err != nil {
				t.Fatal(err)
			}
			if tn.String() != tc.table || label != tc.label {
				t.Errorf("got %s label %q, want %s label %q", tn, label, tc.table, tc.label)
			}
		})
	}
}

func TestRegistrySpec(t *testing.T) {
	c, err := parse(t, minimal+`schemas: [public, extra]
models:
  - name: catalog.Unit
    kind: delete
    row_filter: id > 0
    columns: [id, name]
relations:
  userapp_report.unit_id: CASCADE
  userapp_x.y_id: SET('none')
  extra.t.c: {on_delete: SET_DEFAULT, default: 7}
  userapp_preference.outcome_id: {on_delete: DO_NOTHING, references: catalog_outcome.id}
  userapp_signeddocument.document_ptr_id: {parent_link: true}
generic_relations:
  - target: userapp.Report
    table: userapp_taggeditem
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec := c.RegistrySpec()
	if len(spec.Schemas) != 2 || !spec.ContribSystemTables {
		t.Errorf("schemas %v contrib %v", spec.Schemas, spec.ContribSystemTables)
	}
	m := spec.Models[0]
	if m.Table.String() != "public.catalog_unit" || m.Label != "catalog.Unit" || m.Kind != registry.KindDelete ||
		m.RowFilter != "id > 0" || len(m.Columns) != 2 || m.Source != "sidecar.yaml:9" {
		t.Errorf("model spec %+v", m)
	}
	rels := map[string]registry.RelationSpec{}
	for _, r := range spec.Relations {
		rels[r.From.String()+"."+r.Column] = r
	}
	for key, want := range map[string]string{
		"extra.t.c":                                     "SET_DEFAULT 7",
		"public.userapp_x.y_id":                         "SET none",
		"public.userapp_report.unit_id":                 "CASCADE ",
		"public.userapp_signeddocument.document_ptr_id": "CASCADE ",
	} {
		r, ok := rels[key]
		if got := string(r.OnDelete.Rule) + " " + r.OnDelete.Value; !ok || got != want {
			t.Errorf("relation %s = %q, want %q", key, got, want)
		}
	}
	if r := rels["public.userapp_preference.outcome_id"]; r.To.String() != "public.catalog_outcome" || r.ToColumn != "id" {
		t.Errorf("declared relation %+v", r)
	}
	if !rels["public.userapp_signeddocument.document_ptr_id"].ParentLink {
		t.Error("parent link lost")
	}
	g := spec.GenericRelations[0]
	if g.AppLabel != "userapp" || g.Model != "report" || g.Target.Name != "userapp_report" || g.ObjectIDColumn != "object_id" {
		t.Errorf("generic relation %+v", g)
	}
}

func TestDSNNeverShowsPassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://app:s3cret@db:5432/app?sslmode=require",
		"postgresql://app@db/app?password=s3cret",
		"host=db user=app password=s3cret dbname=app",
		"host=db password = 's3cret with space' dbname=app",
	} {
		s := connsource.Source{DSN: dsn}
		var b strings.Builder
		slog.New(slog.NewTextHandler(&b, nil)).Info("x", "dsn", s)
		for _, out := range []string{s.String(), fmt.Sprintf("%v %+v %#v", s, s, s), fmt.Sprintf("%+v", Config{Database: s}), b.String()} {
			if strings.Contains(out, "s3cret") {
				t.Errorf("%q shows the password", out)
			}
		}
	}
}

// TestDSNResolve resolves the database: section from each local source.
func TestDSNResolve(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "dsn")
	if err := os.WriteFile(file, []byte("  host=from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGOUTPOST_TEST_DSN", "host=from-env")
	for _, tc := range []struct {
		name, database, want string
	}{
		{"inline", "{dsn: 'host=inline'}", "host=inline"},
		{"env", "{dsn_env: PGOUTPOST_TEST_DSN}", "host=from-env"},
		{"file is trimmed", "{dsn_file: '" + file + "'}", "host=from-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse(t, "environment: s\nrole: master\ndatabase: "+tc.database+"\n", nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Database.Resolve(context.Background(), "")
			if err != nil || got != tc.want {
				t.Errorf("Resolve() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := (connsource.Source{Env: "PGOUTPOST_TEST_UNSET"}).Resolve(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "PGOUTPOST_TEST_UNSET is not set") {
		t.Errorf("unset env: %v", err)
	}
}

func TestAWSSecretRegionDefault(t *testing.T) {
	c, err := parse(t, "environment: s\nrole: slave\ndatabase: {dsn: 'host=x'}\nmaster:\n  aws_secret: {name: prod/db}\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Master.AWSSecret.Region != DefaultAWSRegion {
		t.Errorf("region = %q", c.Master.AWSSecret.Region)
	}
}

func TestAliasesAreExpanded(t *testing.T) {
	c, err := parse(t, minimal+`models:
  - &unit {name: catalog.Unit, kind: delete, columns: &cols [id, name]}
  - {name: catalog.Marker, kind: delete, columns: *cols}
relations:
  a.b: &rule CASCADE
  c.d: *rule
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Models[1].Columns) != 2 || c.Relations["c.d"].OnDelete.Rule != registry.Cascade {
		t.Errorf("aliases not expanded: %+v %+v", c.Models[1], c.Relations)
	}
}

func TestLoadMissingFileIsInvalid(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.yaml"))
	var inv *InvalidError
	if !errors.As(err, &inv) || inv.ExitCode() != 2 {
		t.Fatalf("Load of a missing file: %v, want an *InvalidError with exit code 2", err)
	}
	if !strings.Contains(err.Error(), "absent.yaml") {
		t.Fatalf("error %q does not name the file", err)
	}
}

// TestBoundedInput: a file of aliases that expands exponentially and an
// endless file are refused with a clear error instead of exhausting memory.
func TestBoundedInput(t *testing.T) {
	// One model with 2,000 columns, repeated 2,000 times by alias: 4 million
	// nodes from a 20 KB file.
	var b strings.Builder
	b.WriteString("environment: x\nrole: master\ndatabase: {dsn: \"host=x\"}\nmodels:\n  - &m {name: public.t, kind: system, columns: [")
	for i := range 2000 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("a")
	}
	b.WriteString("]}\n")
	for range 2000 {
		b.WriteString("  - *m\n")
	}
	if b.Len() > 30000 {
		t.Fatalf("the test file is %d bytes", b.Len())
	}
	_, err := Parse("laughs.yaml", []byte(b.String()), nil)
	if err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("billion laughs: %v", err)
	}
	if _, err := Load("/dev/zero"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("/dev/zero: %v", err)
	}
}

// TestLoadContextFIFO: a configuration path that blocks (a FIFO with no
// writer) does not keep a cancelled command from stopping.
func TestLoadContextFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := LoadContext(ctx, fifo); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("LoadContext of a FIFO without a writer: %v, want the context's error", err)
	}
	// Let the blocked open finish so the goroutine ends with the test.
	if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
		f.Close()
	}
}
