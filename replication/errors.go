package replication

import (
	"errors"

	"github.com/pgoutpost/pgoutpost/internal/connstr"
)

// ErrNoReplicaIdentity is returned by PlanPublications when a table that would
// be published for updates or deletes has no replica identity: adding it would
// make every UPDATE and DELETE of that table on the master fail.
var ErrNoReplicaIdentity = errors.New("table has no primary key or replica identity")

// ErrSubscriptionMismatch is returned when an existing subscription subscribes
// to other publications than the ones pgoutpost expects.
var ErrSubscriptionMismatch = errors.New("subscription exists with other publications")

// ErrSyncFailed is returned by WaitReady when a table's initial copy fails.
var ErrSyncFailed = errors.New("initial table copy failed")

// ErrDisabled is returned when a subscription is disabled (PostgreSQL disables
// a subscription on error when disable_on_error is set, or an operator did).
var ErrDisabled = errors.New("subscription is disabled")

// ErrMissingPublication is returned when the master lacks a publication that
// a subscription would carry: nothing is created or changed.
var ErrMissingPublication = errors.New("the master has no publication")

// ErrMixedRefresh is returned when new queue tables and new data tables
// would join a subscription in one refresh, which copies all or none.
var ErrMixedRefresh = errors.New("new queue and data tables in one refresh")

// ErrLegacyLayout is returned when a slave still has the earlier layout's
// separate queue subscription and it cannot be converted now.
var ErrLegacyLayout = errors.New("the slave has the earlier two-subscription layout")

// ErrLogWouldShowPassword is returned when a statement that holds the
// master's password cannot be kept out of the slave's server log.
var ErrLogWouldShowPassword = errors.New("the slave's server log would show the master's password")

// redactedError is an error whose text had the conninfo's secrets masked. It
// keeps the SQLSTATE of a server error but not the original error, whose text
// could hold the password.
type redactedError struct {
	msg  string
	code string
}

func (e *redactedError) Error() string { return e.msg }

// SQLState returns the server's error code, "" when the error was not the server's.
func (e *redactedError) SQLState() string { return e.code }

// scrubError returns err with the conninfo's secrets masked in its text.
func scrubError(err error, conninfo string) error {
	if err == nil {
		return nil
	}
	var code string
	var coder interface{ SQLState() string }
	if errors.As(err, &coder) {
		code = coder.SQLState()
	}
	return &redactedError{msg: connstr.Scrub(err.Error(), conninfo), code: code}
}
