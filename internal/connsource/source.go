package connsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/pgoutpost/pgoutpost/internal/connstr"
)

// DefaultAWSRegion is the region of a secret that names none.
const DefaultAWSRegion = "us-east-1"

// Source says where a connection string comes from: exactly one of DSN
// (inline), Env (an environment variable), File (a file, trimmed) or
// AWSSecret. Its String, GoString and LogValue never show a password.
type Source struct {
	DSN       string     `yaml:"dsn"`
	Env       string     `yaml:"dsn_env"`
	File      string     `yaml:"dsn_file"`
	AWSSecret *AWSSecret `yaml:"aws_secret"`
}

// AWSSecret names an AWS Secrets Manager secret holding the connection as
// JSON with the keys host, port, username (or user), password and dbname.
type AWSSecret struct {
	Name   string `yaml:"name"`
	Region string `yaml:"region"` // DefaultAWSRegion when empty
}

// IsZero reports whether no source is set.
func (s Source) IsZero() bool { return s.Count() == 0 }

// Count is how many sources are set; a usable Source has exactly one.
func (s Source) Count() int {
	n := 0
	for _, set := range []bool{s.DSN != "", s.Env != "", s.File != "", s.AWSSecret != nil} {
		if set {
			n++
		}
	}
	return n
}

// Resolve returns the connection string. A secret without a dbname key
// connects to defaultDB. Errors name the variable, file or secret, never a
// value.
func (s Source) Resolve(ctx context.Context, defaultDB string) (string, error) {
	if n := s.Count(); n != 1 {
		return "", fmt.Errorf("want exactly one of dsn, dsn_env, dsn_file or aws_secret, got %d", n)
	}
	switch {
	case s.DSN != "":
		return s.DSN, nil
	case s.Env != "":
		return connstr.FromEnv(s.Env)
	case s.File != "":
		return connstr.FromFile(s.File)
	}
	return s.AWSSecret.fetch(ctx, defaultDB)
}

func (a *AWSSecret) region() string {
	if a.Region == "" {
		return DefaultAWSRegion
	}
	return a.Region
}

func (a *AWSSecret) fetch(ctx context.Context, defaultDB string) (string, error) {
	region := a.region()
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
	if err != nil {
		return "", fmt.Errorf("load AWS configuration: %w", err)
	}
	out, err := secretsmanager.NewFromConfig(cfg).GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: &a.Name})
	if err != nil {
		return "", fmt.Errorf("read AWS secret %q in %s: %w", a.Name, region, err)
	}
	if out.SecretString == nil {
		return "", fmt.Errorf("AWS secret %q has no string value", a.Name)
	}
	ci, err := FromSecret([]byte(*out.SecretString), defaultDB)
	if err != nil {
		return "", fmt.Errorf("AWS secret %q: %w", a.Name, err)
	}
	return ci, nil
}

// FromSecret turns a database secret as AWS stores it (JSON with host, port,
// username or user, password, dbname) into a keyword/value conninfo; dbname
// defaults to defaultDB. Errors name missing keys, never values.
func FromSecret(secret []byte, defaultDB string) (string, error) {
	var m map[string]any
	if err := json.Unmarshal(secret, &m); err != nil {
		return "", errors.New("secret is not a JSON object")
	}
	str := func(keys ...string) (string, error) {
		for _, k := range keys {
			switch v := m[k].(type) {
			case nil:
				continue
			case string:
				return v, nil
			case float64:
				return strconv.FormatFloat(v, 'f', -1, 64), nil
			default:
				return "", fmt.Errorf("secret key %q is neither a string nor a number", k)
			}
		}
		return "", nil
	}
	kv := map[string]string{}
	for _, f := range []struct {
		kw   string
		keys []string
	}{{"host", []string{"host"}}, {"port", []string{"port"}}, {"user", []string{"username", "user"}},
		{"password", []string{"password"}}, {"dbname", []string{"dbname"}}} {
		v, err := str(f.keys...)
		if err != nil {
			return "", err
		}
		kv[f.kw] = v
	}
	if kv["dbname"] == "" {
		kv["dbname"] = defaultDB
	}
	var missing []string
	for _, k := range []string{"host", "user", "dbname"} {
		if kv[k] == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("secret lacks %s", strings.Join(missing, ", "))
	}
	var b strings.Builder
	for _, k := range []string{"host", "port", "user", "password", "dbname"} {
		if kv[k] == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(connstr.Quote(kv[k]))
	}
	return b.String(), nil
}

// String describes the source with any password masked.
func (s Source) String() string {
	switch {
	case s.DSN != "":
		return "dsn " + connstr.Redact(s.DSN)
	case s.Env != "":
		return "dsn_env " + s.Env
	case s.File != "":
		return "dsn_file " + s.File
	case s.AWSSecret != nil:
		return fmt.Sprintf("aws_secret %s (%s)", s.AWSSecret.Name, s.AWSSecret.region())
	}
	return "none"
}

// GoString keeps %#v from printing the inline DSN's password.
func (s Source) GoString() string { return "connsource.Source(" + s.String() + ")" }

// LogValue keeps slog from printing the inline DSN's password.
func (s Source) LogValue() slog.Value { return slog.StringValue(s.String()) }
