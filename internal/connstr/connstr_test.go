package connstr

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		name, in, want, secret string
	}{
		{"keyword value", "host=db port=5432 user=app password=hunter2 dbname=prod", "host='db' port='5432' user='app' password='********' dbname='prod'", "hunter2"},
		{"quoted with space and quote", `host=db password='a b\'c' dbname=x`, "host='db' password='********' dbname='x'", `a b'c`},
		{"spaces around equals", "host = db password = s3cr3t", "host='db' password='********'", "s3cr3t"},
		{"url", "postgres://app:p%40ss@db.example:5432/prod?sslmode=require", "user='app' password='********' host='db.example' port='5432' dbname='prod' sslmode='require'", "p@ss"},
		{"url password parameter", "postgresql://app@db/prod?password=qwerty&sslmode=disable", "user='app' host='db' dbname='prod' password='********' sslmode='disable'", "qwerty"},
		{"multi-host url", "postgres://u:pw123@h1:5432,h2:5433/db", "user='u' password='********' host='h1,h2' port='5432,5433' dbname='db'", "pw123"},
		{"url user password", "postgres://app:s3cret@db/app", "user='app' password='********' host='db' dbname='app'", "s3cret"},
		{"no password", "host=db user=app", "host='db' user='app'", ""},
		{"unparseable shows nothing", "host=db password='unterminated", Unparsable, "unterminated"},
		{"url missing a slash", "postgresql:/alice:SlashPW@127.0.0.1/db", Unparsable, "SlashPW"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Redact(tc.in)
			if got != tc.want {
				t.Errorf("Redact(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			if tc.secret != "" && strings.Contains(got, tc.secret) {
				t.Errorf("Redact(%q) = %q shows the password", tc.in, got)
			}
			if tc.secret != "" {
				msg := "could not connect using " + tc.in + ": bad password " + tc.secret
				if s := Scrub(msg, tc.in); strings.Contains(s, tc.secret) {
					t.Errorf("Scrub left the password in %q", s)
				}
			}
		})
	}
}

func TestParseRoundTrip(t *testing.T) {
	in := `host=db port=5432 user='my user' password='it\'s' dbname=x options='-c search_path=a\\b'`
	params, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(Format(params))
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 6 || again[2].Value != "my user" || again[3].Value != "it's" || again[5].Value != `-c search_path=a\b` {
		t.Errorf("round trip = %#v", again)
	}
	if _, err := Parse("host=db junk"); err == nil {
		t.Error("a keyword without = parsed")
	}
}

func TestFromEnvAndFile(t *testing.T) {
	const secret = "host=db password=hunter2"
	t.Setenv("PGOUTPOST_TEST_DSN", "  "+secret+"\n")
	if v, err := FromEnv("PGOUTPOST_TEST_DSN"); err != nil || v != secret {
		t.Errorf("FromEnv = %q, %v; want %q", v, err, secret)
	}
	t.Setenv("PGOUTPOST_TEST_BLANK", " \n")
	if _, err := FromEnv("PGOUTPOST_TEST_BLANK"); err == nil || !strings.Contains(err.Error(), "PGOUTPOST_TEST_BLANK is not set or empty") {
		t.Errorf("FromEnv of a blank variable: %v", err)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "dsn")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := FromFile(path); err != nil || v != secret {
		t.Errorf("FromFile = %q, %v; want %q", v, err, secret)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{empty, filepath.Join(dir, "missing")} {
		_, err := FromFile(p)
		if err == nil || !strings.Contains(err.Error(), p) || strings.Count(err.Error(), p) != 1 {
			t.Errorf("FromFile(%s) error %v: want the path named once", p, err)
		}
	}
	// A directory read as a file fails without showing anything it holds.
	if _, err := FromFile(dir); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("FromFile(dir) = %v", err)
	}
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                "nats://127.0.0.1:4222",
		"nats://u:p@h:4222,nats://tok@h2:4222": "nats://redacted@h:4222,nats://redacted@h2:4222",
		"tls://user:pa%20ss@host":              "tls://redacted@host",
		"nats://u:NatsPW@ho st:4222,::bad":     "redacted@ho st:4222,::bad",
	} {
		if got := RedactURLs(in); got != want {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzRedactHidesSecrets: whatever the password and sslpassword, in a
// keyword/value conninfo or a URL, neither Redact nor Scrub of a text that
// quotes the conninfo and the secrets shows a byte sequence of them.
func FuzzRedactHidesSecrets(f *testing.F) {
	for _, s := range []string{"Hunter2", "a b c", `it's\`, "%41@:/?", "pass word=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, secret string) {
		// A marker makes the secret unlike anything else in the text.
		pw, sslpw := "QZXJ"+secret, "VWKQ"+secret
		for _, conninfo := range []string{
			"host=db port=5432 user=app password=" + Quote(pw) + " sslpassword=" + Quote(sslpw) + " dbname=x",
			(&url.URL{Scheme: "postgres", User: url.UserPassword("app", pw), Host: "db:5432", Path: "/x",
				RawQuery: url.Values{"sslpassword": {sslpw}}.Encode()}).String(),
		} {
			text := "connect " + conninfo + ": failed for " + pw + " / " + sslpw
			for name, out := range map[string]string{"Redact": Redact(conninfo), "Scrub": Scrub(text, conninfo)} {
				for _, s := range []string{pw, sslpw, url.QueryEscape(pw), url.PathEscape(pw), url.QueryEscape(sslpw)} {
					if strings.Contains(out, s) {
						t.Fatalf("%s of %q shows %q: %s", name, conninfo, s, out)
					}
				}
			}
		}
	})
}

func TestRedactSSLPasswordAndUnquotedSpace(t *testing.T) {
	if r := Redact("host=db sslpassword=Key-Secret-1 dbname=x"); strings.Contains(r, "Key-Secret-1") {
		t.Errorf("Redact shows the sslpassword: %s", r)
	}
	// Not quoted: libpq would refuse it, and Scrub must hide all of it.
	bad := "host=db password=Hunter2 ret12 dbname=x"
	if s := Scrub("error near "+bad+" and ret12", bad); strings.Contains(s, "ret12") || strings.Contains(s, "Hunter2") {
		t.Errorf("Scrub leaks the tail of an unquoted password: %s", s)
	}
}
