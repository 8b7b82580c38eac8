package replication

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// DefaultPrefix is the prefix of publication and subscription names when the
// configuration sets none.
const DefaultPrefix = "pgoutpost"

// The publish options of the three publications. Delete models publish no
// delete and no truncate: their deletes travel through the delete queue, and a
// TRUNCATE on the master is logged by the queue trigger. The queue tables
// publish inserts only so that expiring old queue rows on the master never
// reaches a slave.
const (
	PublishAll    = "insert, update, delete, truncate"
	PublishUpsert = "insert, update"
	PublishInsert = "insert"
)

// PublicationSpec is one publication on the master.
type PublicationSpec struct {
	Name    string
	Publish string // one of PublishAll, PublishUpsert, PublishInsert
}

// SubscriptionSpec is one subscription on a slave.
type SubscriptionSpec struct {
	Name string
	// Publications are the publications it carries.
	Publications []string
	// NoCopy are the publications whose tables are never copied: the queue
	// (history is not work). The subscription is created over the others
	// with copy_data = true and these are added with copy_data = false;
	// PostgreSQL copies only the tables a subscription does not know yet.
	NoCopy []string
	// SynchronousCommit is the subscription's synchronous_commit: on for the
	// subscription that carries the queue. The sidecar's walsender sends only
	// flushed WAL, and an apply worker commits asynchronously by default, so
	// each queue entry would otherwise wait for the slave's WAL writer (up to
	// wal_writer_delay, 200 ms) before the sidecar sees it; with it on, the
	// master-commit to event latency is a few milliseconds.
	SynchronousCommit bool
	// Failover creates it with failover = true (PostgreSQL 17+), see
	// config's replication.failover.
	Failover bool
}

// copies reports whether the tables of publication pub get an initial copy.
func (s SubscriptionSpec) copies(pub string) bool { return !slices.Contains(s.NoCopy, pub) }

// Names are the publications and subscriptions of one deployment.
type Names struct {
	System, Delete, Queue PublicationSpec
	// Subs are the subscriptions; the one that carries the queue is last.
	Subs []SubscriptionSpec
	// SeedQueues keeps django-logical-replication's queue tables published
	// (queue.seed_queues): in s_upsert_pub with the seed's names, where the
	// seed put them, so that they stay in the subscription that already
	// knows them; else in the queue publication, without a copy. While a
	// master switches over from the seed, its signals and pgoutpost's
	// triggers may both write entries: the slaves must keep receiving the
	// seed's until the last one is processed.
	SeedQueues bool
	// seedQueuePub is the publication that carries the seed's queue tables
	// while SeedQueues is on.
	seedQueuePub string
	// Legacy are the subscriptions of the two-subscription layout of
	// earlier versions (one for data, one for the queue), which
	// `subscription update` converts; empty with the seed's names, whose
	// data subscriptions stay.
	Legacy LegacyNames
}

// LegacyNames are the subscriptions of the earlier layout whose queue
// subscription ran apart from the data: Data is "" when the data
// subscription is kept as it is (the seed's names).
type LegacyNames struct{ Data, Queue string }

// SetFailover sets Failover on every subscription.
func (n *Names) SetFailover(on bool) {
	for i := range n.Subs {
		n.Subs[i].Failover = on
	}
}

// Publications returns the three publications.
func (n Names) Publications() []PublicationSpec {
	return []PublicationSpec{n.System, n.Delete, n.Queue}
}

// Subscriptions returns the subscriptions.
func (n Names) Subscriptions() []SubscriptionSpec { return n.Subs }

// SubscriptionNames returns the subscriptions' names, which are also their
// slot names on the master and their application names there.
func (n Names) SubscriptionNames() []string {
	out := make([]string, len(n.Subs))
	for i, s := range n.Subs {
		out[i] = s.Name
	}
	return out
}

// PublicationNames returns the publications' names.
func (n Names) PublicationNames() []string {
	return []string{n.System.Name, n.Delete.Name, n.Queue.Name}
}

// subscriptionOf returns the subscription that carries publication pub.
func (n Names) subscriptionOf(pub string) string {
	for _, s := range n.Subs {
		for _, p := range s.Publications {
			if p == pub {
				return s.Name
			}
		}
	}
	return ""
}

