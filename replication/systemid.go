package replication

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// systemIDTimeout bounds connecting to the master and reading its system
// identifier.
const systemIDTimeout = 30 * time.Second

// MasterSystemID reads the master's system identifier
// (pg_control_system().system_identifier), the first part of every event's
// Nats-Msg-Id: a republish after a crash is then dropped by JetStream
// whatever path the entry took. Errors never contain the conninfo.
func MasterSystemID(ctx context.Context, conninfo string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, systemIDTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, conninfo)
	if err != nil {
		return "", fmt.Errorf("connect to the master for its system identifier: %w", scrubError(err, conninfo))
	}
	defer conn.Close(context.Background())
	var id string
	if err := conn.QueryRow(ctx, "SELECT system_identifier::text FROM pg_catalog.pg_control_system()").Scan(&id); err != nil {
		return "", fmt.Errorf("read the master's system identifier: %w", err)
	}
	return id, nil
}
