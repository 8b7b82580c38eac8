package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/decoder"
	"github.com/pgoutpost/pgoutpost/registry"
)

// ConvertTimeout bounds each wait of ConvertLegacy for a subscription to
// reach a position; a subscription blocked by an apply error never does.
var ConvertTimeout = 2 * time.Minute

// mergeComment is the comment ConvertLegacy puts on the legacy queue
// subscription: where the merged subscription takes over (upto) and how far
// the queue rows in between are already copied into the slave's queue
// tables (filled), or done. Comments are transactional, so each step's
// record commits with its rows, and a rerun after a crash goes on from it.
var mergeComment = regexp.MustCompile(`^pgoutpost merge: upto ([0-9A-F]+/[0-9A-F]+) (?:filled ([0-9A-F]+/[0-9A-F]+)|(done))$`)

// ConvertLegacy converts a slave of the earlier layout, whose queue had its
// own subscription next to the data's, to the one-subscription layout, with
// no queue entry lost or applied twice. The two subscriptions' positions
// differ, so neither can simply take over the other's tables. It
//
//  1. disables the queue subscription, at master position Q (its origin's
//     progress: the end of the last master transaction it applied);
//  2. lets the data subscription run until it has consumed past Q, then
//     disables it at S = max(its origin's progress, its slot's confirmed
//     position): it applied every data change of the master transactions
//     ending at or before S and none after;
//  3. copies the queue rows of the master transactions ending in (Q, S] into
//     the slave's queue tables, one slave transaction per master transaction,
//     read from the queue subscription's slot on the master with
//     pg_logical_slot_peek_binary_changes (the slot is not moved);
//  4. creates the merged subscription disabled, on the data subscription's
//     slot, without a copy (every table is in sync at S), advances its origin
//     to S, drops the data subscription (keeping its slot), enables the
//     merged one (it starts at S) and drops the queue subscription and its
//     slot.
//
// Each step records its progress where a rerun finds it (the subscriptions'
// states and a comment on the queue subscription), so an interrupted
// conversion goes on with the next `subscription update`. The sidecar keeps
// running throughout: the copied rows reach it through its local stream.
// It returns nothing when the slave has no legacy queue subscription.
func ConvertLegacy(ctx context.Context, db DB, names Names, conninfo string) ([]SubscriptionResult, error) {
	if names.Legacy.Queue == "" || len(names.Subs) == 0 {
		return nil, nil
	}
	legacyQ, err := readLegacy(ctx, db, names.Legacy.Queue)
	if err != nil || legacyQ == nil {
		return nil, err
	}
	target := names.Subs[len(names.Subs)-1]
	dataName := names.Legacy.Data
	if dataName == "" {
		dataName = target.Name // the seed's names: its upsert subscription takes the queue
	}
	c := &converter{db: db, names: names, conninfo: conninfo, target: target, queue: *legacyQ}
	m := mergeComment.FindStringSubmatch(legacyQ.comment)
	if m == nil {
		upto, err := c.freeze(ctx, dataName)
		if err != nil {
			return nil, err
		}
		if err := c.fill(ctx, upto, c.queue.origin); err != nil {
			if c.filled == 0 { // nothing recorded: back to where it was
				for _, n := range []string{c.queue.name, dataName} {
					_, _ = db.Exec(context.WithoutCancel(ctx), "ALTER SUBSCRIPTION "+ident(n)+" ENABLE")
				}
				return nil, fmt.Errorf("convert subscription %s: %w (both subscriptions are enabled again, as they were)", c.queue.name, err)
			}
			return nil, fmt.Errorf("convert subscription %s: %w (replication of this slave is held until the conversion goes on: fix this and run `pgoutpost subscription update` again)", c.queue.name, err)
		}
		m = []string{"", upto.String(), "", "done"}
	}
	upto, _ := pglogrepl.ParseLSN(m[1])
	if m[3] == "" {
		filled, _ := pglogrepl.ParseLSN(m[2])
		if err := c.fill(ctx, decoder.LSN(upto), decoder.LSN(filled)); err != nil {
			return nil, err
		}
	}
	var out []SubscriptionResult
	if c.filled > 0 {
		out = append(out, SubscriptionResult{c.queue.name, fmt.Sprintf("queue rows of %d master transaction(s) between the two subscriptions' positions copied from slot %s", c.filled, c.queue.slot)})
	}
	more, err := c.swap(ctx, dataName, decoder.LSN(upto))
	return append(out, more...), err
}

