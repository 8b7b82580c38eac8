package catalog_test

import (
	"testing"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
