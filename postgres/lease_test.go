package postgres_test

import (
	"testing"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/storetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/postgres"
)

// twoInstances opens two DBs (two pools, as two instances would) on one
// fresh schema.
func twoInstances(t *testing.T) (*postgres.DB, *postgres.DB) {
	url, _ := testenv.PostgresSchema(t)
	return open(t, url), open(t, url)
}

func TestLease(t *testing.T) {
	storetest.RunLeaseService(t, func(t *testing.T) (sluice.LeaseService, sluice.LeaseService) {
		return twoInstances(t)
	})
}