// refuseLegacy returns ErrLegacyLayout, with what to do, when the slave
// still has the earlier layout's queue subscription.
func refuseLegacy(ctx context.Context, db DB, names Names, todo string) error {
	if names.Legacy.Queue == "" {
		return nil
	}
	l, err := readLegacy(ctx, db, names.Legacy.Queue)
	if err != nil || l == nil {
		return err
	}
	return fmt.Errorf("subscription %s: %w (a queue subscription apart from the data's lets the sidecar act before the slave holds the rows): %s",
		names.Legacy.Queue, ErrLegacyLayout, todo)
}

// legacySub is the legacy queue subscription.
type legacySub struct {
	name         string
	oid          uint32
	enabled      bool
	slot         string
	publications []string
	origin       decoder.LSN
	comment      string
}

func readLegacy(ctx context.Context, db DB, name string) (*legacySub, error) {
	l := legacySub{name: name}
	var slot, comment *string
	var origin *string
	err := db.QueryRow(ctx, `
		SELECT s.oid, s.subenabled, s.subslotname, s.subpublications::text[],
		       pg_catalog.obj_description(s.oid, 'pg_subscription')
		FROM pg_catalog.pg_subscription s
		WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())`,
		name).Scan(&l.oid, &l.enabled, &slot, &l.publications, &comment)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read subscription %s: %w", name, err)
	}
	// Only for a subscription that exists: reading an origin takes a superuser.
	if err := db.QueryRow(ctx, "SELECT pg_catalog.pg_replication_origin_progress('pg_' || $1::oid, false)::text", l.oid).Scan(&origin); err != nil {
		return nil, fmt.Errorf("read the origin of subscription %s: %w", name, err)
	}
	if slot != nil {
		l.slot = *slot
	}
	if comment != nil {
		l.comment = *comment
	}
	if origin != nil {
		v, err := pglogrepl.ParseLSN(*origin)
		if err != nil {
			return nil, fmt.Errorf("read the origin of subscription %s: %w", name, err)
		}
		l.origin = decoder.LSN(v)
	}
	return &l, nil
}

type converter struct {
	db       DB
	names    Names
	conninfo string
	target   SubscriptionSpec
	queue    legacySub
	filled   int // master transactions whose queue rows fill copied
}

// exec runs a statement, naming it in the error.
func (c *converter) exec(ctx context.Context, stmt string, args ...any) error {
	if _, err := c.db.Exec(ctx, stmt, args...); err != nil {
		return fmt.Errorf("%s: %w", stmt, scrubError(err, c.conninfo))
	}
	return nil
}

