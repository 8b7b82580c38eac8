package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutpost/pgoutpost/internal/connstr"
	"github.com/pgoutpost/pgoutpost/registry"
)

// subState is an existing subscription of the current database.
type subState struct {
	oid               uint32
	enabled           bool
	publications      []string
	synchronousCommit string
	slot              *string // nil for slot_name = NONE
}

func readSubscriptions(ctx context.Context, q querier, names []string) (map[string]subState, error) {
	rows, err := q.Query(ctx, `
		SELECT subname, oid, subenabled, subpublications::text[], subsynccommit, subslotname
		FROM pg_subscription
		WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND subname = ANY($1)`, names)
	if err != nil {
		return nil, fmt.Errorf("read subscriptions: %w", err)
	}
	out := map[string]subState{}
	for rows.Next() {
		var name string
		var s subState
		if err := rows.Scan(&name, &s.oid, &s.enabled, &s.publications, &s.synchronousCommit, &s.slot); err != nil {
			return nil, fmt.Errorf("read subscriptions: %w", err)
		}
		out[name] = s
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read subscriptions: %w", err)
	}
	return out, nil
}

// synchronousCommit is the subscription's synchronous_commit setting.
func (s SubscriptionSpec) synchronousCommit() string {
	if s.SynchronousCommit {
		return "on"
	}
	return "off"
}

