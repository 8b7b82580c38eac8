package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"unicode"

	"github.com/pgoutpost/pgoutpost/internal/connsource"
	"github.com/pgoutpost/pgoutpost/internal/connstr"
	"github.com/pgoutpost/pgoutpost/registry"
)

// maxIdentifier is PostgreSQL's NAMEDATALEN-1: longer names are truncated,
// which would make two subscriptions' names collide.
const maxIdentifier = 63

var (
	// environment is a NATS subject token and part of subscription names.
	envName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	// slotName is what PostgreSQL allows for replication slot names.
	slotName = regexp.MustCompile(`^[a-z0-9_]+$`)
	// identifier is a lower-case SQL name that needs no quoting.
	identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
	// subjectToken is one dot-separated part of a NATS subject.
	subjectTokens = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	streamName    = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// Validate checks the configuration and returns every problem as an
// *InvalidError, or nil. It does not look at the database: registry.Validate
// checks the configuration against the catalog.
func (c *Config) Validate() error {
	v := &validation{c: c}
	v.top()
	v.models()
	v.relations()
	v.genericRelations()
	if len(v.problems) == 0 {
		return nil
	}
	return &InvalidError{Problems: v.problems}
}

type validation struct {
	c        *Config
	problems []error
}

func (v *validation) add(key, format string, args ...any) {
	v.problems = append(v.problems, v.c.problem(key, fmt.Sprintf(format, args...)))
}

// problem locates msg at key: its line in the file, or the environment
// variable that set it.
func (c *Config) problem(key, msg string) *Problem {
	p := &Problem{File: c.file, Key: key, Msg: msg}
	for k, env := range c.env {
		if key == k || strings.HasPrefix(key, k+".") {
			p.Env = env
		}
	}
	for k := key; p.Env == "" && k != ""; {
		if line, ok := c.lines[k]; ok {
			p.Line = line
			break
		}
		// A key that is absent from the file: locate its parent.
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return p
}

// line returns "file:line" of key, for messages that point into the file.
func (c *Config) line(key string) string {
	if l, ok := c.lines[key]; ok {
		return fmt.Sprintf("%s:%d", c.file, l)
	}
	return c.file
}

func (v *validation) top() {
	c := v.c
	switch {
	case c.Environment == "":
		v.add("environment", "required: this environment's name (lower-case letters, digits, _ and -)")
	case !envName.MatchString(c.Environment):
		v.add("environment", "%q: want lower-case letters, digits, _ and - (it is a NATS subject token and part of subscription names)", c.Environment)
	}
	switch c.Role {
	case registry.RoleMaster, registry.RoleSlave:
	case "":
		v.add("role", "required: master or slave")
	default:
		v.add("role", "unknown role %q: want master or slave", c.Role)
	}

	switch n := c.Database.Count(); {
	case n == 0:
		v.add("database", "required: one of dsn, dsn_env, dsn_file")
	case c.Database.AWSSecret != nil:
		v.add("database.aws_secret", "only master: can come from AWS Secrets Manager; use dsn, dsn_env or dsn_file")
	case n > 1:
		v.add("database", "set only one of dsn, dsn_env, dsn_file")
	}
	switch n := c.Master.Count(); {
	case n == 0 && c.Role == registry.RoleSlave:
		v.add("master", "required on a slave (its subscriptions connect to the master): one of dsn, dsn_env, dsn_file, aws_secret")
	case n > 1:
		v.add("master", "set only one of dsn, dsn_env, dsn_file, aws_secret")
	case c.Master.AWSSecret != nil:
		if c.Master.AWSSecret.Name == "" {
			v.add("master.aws_secret.name", "required: the secret's name or ARN")
		}
		if c.Master.AWSSecret.Region == "" {
			v.add("master.aws_secret.region", "must not be empty (default %s)", DefaultAWSRegion)
		}
	}
	for _, k := range []struct {
		key string
		s   connsource.Source
	}{{"database", c.Database}, {"master", c.Master}} {
		if k.s.DSN != "" && !looksLikeDSN(k.s.DSN) {
			v.add(k.key+".dsn", "not a PostgreSQL URL or keyword=value connection string (the value is not shown: it may hold a password)")
		}
	}

	if len(c.Schemas) == 0 {
		v.add("schemas", "must name at least one schema (default [%s])", DefaultSchema)
	}
	seen := map[string]bool{}
	for i, s := range c.Schemas {
		key := fmt.Sprintf("schemas[%d]", i)
		switch {
		case s == "":
			v.add(key, "empty schema name")
		case seen[s]:
			v.add(key, "schema %q listed twice", s)
		}
		seen[s] = true
	}

	r := c.Replication
	if !identifier.MatchString(r.Prefix) {
		v.add("replication.prefix", "%q: want a lower-case SQL name (letters, digits, _)", r.Prefix)
	} else if name := r.Prefix + "_" + c.Environment + "_queue"; len(name) > maxIdentifier {
		v.add("replication.prefix", "subscription name %s is longer than %d bytes; shorten prefix or environment", name, maxIdentifier)
	}
	if r.SeedSlug != "" && !identifier.MatchString(r.SeedSlug) {
		v.add("replication.seed_slug", "%q: want a lower-case SQL name (letters, digits, _)", r.SeedSlug)
	}

	s := c.Sidecar
	if !slotName.MatchString(s.Slot) || len(s.Slot) > maxIdentifier {
		v.add("sidecar.slot", "%q: a replication slot name is lower-case letters, digits and _ (at most %d)", s.Slot, maxIdentifier)
	}
	if !identifier.MatchString(s.Publication) || len(s.Publication) > maxIdentifier {
		v.add("sidecar.publication", "%q: want a lower-case SQL name (letters, digits, _)", s.Publication)
	}
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		v.add("sidecar.listen", "%q: want host:port or :port", s.Listen)
	}
	const positive, notNegative = "must be greater than zero", "must not be negative (0 keeps queue rows forever)"
	for _, d := range []struct {
		key string
		ok  bool
		msg string
	}{
		{"sidecar.shutdown_grace", s.ShutdownGrace > 0, positive},
		{"sidecar.max_lag", s.MaxLag > 0, positive},
		{"sidecar.heartbeat", s.Heartbeat > 0, positive},
		{"sidecar.spill_bytes", s.SpillBytes > 0, positive},
		{"sidecar.sweep_interval", s.SweepInterval >= 0, notNegative},
		{"nats.duplicate_window", c.NATS.DuplicateWindow > 0, positive},
		{"nats.max_in_flight", c.NATS.MaxInFlight > 0, positive},
		{"queue.batch_size", c.Queue.BatchSize > 0, positive},
		{"queue.large_transaction", c.Queue.LargeTransaction > 0, positive},
		{"queue.delete_expire_after", c.Queue.DeleteExpireAfter >= 0, notNegative},
		{"queue.denormalize_expire_after", c.Queue.DenormalizeExpireAfter >= 0, notNegative},
		{"queue.fk_checks", c.Queue.FKChecks == FKChecksDatabase || c.Queue.FKChecks == FKChecksBatch,
			fmt.Sprintf("%q: want %s or %s", c.Queue.FKChecks, FKChecksDatabase, FKChecksBatch)},
	} {
		if !d.ok {
			v.add(d.key, "%s", d.msg)
		}
	}

	n := c.NATS
	if u, err := url.Parse(n.URL); err != nil || u.Host == "" {
		// nats.go also accepts a comma-separated list of servers.
		for _, one := range strings.Split(n.URL, ",") {
			if u, err := url.Parse(strings.TrimSpace(one)); err != nil || u.Host == "" {
				v.add("nats.url", "%q: want a URL such as %s", connstr.RedactURLs(n.URL), DefaultNATSURL)
				break
			}
		}
	}
	if !streamName.MatchString(n.Stream) {
		v.add("nats.stream", "%q: a JetStream stream name is letters, digits, _ and -", n.Stream)
	}
	if !subjectTokens.MatchString(n.SubjectPrefix) {
		v.add("nats.subject_prefix", "%q: want dot-separated tokens of letters, digits, _ and -", n.SubjectPrefix)
	}
	// JetStream streams have 1 to 5 replicas.
	if n.Replicas < 0 || n.Replicas > 5 {
		v.add("nats.replicas", "%d: want 1 to 5, or 0 for 3 on a cluster and 1 on a single server", n.Replicas)
	}
	if n.Storage != "file" && n.Storage != "memory" {
		v.add("nats.storage", "%q: want file or memory", n.Storage)
	}
	if n.MaxAge < 0 {
		v.add("nats.max_age", "must not be negative (0 keeps events until max_bytes)")
	}
	if n.MaxBytes < 0 {
		v.add("nats.max_bytes", "must not be negative (0 sets no limit)")
	}
	if n.DuplicateWindow > 0 && s.ShutdownGrace > 0 && n.DuplicateWindow <= s.ShutdownGrace {
		// An entry acknowledged but not yet dequeued when the grace ran out
		// is published again after the restart, later than this.
		v.add("nats.duplicate_window", "%s does not exceed sidecar.shutdown_grace (%s): an event republished after a restart would be stored twice",
			n.DuplicateWindow, s.ShutdownGrace)
	}
	if n.MaxAge > 0 && n.MaxAge < n.DuplicateWindow {
		// JetStream refuses a duplicate window longer than max_age.
		v.add("nats.max_age", "%s is shorter than nats.duplicate_window (%s)", n.MaxAge, n.DuplicateWindow)
	}
	if n.Placement.Cluster != "" && !streamName.MatchString(n.Placement.Cluster) {
		v.add("nats.placement.cluster", "%q: a cluster name is letters, digits, _ and -", n.Placement.Cluster)
	}
	for i, tag := range n.Placement.Tags {
		if strings.TrimSpace(tag) == "" {
			v.add(fmt.Sprintf("nats.placement.tags[%d]", i), "empty tag")
		}
	}
	if n.CredentialsFile != "" && n.TokenEnv != "" {
		v.add("nats.token_env", "set credentials_file or token_env, not both")
	}
}

func (v *validation) models() {
	seen := map[registry.TableName]string{}
	for i, m := range v.c.Models {
		key := fmt.Sprintf("models[%d]", i)
		t, _, err := m.Resolve()
		if err != nil {
			v.add(key, "%v", err)
		} else if prev, dup := seen[t]; dup {
			v.add(key, "table %s is already configured by %s", t, prev)
		} else {
			seen[t] = fmt.Sprintf("models[%d] (%s)", i, v.c.line(key))
		}
		switch m.Kind {
		case registry.KindSystem, registry.KindDelete, registry.KindDenormalize:
		case "":
			v.add(key+".kind", "required: system, delete or denormalize")
		default:
			v.add(key+".kind", "unknown kind %q: want system, delete or denormalize", m.Kind)
		}
		switch m.OnTruncate {
		case registry.TruncateLog, registry.TruncateRefuse:
		default:
			v.add(key+".on_truncate", "unknown action %q: want log or refuse", m.OnTruncate)
		}
		cols := map[string]bool{}
		for j, col := range m.Columns {
			ck := fmt.Sprintf("%s.columns[%d]", key, j)
			switch {
			case col == "":
				v.add(ck, "empty column name")
			case cols[col]:
				v.add(ck, "column %q listed twice", col)
			}
			cols[col] = true
		}
		if m.Columns != nil && len(m.Columns) == 0 {
			v.add(key+".columns", "an empty column list publishes no columns; leave columns out to publish all")
		}
	}
}

func (v *validation) relations() {
	columns := map[string]string{}
	for _, k := range sortedKeys(v.c.Relations) {
		r := v.c.Relations[k]
		key := "relations." + k
		if t, col, err := parseColumnRef(k); err != nil {
			v.add(key, "%v", err)
		} else if prev, dup := columns[t.String()+"."+col]; dup {
			v.add(key, "same column as relations.%s", prev)
		} else {
			columns[t.String()+"."+col] = k
		}
		if r.OnDelete.Rule == "" && !r.ParentLink {
			v.add(key, "needs on_delete (or parent_link: true)")
		}
		if r.ParentLink && r.OnDelete.Rule != "" && r.OnDelete.Rule != registry.Cascade {
			v.add(key+".on_delete", "a parent link is CASCADE; got %s", r.OnDelete)
		}
		if r.References != "" {
			if _, _, err := parseColumnRef(r.References); err != nil {
				v.add(key+".references", "%v", err)
			}
		}
		if r.Default != "" && r.OnDelete.Rule != registry.SetDefault {
			v.add(key+".default", "default is only for SET_DEFAULT")
		}
	}
}

func (v *validation) genericRelations() {
	for i, g := range v.c.GenericRelations {
		key := fmt.Sprintf("generic_relations[%d]", i)
		if g.Target == "" {
			v.add(key+".target", "required: the model that declares the GenericRelation")
		} else if _, _, err := parseName(g.Target); err != nil {
			v.add(key+".target", "%v", err)
		}
		if g.Table == "" {
			v.add(key+".table", "required: the table holding the content type and object id columns")
		} else if _, _, err := parseName(g.Table); err != nil {
			v.add(key+".table", "%v", err)
		}
		if g.ContentTypeColumn == "" {
			v.add(key+".content_type_column", "must not be empty (default %s)", DefaultContentTypeColumn)
		}
		if g.ObjectIDColumn == "" {
			v.add(key+".object_id_column", "must not be empty (default %s)", DefaultObjectIDColumn)
		}
		if g.Target != "" {
			if _, _, err := g.contentType(); err != nil {
				v.add(key+".content_type", "%v", err)
			}
		}
		if g.OnDelete.Rule == "" {
			v.add(key+".on_delete", "must not be empty (default %s)", DefaultGenericOnDelete)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func looksLikeDSN(s string) bool {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		_, err := url.Parse(s)
		return err == nil
	}
	return strings.Contains(s, "=")
}

// isDjangoLabel tells a Django label (app_label.ModelName) from schema.table:
// a label's model part has an upper-case letter, a table name (as PostgreSQL
// folds unquoted names) has none.
func isDjangoLabel(s string) bool {
	app, model, ok := strings.Cut(s, ".")
	if !ok || app == "" || model == "" || strings.Contains(model, ".") {
		return false
	}
	return strings.IndexFunc(model, unicode.IsUpper) >= 0
}

// djangoTable is Django's default db_table of a label: app_label_modelname.
func djangoTable(label string) (registry.TableName, error) {
	app, model, ok := strings.Cut(label, ".")
	if !ok || app == "" || model == "" || strings.Contains(model, ".") {
		return registry.TableName{}, fmt.Errorf("bad Django label %q: want app_label.ModelName", label)
	}
	return registry.TableName{Schema: DefaultSchema, Name: app + "_" + strings.ToLower(model)}, nil
}

// parseName reads a model reference: a Django label or schema.table (or a
// bare table in schema public).
func parseName(s string) (registry.TableName, string, error) {
	if isDjangoLabel(s) {
		t, err := djangoTable(s)
		return t, s, err
	}
	t, err := registry.ParseTableName(s)
	return t, "", err
}

// Resolve returns the model's table and, when it is named by one, its Django
// label.
func (m Model) Resolve() (registry.TableName, string, error) {
	var (
		t     registry.TableName
		label string
		err   error
	)
	switch {
	case m.Name != "" && m.Label != "":
		return t, "", fmt.Errorf("set name or label, not both")
	case m.Label != "":
		label = m.Label
		t, err = djangoTable(label)
	case m.Name != "":
		t, label, err = parseName(m.Name)
	default:
		return t, "", fmt.Errorf("name required: a Django label (app_label.ModelName) or schema.table")
	}
	if err != nil {
		return t, "", err
	}
	if m.Table != "" {
		if label == "" {
			return t, "", fmt.Errorf("table: overrides the table of a Django label; %q already names a table", m.Name)
		}
		if t, err = registry.ParseTableName(m.Table); err != nil {
			return t, "", fmt.Errorf("table: %w", err)
		}
	}
	return t, label, nil
}

// parseColumnRef reads table.column or schema.table.column.
func parseColumnRef(s string) (registry.TableName, string, error) {
	parts := strings.Split(s, ".")
	for _, p := range parts {
		if p == "" {
			parts = nil
		}
	}
	switch len(parts) {
	case 2:
		return registry.TableName{Schema: DefaultSchema, Name: parts[0]}, parts[1], nil
	case 3:
		return registry.TableName{Schema: parts[0], Name: parts[1]}, parts[2], nil
	}
	return registry.TableName{}, "", fmt.Errorf("bad column %q: want table.column or schema.table.column", s)
}

// contentType returns the django_content_type (app_label, model) of the
// generic relation's target.
func (g GenericRelation) contentType() (string, string, error) {
	if g.ContentType != "" {
		app, model, ok := strings.Cut(g.ContentType, ".")
		if !ok || app == "" || model == "" || strings.Contains(model, ".") {
			return "", "", fmt.Errorf("bad content type %q: want app_label.model", g.ContentType)
		}
		return app, strings.ToLower(model), nil
	}
	if isDjangoLabel(g.Target) {
		app, model, _ := strings.Cut(g.Target, ".")
		return app, strings.ToLower(model), nil
	}
	return "", "", fmt.Errorf("required when target is a table name: the target's app_label.model in django_content_type")
}

// RegistrySpec returns what the configuration says about the database, for
// registry.Load. Call it on a valid configuration: names that do not parse
// are left out.
func (c *Config) RegistrySpec() registry.Spec {
	spec := registry.Spec{
		Schemas:             append([]string(nil), c.Schemas...),
		ContribSystemTables: c.ContribSystemTables,
	}
	for i, m := range c.Models {
		t, label, err := m.Resolve()
		if err != nil {
			continue
		}
		spec.Models = append(spec.Models, registry.ModelSpec{
			Table:          t,
			Label:          label,
			Kind:           m.Kind,
			RowFilter:      m.RowFilter,
			Columns:        append([]string(nil), m.Columns...),
			SkipValidation: m.SkipValidation,
			OnTruncate:     m.OnTruncate,
			Source:         c.line(fmt.Sprintf("models[%d]", i)),
		})
	}
	for _, k := range sortedKeys(c.Relations) {
		r := c.Relations[k]
		from, col, err := parseColumnRef(k)
		if err != nil {
			continue
		}
		rs := registry.RelationSpec{
			From:       from,
			Column:     col,
			OnDelete:   r.OnDelete,
			ParentLink: r.ParentLink,
			Source:     c.line("relations." + k),
		}
		if r.ParentLink && rs.OnDelete.Rule == "" {
			rs.OnDelete = registry.OnDelete{Rule: registry.Cascade}
		}
		if r.OnDelete.Rule == registry.SetDefault && r.Default != "" {
			rs.OnDelete.Value = r.Default
		}
		if r.References != "" {
			if to, toCol, err := parseColumnRef(r.References); err == nil {
				rs.To, rs.ToColumn = to, toCol
			}
		}
		spec.Relations = append(spec.Relations, rs)
	}
	for i, g := range c.GenericRelations {
		target, _, err1 := parseName(g.Target)
		table, _, err2 := parseName(g.Table)
		app, model, err3 := g.contentType()
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		spec.GenericRelations = append(spec.GenericRelations, registry.GenericRelationSpec{
			Target:            target,
			Table:             table,
			ContentTypeColumn: g.ContentTypeColumn,
			ObjectIDColumn:    g.ObjectIDColumn,
			AppLabel:          app,
			Model:             model,
			OnDelete:          g.OnDelete,
			Source:            c.line(fmt.Sprintf("generic_relations[%d]", i)),
		})
	}
	return spec
}
