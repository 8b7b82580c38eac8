package registry

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// Validate checks the resolved registry and returns every problem it finds,
// errors first where Load found them, then per table in name order:
//
//   - a configured table (model, relation, generic relation) that does not
//     exist or has no primary key, and any synced table without one;
//   - a user table with a foreign key to a synced table that is not a delete
//     model (its rows would be left dangling when the master deletes);
//   - a synced table with a foreign key to a user table, unless the model
//     has skip_validation;
//   - a foreign key without an on_delete rule that points at a delete model,
//     or at a table that deletes of a delete model reach by CASCADE or a
//     parent link (the cascade engine needs a rule for each);
//   - SET_NULL on a NOT NULL column, SET_DEFAULT on a column with no
//     default (neither in the database nor in relations: default:);
//   - warnings for a row filter or column list that PostgreSQL will refuse
//     to publish UPDATEs with, given the table's replica identity, for a
//     delete model whose row filter lets UPDATEs turn into replicated
//     DELETEs, and for a synced table whose REPLICA IDENTITY is NOTHING.
//
// Auto-created many-to-many tables that are synced without being configured
// are warnings from Load, reported here too.
func Validate(r *Registry) Problems {
	ps := slices.Clone(r.problems)
	add := func(sev Severity, subject, format string, args ...any) {
		ps = append(ps, Problem{Severity: sev, Subject: subject, Message: fmt.Sprintf(format, args...)})
	}
	reach := r.DeleteReach()
	for _, t := range r.Tables {
		if t.Kind.IsSynced() && t.Name.Schema == QueueSchema {
			add(Error, tableSubject(t), "pgoutpost's own table cannot be a model (its rows are the queue, which the slaves empty): remove %s from the models and %s from the schemas", t.Name, QueueSchema)
			continue
		}
		if t.Kind.IsSynced() && len(t.PrimaryKey) == 0 {
			add(Error, tableSubject(t), "%s table has no primary key: rows cannot be matched across environments (add one)", t.Kind)
		}
		if t.Kind.IsSynced() {
			ps = append(ps, publicationProblems(t)...)
		}
		for _, fk := range t.Outgoing {
			to := r.Table(fk.To)
			if to == nil {
				continue // outside the configured schemas
			}
			subject := FKSubject(fk)
			switch {
			case t.Kind == KindUser && to.Kind.IsSynced() && !to.Kind.IsDeleteModel():
				add(Error, subject, "user table %s points at %s table %s, which is not a delete model: a delete replicated from the master would leave its rows dangling (make %s kind: delete)",
					t.Name.Short(), to.Kind, to.Name.Short(), modelName(to))
			case t.Kind.IsSynced() && to.Kind == KindUser && fk.Kind != FKGeneric && !t.SkipValidation:
				add(Error, subject, "%s table %s points at user table %s, which is not synced: a slave may lack the rows it references (sync %s, or set skip_validation on %s)",
					t.Kind, t.Name.Short(), to.Name.Short(), to.Name.Short(), modelName(t))
			}
			if !fk.HasRule() {
				if to.Kind.IsDeleteModel() {
					add(Error, subject, "points at delete model %s but has no on_delete rule: add %s under relations", to.Name.Short(), relationHint(fk))
				} else if via, ok := reach[to.Name]; ok {
					add(Error, subject, "points at %s, which deletes of delete model %s reach by cascade, but has no on_delete rule: add %s under relations", to.Name.Short(), via.Short(), relationHint(fk))
				}
				continue
			}
			ps = append(ps, ruleProblems(t, fk)...)
		}
	}
	return ps
}

// ruleProblems checks that fk's rule can be carried out on its columns.
func ruleProblems(t *Table, fk *ForeignKey) Problems {
	var ps Problems
	for _, name := range fk.FromColumns {
		c := t.Column(name)
		if c == nil {
			continue
		}
		switch fk.OnDelete.Rule {
		case SetNull:
			if c.NotNull {
				ps = append(ps, Problem{Error, FKSubject(fk), fmt.Sprintf("SET_NULL on column %s, which is NOT NULL: the delete would fail (make the column nullable or choose another rule)", c.Name)})
			}
		case SetDefault:
			if c.Default == "" && fk.OnDelete.Value == "" {
				ps = append(ps, Problem{Error, FKSubject(fk), fmt.Sprintf("SET_DEFAULT on column %s, which has no default in the database: give the application's default as {on_delete: SET_DEFAULT, default: <value>} under relations, or ALTER TABLE %s ALTER COLUMN %s SET DEFAULT …", c.Name, t.Name.Sanitize(), c.Name)})
			}
		}
	}
	return ps
}

