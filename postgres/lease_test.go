package postgres_test

import (
	"testing"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/storetest"
)

func TestLease(t *testing.T) {
	storetest.RunLeaseService(t, func(t *testing.T) (sluice.LeaseService, sluice.LeaseService) {
		a, another := openSchemaTwice(t)
		return a, another()
	})
}

func TestMarkOnce(t *testing.T) {
	storetest.RunOnceSet(t, func(t *testing.T) (sluice.OnceSet, sluice.OnceSet) {
		a, another := openSchemaTwice(t)
		return a, another()
	})
}