func samePublications(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func publicationList(pubs []string) string {
	q := make([]string, len(pubs))
	for i, p := range pubs {
		q[i] = ident(p)
	}
	return strings.Join(q, ", ")
}

// SubscriptionResult says what Create or Update did to one subscription.
type SubscriptionResult struct {
	Name   string
	Action string // "created", "exists", "publications set", "refreshed", ...
}

// CreateSubscriptions creates the subscriptions of names that do not exist
// yet, connecting to the master with conninfo. It first checks that the master
// has every publication they name (nothing is created when one is missing).
// Existing ones are checked: a subscription to other publications is an error
// (ErrSubscriptionMismatch) that `subscription update` resolves, and so is a
// slave with the earlier two-subscription layout (ErrLegacyLayout). Errors
// name the subscription and never contain the password.
func CreateSubscriptions(ctx context.Context, db DB, names Names, conninfo string) ([]SubscriptionResult, error) {
	if err := refuseLegacy(ctx, db, names, "run `pgoutpost subscription update`, which converts it"); err != nil {
		return nil, err
	}
	have, err := readSubscriptions(ctx, db, names.SubscriptionNames())
	if err != nil {
		return nil, err
	}
	var missing []SubscriptionSpec
	var out []SubscriptionResult
	var errs []error
	for _, s := range names.Subscriptions() {
		if cur, ok := have[s.Name]; ok {
			if !samePublications(cur.publications, s.Publications) {
				errs = append(errs, fmt.Errorf("subscription %s: %w: has %s, want %s; run `pgoutpost subscription update`",
					s.Name, ErrSubscriptionMismatch, strings.Join(cur.publications, ", "), strings.Join(s.Publications, ", ")))
				continue
			}
			out = append(out, SubscriptionResult{s.Name, "exists"})
			continue
		}
		missing = append(missing, s)
	}
	if len(missing) > 0 {
		if _, err := readMasterPublications(ctx, conninfo, names.PublicationNames()); err != nil {
			for _, s := range missing {
				errs = append(errs, fmt.Errorf("create subscription %s: %w", s.Name, err))
			}
			return out, errors.Join(errs...)
		}
		if standby, err := masterIsStandby(ctx, conninfo); err == nil && standby {
			for _, s := range missing {
				out = append(out, SubscriptionResult{s.Name, "note: the master connection is a standby; " + standbyCopyNote})
			}
		}
	}
	for _, s := range missing {
		if err := createSubscription(ctx, db, s, conninfo); err != nil {
			return out, errors.Join(append(errs, err)...)
		}
		out = append(out, SubscriptionResult{s.Name, "created"})
	}
	return out, errors.Join(errs...)
}

// createSubscription creates s over the publications it copies, then adds
// the NoCopy ones (the queue) without a copy: PostgreSQL copies only the
// tables a subscription does not know yet, so the queue's history is never
// copied, and the queue never runs before the data tables belong to the
// subscription (while they are copied the sidecar waits). Queue entries of
// the moment between the two steps are history to this new slave: its
// tables' copies start later and hold their effects. When the second step
// fails the subscription is dropped again, so that a slave never runs with
// data but no queue.
func createSubscription(ctx context.Context, db DB, s SubscriptionSpec, conninfo string) error {
	var first, rest []string
	for _, p := range s.Publications {
		if s.copies(p) {
			first = append(first, p)
		} else {
			rest = append(rest, p)
		}
	}
	if s.Failover {
		if err := withConn(ctx, db, func(q querier) error { return needFailover(ctx, q, s.Name) }); err != nil {
			return err
		}
	}
	copyFirst := true
	if len(first) == 0 {
		first, rest, copyFirst = rest, nil, false
	}
	options := "copy_data = " + fmt.Sprint(copyFirst) + ", synchronous_commit = " + s.synchronousCommit()
	if s.Failover {
		options += ", failover = true"
	}
	err := createStatement(ctx, db, s.Name, conninfo, first, options)
	if errors.Is(err, ErrLogWouldShowPassword) { // nothing was sent; its text holds no conninfo
		return fmt.Errorf("create subscription %s: %w", s.Name, err)
	}
	if err != nil {
		return fmt.Errorf("create subscription %s (master %s): %w", s.Name, connstr.Redact(conninfo), explain(scrubError(err, conninfo), s))
	}
	if len(rest) == 0 {
		return nil
	}
	if _, err := db.Exec(ctx, "ALTER SUBSCRIPTION "+ident(s.Name)+" ADD PUBLICATION "+publicationList(rest)+" WITH (copy_data = false)"); err != nil {
		err = fmt.Errorf("add publications %s to subscription %s: %w", strings.Join(rest, ", "), s.Name, explain(scrubError(err, conninfo), s))
		if _, derr := db.Exec(context.WithoutCancel(ctx), "DROP SUBSCRIPTION "+ident(s.Name)); derr != nil {
			return fmt.Errorf("%w; and dropping the half-made subscription failed too, drop it by hand: %v", err, scrubError(derr, conninfo))
		}
		return fmt.Errorf("%w (the subscription was dropped again: nothing changed)", err)
	}
	return nil
}

// createStatement runs CREATE SUBSCRIPTION name over pubs WITH (options),
// quietly. CREATE SUBSCRIPTION takes no parameters: the server quotes the
// conninfo, which then exists only inside this statement.
func createStatement(ctx context.Context, db DB, name, conninfo string, pubs []string, options string) error {
	return withConn(ctx, db, func(q querier) error {
		var stmt string
		err := q.QueryRow(ctx, "SELECT format('CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION ', $1::text, $2::text)",
			name, conninfo).Scan(&stmt)
		if err != nil {
			return err
		}
		return quietly(ctx, q, stmt+publicationList(pubs)+" WITH ("+options+")", conninfo)
	})
}

// quietly runs stmt, which holds conninfo, with the server's statement
// logging off. The server logs a failing statement (log_min_error_statement)
// and maybe every DDL statement (log_statement) or every slow one
// (log_min_duration_*): any would write the password into the slave's server
// log. Only a superuser, or a role granted SET on these parameters, may turn
// them off; for anyone else a conninfo
// with a password is not sent at all (ErrLogWouldShowPassword).
func quietly(ctx context.Context, q querier, stmt, conninfo string) error {
	if _, err := q.Exec(ctx, "SET log_min_error_statement = panic; SET log_statement = none; SET log_min_duration_statement = -1; SET log_min_duration_sample = -1"); err != nil {
		if len(connstr.Secrets(conninfo)) > 0 {
			return fmt.Errorf("%w: this role may not turn the slave's statement logging off for its session (%v); "+
				"run the command as a superuser, or GRANT SET ON PARAMETER log_min_error_statement, log_statement, log_min_duration_statement, log_min_duration_sample TO the role, "+
				"or give the slave's server the password in a passfile (passfile= in the conninfo) instead", ErrLogWouldShowPassword, err)
		}
		_, err := q.Exec(ctx, stmt)
		return err
	}
	_, err := q.Exec(ctx, stmt)
	_, _ = q.Exec(ctx, "RESET log_min_error_statement; RESET log_statement; RESET log_min_duration_statement; RESET log_min_duration_sample")
	return err
}

// withConn runs fn on one connection of db: session settings need the same
// connection for every statement, which a pool does not promise.
func withConn(ctx context.Context, db DB, fn func(querier) error) error {
	if p, ok := db.(interface {
		Acquire(context.Context) (*pgxpool.Conn, error)
	}); ok {
		c, err := p.Acquire(ctx)
		if err != nil {
			return err
		}
		defer c.Release()
		return fn(c)
	}
	return fn(db)
}

// updateConnection points subscription s at conninfo when it holds another
// one (a rotated password, a moved master). Only a superuser can read a
// subscription's conninfo; for anyone else it is left as it is.
func updateConnection(ctx context.Context, db DB, s SubscriptionSpec, conninfo string) (bool, error) {
	var changed bool
	err := withConn(ctx, db, func(q querier) error {
		var cur string
		err := q.QueryRow(ctx, "SELECT subconninfo FROM pg_subscription WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())", s.Name).Scan(&cur)
		if err != nil || cur == conninfo {
			return nil // unreadable (not a superuser) or unchanged
		}
		var stmt string
		if err := q.QueryRow(ctx, "SELECT format('ALTER SUBSCRIPTION %I CONNECTION %L', $1::text, $2::text)", s.Name, conninfo).Scan(&stmt); err != nil {
			return err
		}
		err = quietly(ctx, q, stmt, conninfo)
		changed = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("update connection of subscription %s (master %s): %w", s.Name, connstr.Redact(conninfo), scrubError(err, conninfo))
	}
	return changed, nil
}

// explain adds what to do to the master-side errors users meet most.
func explain(err error, s SubscriptionSpec) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "replication slot") && strings.Contains(msg, "already exists"):
		return fmt.Errorf("%w (a slot named %s is left on the master from an earlier subscription: drop it there with SELECT pg_drop_replication_slot('%s') if no other slave uses it)", err, s.Name, s.Name)
	case strings.Contains(msg, "publication") && strings.Contains(msg, "does not exist"):
		return fmt.Errorf("%w (run `pgoutpost publication create` and `publication update` on the master first)", err)
	case strings.Contains(msg, "could not connect"):
		return fmt.Errorf("%w (check the master's host, port, user, password and pg_hba.conf; the slave's server connects, not pgoutpost)", err)
	}
	return err
}

