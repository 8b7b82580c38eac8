package cascade

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutpost/pgoutpost/registry"
)

var (
	// ErrUnknownTable is returned when the table to delete from is not in the registry.
	ErrUnknownTable = errors.New("table not in the registry")
	// ErrNoPrimaryKey is returned for a table without a primary key: its rows cannot be named.
	ErrNoPrimaryKey = errors.New("table has no primary key")
	// ErrBadKey is returned for a key that does not fit the table's primary key
	// (wrong columns, null, or a value the column type does not accept).
	ErrBadKey = errors.New("malformed key")
	// ErrProtected is matched (errors.Is) by every *ProtectedError.
	ErrProtected = errors.New("protected")
	// ErrRestricted is matched (errors.Is) by every *RestrictedError.
	ErrRestricted = errors.New("restricted")
	// ErrNotNull is returned when SET_NULL (or a column without default under
	// SET_DEFAULT) would write NULL into a NOT NULL column.
	ErrNotNull = errors.New("column is NOT NULL")
	// ErrNoDefault is returned when SET_DEFAULT applies to a column that has no
	// database default. Django's SET_DEFAULT uses the model's default, which the
	// database does not know: configure SET(<value>) instead.
	ErrNoDefault = errors.New("column has no database default")
	// ErrNoRule is returned when rows reference the deleted rows through a
	// relation that has no on_delete rule (registry.Validate reports those).
	ErrNoRule = errors.New("relation has no on_delete rule")
	// ErrDanglingReference is matched by *ReferenceError: a foreign key
	// constraint failed, at a statement or at COMMIT for a deferred constraint
	// (typically a DO_NOTHING relation whose rows were left behind).
	ErrDanglingReference = errors.New("foreign key violation")
)

// Ref is one row that references a row being deleted.
type Ref struct {
	Table registry.TableName
	Key   Key                  // the referencing row's primary key
	FK    *registry.ForeignKey // the relation through which it references
	Value Key                  // its values of FK.FromColumns
}

func (r Ref) String() string {
	rule := r.FK.OnDelete.String()
	if rule == "" {
		rule = "no rule"
	}
	return fmt.Sprintf("%s%s references %s%s through %s (%s)", r.Table, r.Key, r.FK.To, r.Value, strings.Join(r.FK.FromColumns, ","), rule)
}

// ProtectedError lists every row that blocks a delete through a PROTECT
// relation, including rows that are themselves being deleted on another path
// (as Django's PROTECT does).
type ProtectedError struct {
	Table registry.TableName // the table the delete started from
	Refs  []Ref
}

func (e *ProtectedError) Error() string { return refsError("protected", e.Table, e.Refs) }

// Is makes errors.Is(err, ErrProtected) true.
func (e *ProtectedError) Is(target error) bool { return target == ErrProtected }

// RestrictedError lists every row that blocks a delete through a RESTRICT
// relation: a referencing row that is not itself in the set of deleted rows.
type RestrictedError struct {
	Table registry.TableName
	Refs  []Ref
}

func (e *RestrictedError) Error() string { return refsError("restricted", e.Table, e.Refs) }

// Is makes errors.Is(err, ErrRestricted) true.
func (e *RestrictedError) Is(target error) bool { return target == ErrRestricted }

// maxListed bounds how many rows an error message names; the Refs field has all.
const maxListed = 20