// poll calls cond every 200 ms until it reports done, for at most
// ConvertTimeout.
func poll(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, ConvertTimeout)
	defer cancel()
	for {
		ok, err := cond(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// disable disables subscription name and waits until its workers are gone,
// so that its origin no longer moves.
func (c *converter) disable(ctx context.Context, name string) error {
	if err := c.exec(ctx, "ALTER SUBSCRIPTION "+ident(name)+" DISABLE"); err != nil {
		return err
	}
	return poll(ctx, "the workers of subscription "+name+" to stop", func(ctx context.Context) (bool, error) {
		var n int
		err := c.db.QueryRow(ctx, "SELECT count(pid) FROM pg_catalog.pg_stat_subscription WHERE subname = $1", name).Scan(&n)
		return n == 0, err
	})
}

// subPosition is where a subscription's apply has got to: its origin's
// progress and its slot's confirmed position on the master.
func (c *converter) subPosition(ctx context.Context, master *pgx.Conn, name string) (origin, confirmed decoder.LSN, err error) {
	var o *string
	var slot *string
	err = c.db.QueryRow(ctx, `SELECT pg_catalog.pg_replication_origin_progress('pg_' || oid, false)::text, subslotname
		FROM pg_catalog.pg_subscription
		WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())`, name).Scan(&o, &slot)
	if err != nil {
		return 0, 0, fmt.Errorf("read the position of subscription %s: %w", name, err)
	}
	if o != nil {
		v, _ := pglogrepl.ParseLSN(*o)
		origin = decoder.LSN(v)
	}
	if slot == nil {
		return 0, 0, fmt.Errorf("subscription %s has no slot", name)
	}
	var cf *string
	if err := master.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", *slot).Scan(&cf); err != nil {
		return 0, 0, fmt.Errorf("read slot %s of subscription %s on the master: %w", *slot, name, err)
	}
	if cf != nil {
		v, _ := pglogrepl.ParseLSN(*cf)
		confirmed = decoder.LSN(v)
	}
	return origin, confirmed, nil
}

// freeze stops the queue subscription, lets the data subscription pass it
// and stops it too; it returns S, where the merged subscription takes over.
// On a failure before the data subscription stops, the queue subscription is
// enabled again, as it was.
func (c *converter) freeze(ctx context.Context, dataName string) (upto decoder.LSN, err error) {
	data, err := readSubscriptions(ctx, c.db, []string{dataName})
	if err != nil {
		return 0, err
	}
	if _, ok := data[dataName]; !ok {
		return 0, fmt.Errorf("convert subscription %s: %w: the data subscription %s is missing; drop %s (DROP SUBSCRIPTION) and run `pgoutpost subscription update`",
			c.queue.name, ErrLegacyLayout, dataName, c.queue.name)
	}
	states, err := readSyncStates(ctx, c.db, []string{dataName, c.queue.name})
	if err != nil {
		return 0, err
	}
	for _, st := range states {
		if st.State != "r" {
			return 0, fmt.Errorf("convert subscription %s: %w: table %s of %s is %s: wait until every table is ready (`subscription update --wait` of the earlier version, or `pgoutpost status`)",
				c.queue.name, ErrLegacyLayout, st.TableName, st.Subscription, StateName(st.State))
		}
	}
	master, err := connectMaster(ctx, c.conninfo)
	if err != nil {
		return 0, err
	}
	defer master.Close(context.WithoutCancel(ctx))
	if err := c.newDataTables(ctx, master, dataName); err != nil {
		return 0, err
	}
	var walStatus *string
	err = master.QueryRow(ctx, "SELECT wal_status FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", c.queue.slot).Scan(&walStatus)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && walStatus != nil && *walStatus == "lost" {
		return 0, fmt.Errorf("convert subscription %s: %w: its slot %s on the master is missing or lost, so the queue rows between the two subscriptions' positions cannot be read from it; "+
			"drop subscription %s (DROP SUBSCRIPTION, with slot_name = NONE first) and run `pgoutpost subscription update` again: the queue entries the slave has not received are lost",
			c.queue.name, ErrLegacyLayout, c.queue.slot, c.queue.name)
	}
	if err != nil {
		return 0, fmt.Errorf("read slot %s on the master: %w", c.queue.slot, err)
	}

	if err := c.disable(ctx, c.queue.name); err != nil {
		return 0, err
	}
	restore := func(err error) error {
		for _, n := range []string{c.queue.name, dataName} {
			_, _ = c.db.Exec(context.WithoutCancel(ctx), "ALTER SUBSCRIPTION "+ident(n)+" ENABLE")
		}
		return err
	}
	l, err := readLegacy(ctx, c.db, c.queue.name)
	if err != nil {
		return 0, restore(err)
	}
	c.queue = *l
	q := l.origin
	for {
		if err := c.exec(ctx, "ALTER SUBSCRIPTION "+ident(dataName)+" ENABLE"); err != nil {
			return 0, restore(err)
		}
		err := poll(ctx, "subscription "+dataName+" to reach "+q.String(), func(ctx context.Context) (bool, error) {
			o, cf, err := c.subPosition(ctx, master, dataName)
			return max(o, cf) >= q, err
		})
		if err != nil {
			return 0, restore(fmt.Errorf("convert subscription %s: %w: the data subscription %s does not reach the queue subscription's position %s (an apply error holds it? see `pgoutpost status`): %v",
				c.queue.name, ErrLegacyLayout, dataName, q, err))
		}
		if err := c.disable(ctx, dataName); err != nil {
			return 0, restore(err)
		}
		o, cf, err := c.subPosition(ctx, master, dataName)
		if err != nil {
			return 0, restore(err)
		}
		if s := max(o, cf); s >= q {
			return s, nil
		}
	}
}

// newDataTables refuses when the master publishes data tables the legacy
// data subscription does not have: the merged subscription starts without a
// copy and would never get their rows.
func (c *converter) newDataTables(ctx context.Context, master *pgx.Conn, dataName string) error {
	var data []string
	for _, p := range c.target.Publications {
		if c.target.copies(p) {
			data = append(data, p)
		}
	}
	rows, err := master.Query(ctx, "SELECT DISTINCT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = ANY($1)", data)
	if err != nil {
		return fmt.Errorf("read the master's publications: %w", err)
	}
	published, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (registry.TableName, error) {
		var t registry.TableName
		err := r.Scan(&t.Schema, &t.Name)
		return t, err
	})
	if err != nil {
		return fmt.Errorf("read the master's publications: %w", err)
	}
	states, err := readSyncStates(ctx, c.db, []string{dataName})
	if err != nil {
		return err
	}
	have := map[registry.TableName]bool{}
	for _, st := range states {
		have[st.Table] = true
	}
	for _, t := range published {
		if !have[t] {
			return fmt.Errorf("convert subscription %s: %w: the master publishes %s, which subscription %s has not copied yet: "+
				"run `ALTER SUBSCRIPTION %s REFRESH PUBLICATION`, wait until it is ready, then run `pgoutpost subscription update` again",
				c.queue.name, ErrLegacyLayout, t, dataName, ident(dataName))
		}
	}
	return nil
}

