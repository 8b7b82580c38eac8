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

	"github.com/pgoutpost/pgoutpost/catalog"
	"github.com/pgoutpost/pgoutpost/registry"
)

// Report is what `pgoutpost status` shows about one database.
type Report struct {
	Role     string   `json:"role"`
	Database string   `json:"database"`
	Settings Settings `json:"settings"`

	Publications  []PublicationStatus  `json:"publications,omitempty"`
	Slots         []SlotStatus         `json:"slots"`
	Subscriptions []SubscriptionStatus `json:"subscriptions,omitempty"`
	// Queues maps a queue table to its row count; absent when pgoutpost's schema is not installed.
	Queues      map[string]int64 `json:"queues,omitempty"`
	DeadLetters *int64           `json:"dead_letters,omitempty"`
	Guarded     []string         `json:"guarded_tables,omitempty"`

	// FailoverSlots are the logical slots synchronized to physical standbys
	// (failover = true, PostgreSQL 17+); on a standby, those it holds
	// synchronized from its primary.
	FailoverSlots []string `json:"failover_slots,omitempty"`
	standby       bool     // the server is in recovery

	// Problems are what needs a person's attention, in words.
	Problems []string `json:"problems"`
}

// Settings are the server settings replication depends on.
type Settings = catalog.Settings

// PublicationStatus is a publication and its tables.
type PublicationStatus struct {
	Name    string   `json:"name"`
	Publish string   `json:"publish"`
	Tables  []string `json:"tables"`
}

// SlotStatus is a replication slot of the server.
type SlotStatus = catalog.Slot

// SubscriptionStatus is a subscription of the slave.
type SubscriptionStatus struct {
	Name         string      `json:"name"`
	Enabled      bool        `json:"enabled"`
	Publications []string    `json:"publications"`
	Tables       []SyncState `json:"tables"`
	WorkerPID    *int32      `json:"worker_pid"`
	// LastMessage is when the apply worker last heard from the master;
	// LastMessageLag the time that message took (receipt - send);
	// LatestEndAge how old the last position reported to the master is.
	LastMessage    *time.Time `json:"last_message,omitempty"`
	LastMessageLag *float64   `json:"last_message_lag_seconds,omitempty"`
	LatestEndAge   *float64   `json:"latest_end_age_seconds,omitempty"`
	ApplyErrors    int64      `json:"apply_errors"`
	SyncErrors     int64      `json:"sync_errors"`
}

// SlaveChecks are the queue package's checks of a slave's installation that
// the report includes. Status takes them from its caller because replication
// imports only the registry; a nil check is skipped.
type SlaveChecks struct {
	// Guarded lists the tables that have the slave write guard, in name
	// order (queue.GuardedTables), for Report.Guarded.
	Guarded func(ctx context.Context, db DB) ([]registry.TableName, error)
	// MissingIndexes names the indexes of the queue tables that `queue
	// install` creates and the slave lacks (queue.MissingIndexes); each is a
	// problem.
	MissingIndexes func(ctx context.Context, db DB) ([]string, error)
	// MasterConnInfo returns the master's conninfo (from master: in the
	// configuration), so that a subscription to a publication the master
	// lacks is named as such; nil or "" skips the check.
	MasterConnInfo func(ctx context.Context) (string, error)
	// Stream returns the warnings about the JetStream stream the sidecar
	// publishes to (sink.InspectStream: one replica on a cluster, memory
	// storage); each is a problem, and so is not being able to look.
	Stream func(ctx context.Context) ([]string, error)
}

// Status reads the replication status of the database db is connected to,
// as a master or as a slave; names are the publications and subscriptions
// to report on. On a slave with the queue tables installed it also runs
// checks.
func Status(ctx context.Context, db DB, role string, names Names, checks SlaveChecks) (*Report, error) {
	r := &Report{Role: role, Slots: []SlotStatus{}, Problems: []string{}}
	if err := db.QueryRow(ctx, "SELECT current_database()").Scan(&r.Database); err != nil {
		return nil, fmt.Errorf("read status: %w", err)
	}
	steps := []func(context.Context, DB) error{r.readSettings, r.checkFailover, r.readSlots,
		func(ctx context.Context, db DB) error { return r.checkMasterPublications(ctx, names, checks) },
		func(ctx context.Context, db DB) error { return r.readQueues(ctx, db, checks) }}
	if role == "master" {
		steps = append(steps, func(ctx context.Context, db DB) error { return r.readPublications(ctx, db, names) })
	} else {
		steps = append(steps, func(ctx context.Context, db DB) error { return r.readSubscriptions(ctx, db, names) })
	}
	for _, step := range steps {
		if err := step(ctx, db); err != nil {
			return nil, err
		}
	}
	if role != "master" && checks.Stream != nil {
		warnings, err := checks.Stream(ctx)
		if err != nil {
			r.problem("cannot check the NATS stream: %v", err)
		}
		for _, w := range warnings {
			r.problem("nats: %s", w)
		}
	}
	return r, nil
}

