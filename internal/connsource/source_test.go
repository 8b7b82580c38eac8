package connsource

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFromSecret(t *testing.T) {
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
			got, err := FromSecret([]byte(tc.secret), "staging")
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
		{"inline", Source{DSN: ci}, ci},
		{"env", Source{Env: "TEST_MASTER_DSN"}, ci},
		{"file", Source{File: file}, ci},
		{"aws", Source{AWSSecret: &AWSSecret{Name: "prod/db"}}, "host='db' port='5432' user='app' password='pw' dbname='prod'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.src.Resolve(context.Background(), "prod")
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if gotTarget != "secretsmanager.GetSecretValue" || gotSecret != "prod/db" {
		t.Errorf("AWS request: target %q, secret %q", gotTarget, gotSecret)
	}
	if _, err := (Source{Env: "TEST_UNSET_VARIABLE"}).Resolve(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "TEST_UNSET_VARIABLE") {
		t.Errorf("unset env: %v", err)
	}
	if _, err := (Source{}).Resolve(context.Background(), ""); err == nil {
		t.Error("no source resolved")
	}
}

// TestSourceNeverShowsPassword prints and logs inline sources every way.
func TestSourceNeverShowsPassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://app:s3cret@db:5432/app?sslmode=require",
		"host=db user=app password=s3cret dbname=app",
	} {
		s := Source{DSN: dsn}
		var b strings.Builder
		slog.New(slog.NewTextHandler(&b, nil)).Info("x", "dsn", s)
		for _, out := range []string{s.String(), fmt.Sprintf("%v %+v %#v", s, s, s), b.String()} {
			if strings.Contains(out, "s3cret") {
				t.Errorf("%q shows the password", out)
			}
		}
	}
}

func TestSourceCount(t *testing.T) {
	two := Source{DSN: "host=a", Env: "X"}
	if two.Count() != 2 || two.IsZero() {
		t.Errorf("Count = %d", two.Count())
	}
	if _, err := two.Resolve(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "exactly one") {
		t.Errorf("two sources resolved: %v", err)
	}
	if !(Source{}).IsZero() {
		t.Error("empty source is not zero")
	}
	if got := (Source{AWSSecret: &AWSSecret{Name: "prod/db"}}).String(); got != "aws_secret prod/db ("+DefaultAWSRegion+")" {
		t.Errorf("String = %q", got)
	}
}