// fill copies into the slave's queue tables the queue rows of the master
// transactions that end after `after` and at or before upto, one slave
// transaction per master transaction, each recording its progress.
func (c *converter) fill(ctx context.Context, upto, after decoder.LSN) error {
	master, err := connectMaster(ctx, c.conninfo)
	if err != nil {
		return err
	}
	defer master.Close(context.WithoutCancel(ctx))
	if err := poll(ctx, "slot "+c.queue.slot+" on the master to be released", func(ctx context.Context) (bool, error) {
		var active bool
		err := master.QueryRow(ctx, "SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", c.queue.slot).Scan(&active)
		return !active, err
	}); err != nil {
		return err
	}
	names := ""
	for i, p := range c.queue.publications {
		if i > 0 {
			names += ","
		}
		names += ident(p)
	}
	rows, err := master.Query(ctx, `SELECT data FROM pg_catalog.pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, NULL,
		'proto_version', '1', 'publication_names', $3)`, c.queue.slot, upto.String(), names)
	if err != nil {
		return fmt.Errorf("read the queue rows after %s from slot %s on the master: %w", after, c.queue.slot, err)
	}
	defer rows.Close()
	dec := decoder.NewDecoder()
	var txn []queueRow
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return fmt.Errorf("read slot %s: %w", c.queue.slot, err)
		}
		m, err := dec.Decode(data)
		if err != nil {
			return fmt.Errorf("decode slot %s: %w", c.queue.slot, err)
		}
		switch m := m.(type) {
		case *decoder.Begin:
			txn = txn[:0]
		case *decoder.Insert:
			r := queueRow{table: registry.TableName{Schema: m.Relation.Namespace, Name: m.Relation.Name}, cols: map[string]any{}}
			for i, col := range m.Relation.Columns {
				if i >= len(m.New.Columns) || m.New.Columns[i].IsNull() {
					r.cols[col.Name] = nil
					continue
				}
				var b []byte
				if err := dec.Scan(m.Relation, &m.New, i, &b); err != nil {
					return fmt.Errorf("decode a row of %s: %w", r.table, err)
				}
				// json_populate_record casts a JSON string to the column's
				// type, but stores one as it is in a json or jsonb column:
				// those values go in as the JSON they are.
				if col.TypeOID == jsonOID || col.TypeOID == jsonbOID {
					r.cols[col.Name] = json.RawMessage(b)
				} else {
					r.cols[col.Name] = string(b)
				}
			}
			txn = append(txn, r)
		case *decoder.Commit:
			if m.EndLSN <= after || m.EndLSN > upto || len(txn) == 0 {
				continue
			}
			if err := c.insert(ctx, txn, upto, m.EndLSN); err != nil {
				return err
			}
			c.filled++
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the queue rows from slot %s on the master: %w", c.queue.slot, err)
	}
	rows.Close()
	return c.comment(ctx, c.db, fmt.Sprintf("pgoutpost merge: upto %s done", upto))
}

// queueRow is a queue row read from the master's stream: its columns as
// text (JSON as json.RawMessage), NULL as nil.
type queueRow struct {
	table registry.TableName
	cols  map[string]any
}

// The type OIDs of json and jsonb.
const (
	jsonOID  = 114
	jsonbOID = 3802
)