var slotUnsafe = regexp.MustCompile(`[^a-z0-9_]+`)

// maxNameLen is PostgreSQL's identifier limit (NAMEDATALEN - 1); a longer
// subscription name would be truncated and its slot name with it.
const maxNameLen = 63

// NewNames derives the names for environment (the slave's name; only
// subscriptions depend on it).
//
// With prefix p: publications p_system, p_delete and p_queue, and ONE
// subscription p_<env> over all three, so that the slave applies every master
// transaction in master commit order, its queue rows in the same slave
// transaction as the row changes they describe: the sidecar never sees an
// entry before the slave holds its rows. The queue's tables join without a
// copy, the others with one. The environment in the name keeps several slaves
// of one master from clashing on slot names.
//
// With seedSlug s (django-logical-replication's names, so an existing
// deployment switches over without rebuilding its replication): publications
// s_pub (all operations) and s_upsert_pub (insert, update) and subscriptions
// s_sub and s_upsert_sub, exactly as the seed created them, plus the queue
// publication s_queue_pub, which joins s_upsert_sub (without a copy): the
// subscription that carries the delete models and the seed's own queues, so
// that deletes stay ordered with the rows they delete. A table moving between
// s_pub and s_upsert_pub is copied again by the other subscription;
// PlanPublications warns about it.
//
// Subscription names are also slot names, which allow only lower-case letters,
// digits and underscores: other characters of the environment become "_".
func NewNames(prefix, seedSlug, environment string) (Names, error) {
	env := slotUnsafe.ReplaceAllString(strings.ToLower(environment), "_")
	if env == "" {
		return Names{}, fmt.Errorf("derive replication names: environment name is empty")
	}
	var n Names
	if seedSlug != "" {
		n = Names{
			System: PublicationSpec{seedSlug + "_pub", PublishAll},
			Delete: PublicationSpec{seedSlug + "_upsert_pub", PublishUpsert},
			Queue:  PublicationSpec{seedSlug + "_queue_pub", PublishInsert},
			Subs: []SubscriptionSpec{
				{Name: seedSlug + "_sub", Publications: []string{seedSlug + "_pub"}},
				{Name: seedSlug + "_upsert_sub", Publications: []string{seedSlug + "_queue_pub", seedSlug + "_upsert_pub"},
					NoCopy: []string{seedSlug + "_queue_pub"}, SynchronousCommit: true},
			},
			seedQueuePub: seedSlug + "_upsert_pub", // where the seed published them
			Legacy:       LegacyNames{Queue: seedSlug + "_" + env + "_queue_sub"},
		}
	} else {
		if prefix == "" {
			prefix = DefaultPrefix
		}
		n = Names{
			System: PublicationSpec{prefix + "_system", PublishAll},
			Delete: PublicationSpec{prefix + "_delete", PublishUpsert},
			Queue:  PublicationSpec{prefix + "_queue", PublishInsert},
			Subs: []SubscriptionSpec{
				{Name: prefix + "_" + env, Publications: []string{prefix + "_queue", prefix + "_system", prefix + "_delete"},
					NoCopy: []string{prefix + "_queue"}, SynchronousCommit: true},
			},
			seedQueuePub: prefix + "_queue",
			Legacy:       LegacyNames{Data: prefix + "_" + env + "_data", Queue: prefix + "_" + env + "_queue"},
		}
	}
	for _, s := range n.Subscriptions() {
		if len(s.Name) > maxNameLen {
			return Names{}, fmt.Errorf("derive replication names: subscription name %q is longer than %d bytes: use a shorter prefix or environment name", s.Name, maxNameLen)
		}
		if slotUnsafe.MatchString(s.Name) {
			return Names{}, fmt.Errorf("derive replication names: subscription name %q is not a valid slot name (lower-case letters, digits and _ only): fix the prefix or seed slug", s.Name)
		}
	}
	for _, p := range n.Publications() {
		if len(p.Name) > maxNameLen {
			return Names{}, fmt.Errorf("derive replication names: publication name %q is longer than %d bytes", p.Name, maxNameLen)
		}
	}
	return n, nil
}