// checkMasterPublications names, on a slave, each publication its
// subscriptions carry that the master does not have: their apply worker
// fails on it over and over, and nothing else says why.
func (r *Report) checkMasterPublications(ctx context.Context, names Names, checks SlaveChecks) error {
	if r.Role == "master" || checks.MasterConnInfo == nil {
		return nil
	}
	conninfo, err := checks.MasterConnInfo(ctx)
	if err != nil || conninfo == "" {
		return nil
	}
	var pubs []string
	for _, s := range names.Subscriptions() {
		pubs = append(pubs, s.Publications...)
	}
	_, err = readMasterPublications(ctx, conninfo, pubs)
	switch {
	case errors.Is(err, ErrMissingPublication):
		r.problem("%v", err)
	case err != nil:
		r.problem("cannot check the master's publications: %v", err)
	}
	return nil
}

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

func (r *Report) readSettings(ctx context.Context, db DB) error {
	var err error
	if r.Settings, err = catalog.ReadSettings(ctx, db); err != nil {
		return err
	}
	s := &r.Settings
	if !s.LogicalWAL() {
		if r.Role == "master" {
			r.problem("wal_level is %s, not logical: publications send nothing; set wal_level = logical and restart the server", s.WalLevel)
		} else {
			r.problem("wal_level is %s, not logical: the sidecar's slot on this slave cannot work; set wal_level = logical and restart the server", s.WalLevel)
		}
	}
	if s.SlotsUsed >= s.MaxReplicationSlots {
		r.problem("all %d replication slots are in use (max_replication_slots): a new subscription or sidecar slot will fail", s.MaxReplicationSlots)
	}
	if r.Role != "master" {
		// A subscriber's subscriptions take replication origins, which
		// max_replication_slots also bounds, and one apply worker each.
		var subs, workers int
		if err := db.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_subscription)::int,
				current_setting('max_logical_replication_workers')::int`).Scan(&subs, &workers); err != nil {
			return fmt.Errorf("read settings: %w", err)
		}
		if subs+s.SlotsUsed > s.MaxReplicationSlots {
			r.problem("max_replication_slots (%d) is below the %d subscriptions plus %d slots of this server: subscriptions need a replication origin each", s.MaxReplicationSlots, subs, s.SlotsUsed)
		}
		if subs >= workers {
			r.problem("max_logical_replication_workers (%d) leaves no worker for initial table copies beside the %d subscriptions' apply workers", workers, subs)
		}
	}
	if s.WalSendersUsed >= s.MaxWalSenders {
		r.problem("all %d WAL senders are in use (max_wal_senders): further subscribers cannot connect", s.MaxWalSenders)
	}
	return nil
}

func (r *Report) readSlots(ctx context.Context, db DB) error {
	slots, err := catalog.Slots(ctx, db)
	if err != nil {
		return err
	}
	r.Slots = append(r.Slots, slots...)
	var keep string
	if err := db.QueryRow(ctx, "SELECT current_setting('max_slot_wal_keep_size')").Scan(&keep); err != nil {
		return fmt.Errorf("read max_slot_wal_keep_size: %w", err)
	}
	unbounded := keep == "-1"
	for _, s := range slots {
		switch {
		case s.WalStatus == "lost":
			r.problem("slot %s has lost WAL it needed: its subscriber cannot continue and must be set up again", s.Name)
		case s.WalStatus == "unreserved":
			r.problem("slot %s is about to lose WAL (wal_status unreserved)", s.Name)
		}
		if !s.Active && strings.HasPrefix(s.Name, "pg_") && strings.Contains(s.Name, "_sync_") {
			continue // a tablesync worker's slot between retries
		}
		if r.standby && slices.Contains(r.FailoverSlots, s.Name) {
			continue // synchronized from the primary: used only after a promotion
		}
		if !s.Active {
			retained := "WAL"
			if s.RetainedBytes != nil {
				retained = fmt.Sprintf("%d bytes of WAL", *s.RetainedBytes)
			}
			bound := ""
			if unbounded {
				bound = " without bound (max_slot_wal_keep_size = -1: the disk fills up; set a limit)"
			}
			r.problem("slot %s is inactive and retains %s%s: its consumer is down, or the slot is left over (a retired slave: `pgoutpost subscription drop` on it, or SELECT pg_drop_replication_slot('%s') if nothing uses it)", s.Name, retained, bound, s.Name)
		}
	}
	return nil
}

func (r *Report) readQueues(ctx context.Context, db DB, checks SlaveChecks) error {
	var installed bool
	if err := db.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", registry.DeleteQueue.Table().Sanitize()).Scan(&installed); err != nil {
		return fmt.Errorf("read queues: %w", err)
	}
	if !installed {
		r.problem("pgoutpost's queue tables are not installed: run `pgoutpost queue install`")
		return nil
	}
	// Counted whole (no limit): status runs once, and says how deep a
	// queue is; django-logical-replication's queues too where they exist.
	depths, err := catalog.Depths(ctx, db, true, 0)
	if err != nil {
		return err
	}
	r.Queues = map[string]int64{}
	for _, d := range depths {
		r.Queues[d.Table] = d.Pending
	}
	if r.Role == "master" {
		return nil
	}
	if n, err := catalog.DeadLetters(ctx, db); err == nil {
		r.DeadLetters = &n
		if n > 0 {
			r.problem("%d queue entries are dead letters: see `pgoutpost queue status` and retry them with `pgoutpost queue retry` once fixed", n)
		}
	}
	if checks.MissingIndexes != nil {
		missing, err := checks.MissingIndexes(ctx, db)
		if err != nil {
			return fmt.Errorf("read queue indexes: %w", err)
		}
		if len(missing) > 0 {
			r.problem("the queue tables lack %s: a backlog drains slowly; run `pgoutpost queue install`", strings.Join(missing, ", "))
		}
	}
	if checks.Guarded == nil {
		return nil
	}
	tables, err := checks.Guarded(ctx, db)
	if err != nil {
		return fmt.Errorf("read write guard: %w", err)
	}
	for _, g := range tables {
		r.Guarded = append(r.Guarded, g.String())
	}
	return nil
}

func (r *Report) readPublications(ctx context.Context, db DB, names Names) error {
	pubs, err := readPublications(ctx, db, names.PublicationNames())
	if err != nil {
		return err
	}
	for _, spec := range names.Publications() {
		p, ok := pubs[spec.Name]
		if !ok {
			r.problem("publication %s does not exist: run `pgoutpost publication create` and `publication update`", spec.Name)
			continue
		}
		ps := PublicationStatus{Name: spec.Name, Publish: p.publish, Tables: []string{}}
		for _, n := range registry.SortedNames(p.members) {
			ps.Tables = append(ps.Tables, p.members[n].describe())
		}
		if p.publish != spec.Publish {
			r.problem("publication %s publishes %q, want %q: run `pgoutpost publication update`", spec.Name, p.publish, spec.Publish)
		}
		r.Publications = append(r.Publications, ps)
	}
	return nil
}

func (r *Report) readSubscriptions(ctx context.Context, db DB, names Names) error {
	subs, err := readSubscriptions(ctx, db, names.SubscriptionNames())
	if err != nil {
		return err
	}
	states, err := readSyncStates(ctx, db, names.SubscriptionNames())
	if err != nil {
		return err
	}
	errCounts, err := readSubErrors(ctx, db, names.SubscriptionNames())
	if err != nil {
		return err
	}
	for _, spec := range names.Subscriptions() {
		cur, ok := subs[spec.Name]
		if !ok {
			r.problem("subscription %s does not exist: run `pgoutpost subscription create`", spec.Name)
			continue
		}
		s := SubscriptionStatus{Name: spec.Name, Enabled: cur.enabled, Publications: cur.publications, Tables: []SyncState{},
			ApplyErrors: errCounts[spec.Name].apply, SyncErrors: errCounts[spec.Name].sync}
		err := db.QueryRow(ctx, `
			SELECT pid, last_msg_receipt_time,
			       extract(epoch FROM last_msg_receipt_time - last_msg_send_time)::float8,
			       extract(epoch FROM now() - latest_end_time)::float8
			FROM pg_stat_subscription WHERE subname = $1 AND relid IS NULL`, spec.Name).
			Scan(&s.WorkerPID, &s.LastMessage, &s.LastMessageLag, &s.LatestEndAge)
		if err != nil && err != pgx.ErrNoRows {
			return fmt.Errorf("read subscription %s statistics: %w", spec.Name, err)
		}
		for _, st := range states {
			if st.Subscription != spec.Name {
				continue
			}
			s.Tables = append(s.Tables, st)
			if st.State != "r" {
				if s.SyncErrors > 0 && (st.State == "i" || st.State == "d") {
					_, reason := syncReason(ctx, db, st.Table)
					r.problem("subscription %s: table %s is stuck in initial copy (%s) after %d sync error(s): %s",
						spec.Name, st.TableName, StateName(st.State), s.SyncErrors, reason)
				} else {
					r.problem("subscription %s: table %s is not ready yet (%s)", spec.Name, st.TableName, StateName(st.State))
				}
			}
		}
		switch {
		case !cur.enabled:
			r.problem("subscription %s is disabled: nothing is replicated until it is enabled (ALTER SUBSCRIPTION %s ENABLE) after its error is fixed", spec.Name, ident(spec.Name))
		case s.WorkerPID == nil:
			r.problem("subscription %s has no running apply worker: it cannot reach the master or keeps failing; see the slave's server log", spec.Name)
		}
		if s.ApplyErrors > 0 {
			r.problem("subscription %s: %d apply error(s) since statistics were reset (a duplicate key from a write on the slave, a column the slave lacks or a publication the master lacks are the usual causes); see the slave's server log", spec.Name, s.ApplyErrors)
		}
		r.Subscriptions = append(r.Subscriptions, s)
	}
	return nil
}

// Write prints the report for a person.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "%s database %s\n", r.Role, r.Database)
	s := r.Settings
	fmt.Fprintf(w, "settings: wal_level=%s, slots %d/%d, wal senders %d/%d", s.WalLevel, s.SlotsUsed, s.MaxReplicationSlots, s.WalSendersUsed, s.MaxWalSenders)
	if s.SynchronousStandbys != "" {
		fmt.Fprintf(w, ", synchronous_standby_names=%s", s.SynchronousStandbys)
	}
	fmt.Fprintln(w)
	for _, p := range r.Publications {
		fmt.Fprintf(w, "publication %s (publish %s): %d tables\n", p.Name, p.Publish, len(p.Tables))
		for _, t := range p.Tables {
			fmt.Fprintf(w, "  %s\n", t)
		}
	}
	for _, sub := range r.Subscriptions {
		state := "enabled"
		if !sub.Enabled {
			state = "DISABLED"
		}
		fmt.Fprintf(w, "subscription %s (%s) to %s: %d tables, %d apply errors, %d sync errors\n",
			sub.Name, state, strings.Join(sub.Publications, ", "), len(sub.Tables), sub.ApplyErrors, sub.SyncErrors)
		if sub.LastMessage != nil {
			fmt.Fprintf(w, "  last message %s", sub.LastMessage.Format(time.RFC3339))
			if sub.LastMessageLag != nil {
				fmt.Fprintf(w, " (took %.3fs)", *sub.LastMessageLag)
			}
			if sub.LatestEndAge != nil {
				fmt.Fprintf(w, ", last position reported %.1fs ago", *sub.LatestEndAge)
			}
			fmt.Fprintln(w)
		}
		for _, t := range sub.Tables {
			fmt.Fprintf(w, "  %-40s %s\n", t.TableName, StateName(t.State))
		}
	}
	for _, sl := range r.Slots {
		active := "active"
		if !sl.Active {
			active = "INACTIVE"
		}
		fmt.Fprintf(w, "slot %s (%s, %s, wal_status %s): lag %s, retains %s, safe_wal_size %s\n",
			sl.Name, sl.Plugin, active, sl.WalStatus, bytesOrNA(sl.LagBytes), bytesOrNA(sl.RetainedBytes), bytesOrNA(sl.SafeWalSize))
	}
	if len(r.FailoverSlots) > 0 {
		fmt.Fprintf(w, "failover slots (synchronized to standbys): %s\n", strings.Join(r.FailoverSlots, ", "))
	}
	if r.Queues != nil {
		for _, name := range []string{registry.DeleteQueue.Table().String(), registry.DenormalizeQueue.Table().String()} {
			fmt.Fprintf(w, "queue %s: %d rows\n", name, r.Queues[name])
		}
	}
	if r.DeadLetters != nil {
		fmt.Fprintf(w, "dead letters: %d\n", *r.DeadLetters)
	}
	if r.Role != "master" {
		if len(r.Guarded) == 0 {
			fmt.Fprintln(w, "write guard: not installed")
		} else {
			fmt.Fprintf(w, "write guard on %d tables: %s\n", len(r.Guarded), strings.Join(r.Guarded, ", "))
		}
	}
	if len(r.Problems) == 0 {
		fmt.Fprintln(w, "no problems")
		return
	}
	fmt.Fprintf(w, "%d problem(s):\n", len(r.Problems))
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}

func bytesOrNA(b *int64) string {
	if b == nil {
		return "n/a"
	}
	return fmt.Sprintf("%d bytes", *b)
}

// checkFailover checks, on 17+, what a failover of the master to a physical
// standby needs. On the master: failover slots are only safe with
// synchronized_standby_slots naming the standbys' physical slots (else a
// slave may receive transactions the promoted standby never got), and each
// slot named there must exist and be streamed, or the slaves stall. On a
// standby: sync_replication_slots with what it depends on, and the slots it
// holds synchronized.
func (r *Report) checkFailover(ctx context.Context, db DB) error {
	var num int
	var standby bool
	if err := db.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, pg_is_in_recovery()").Scan(&num, &standby); err != nil {
		return fmt.Errorf("read version: %w", err)
	}
	r.standby = standby
	if num < 170000 {
		return nil
	}
	column := "failover"
	if standby {
		column = "synced"
	}
	rows, err := db.Query(ctx, "SELECT slot_name::text FROM pg_replication_slots WHERE "+column+" ORDER BY 1")
	if err != nil {
		return fmt.Errorf("read failover slots: %w", err)
	}
	if r.FailoverSlots, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return fmt.Errorf("read failover slots: %w", err)
	}
	if standby {
		var sync, feedback, slot, conninfo string
		if err := db.QueryRow(ctx, `SELECT current_setting('sync_replication_slots'), current_setting('hot_standby_feedback'),
			current_setting('primary_slot_name'), current_setting('primary_conninfo')`).Scan(&sync, &feedback, &slot, &conninfo); err != nil {
			return fmt.Errorf("read standby settings: %w", err)
		}
		if sync != "on" {
			return nil // not a failover target for logical slots
		}
		if feedback != "on" {
			r.problem("sync_replication_slots is on but hot_standby_feedback is off: slots are not synchronized")
		}
		if slot == "" {
			r.problem("sync_replication_slots is on but primary_slot_name is empty: slots are not synchronized")
		}
		if !strings.Contains(conninfo, "dbname") {
			r.problem("sync_replication_slots is on but primary_conninfo names no dbname: slots are not synchronized")
		}
		return nil
	}
	if len(r.FailoverSlots) == 0 {
		return nil
	}
	var standbys string
	if err := db.QueryRow(ctx, "SELECT current_setting('synchronized_standby_slots')").Scan(&standbys); err != nil {
		return fmt.Errorf("read synchronized_standby_slots: %w", err)
	}
	if strings.TrimSpace(standbys) == "" {
		r.problem("slots %s have failover on but synchronized_standby_slots is empty: a slave may apply transactions that a promoted standby never received; set it to the standbys' physical slots", strings.Join(r.FailoverSlots, ", "))
		return nil
	}
	for _, name := range strings.Split(standbys, ",") {
		name = strings.TrimSpace(name)
		var active *bool
		err := db.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'physical'", name).Scan(&active)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			r.problem("synchronized_standby_slots names %s, which is no physical slot here: logical walsenders wait for it and the slaves stall", name)
		case err != nil:
			return fmt.Errorf("read slot %s: %w", name, err)
		case !*active:
			r.problem("the standby slot %s (synchronized_standby_slots) is inactive: logical walsenders wait for its standby and the slaves stall until it is back", name)
		}
	}
	return nil
}