// UpdateSubscriptions converts a slave of the earlier two-subscription
// layout (see ConvertLegacy), creates missing subscriptions, points existing
// ones at the right publications and at conninfo (when the caller may read
// their conninfo, i.e. is a superuser), and refreshes them so that tables
// added to the publications start their initial copy. A refresh copies all or
// none of its new tables, so new queue tables (never copied) and new data
// tables (always copied) cannot join in one refresh: that is refused, with
// what to do.
func UpdateSubscriptions(ctx context.Context, db DB, names Names, conninfo string) ([]SubscriptionResult, error) {
	out, err := ConvertLegacy(ctx, db, names, conninfo)
	if err != nil {
		return out, err
	}
	have, err := readSubscriptions(ctx, db, names.SubscriptionNames())
	if err != nil {
		return out, err
	}
	master, err := readMasterPublications(ctx, conninfo, names.PublicationNames())
	if err != nil {
		return out, err
	}
	for _, s := range names.Subscriptions() {
		cur, ok := have[s.Name]
		if !ok {
			if err := createSubscription(ctx, db, s, conninfo); err != nil {
				return out, err
			}
			out = append(out, SubscriptionResult{s.Name, "created"})
			continue
		}
		if !cur.enabled {
			return out, fmt.Errorf("refresh subscription %s: %w: enable it (ALTER SUBSCRIPTION %s ENABLE) once its error is fixed, see `pgoutpost status`", s.Name, ErrDisabled, ident(s.Name))
		}
		changed, err := updateConnection(ctx, db, s, conninfo)
		if err != nil {
			return out, err
		}
		if changed {
			out = append(out, SubscriptionResult{s.Name, "connection updated"})
		}
		if cur.synchronousCommit != s.synchronousCommit() {
			if _, err := db.Exec(ctx, "ALTER SUBSCRIPTION "+ident(s.Name)+" SET (synchronous_commit = "+s.synchronousCommit()+")"); err != nil {
				return out, fmt.Errorf("set synchronous_commit of subscription %s: %w", s.Name, scrubError(err, conninfo))
			}
			out = append(out, SubscriptionResult{s.Name, "synchronous_commit " + s.synchronousCommit()})
		}
		if s.Failover {
			set, err := setFailover(ctx, db, s.Name)
			if err != nil {
				return out, fmt.Errorf("set failover of subscription %s: %w", s.Name, err)
			}
			if set {
				out = append(out, SubscriptionResult{s.Name, "failover on"})
			}
		}
		copyData, err := refreshCopies(ctx, db, s, master)
		if err != nil {
			return out, err
		}
		copyOpt := " WITH (copy_data = " + fmt.Sprint(copyData) + ")"
		if !samePublications(cur.publications, s.Publications) {
			if err := waitPastNow(ctx, s.Name, cur.slot, conninfo); err != nil {
				return out, err
			}
			// SET PUBLICATION refreshes too.
			if _, err := db.Exec(ctx, "ALTER SUBSCRIPTION "+ident(s.Name)+" SET PUBLICATION "+publicationList(s.Publications)+copyOpt); err != nil {
				return out, fmt.Errorf("set publication of subscription %s: %w", s.Name, scrubError(err, conninfo))
			}
			out = append(out, SubscriptionResult{s.Name, "publications set"})
			continue
		}
		if _, err := db.Exec(ctx, "ALTER SUBSCRIPTION "+ident(s.Name)+" REFRESH PUBLICATION"+copyOpt); err != nil {
			return out, fmt.Errorf("refresh subscription %s: %w", s.Name, explain(scrubError(err, conninfo), s))
		}
		out = append(out, SubscriptionResult{s.Name, "refreshed"})
	}
	return out, nil
}

