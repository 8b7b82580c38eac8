package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutpost/pgoutpost/registry"
)

// The seed's queue tables (registry.SeedDeleteQueue.Table() and
// registry.SeedDenormalizeQueue.Table()), read with ProcessorOptions.SeedQueues. Each row is
//
//	id               uuid         primary key
//	object_pk        text         the row's primary key (single-column keys only)
//	content_type_id  integer      → django_content_type (app_label, model)
//	created_at       timestamptz
//
// The deletequeue holds deletes, the denormalizequeue inserts and updates
// without saying which: their events carry op "upsert". Unlike the package's
// cron, entries are taken oldest first and a failing one goes to dead_letter
// with its reason instead of being retried forever.

// Ops of seed entries.
const OpUpsert = "upsert"

type contentType struct {
	appLabel, model string
	table           *registry.Table // its registry model, nil when none (modelOf)
}

// SeedEntry makes the Entry of a row of a seed queue table (queue is
// registry.SeedDeleteQueue or registry.SeedDenormalizeQueue) from its
// columns in PostgreSQL text form, as a decoded stream Insert gives them. The table and key are
// resolved by the processor from the content type.
func SeedEntry(queue registry.Queue, cols map[string]string) (Entry, error) {
	e := Entry{Queue: queue, ID: cols["id"], ObjectPK: cols["object_pk"]}
	switch queue {
	case registry.SeedDeleteQueue:
		e.Op = OpDelete
	case registry.SeedDenormalizeQueue:
		e.Op = OpUpsert
	default:
		return Entry{}, fmt.Errorf("seed entry of queue %q: not a seed queue", queue)
	}
	if e.ID == "" {
		return Entry{}, fmt.Errorf("seed entry of %s: no id", queue)
	}
	if ct := cols["content_type_id"]; ct != "" {
		if _, err := fmt.Sscan(ct, &e.ContentTypeID); err != nil {
			return Entry{}, fmt.Errorf("seed entry %s of %s: content_type_id %q: %w", e.ID, queue, ct, err)
		}
	}
	if at := cols["created_at"]; at != "" {
		t, err := parseTimestamptz(at)
		if err != nil {
			return Entry{}, fmt.Errorf("seed entry %s of %s: created_at %q: %w", e.ID, queue, at, err)
		}
		e.CreatedAt = t
	}
	return e, nil
}

// resolveSeed finds the model of a seed entry from its content type (by the
// registry table's Django label, else by Django's default table name
// app_label_model) and its key from object_pk.
func (p *Processor) resolveSeed(ctx context.Context, it *item) error {
	e := it.e
	ct, ok, err := p.contentType(ctx, e.ContentTypeID)
	if err != nil {
		return err
	}
	if !ok {
		it.err = fmt.Errorf("%w: content type %d is not in django_content_type", errBadEntry, e.ContentTypeID)
		return nil
	}
	label := ct.appLabel + "." + ct.model
	t := ct.table
	if t == nil {
		it.err = fmt.Errorf("%w: content type %d (%s) is no model of the registry", errBadEntry, e.ContentTypeID, label)
		return nil
	}
	it.table = t
	e.Table = t.Name.String()
	if want := registry.KindDenormalize; e.Queue == registry.SeedDenormalizeQueue && t.Kind != want || !t.Kind.IsDeleteModel() {
		it.err = fmt.Errorf("%w: %s (%s) is a %s table, not a %s model (check the models of sidecar.yaml)", errBadEntry, t.Name, label, t.Kind, map[bool]string{true: "denormalize", false: "delete"}[e.Queue == registry.SeedDenormalizeQueue])
		return nil
	}
	if len(t.PrimaryKey) != 1 {
		it.err = fmt.Errorf("%w: %s (%s) has a primary key of %d columns; object_pk names one", errBadEntry, t.Name, label, len(t.PrimaryKey))
		return nil
	}
	if e.ObjectPK == "" {
		it.err = fmt.Errorf("%w: empty object_pk for %s", errBadEntry, t.Name)
		return nil
	}
	it.key = []string{e.ObjectPK}
	it.e.PK = seedPK(t, e.ObjectPK)
	return nil
}

// seedPK is the key as a JSON object, with a number for integer columns (as
// the master's own triggers log it) and a string otherwise.
func seedPK(t *registry.Table, v string) json.RawMessage {
	col := t.PrimaryKey[0]
	var b []byte
	b = append(b, '{')
	b = appendJSONString(b, col)
	b = append(b, ':')
	if c := t.Column(col); c != nil && isIntegerType(c.TypeOID) && isDigits(v) {
		b = append(b, v...)
	} else {
		b = appendJSONString(b, v)
	}
	return append(b, '}')
}

