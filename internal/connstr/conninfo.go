package connstr

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
)

// mask replaces a password wherever pgoutpost shows a conninfo.
const mask = "********"

// Quote quotes a conninfo value as libpq reads it.
func Quote(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'"
}

// Param is one keyword=value pair of a conninfo.
type Param struct{ Key, Value string }

// Parse parses a keyword/value conninfo ("host=h password='a b'") or a
// URL ("postgres://u:p@h:5432/db?sslmode=require") into its parameters, in
// order, with libpq's keywords (user, password, host, port, dbname, ...).
func Parse(s string) ([]Param, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		return parseURL(s)
	}
	var out []Param
	i := 0
	skip := func() {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
	}
	for {
		skip()
		if i >= len(s) {
			return out, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[start:i]
		skip()
		if i >= len(s) || s[i] != '=' {
			return nil, fmt.Errorf("conninfo: missing \"=\" after %q", key)
		}
		i++
		skip()
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					val.WriteByte(s[i+1])
					i += 2
					continue
				}
				i++
				if c == '\'' {
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf("conninfo: unterminated quoted value of %q", key)
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
				i++
			}
		}
		out = append(out, Param{key, val.String()})
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// parseURL parses a libpq URL by hand: net/url rejects the multi-host form
// (host1:5432,host2:5433) that libpq accepts.
func parseURL(s string) ([]Param, error) {
	rest := s[strings.Index(s, "://")+3:]
	var query string
	if q := strings.IndexByte(rest, '?'); q >= 0 {
		rest, query = rest[:q], rest[q+1:]
	}
	authority, path, _ := strings.Cut(rest, "/")
	var out []Param
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		userinfo := authority[:at]
		authority = authority[at+1:]
		user, pass, hasPass := strings.Cut(userinfo, ":")
		u, err := url.PathUnescape(user)
		if err != nil {
			return nil, errors.New("conninfo: bad percent-encoding in the user name")
		}
		out = append(out, Param{"user", u})
		if hasPass {
			p, err := url.PathUnescape(pass)
			if err != nil {
				return nil, errors.New("conninfo: bad percent-encoding in the password")
			}
			out = append(out, Param{"password", p})
		}
	}
	if authority != "" {
		var hosts, ports []string
		for _, hp := range strings.Split(authority, ",") {
			h, p := hp, ""
			if strings.HasPrefix(hp, "[") { // [ipv6]:port
				if end := strings.IndexByte(hp, ']'); end >= 0 {
					h = hp[1:end]
					p = strings.TrimPrefix(hp[end+1:], ":")
				}
			} else if c := strings.LastIndexByte(hp, ':'); c >= 0 {
				h, p = hp[:c], hp[c+1:]
			}
			hosts = append(hosts, h)
			ports = append(ports, p)
		}
		out = append(out, Param{"host", strings.Join(hosts, ",")})
		if strings.Join(ports, "") != "" {
			out = append(out, Param{"port", strings.Join(ports, ",")})
		}
	}
	if path != "" {
		db, err := url.PathUnescape(path)
		if err != nil {
			return nil, errors.New("conninfo: bad percent-encoding in the database name")
		}
		out = append(out, Param{"dbname", db})
	}
	if query != "" {
		for _, kv := range strings.Split(query, "&") {
			if kv == "" {
				continue
			}
			k, v, _ := strings.Cut(kv, "=")
			k, err1 := url.QueryUnescape(k)
			v, err2 := url.QueryUnescape(v)
			if err1 != nil || err2 != nil {
				return nil, errors.New("conninfo: bad percent-encoding in the query string")
			}
			out = append(out, Param{k, v})
		}
	}
	return out, nil
}

// Format writes params as a keyword/value conninfo, every value quoted.
func Format(params []Param) string {
	parts := make([]string, len(params))
	for i, p := range params {
		parts[i] = p.Key + "=" + Quote(p.Value)
	}
	return strings.Join(parts, " ")
}

var urlScheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:/*`)

// passwordKV finds the value of a secret keyword in a conninfo that may not
// parse: a quoted value, or everything up to the next "keyword=" (a password
// with a space that was not quoted would otherwise leak its tail).
var passwordKV = regexp.MustCompile(`(?i)((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|.+?)(?:\s+[a-z_]+\s*=|\s*$)`)

// secretKey reports whether a conninfo keyword holds a secret.
func secretKey(k string) bool {
	return strings.EqualFold(k, "password") || strings.EqualFold(k, "sslpassword")
}

// Redact returns conninfo with its password (and sslpassword) masked, in keyword/value form
// (URLs are rewritten). A conninfo that does not parse is not shown at all:
// where its password is cannot be known (a URL missing a slash, a keyword
// without "=").
func Redact(conninfo string) string {
	params, err := Parse(conninfo)
	if err != nil {
		return Unparsable
	}
	out := make([]Param, len(params))
	for i, p := range params {
		if secretKey(p.Key) {
			p.Value = mask
		}
		out[i] = p
	}
	return Format(out)
}

// Unparsable stands for a conninfo that does not parse wherever pgoutpost
// would show it.
const Unparsable = "(a connection string that does not parse; not shown, as it may hold a password)"

// Secrets returns the strings of conninfo that must never be shown: its
// password and sslpassword, raw and percent-encoded.
func Secrets(conninfo string) []string {
	var out []string
	add := func(v string) {
		if v != "" {
			out = append(out, v)
		}
	}
	if params, err := Parse(conninfo); err == nil {
		for _, p := range params {
			if secretKey(p.Key) {
				add(p.Value)
				add(url.PathEscape(p.Value))
				add(url.QueryEscape(p.Value))
			}
		}
	}
	for _, m := range passwordKV.FindAllStringSubmatch(conninfo, -1) {
		v := strings.TrimSpace(m[2])
		add(strings.Trim(v, "'"))
		if !strings.HasPrefix(v, "'") {
			// Unquoted, so malformed if it has spaces: each word may show
			// alone in an error about it.
			for _, f := range strings.Fields(v) {
				if len(f) >= 3 {
					add(f)
				}
			}
		}
	}
	// The password of a URL too malformed to parse: user:password before
	// the last "@", after the scheme.
	if at := strings.LastIndexByte(conninfo, '@'); at >= 0 {
		userinfo := urlScheme.ReplaceAllString(conninfo[:at], "")
		if _, pw, ok := strings.Cut(userinfo, ":"); ok {
			add(pw)
		}
	}
	// Longest first, so that a secret containing another is masked whole.
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// Scrub masks every secret of conninfo, and conninfo itself, in text.
func Scrub(text, conninfo string) string {
	if conninfo != "" {
		text = strings.ReplaceAll(text, conninfo, Redact(conninfo))
	}
	for _, s := range Secrets(conninfo) {
		text = strings.ReplaceAll(text, s, mask)
	}
	return text
}

// FromEnv returns the value of environment variable name, trimmed of spaces.
// Its error names the variable.
func FromEnv(name string) (string, error) {
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return "", fmt.Errorf("environment variable %s is not set or empty", name)
	}
	return v, nil
}

// FromFile returns the contents of the file at path, trimmed of spaces. Its
// errors name the path, never the contents.
func FromFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("file %s is empty", path)
	}
	return v, nil
}

// RedactURLs returns a comma-separated list of server URLs (NATS's, for
// one) with the user info (user, password or token) of each replaced, for
// messages and logs. A URL that does not parse loses everything up to its
// last "@".
func RedactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, raw := range parts {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			if at := strings.LastIndex(raw, "@"); at >= 0 {
				raw = "redacted@" + raw[at+1:]
			}
			parts[i] = raw
			continue
		}
		if u.User != nil {
			u.User = url.User("redacted")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