// waitPastNow waits until subscription sub's slot on the master has
// confirmed the master's current WAL position, before publications are added
// to it. The master's walsender decodes with the catalog as it was when each
// change was written: restarted at a position from before a publication was
// created, it fails on "publication does not exist" for good. Past the
// present, every publication that exists now existed.
func waitPastNow(ctx context.Context, sub string, slot *string, conninfo string) error {
	if slot == nil {
		return nil
	}
	master, err := connectMaster(ctx, conninfo)
	if err != nil {
		return err
	}
	defer master.Close(context.WithoutCancel(ctx))
	var now string
	if err := master.QueryRow(ctx, "SELECT pg_catalog.pg_current_wal_lsn()::text").Scan(&now); err != nil {
		return fmt.Errorf("read the master's WAL position: %w", err)
	}
	err = poll(ctx, "subscription "+sub+" to reach the master's position "+now, func(ctx context.Context) (bool, error) {
		var past *bool
		err := master.QueryRow(ctx, "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", *slot, now).Scan(&past)
		if errors.Is(err, pgx.ErrNoRows) {
			return true, nil // no slot: the subscription starts where it is created
		}
		return past != nil && *past, err
	})
	if err != nil {
		return fmt.Errorf("add publications to subscription %s: %w (its apply is held back: see `pgoutpost status`)", sub, err)
	}
	return nil
}

// refreshCopies decides the copy_data of refreshing s: true unless the
// tables new to s are queue tables (NoCopy publications), whose history is
// not work. New tables of both kinds cannot join in one refresh.
func refreshCopies(ctx context.Context, db DB, s SubscriptionSpec, master masterPublications) (bool, error) {
	states, err := readSyncStates(ctx, db, []string{s.Name})
	if err != nil {
		return false, err
	}
	known := map[registry.TableName]bool{}
	for _, st := range states {
		known[st.Table] = true
	}
	var newQueue, newData []string
	for _, pub := range s.Publications {
		for _, t := range master[pub] {
			switch {
			case known[t]:
			case s.copies(pub):
				newData = append(newData, t.String())
			default:
				newQueue = append(newQueue, t.String())
			}
			known[t] = true
		}
	}
	if len(newQueue) > 0 && len(newData) > 0 {
		return false, fmt.Errorf("refresh subscription %s: %w: the queue tables %s (never copied) and the tables %s (copied) are new to it, "+
			"and one refresh copies all or none: on the master, publish the new tables in two steps (first the queue tables, "+
			"run `subscription update` here, then the others, and run it again)",
			s.Name, ErrMixedRefresh, strings.Join(newQueue, ", "), strings.Join(newData, ", "))
	}
	return len(newQueue) == 0, nil
}

// connectMaster opens a connection to the master from pgoutpost itself (the
// slave's server connects with the same conninfo); the error never shows
// the password.
func connectMaster(ctx context.Context, conninfo string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, conninfo)
	if err != nil {
		return nil, fmt.Errorf("could not connect to the master (%s): %w", connstr.Redact(conninfo), scrubError(err, conninfo))
	}
	return conn, nil
}

// masterPublications are the tables of the master's publications, by name.
type masterPublications map[string][]registry.TableName

