package replication

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgoutpost/pgoutpost/internal/connstr"
	"github.com/pgoutpost/pgoutpost/registry"
)

// syncedTables returns the tables native replication carries (system, delete
// and denormalize models), without pgoutpost's own queue tables.
func syncedTables(reg *registry.Registry) []*registry.Table {
	var out []*registry.Table
	for _, t := range reg.Tables {
		if t.Kind.IsSynced() && t.Name.Schema != registry.QueueSchema {
			out = append(out, t)
		}
	}
	return out
}

// deleteOrder sorts tables so that every table comes before the tables its
// foreign keys point at (children first). Tables in a cycle of foreign keys
// come last, in name order; the replica role lets one transaction delete
// them in any order.
func deleteOrder(tables []*registry.Table) (ordered []*registry.Table, cyclic []registry.TableName) {
	in := map[registry.TableName]*registry.Table{}
	for _, t := range tables {
		in[t.Name] = t
	}
	// referencedBy[x] counts the tables still to delete that point at x.
	referencedBy := map[registry.TableName]int{}
	for _, t := range tables {
		for _, to := range targets(t, in) {
			referencedBy[to]++
		}
	}
	done := map[registry.TableName]bool{}
	for len(ordered)+len(cyclic) < len(tables) {
		progress := false
		for _, t := range tables { // name order: deterministic output
			if done[t.Name] || referencedBy[t.Name] > 0 {
				continue
			}
			done[t.Name] = true
			ordered = append(ordered, t)
			for _, to := range targets(t, in) {
				referencedBy[to]--
			}
			progress = true
		}
		if !progress {
			for _, t := range tables {
				if !done[t.Name] {
					done[t.Name] = true
					ordered = append(ordered, t)
					cyclic = append(cyclic, t.Name)
				}
			}
		}
	}
	return ordered, cyclic
}

// InsertOrder is the synced tables of reg, parents before the tables that
// reference them (the order in which rows can be inserted when foreign keys
// are not deferred); the tables of a reference cycle come last.
func InsertOrder(reg *registry.Registry) []*registry.Table {
	ordered, cyclic := deleteOrder(syncedTables(reg))
	out := make([]*registry.Table, 0, len(ordered)+len(cyclic))
	for i := len(ordered) - 1; i >= 0; i-- {
		out = append(out, ordered[i])
	}
	for _, n := range cyclic {
		out = append(out, reg.Table(n))
	}
	return out
}

// targets are the other synced tables that t's foreign keys point at, once each.
func targets(t *registry.Table, in map[registry.TableName]*registry.Table) []registry.TableName {
	var out []registry.TableName
	for _, fk := range t.Outgoing {
		if fk.To != t.Name && in[fk.To] != nil && !slices.Contains(out, fk.To) {
			out = append(out, fk.To)
		}
	}
	return out
}