// insert adds one master transaction's queue rows to the slave's queue
// tables, and records them as done, in one slave transaction.
func (c *converter) insert(ctx context.Context, rows []queueRow, upto, end decoder.LSN) error {
	tx, err := c.db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	// Two conversions at once must not both copy a transaction: the second
	// finds it recorded and skips it.
	var comment *string
	if err := tx.QueryRow(ctx, `SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgoutpost merge ' || $1::text)),
		pg_catalog.obj_description($2::oid, 'pg_subscription')`, c.queue.name, c.queue.oid).Scan(nil, &comment); err != nil {
		return fmt.Errorf("lock the conversion of subscription %s: %w", c.queue.name, err)
	}
	if comment != nil {
		if m := mergeComment.FindStringSubmatch(*comment); m != nil {
			if m[3] != "" {
				return nil
			}
			if done, err := pglogrepl.ParseLSN(m[2]); err == nil && decoder.LSN(done) >= end {
				return nil
			}
		}
	}
	for _, r := range rows {
		js, err := json.Marshal(r.cols)
		if err != nil {
			return err
		}
		t := r.table.Sanitize()
		if _, err := tx.Exec(ctx, "INSERT INTO "+t+" SELECT * FROM pg_catalog.json_populate_record(NULL::"+t+", $1::json) ON CONFLICT DO NOTHING", string(js)); err != nil {
			return fmt.Errorf("copy a queue row of %s into the slave: %w", r.table, err)
		}
	}
	if err := c.comment(ctx, tx, fmt.Sprintf("pgoutpost merge: upto %s filled %s", upto, end)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func (c *converter) comment(ctx context.Context, q querier, text string) error {
	var stmt string
	if err := q.QueryRow(ctx, "SELECT format('COMMENT ON SUBSCRIPTION %I IS %L', $1::text, $2::text)", c.queue.name, text).Scan(&stmt); err != nil {
		return err
	}
	if _, err := q.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("record the conversion's progress on subscription %s: %w", c.queue.name, err)
	}
	return nil
}

// swap puts the merged subscription in place of the legacy ones, starting
// at upto on the data subscription's slot.
func (c *converter) swap(ctx context.Context, dataName string, upto decoder.LSN) ([]SubscriptionResult, error) {
	var out []SubscriptionResult
	old := dataName
	if dataName == c.target.Name {
		// The seed's names: the data subscription keeps its name, so the
		// old one steps aside first.
		old = dataName + "_premerge"
		if len(old) > maxNameLen {
			old = old[len(old)-maxNameLen:]
		}
	}
	have, err := readSubscriptions(ctx, c.db, []string{old, c.target.Name})
	if err != nil {
		return nil, err
	}
	if cur, ok := have[c.target.Name]; ok && !cur.enabled && old != dataName {
		if _, taken := have[old]; !taken {
			if err := c.exec(ctx, "ALTER SUBSCRIPTION "+ident(dataName)+" RENAME TO "+ident(old)); err != nil {
				return nil, err
			}
			have[old] = cur
			delete(have, c.target.Name)
		}
	}
	cur, exists := have[c.target.Name]
	if exists && cur.enabled {
		// Enabled already: only the queue subscription is left to drop.
		return c.dropQueue(ctx, out)
	}
	slot := dataName
	if o, ok := have[old]; ok && o.slot != nil { // nil once slot_name = NONE was set before a crash
		slot = *o.slot
	}
	if !exists {
		err := withConn(ctx, c.db, func(q querier) error {
			var stmt string
			if err := q.QueryRow(ctx, "SELECT format('CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION ', $1::text, $2::text)", c.target.Name, c.conninfo).Scan(&stmt); err != nil {
				return err
			}
			stmt += publicationList(c.target.Publications) + " WITH (enabled = false, create_slot = false, copy_data = false, slot_name = " +
				quoteLiteral(slot) + ", synchronous_commit = " + c.target.synchronousCommit() + ")"
			return quietly(ctx, q, stmt, c.conninfo)
		})
		if err != nil {
			return nil, fmt.Errorf("create subscription %s on slot %s: %w", c.target.Name, slot, scrubError(err, c.conninfo))
		}
		out = append(out, SubscriptionResult{c.target.Name, "created on slot " + slot + " (no copy)"})
	}
	if err := c.exec(ctx, `SELECT pg_catalog.pg_replication_origin_advance('pg_' || oid, $2::text::pg_lsn)
		FROM pg_catalog.pg_subscription WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())`,
		c.target.Name, upto.String()); err != nil {
		return out, err
	}
	if _, ok := have[old]; ok {
		if err := c.exec(ctx, "ALTER SUBSCRIPTION "+ident(old)+" SET (slot_name = NONE)"); err != nil {
			return out, err
		}
		if err := c.exec(ctx, "DROP SUBSCRIPTION "+ident(old)); err != nil {
			return out, err
		}
		out = append(out, SubscriptionResult{old, "dropped (its slot " + slot + " carries on)"})
	}
	if err := c.exec(ctx, "ALTER SUBSCRIPTION "+ident(c.target.Name)+" ENABLE"); err != nil {
		return out, err
	}
	out = append(out, SubscriptionResult{c.target.Name, "enabled at " + upto.String()})
	return c.dropQueue(ctx, out)
}

func (c *converter) dropQueue(ctx context.Context, out []SubscriptionResult) ([]SubscriptionResult, error) {
	if err := c.exec(ctx, "DROP SUBSCRIPTION "+ident(c.queue.name)); err != nil {
		return out, err
	}
	return append(out, SubscriptionResult{c.queue.name, "dropped, with its slot (merged)"}), nil
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