// readMasterPublications connects to the master and reads the tables of
// pubs; a publication the master does not have is an error naming it.
func readMasterPublications(ctx context.Context, conninfo string, pubs []string) (masterPublications, error) {
	conn, err := connectMaster(ctx, conninfo)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `
		SELECT p.pubname, t.schemaname, t.tablename
		FROM pg_catalog.pg_publication p
		LEFT JOIN pg_catalog.pg_publication_tables t ON t.pubname = p.pubname
		WHERE p.pubname = ANY($1)`, pubs)
	if err != nil {
		return nil, fmt.Errorf("read the master's publications: %w", err)
	}
	out := masterPublications{}
	for rows.Next() {
		var pub string
		var schema, table *string
		if err := rows.Scan(&pub, &schema, &table); err != nil {
			return nil, fmt.Errorf("read the master's publications: %w", err)
		}
		if _, ok := out[pub]; !ok {
			out[pub] = nil
		}
		if schema != nil && table != nil {
			out[pub] = append(out[pub], registry.TableName{Schema: *schema, Name: *table})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the master's publications: %w", err)
	}
	var missing []string
	for _, p := range pubs {
		if _, ok := out[p]; !ok {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s (master %s): run `pgoutpost publication create` and `publication update` on the master first",
			ErrMissingPublication, strings.Join(missing, ", "), connstr.Redact(conninfo))
	}
	return out, nil
}

// SyncState is a table's state in a subscription (pg_subscription_rel).
type SyncState struct {
	Subscription string             `json:"subscription"`
	Table        registry.TableName `json:"-"`
	TableName    string             `json:"table"`
	State        string             `json:"state"` // i, d, f, s, r
}

// StateName spells out a pg_subscription_rel state.
func StateName(s string) string {
	switch s {
	case "i":
		return "init"
	case "d":
		return "copying data"
	case "f":
		return "copy finished"
	case "s":
		return "synchronized"
	case "r":
		return "ready"
	}
	return s
}

func readSyncStates(ctx context.Context, q querier, subs []string) ([]SyncState, error) {
	return syncStates(ctx, q, "AND s.subname = ANY($1)", subs)
}

// syncStates reads pg_subscription_rel for the current database's
// subscriptions that match the condition cond (on s, pg_subscription, and r,
// pg_subscription_rel) with args.
func syncStates(ctx context.Context, q querier, cond string, args ...any) ([]SyncState, error) {
	rows, err := q.Query(ctx, `
		SELECT s.subname, n.nspname, c.relname, r.srsubstate::text
		FROM pg_catalog.pg_subscription s
		JOIN pg_catalog.pg_subscription_rel r ON r.srsubid = s.oid
		JOIN pg_catalog.pg_class c ON c.oid = r.srrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
		  `+cond+`
		ORDER BY 1, 2, 3`, args...)
	if err != nil {
		return nil, fmt.Errorf("read table sync states: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (SyncState, error) {
		var s SyncState
		err := r.Scan(&s.Subscription, &s.Table.Schema, &s.Table.Name, &s.State)
		s.TableName = s.Table.String()
		return s, err
	})
}

type subErrors struct{ apply, sync int64 }

func readSubErrors(ctx context.Context, q querier, subs []string) (map[string]subErrors, error) {
	rows, err := q.Query(ctx, `
		SELECT subname, apply_error_count, sync_error_count
		FROM pg_stat_subscription_stats WHERE subname = ANY($1)`, subs)
	if err != nil {
		return nil, fmt.Errorf("read subscription error counts: %w", err)
	}
	out := map[string]subErrors{}
	for rows.Next() {
		var n string
		var e subErrors
		if err := rows.Scan(&n, &e.apply, &e.sync); err != nil {
			return nil, fmt.Errorf("read subscription error counts: %w", err)
		}
		out[n] = e
	}
	return out, rows.Err()
}

// SyncFailure is a table whose initial copy failed.
type SyncFailure struct {
	Subscription string
	Table        registry.TableName
	State        string
	Reason       string
}

// SyncError is returned by WaitReady when initial copies fail. It wraps
// ErrSyncFailed.
type SyncError struct{ Failures []SyncFailure }

func (e *SyncError) Error() string {
	parts := make([]string, len(e.Failures))
	for i, f := range e.Failures {
		parts[i] = fmt.Sprintf("subscription %s: table %s stuck in %s: %s", f.Subscription, f.Table, StateName(f.State), f.Reason)
	}
	return ErrSyncFailed.Error() + ": " + strings.Join(parts, "; ")
}