// publicationProblems checks a synced table's row filter and column list
// against its replica identity. Every synced table is published for UPDATE
// (system tables for everything, delete models for insert and update), and
// PostgreSQL then refuses UPDATEs on the master ("cannot update table",
// SQLSTATE 42P10) when the row filter uses a column outside the replica
// identity, or when the column list does not contain the replica identity
// (PostgreSQL 15 allows no column list with REPLICA IDENTITY FULL). A delete
// model with a row filter on columns that change has a further trap:
// PostgreSQL turns an UPDATE that takes a row out of the filter into a DELETE
// for the subscriber, even for a publication that does not publish deletes.
func publicationProblems(t *Table) Problems {
	var ps Problems
	subject := tableSubject(t)
	warn := func(format string, args ...any) {
		ps = append(ps, Problem{Warning, subject, fmt.Sprintf(format, args...)})
	}
	if t.RowFilter != "" {
		if err := CheckFilter(t.RowFilter); err != nil {
			return append(ps, Problem{Error, subject, "row_filter: " + err.Error()})
		}
	}
	if t.ReplicaIdentity == IdentityNothing {
		warn("REPLICA IDENTITY NOTHING: PostgreSQL refuses UPDATEs of a table published for UPDATE; fix: ALTER TABLE %s REPLICA IDENTITY DEFAULT;", t.Name.Sanitize())
		return ps
	}
	if t.RowFilter != "" {
		var outside []string
		for _, c := range FilterColumns(t.RowFilter, t) {
			if !slices.Contains(t.IdentityColumns, c) {
				outside = append(outside, c)
			}
		}
		if len(outside) > 0 {
			fix := fmt.Sprintf("fix: ALTER TABLE %s REPLICA IDENTITY FULL;", t.Name.Sanitize())
			if len(t.ColumnList) > 0 {
				fix = "REPLICA IDENTITY FULL would fix this, but PostgreSQL 15 allows no column list with it: filter on the replica identity columns only, or drop columns:"
			}
			warn("row_filter uses %s, outside the replica identity (%s): PostgreSQL refuses UPDATEs of the table on the master once it is published with this filter; %s",
				strings.Join(outside, ", "), identityText(t), fix)
		}
	}
	if t.RowFilter != "" && t.Kind.IsDeleteModel() {
		var changing []string
		for _, c := range FilterColumns(t.RowFilter, t) {
			if !slices.Contains(t.PrimaryKey, c) {
				changing = append(changing, c)
			}
		}
		if len(changing) > 0 {
			warn("row_filter uses %s: an UPDATE that makes a row stop matching the filter reaches the slaves as a DELETE (PostgreSQL publishes it so even without publish = delete), which bypasses the delete queue and its on_delete rules; filter only on columns that never change, or make the table a system table",
				strings.Join(changing, ", "))
		}
	}
	if len(t.ColumnList) > 0 {
		if t.ReplicaIdentity == IdentityFull {
			warn("columns: a column list with REPLICA IDENTITY FULL makes PostgreSQL 15 refuse UPDATEs of the table on the master; fix: ALTER TABLE %s REPLICA IDENTITY DEFAULT; (or drop columns:)", t.Name.Sanitize())
		} else {
			var missing []string
			for _, c := range t.IdentityColumns {
				if !slices.Contains(t.ColumnList, c) {
					missing = append(missing, c)
				}
			}
			if len(missing) > 0 {
				warn("columns: the column list lacks replica identity column(s) %s: PostgreSQL refuses UPDATEs of the table on the master once it is published; fix: add them to columns", strings.Join(missing, ", "))
			}
		}
		for _, c := range t.ColumnList {
			if t.Column(c) == nil {
				ps = append(ps, Problem{Error, subject, fmt.Sprintf("columns: table has no column %s", c)})
			}
		}
	}
	return ps
}

func identityText(t *Table) string {
	if len(t.IdentityColumns) == 0 {
		return "none"
	}
	return strings.Join(t.IdentityColumns, ", ")
}

