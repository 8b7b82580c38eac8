package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// djangoProject is the Django companion's test project: the reference
// schema's apps, with the models marked as the example sidecar.yaml says.
const djangoProject = "../../contrib/django/tests"

// djangoPython returns a python3 that can import Django: PGOUTPOST_PYTHON,
// python3 on PATH or Debian's /usr/bin/python3. It fails the test when there
// is none; it never skips.
func djangoPython(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("PGOUTPOST_PYTHON"), "python3", "/usr/bin/python3"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil && exec.Command(path, "-c", "import django").Run() == nil {
			return path
		}
	}
	t.Fatal("no python3 can import Django, which the Django companion's tests need: run scripts/ensure-django (it installs Debian's python3-django) or set PGOUTPOST_PYTHON")
	return ""
}

// managePy runs the test project's manage.py and returns its exit code and output.
func managePy(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(djangoPython(t), append([]string{"manage.py"}, args...)...)
	cmd.Dir = djangoProject
	cmd.Env = append(os.Environ(), "DJANGO_SETTINGS_MODULE=testproject.settings", "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	t.Fatalf("run manage.py %s: %v\n%s", strings.Join(args, " "), err, out)
	return 0, ""
}

// TestDjangoConfigMatchesRootConfig shows that `manage.py pgoutpost_config`
// reads the reference schema's models into the configuration the example
// sidecar.yaml holds by hand: pgoutpost resolves both to the same registry
// on a database loaded with the schema, the generated one validates, and
// --check finds nothing to say about the example.
func TestDjangoConfigMatchesRootConfig(t *testing.T) {
	abs, err := filepath.Abs(rootConfig)
	if err != nil {
		t.Fatal(err)
	}
	if code, out := managePy(t, "pgoutpost_config", "--check", abs); code != 0 {
		t.Errorf("pgoutpost_config --check %s: exit %d\n%s", rootConfig, code, out)
	}

	// The sections are appended to a configuration that has none.
	generated := filepath.Join(t.TempDir(), "sidecar.yaml")
	base := "environment: staging\nrole: slave\ndatabase:\n  dsn_env: DATABASE_URL\nmaster:\n  dsn_env: MASTER_DATABASE_URL\n"
	if err := os.WriteFile(generated, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := managePy(t, "pgoutpost_config", "--update", generated); code != 0 {
		t.Fatalf("pgoutpost_config --update: exit %d\n%s", code, out)
	}
	data, err := os.ReadFile(generated)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("generated configuration:\n%s", data)

	djangoDB(t, "")
	if code, out, errs := runCLI(t, "validate", "--config", generated); code != exitOK {
		t.Errorf("validate the generated configuration: exit %d\n%s%s", code, out, errs)
	}
	want, got := registryJSON(t, rootConfig), registryJSON(t, generated)
	if d := registryDiff(want, got); d != "" {
		t.Errorf("the generated configuration resolves to another registry than %s:\n%s", rootConfig, d)
	}
}

// ruleLine is where a configured rule comes from: file:line, which differs
// between two files that say the same.
var ruleLine = regexp.MustCompile(`\S*sidecar\.yaml(:\d+)?`)

func registryJSON(t *testing.T, config string) registryView {
	t.Helper()
	code, out, errs := runCLI(t, "registry", "show", "--json", "--config", config)
	if code != exitOK {
		t.Fatalf("registry show --config %s: exit %d\n%s", config, code, errs)
	}
	var v registryView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("registry show --json: %v\n%s", err, out)
	}
	for i := range v.ForeignKeys {
		v.ForeignKeys[i].RuleSource = ruleLine.ReplaceAllString(v.ForeignKeys[i].RuleSource, "sidecar.yaml")
	}
	return v
}

// registryDiff lists the tables and foreign keys that differ, "" for none.
func registryDiff(want, got registryView) string {
	var b strings.Builder
	diff := func(what string, w, g map[string]string) {
		for k, wv := range w {
			if gv, ok := g[k]; !ok {
				fmt.Fprintf(&b, "%s %s: missing\n", what, k)
			} else if gv != wv {
				fmt.Fprintf(&b, "%s %s:\n  want %s\n   got %s\n", what, k, wv, gv)
			}
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				fmt.Fprintf(&b, "%s %s: not expected\n", what, k)
			}
		}
	}
	tables := func(v registryView) map[string]string {
		m := map[string]string{}
		for _, tb := range v.Tables {
			j, _ := json.Marshal(tb)
			m[tb.Name] = string(j)
		}
		return m
	}
	fks := func(v registryView) map[string]string {
		m := map[string]string{}
		for _, fk := range v.ForeignKeys {
			j, _ := json.Marshal(fk)
			m[fmt.Sprintf("%s(%s)", fk.From, strings.Join(fk.FromColumns, ","))] = string(j)
		}
		return m
	}
	diff("table", tables(want), tables(got))
	diff("foreign key", fks(want), fks(got))
	if len(want.ForeignKeys) != len(got.ForeignKeys) {
		fmt.Fprintf(&b, "%d foreign keys, want %d\n", len(got.ForeignKeys), len(want.ForeignKeys))
	}
	return b.String()
}
