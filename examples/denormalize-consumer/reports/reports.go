// Package reports is the example application service's event handler: it
// keeps app_report.outcome_name (a user table's copy of shop_outcome.name, a
// denormalize model of the demo schema) up to date from pgoutpost's events.
// The denormalize-consumer command and the demo's consumer both run it; it
// does not connect to NATS or follow a stream (package consumer does).
package reports

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutpost/pgoutpost/event"
)

// OutcomeTable is the denormalize model whose events the handler applies.
const OutcomeTable = "public.shop_outcome"

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Denormalizer applies shop_outcome events to app_report. An insert or
// update copies the row's name into every report pointing at it; a delete
// marks them stale (outcome_name = NULL), the "mark as stale /
// recompute" use case.
type Denormalizer struct {
	DB execer
}

// Handle is the consumer.Handler. It is idempotent: applying an event twice
// leaves the same column values.
func (d *Denormalizer) Handle(ctx context.Context, ev event.Event) error {
	if ev.Table != OutcomeTable {
		return nil
	}
	var pk struct {
		ID *int64 `json:"id"`
	}
	if err := ev.DecodePK(&pk); err != nil {
		return err
	}
	if pk.ID == nil {
		// Retrying cannot fix this; log it through the consumer and move on.
		return nil
	}
	var name *string // NULL marks the reports stale
	if ev.Op != event.OpDelete && ev.HasRow() {
		var row struct {
			Name string `json:"name"`
		}
		if err := ev.DecodeRow(&row); err != nil {
			return err
		}
		name = &row.Name
	}
	_, err := d.DB.Exec(ctx,
		`UPDATE app_report SET outcome_name = $2 WHERE outcome_id = $1 AND outcome_name IS DISTINCT FROM $2`,
		*pk.ID, name)
	if err != nil {
		return fmt.Errorf("update reports of outcome %d: %w", *pk.ID, err)
	}
	return nil
}