// DeleteSQL returns a script that empties every synced table of a slave in
// one transaction, children before the tables they reference, and leaves the
// slave's user rows in place: the subscription's initial copy refills the
// tables, and resync-fks resolves the user rows whose row the master does not
// have. It runs as it is (psql -f); see docs/deploy.md for the recipes.
//
// session_replication_role = replica is what lets the DELETEs pass the user
// tables' foreign keys: their checks are triggers, which do not fire in that
// role. Deferring the constraints instead does not work here: a deferrable
// foreign key (Django's) is checked at COMMIT, before the copy has brought
// any row back, and a plain one fails at the DELETE. It uses DELETE, not
// TRUNCATE, which refuses a table that user tables reference.
func DeleteSQL(reg *registry.Registry, names Names) string {
	tables, cyclic := deleteOrder(syncedTables(reg))
	var b strings.Builder
	fmt.Fprintf(&b, "-- pgoutpost print-delete-sql: empties the %d synced tables of this slave in one transaction,\n", len(tables))
	b.WriteString("-- children first, and leaves the user rows that point at them in place (hanging until the\n" +
		"-- subscription's initial copy brings their rows back). Run it as it is:\n" +
		"--   psql -v ON_ERROR_STOP=1 -f this-file.sql \"$SLAVE_DSN\"\n" +
		"-- then let the copy refill the tables (pgoutpost subscription create / update --wait) and run\n" +
		"-- pgoutpost resync-fks for the user rows whose row the master does not have.\n" +
		"-- Until the copy is ready, readers on this slave see these tables empty.\n" +
		"-- WARNING: row filters are NOT honoured: this deletes every row, including rows a row\n" +
		"-- filter kept from the master (the copy brings back only the rows the filter passes).\n")
	var keep []string
	for _, s := range names.Subscriptions() {
		if len(s.Publications) > len(s.NoCopy) {
			keep = append(keep, s.Name)
		}
	}
	if len(keep) > 0 {
		b.WriteString("-- A slave whose subscription already carries these tables takes them out of it first,\n" +
			"-- or the subscription keeps applying to them and never copies them again:\n")
		for _, s := range names.Subscriptions() {
			if len(s.Publications) == len(s.NoCopy) {
				continue
			}
			if len(s.NoCopy) == 0 {
				b.WriteString("--   pgoutpost subscription drop   (queue entries written until it is back are lost)\n")
				break
			}
			fmt.Fprintf(&b, "--   ALTER SUBSCRIPTION %s SET PUBLICATION %s;\n", ident(s.Name), publicationList(s.NoCopy))
		}
		b.WriteString("-- and pgoutpost subscription update --wait afterwards adds them back with a copy.\n")
	}
	b.WriteString("-- The replica role needs a superuser, or on PostgreSQL 15 and newer:\n" +
		"--   GRANT SET ON PARAMETER session_replication_role TO <role>;\n" +
		"-- (and DELETE on these tables). Deferred constraints are no substitute: a deferrable\n" +
		"-- foreign key (Django's are DEFERRABLE INITIALLY DEFERRED) is checked at COMMIT, before the\n" +
		"-- copy brings any row back, and a plain foreign key fails at the DELETE itself.\n")
	if len(cyclic) > 0 {
		names := make([]string, len(cyclic))
		for i, c := range cyclic {
			names[i] = c.String()
		}
		fmt.Fprintf(&b, "-- These tables reference each other in a cycle (no order matters under the replica role): %s\n", strings.Join(names, ", "))
	}
	b.WriteString("BEGIN;\n")
	b.WriteString("SET LOCAL session_replication_role = replica; -- user rows' foreign keys do not block the DELETEs\n")
	// The slave write guard lets pgoutpost's own transactions through; the
	// replica role already silences it, unless it was enabled ALWAYS.
	b.WriteString("SELECT pg_catalog.set_config(" + quoteSQLString(registry.CascadeSetting) + ", 'on', true); -- past the write guard, for this transaction only\n")
	for _, t := range tables {
		fmt.Fprintf(&b, "DELETE FROM %s;\n", t.Name.Sanitize())
	}
	b.WriteString("COMMIT;\n")
	return b.String()
}

// DumpMode selects what print-dump-system-tables dumps.
type DumpMode string

// Dump modes.
const (
	DumpAll    DumpMode = ""            // schema and data
	DumpData   DumpMode = "data-only"   // rows only
	DumpSchema DumpMode = "schema-only" // table definitions only, for a new slave
)

// DumpCommand returns the pg_dump command line, quoted for a POSIX shell, that
// dumps exactly the synced tables of reg from the master at conninfo with the
// pg_dump program pgDump ("pg_dump" when empty; see FindPgDump). The password
// is left out of the command: pg_dump reads it from PGPASSWORD or ~/.pgpass.
func DumpCommand(reg *registry.Registry, conninfo string, mode DumpMode, pgDump string) (string, error) {
	params, err := connstr.Parse(conninfo)
	if err != nil {
		return "", fmt.Errorf("read the master's conninfo: %w", err)
	}
	var keep []connstr.Param
	for _, p := range params {
		if !strings.EqualFold(p.Key, "password") {
			keep = append(keep, p)
		}
	}
	if pgDump == "" {
		pgDump = "pg_dump"
	}
	args := []string{pgDump}
	switch mode {
	case DumpData:
		args = append(args, "--data-only")
	case DumpSchema:
		args = append(args, "--schema-only", "--no-owner", "--no-privileges")
	case DumpAll:
	default:
		return "", fmt.Errorf("unknown dump mode %q", mode)
	}
	args = append(args, "--dbname="+connstr.Format(keep))
	for _, t := range syncedTables(reg) {
		// Inside double quotes pg_dump's pattern characters (* ? .) are literal.
		args = append(args, "--table="+pgPatternQuote(t.Name.Schema)+"."+pgPatternQuote(t.Name.Name))
	}
	for i, a := range args {
		args[i] = shellQuote(a)
	}
	return strings.Join(args, " "), nil
}

func pgPatternQuote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

var shellSafe = func(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_=./:,", c)) {
			return false
		}
	}
	return s != ""
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if shellSafe(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// quoteSQLString quotes a constant of this program as an SQL string literal
// (print-delete-sql prints SQL; no configuration text reaches it).
func quoteSQLString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
