package replication

import (
	"context"
	"strings"
	"testing"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

func TestMasterSystemID(t *testing.T) {
	master := pgtest.NewDB(t, pgtest.Master(t))
	ctx := context.Background()
	t.Run("reads the master's identifier", func(t *testing.T) {
		var want string
		if err := pgtest.Pool(t, master.DSN).QueryRow(ctx, "SELECT system_identifier::text FROM pg_control_system()").Scan(&want); err != nil {
			t.Fatal(err)
		}
		got, err := MasterSystemID(ctx, master.ConnInfo())
		if err != nil || got != want {
			t.Errorf("got %q, %v; want %q", got, err, want)
		}
	})
	t.Run("an unreachable master's error hides the password", func(t *testing.T) {
		_, err := MasterSystemID(ctx, "host=127.0.0.1 port=1 user=app password=hidden-value dbname=x connect_timeout=5")
		if err == nil || strings.Contains(err.Error(), "hidden-value") || !strings.Contains(err.Error(), "system identifier") {
			t.Errorf("error = %v, want one naming the system identifier without the password", err)
		}
	})
}