// DeleteReach returns the tables whose rows deletes of delete models can
// remove on a slave: the delete models themselves and every table a CASCADE
// rule or a parent link leads to from them, each mapped to a delete model it
// is reached from. The cascade engine needs a rule for every foreign key into
// one of them.
func (r *Registry) DeleteReach() map[TableName]TableName {
	reach := map[TableName]TableName{}
	var queue []*Table
	for _, t := range r.Tables {
		if t.Kind.IsDeleteModel() {
			reach[t.Name] = t.Name
			queue = append(queue, t)
		}
	}
	visit := func(n, from TableName) {
		if t := r.Table(n); t != nil {
			if _, seen := reach[n]; !seen {
				reach[n] = from
				queue = append(queue, t)
			}
		}
	}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		origin := reach[t.Name]
		for _, fk := range t.Incoming {
			if fk.OnDelete.Rule == Cascade || fk.Kind == FKParentLink {
				visit(fk.From, origin)
			}
		}
		// Django deletes the parent rows of a deleted multi-table child.
		for _, fk := range t.Outgoing {
			if fk.Kind == FKParentLink {
				visit(fk.To, origin)
			}
		}
	}
	return reach
}

// UserTables returns the tables that are not synced, in name order.
func (r *Registry) UserTables() []*Table { return r.OfKind(KindUser) }

// FKSubject names a foreign key the way messages and relations: keys do:
// "userapp_report.unit_id -> catalog_unit.id", with a column list in
// parentheses when there are several.
func FKSubject(fk *ForeignKey) string {
	side := func(n TableName, cols []string) string {
		if len(cols) == 1 {
			return n.Short() + "." + cols[0]
		}
		return n.Short() + "(" + strings.Join(cols, ", ") + ")"
	}
	if fk.Kind == FKGeneric {
		return fmt.Sprintf("%s(%s, %s) -> %s (generic relation)", fk.From.Short(), fk.ContentTypeColumn, fk.FromColumns[0], side(fk.To, fk.ToColumns))
	}
	return side(fk.From, fk.FromColumns) + " -> " + side(fk.To, fk.ToColumns)
}

func relationHint(fk *ForeignKey) string {
	if fk.Kind == FKGeneric {
		return "on_delete to its generic_relations entry"
	}
	return "`" + fk.From.Short() + "." + fk.FromColumns[0] + ": <RULE>`"
}

func tableSubject(t *Table) string {
	if t.Source != "" {
		return fmt.Sprintf("%s (%s)", t.Name.Short(), t.Source)
	}
	return t.Name.Short()
}

func modelName(t *Table) string {
	if t.Label != "" {
		return t.Label
	}
	return t.Name.Short()
}

// FilterColumns returns the columns of t that the SQL expression filter
// mentions: its identifiers outside string literals, quoted or not, that name
// a column of t (function names, keywords and type names never do unless a
// column has that name, so the answer errs on the side of a warning).
func FilterColumns(filter string, t *Table) []string {
	var out []string
	add := func(name string) {
		if t.Column(name) != nil && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	s := filter
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\'':
			// string literal; '' is a quote inside it
			i++
			for i < len(s) {
				if s[i] == '\'' {
					if i+1 < len(s) && s[i+1] == '\'' {
						i += 2
						continue
					}
					break
				}
				i++
			}
			i++
		case c == '"':
			j := i + 1
			var b strings.Builder
			for j < len(s) {
				if s[j] == '"' {
					if j+1 < len(s) && s[j+1] == '"' {
						b.WriteByte('"')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(s[j])
				j++
			}
			add(b.String())
			i = j + 1
		case c == '$':
			// dollar-quoted string $tag$…$tag$, or a parameter $1
			j := i + 1
			for j < len(s) && s[j] != '$' && isIdentChar(rune(s[j])) {
				j++
			}
			if j < len(s) && s[j] == '$' {
				tag := s[i : j+1]
				end := strings.Index(s[j+1:], tag)
				if end < 0 {
					return out
				}
				i = j + 1 + end + len(tag)
			} else {
				i = j
			}
		case c == ':' && i+1 < len(s) && s[i+1] == ':':
			// a cast: skip the type name
			i += 2
			for i < len(s) && s[i] == ' ' {
				i++
			}
			for i < len(s) && isIdentChar(rune(s[i])) {
				i++
			}
		case c == '_' || unicode.IsLetter(rune(c)):
			j := i
			for j < len(s) && isIdentChar(rune(s[j])) {
				j++
			}
			word := s[i:j]
			// E'…' escape strings are literals too
			if (word == "E" || word == "e") && j < len(s) && s[j] == '\'' {
				i = j
				continue
			}
			add(strings.ToLower(word))
			i = j
		default:
			i++
		}
	}
	return out
}

func isIdentChar(r rune) bool {
	return r == '_' || r == '$' || unicode.IsLetter(r) || unicode.IsDigit(r)
}