func refsError(what string, table registry.TableName, refs []Ref) string {
	var b strings.Builder
	fmt.Fprintf(&b, "delete from %s: %s: %d referencing row(s): ", table, what, len(refs))
	for i, r := range refs {
		if i == maxListed {
			fmt.Fprintf(&b, ", and %d more", len(refs)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.String())
	}
	return b.String()
}

// ColumnError reports an update rule that cannot be applied to a column:
// SET_NULL on a NOT NULL column (Err is ErrNotNull) or SET_DEFAULT without a
// database default (ErrNoDefault). Nothing was changed when it is returned
// from the checks; Rows is how many rows the rule would have changed (0 when
// the database reported the problem).
type ColumnError struct {
	Table  registry.TableName
	Column string
	FK     *registry.ForeignKey // nil when the database reported it without context
	Rule   registry.OnDelete
	Rows   int
	Err    error
}

func (e *ColumnError) Error() string {
	via := ""
	if e.FK != nil {
		via = fmt.Sprintf(" (on_delete %s of %s)", e.Rule, e.FK)
	}
	hint := ""
	if e.Err == ErrNoDefault {
		hint = "; Django's default lives in the model: configure SET(<value>)"
	}
	return fmt.Sprintf("update %s.%s%s: %v%s", e.Table, e.Column, via, e.Err, hint)
}

func (e *ColumnError) Unwrap() error { return e.Err }

// ReferenceError is a foreign key violation reported by the database.
type ReferenceError struct {
	Table      string // the referencing table, as the server names it
	Constraint string
	Detail     string
	Err        *pgconn.PgError
}

func (e *ReferenceError) Error() string {
	return fmt.Sprintf("foreign key %s on %s violated: %s", e.Constraint, e.Table, e.Detail)
}

// Is makes errors.Is(err, ErrDanglingReference) true.
func (e *ReferenceError) Is(target error) bool { return target == ErrDanglingReference }

func (e *ReferenceError) Unwrap() error { return e.Err }

// SQLSTATE codes translated at the boundary.
const (
	sqlstateNotNull          = "23502"
	sqlstateForeignKey       = "23503"
	sqlstateBadText          = "22P02"
	sqlstateOutOfRange       = "22003"
	sqlstateBadDatetime      = "22007"
	sqlstateDatetimeOverflow = "22008"
)

// TranslateError maps a driver error to this package's typed errors: a
// foreign key violation (23503, e.g. from COMMIT after a DO_NOTHING left a
// reference behind) becomes a *ReferenceError, a not-null violation a
// *ColumnError. Other errors are returned unchanged. Use it on the error of
// the transaction's Commit.
func TranslateError(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch pe.Code {
	case sqlstateForeignKey:
		return &ReferenceError{Table: pe.SchemaName + "." + pe.TableName, Constraint: pe.ConstraintName, Detail: pe.Detail, Err: pe}
	case sqlstateNotNull:
		return &ColumnError{Table: registry.TableName{Schema: pe.SchemaName, Name: pe.TableName}, Column: pe.ColumnName, Err: fmt.Errorf("%w: %s", ErrNotNull, pe.Message)}
	}
	return err
}

// isBadValue reports whether err is the server refusing a key value's text.
func isBadValue(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case sqlstateBadText, sqlstateOutOfRange, sqlstateBadDatetime, sqlstateDatetimeOverflow:
		return true
	}
	return false
}

// RowFault reports whether err is caused by the rows a delete or an update
// rule touches, so that setting them aside (a dead letter, a row reported
// and left) is the answer: a rule that refuses them (PROTECT, RESTRICT), a
// rule or key that cannot apply to them, or a constraint, check or trigger
// of the database that refuses the change (data exception, integrity
// constraint, triggered action and PL/pgSQL errors). Anything else — a
// missing privilege, column or table, the connection, resources, the
// server's state, a cancelled context — is no row's fault: the work is
// retried until the cause is fixed, and nothing is set aside.
func RowFault(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	for _, target := range []error{ErrProtected, ErrRestricted, ErrDanglingReference, ErrBadKey, ErrUnknownTable,
		ErrNoPrimaryKey, ErrNoRule, ErrNoDefault, ErrNotNull} {
		if errors.Is(err, target) {
			return true
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		c := pe.Code
		return pgerrcode.IsDataException(c) || pgerrcode.IsIntegrityConstraintViolation(c) ||
			pgerrcode.IsTriggeredDataChangeViolation(c) || pgerrcode.IsWithCheckOptionViolation(c) ||
			pgerrcode.IsTriggeredActionException(c) || pgerrcode.IsPLpgSQLError(c)
	}
	return false
}
