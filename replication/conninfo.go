package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/internal/connstr"
)

// DefaultAWSRegion is the region of the master's secret when none is given.
const DefaultAWSRegion = "us-east-1"

// Source says where the master's conninfo comes from; exactly one of
// ConnInfo, Env, File and AWSSecret is set.
type Source struct {
	ConnInfo  string // inline keyword/value or URL conninfo
	Env       string // name of an environment variable holding it
	File      string // path of a file holding it (trimmed)
	AWSSecret string // AWS Secrets Manager secret id (keys host, port, username|user, password, dbname)
	AWSRegion string // DefaultAWSRegion when empty
	// Environment is this environment's name: the dbname when the secret has none.
	Environment string
}

// Resolve returns the conninfo. Errors never contain it.
func (s Source) Resolve(ctx context.Context) (string, error) {
	set := 0
	for _, v := range []string{s.ConnInfo, s.Env, s.File, s.AWSSecret} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return "", fmt.Errorf("master conninfo: want exactly one of conninfo, env, file or aws_secret, got %d", set)
	}
	switch {
	case s.ConnInfo != "":
		return s.ConnInfo, nil
	case s.Env != "":
		v, err := connstr.FromEnv(s.Env)
		if err != nil {
			return "", fmt.Errorf("master conninfo: %w", err)
		}
		return v, nil
	case s.File != "":
		v, err := connstr.FromFile(s.File)
		if err != nil {
			return "", fmt.Errorf("master conninfo: %w", err)
		}
		return v, nil
	}
	return s.fromAWS(ctx)
}

// systemIDTimeout bounds connecting to the master and reading its system
// identifier.
const systemIDTimeout = 30 * time.Second

// MasterSystemID resolves src and reads the master's system identifier
// (pg_control_system().system_identifier), the first part of every event's
// Nats-Msg-Id: a republish after a crash is then dropped by JetStream
// whatever path the entry took. Errors never contain the conninfo.
func MasterSystemID(ctx context.Context, src Source) (string, error) {
	conninfo, err := src.Resolve(ctx)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, systemIDTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, conninfo)
	if err != nil {
		return "", fmt.Errorf("connect to the master for its system identifier: %w", scrubError(err, conninfo))
	}
	defer conn.Close(context.Background())
	var id string
	if err := conn.QueryRow(ctx, "SELECT system_identifier::text FROM pg_catalog.pg_control_system()").Scan(&id); err != nil {
		return "", fmt.Errorf("read the master's system identifier: %w", err)
	}
	return id, nil
}

func (s Source) fromAWS(ctx context.Context) (string, error) {
	region := s.AWSRegion
	if region == "" {
		region = DefaultAWSRegion
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
	if err != nil {
		return "", fmt.Errorf("master conninfo: load AWS configuration: %w", err)
	}
	out, err := secretsmanager.NewFromConfig(cfg).GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: &s.AWSSecret})
	if err != nil {
		return "", fmt.Errorf("master conninfo: read AWS secret %q in %s: %w", s.AWSSecret, region, err)
	}
	if out.SecretString == nil {
		return "", fmt.Errorf("master conninfo: AWS secret %q has no string value", s.AWSSecret)
	}
	ci, err := ConnInfoFromSecret([]byte(*out.SecretString), s.Environment)
	if err != nil {
		return "", fmt.Errorf("master conninfo: AWS secret %q: %w", s.AWSSecret, err)
	}
	return ci, nil
}

// ConnInfoFromSecret turns a database secret as AWS stores it (JSON with host,
// port, username or user, password, dbname) into a keyword/value conninfo;
// dbname defaults to defaultDB. Errors name missing keys, never values.
func ConnInfoFromSecret(secret []byte, defaultDB string) (string, error) {
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

// redactedError is an error whose text had the conninfo's secrets masked. It
// keeps the SQLSTATE of a server error but not the original error, whose text
// could hold the password.
type redactedError struct {
	msg  string
	code string
}

func (e *redactedError) Error() string { return e.msg }

// SQLState returns the server's error code, "" when the error was not the server's.
func (e *redactedError) SQLState() string { return e.code }

// scrubError returns err with the conninfo's secrets masked in its text.
func scrubError(err error, conninfo string) error {
	if err == nil {
		return nil
	}
	var code string
	var coder interface{ SQLState() string }
	if errors.As(err, &coder) {
		code = coder.SQLState()
	}
	return &redactedError{msg: connstr.Scrub(err.Error(), conninfo), code: code}
}