func (e *SyncError) Unwrap() error { return ErrSyncFailed }

// WaitReady polls the subscriptions' table states every poll interval,
// printing each change to progress, until every table is ready. It returns a
// *SyncError when a table's initial copy fails repeatedly (the subscription's
// sync_error_count grows by two: the tablesync worker errored, retried after
// wal_retrieve_retry_interval and errored again; it would go on forever), ErrDisabled when a subscription is disabled, and ctx's error when
// ctx ends first (bound the wait with a deadline).
func WaitReady(ctx context.Context, db DB, names Names, progress io.Writer, poll time.Duration) error {
	subs := names.SubscriptionNames()
	base, err := readSubErrors(ctx, db, subs)
	if err != nil {
		return err
	}
	seen := map[string]string{}
	for {
		have, err := readSubscriptions(ctx, db, subs)
		if err != nil {
			return err
		}
		for _, s := range subs {
			cur, ok := have[s]
			if !ok {
				return fmt.Errorf("wait for subscription %s: it does not exist: run `pgoutpost subscription create`", s)
			}
			if !cur.enabled {
				return fmt.Errorf("wait for subscription %s: %w", s, ErrDisabled)
			}
		}
		states, err := readSyncStates(ctx, db, subs)
		if err != nil {
			return err
		}
		pending := 0
		for _, st := range states {
			key := st.Subscription + " " + st.TableName
			if seen[key] != st.State {
				seen[key] = st.State
				fmt.Fprintf(progress, "%s %s: %s\n", st.Subscription, st.TableName, StateName(st.State))
			}
			if st.State != "r" {
				pending++
			}
		}
		if pending == 0 {
			fmt.Fprintf(progress, "all %d tables ready\n", len(states))
			return nil
		}
		now, err := readSubErrors(ctx, db, subs)
		if err != nil {
			return err
		}
		var failures []SyncFailure
		for _, s := range subs {
			// The error count is per subscription, not per table: wait for a
			// second error (the worker retried the same copy and failed again,
			// while healthy copies of small tables had time to finish), then
			// blame the tables still copying, and of those the ones whose
			// slave table already holds rows when there are any.
			if now[s].sync-base[s].sync >= 2 {
				var copying, withRows []SyncFailure
				for _, st := range states {
					if st.Subscription == s && (st.State == "i" || st.State == "d") {
						has, reason := syncReason(ctx, db, st.Table)
						f := SyncFailure{s, st.Table, st.State, reason}
						copying = append(copying, f)
						if has {
							withRows = append(withRows, f)
						}
					}
				}
				if len(withRows) > 0 {
					copying = withRows
				}
				failures = append(failures, copying...)
			}
			if now[s].apply > base[s].apply {
				fmt.Fprintf(progress, "warning: subscription %s: the apply worker reported %d error(s) while waiting; see the slave's server log\n", s, now[s].apply-base[s].apply)
				base[s] = subErrors{apply: now[s].apply, sync: base[s].sync}
			}
		}
		if len(failures) > 0 {
			return &SyncError{Failures: failures}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for subscriptions: %d table(s) not ready: %w", pending, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// syncReason guesses why a table's initial copy fails. The tablesync
// worker's error text is only in the slave's server log; the most common
// cause (the seed's most common failure) is rows already in the slave's
// table, which make the COPY fail on a duplicate key.
func syncReason(ctx context.Context, q querier, t registry.TableName) (hasRows bool, reason string) {
	var has bool
	if err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+t.Sanitize()+")").Scan(&has); err == nil && has {
		return true, "the slave's table already holds rows, so the initial copy most likely fails on a duplicate key; " +
			"`pgoutpost subscription drop` then `subscription create --join` merges the master's rows into the slave's instead of copying; " +
			"or empty the synced tables (docs/deploy.md, the seed's recipe) and run `subscription update --wait` again " +
			"(the tablesync worker's exact error is in the slave's server log)"
	}
	return false, "the tablesync worker errored; its error is in the slave's server log (common causes: a missing or different column on the slave, a row the slave's constraints reject, too few max_sync_workers_per_subscription or connections on the master)"
}

// CopyingTables returns the tables of every subscription of the current
// database that are not ready yet (initial copy, or a table added later): the
// sidecar applies no queue entry while there is one, since a cascade or an
// event could read a table whose rows are not all there.
func CopyingTables(ctx context.Context, db DB) ([]SyncState, error) {
	return syncStates(ctx, db, "AND r.srsubstate <> 'r'")
}
