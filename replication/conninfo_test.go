package replication

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

func TestConnInfoFromSecret(t *testing.T) {
	for _, tc := range []struct {
		name, secret, want, wantErr string
	}{
		{"username and numeric port", `{"host":"db","port":5432,"username":"app","password":"pw'x","dbname":"prod"}`,
			`host='db' port='5432' user='app' password='pw\'x' dbname='prod'`, ""},
		{"user key and default dbname", `{"host":"db","user":"app","password":"pw"}`, `host='db' user='app' password='pw' dbname='staging'`, ""},
		{"missing host", `{"username":"app","password":"hidden-value"}`, "", "secret lacks host"},
		{"not json", `hidden-value`, "", "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ConnInfoFromSecret([]byte(tc.secret), "staging")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "hidden-value") {
					t.Errorf("error = %v, want one containing %q and no value", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestSourceResolve reads the conninfo from each source; the AWS one from a
// local HTTP server speaking the Secrets Manager protocol.
func TestSourceResolve(t *testing.T) {
	const ci = "host=db user=app password=pw dbname=prod"
	t.Setenv("TEST_MASTER_DSN", ci)
	file := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(file, []byte(ci+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var gotTarget, gotSecret string
	aws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotTarget = r.Header.Get("X-Amz-Target")
		var in struct{ SecretId string }
		_ = json.NewDecoder(r.Body).Decode(&in)
		gotSecret = in.SecretId
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"Name":         in.SecretId,
			"SecretString": `{"host":"db","port":"5432","username":"app","password":"pw"}`,
		})
	}))
	defer aws.Close()
	t.Setenv("AWS_ENDPOINT_URL", aws.URL)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))

	for _, tc := range []struct {
		name string
		src  Source
		want string
	}{
		{"inline", Source{ConnInfo: ci}, ci},
		{"env", Source{Env: "TEST_MASTER_DSN"}, ci},
		{"file", Source{File: file}, ci},
		{"aws", Source{AWSSecret: "prod/db", Environment: "prod"}, "host='db' port='5432' user='app' password='pw' dbname='prod'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.src.Resolve(context.Background())
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if gotTarget != "secretsmanager.GetSecretValue" || gotSecret != "prod/db" {
		t.Errorf("AWS request: target %q, secret %q", gotTarget, gotSecret)
	}
	if _, err := (Source{Env: "TEST_UNSET_VARIABLE"}).Resolve(context.Background()); err == nil || !strings.Contains(err.Error(), "TEST_UNSET_VARIABLE") {
		t.Errorf("unset env: %v", err)
	}
	if _, err := (Source{}).Resolve(context.Background()); err == nil {
		t.Error("no source resolved")
	}
}

func TestNewNames(t *testing.T) {
	n, err := NewNames("", "", "Staging-EU")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(n.PublicationNames(), " "); got != "pgoutpost_system pgoutpost_delete pgoutpost_queue" {
		t.Errorf("publications %s", got)
	}
	if got := strings.Join(n.SubscriptionNames(), " "); got != "pgoutpost_staging_eu" {
		t.Errorf("subscriptions %s", got)
	}
	s, err := NewNames("pgoutpost", "lims", "qa")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(append(s.PublicationNames(), s.SubscriptionNames()...), " "); got != "lims_pub lims_upsert_pub lims_queue_pub lims_sub lims_upsert_sub" {
		t.Errorf("seed names %s", got)
	}
	// The queue joins the subscription of the delete models, without a copy.
	if up := s.Subs[1]; !slices.Equal(up.Publications, []string{"lims_queue_pub", "lims_upsert_pub"}) || !slices.Equal(up.NoCopy, []string{"lims_queue_pub"}) ||
		!up.copies("lims_upsert_pub") || up.copies("lims_queue_pub") || !s.Subs[0].copies("lims_pub") {
		t.Errorf("seed subscriptions %+v", s.Subs)
	}
	if n.Legacy != (LegacyNames{Data: "pgoutpost_staging_eu_data", Queue: "pgoutpost_staging_eu_queue"}) || s.Legacy != (LegacyNames{Queue: "lims_qa_queue_sub"}) {
		t.Errorf("legacy names %+v, %+v", n.Legacy, s.Legacy)
	}
	if _, err := NewNames(strings.Repeat("p", 60), "", "qa"); err == nil {
		t.Error("a name over 63 bytes was accepted")
	}
	if _, err := NewNames("Bad-Prefix", "", "qa"); err == nil {
		t.Error("a prefix that is not a valid slot name was accepted")
	}
}

func TestMasterSystemID(t *testing.T) {
	master := pgtest.NewDB(t, pgtest.Master(t))
	ctx := context.Background()
	t.Run("reads the master's identifier", func(t *testing.T) {
		var want string
		if err := pgtest.Pool(t, master.DSN).QueryRow(ctx, "SELECT system_identifier::text FROM pg_control_system()").Scan(&want); err != nil {
			t.Fatal(err)
		}
		got, err := MasterSystemID(ctx, Source{ConnInfo: master.ConnInfo()})
		if err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
	})
	t.Run("an unreachable master's error hides the password", func(t *testing.T) {
		_, err := MasterSystemID(ctx, Source{ConnInfo: "host=127.0.0.1 port=1 user=app password=hidden-value dbname=x connect_timeout=5"})
		if err == nil || strings.Contains(err.Error(), "hidden-value") || !strings.Contains(err.Error(), "system identifier") {
			t.Errorf("error = %v, want one naming the system identifier without the password", err)
		}
	})
	t.Run("a source that does not resolve", func(t *testing.T) {
		if _, err := MasterSystemID(ctx, Source{Env: "TEST_UNSET_VARIABLE"}); err == nil || !strings.Contains(err.Error(), "TEST_UNSET_VARIABLE") {
			t.Errorf("error = %v, want one naming the variable", err)
		}
	})
}
