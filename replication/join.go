package replication

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgoutpost/pgoutpost/internal/connstr"
)

// ErrJoinExists is returned by JoinSubscription when the slave already has
// the subscription: a join creates it.
var ErrJoinExists = errors.New("the subscription exists already")

// JoinSubscription returns the subscription a join creates (see package
// merge): the deployment's one subscription, which must not exist yet on the
// slave, over publications the master has.
func JoinSubscription(ctx context.Context, db DB, names Names, conninfo string) (SubscriptionSpec, error) {
	subs := names.Subscriptions()
	if len(subs) != 1 {
		return SubscriptionSpec{}, fmt.Errorf("join: the layout has %d subscriptions; a join creates one (replication.prefix names, not seed_slug)", len(subs))
	}
	s := subs[0]
	if err := refuseLegacy(ctx, db, names, "run `pgoutpost subscription update`, which converts it"); err != nil {
		return s, err
	}
	have, err := readSubscriptions(ctx, db, []string{s.Name})
	if err != nil {
		return s, err
	}
	if _, ok := have[s.Name]; ok {
		return s, fmt.Errorf("join: subscription %s: %w; to resync this slave, drop it first (`pgoutpost subscription drop`)", s.Name, ErrJoinExists)
	}
	if _, err := readMasterPublications(ctx, conninfo, names.PublicationNames()); err != nil {
		return s, fmt.Errorf("join: subscription %s: %w", s.Name, err)
	}
	return s, nil
}

// CreateOnSlot creates subscription s over all its publications on the
// master's existing replication slot of its name, copying no table: the
// slave's tables are already as of that slot's snapshot, and it streams the
// master's commits from there.
func CreateOnSlot(ctx context.Context, db DB, s SubscriptionSpec, conninfo string) error {
	options := "create_slot = false, slot_name = " + quoteSQLString(s.Name) + ", copy_data = false, synchronous_commit = " + s.synchronousCommit()
	if s.Failover {
		// PostgreSQL 17 turns failover on for the existing slot too.
		if err := withConn(ctx, db, func(q querier) error { return needFailover(ctx, q, s.Name) }); err != nil {
			return err
		}
		options += ", failover = true"
	}
	err := createStatement(ctx, db, s.Name, conninfo, s.Publications, options)
	if errors.Is(err, ErrLogWouldShowPassword) {
		return fmt.Errorf("create subscription %s: %w", s.Name, err)
	}
	if err != nil {
		return fmt.Errorf("create subscription %s on its slot (master %s): %w", s.Name, connstr.Redact(conninfo), explain(scrubError(err, conninfo), s))
	}
	return nil
}
