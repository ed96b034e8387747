package redis_test

import (
	"testing"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/storetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/redis"
)

// twoStores returns two stores, as two instances, on the machine's Redis
// under a prefix of their own.
func twoStores(t *testing.T) (a, b *redis.Store) {
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	return redis.New(storeClient(t), redis.Options{Prefix: prefix}), redis.New(storeClient(t), redis.Options{Prefix: prefix})
}

func TestLease(t *testing.T) {
	storetest.RunLeaseService(t, func(t *testing.T) (sluice.LeaseService, sluice.LeaseService) { return twoStores(t) })
}
