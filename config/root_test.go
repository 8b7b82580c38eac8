package config_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgoutpost/pgoutpost/config"
	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// rootConfig is the annotated example at the repository root.
const rootConfig = "../sidecar.yaml"

// TestRootConfigValidatesAgainstDjangoSchema shows that the example
// sidecar.yaml describes the reference Django schema completely: it loads,
// and the registry resolved from it has no problem, not even a warning.
func TestRootConfigValidatesAgainstDjangoSchema(t *testing.T) {
	db := pgtest.NewDB(t, pgtest.Master(t))
	pgtest.LoadDjangoSchema(t, db)
	t.Setenv("PGOUTPOST_DATABASE_DSN", db.DSN)

	cfg, err := config.Load(rootConfig)
	if err != nil {
		t.Fatalf("load %s: %v", rootConfig, err)
	}
	dsn, err := cfg.Database.Resolve(context.Background(), "")
	if err != nil || dsn != db.DSN {
		t.Fatalf("database dsn from PGOUTPOST_DATABASE_DSN: %v", err)
	}
	reg, err := registry.Load(context.Background(), pgtest.Pool(t, dsn), cfg.RegistrySpec())
	if err != nil {
		t.Fatal(err)
	}
	if ps := registry.Validate(reg); len(ps) > 0 {
		t.Errorf("problems:\n%s", ps)
	}
	var users []string
	for _, u := range reg.UserTables() {
		users = append(users, u.Name.Short())
	}
	want := "django_migrations userapp_album userapp_comment userapp_document userapp_preference userapp_report userapp_reportline userapp_signeddocument userapp_song userapp_taggeditem"
	if got := strings.Join(users, " "); got != want {
		t.Errorf("user tables:\n got %s\nwant %s", got, want)
	}
}

// TestRootConfigDocumentsEveryKey keeps the example complete: every key of
// the configuration struct appears in it.
func TestRootConfigDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(rootConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{
		"environment:", "role:", "database:", "dsn:", "dsn_env:", "dsn_file:", "master:", "aws_secret:", "region:",
		"schemas:", "contrib_system_tables:", "replication:", "prefix:", "seed_slug:", "synchronous:", "failover:",
		"sidecar:", "slot:", "publication:", "listen:", "shutdown_grace:", "max_lag:", "heartbeat:", "spill_bytes:",
		"nats:", "url:", "credentials_file:", "token_env:", "stream:", "subject_prefix:", "duplicate_window:",
		"create_stream:", "max_in_flight:", "replicas:", "placement:", "cluster:", "tags:", "storage:", "max_age:", "max_bytes:", "queue:", "batch_size:", "delete_expire_after:", "denormalize_expire_after:",
		"seed_queues:", "fk_checks:", "models:", "name:", "label:", "table:", "kind:", "row_filter:", "columns:", "skip_validation:",
		"on_truncate:", "relations:", "on_delete:", "references:", "parent_link:", "default:", "generic_relations:",
		"target:", "content_type_column:", "object_id_column:", "content_type:",
	} {
		if !strings.Contains(string(data), key) {
			t.Errorf("%s does not document %s", rootConfig, key)
		}
	}
}

// TestReadmeConfigExampleLoads keeps the configuration shown in README.md
// valid: its first yaml block loads without a problem.
func TestReadmeConfigExampleLoads(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "```yaml\n")
	if !ok {
		t.Fatal("README.md has no yaml block")
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("README.md's yaml block does not end")
	}
	path := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(path, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL", "host=slave dbname=app")
	t.Setenv("MASTER_URL", "host=master dbname=app")
	if _, err := config.Load(path); err != nil {
		t.Errorf("README.md's example configuration:\n%s\n%v", block, err)
	}
}