func isIntegerType(oid uint32) bool { return oid == 20 || oid == 21 || oid == 23 } // int8, int2, int4

func isDigits(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (p *Processor) modelOf(ct contentType) *registry.Table {
	for _, t := range p.reg.Tables {
		if app, model, ok := strings.Cut(t.Label, "."); ok && app == ct.appLabel && strings.EqualFold(model, ct.model) {
			return t
		}
	}
	for _, t := range p.reg.Tables {
		if t.Label == "" && t.Name.Schema == "public" && t.Name.Name == ct.appLabel+"_"+ct.model {
			return t
		}
	}
	return nil
}

// contentType looks id up in django_content_type, caching the table with
// each row's registry model (it changes only with migrations; an unknown id
// reloads it: its row may arrive through the other subscription just after
// the entry).
func (p *Processor) contentType(ctx context.Context, id int64) (contentType, bool, error) {
	p.ctMu.Lock()
	defer p.ctMu.Unlock()
	if ct, ok := p.contentTypes[id]; ok {
		return ct, true, nil
	}
	rows, err := p.db.Query(ctx, "SELECT id, app_label, model FROM public.django_content_type")
	if err != nil {
		return contentType{}, false, fmt.Errorf("read django_content_type: %w", err)
	}
	m := map[int64]contentType{}
	for rows.Next() {
		var i int64
		var ct contentType
		if err := rows.Scan(&i, &ct.appLabel, &ct.model); err != nil {
			rows.Close()
			return contentType{}, false, fmt.Errorf("read django_content_type: %w", err)
		}
		ct.table = p.modelOf(ct)
		m[i] = ct
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return contentType{}, false, fmt.Errorf("read django_content_type: %w", err)
	}
	p.contentTypes = m
	ct, ok := m[id]
	return ct, ok, nil
}

// pendingSeed reads at most limit of the oldest entries of a seed queue
// table, each its own Txn (the package's rows carry no transaction id).
func (p *Processor) pendingSeed(ctx context.Context, queue registry.Queue, limit int) ([]Entry, error) {
	qt := queue.Table()
	exists, err := tableExists(ctx, p.db, qt)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, fmt.Errorf("read %s: %w", qt, errNoSeedTable)
	}
	rows, err := p.db.Query(ctx, "SELECT id::text, coalesce(object_pk, ''), coalesce(content_type_id, 0), created_at FROM "+
		qt.Sanitize()+" ORDER BY created_at, id LIMIT $1", limit)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", qt, err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Entry, error) {
		e := Entry{Queue: queue, Op: OpDelete}
		if queue == registry.SeedDenormalizeQueue {
			e.Op = OpUpsert
		}
		err := r.Scan(&e.ID, &e.ObjectPK, &e.ContentTypeID, &e.CreatedAt)
		return e, err
	})
}

var errNoSeedTable = errors.New("table missing: queue.seed_queues is on but django-logical-replication's queue table does not exist")

// EntryFromRow makes the Entry of a row inserted into queue table t (one of
// delete_queue, denormalize_queue or, for the seed queues, their tables) from
// its columns in PostgreSQL text form, as a decoded stream Insert gives them.
func EntryFromRow(t registry.TableName, cols map[string]string) (Entry, error) {
	q, ok := registry.QueueOf(t)
	if !ok {
		return Entry{}, fmt.Errorf("entry of %s: not a queue table", t)
	}
	if q.Seed() {
		return SeedEntry(q, cols)
	}
	e := Entry{Queue: q, ID: cols["id"], Table: cols["table_name"], PK: json.RawMessage(cols["pk"]), Op: cols["op"]}
	if e.ID == "" {
		return Entry{}, fmt.Errorf("entry of %s: no id", t)
	}
	if x := cols["xid"]; x != "" {
		v, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return Entry{}, fmt.Errorf("entry %s of %s: xid %q: %w", e.ID, t, x, err)
		}
		e.Xid = v
	}
	if at := cols["created_at"]; at != "" {
		v, err := parseTimestamptz(at)
		if err != nil {
			return Entry{}, fmt.Errorf("entry %s of %s: created_at %q: %w", e.ID, t, at, err)
		}
		e.CreatedAt = v
	}
	return e, nil
}
