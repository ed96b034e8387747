package redis_test

import (
	"context"
	"testing"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/storetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/redis"
)

// sharedClient connects to the machine's Redis, or skips t.
func sharedClient(t testing.TB) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		testenv.Missing(t, "Redis at %s does not answer: %v", testenv.RedisAddr(t), err)
	}
	return c
}

// storeClient connects a rueidis client, the store's, to the machine's
// Redis, or skips t.
func storeClient(t testing.TB) rueidis.Client {
	t.Helper()
	addr := testenv.RedisAddr(t)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, ForceSingleClient: true, DisableCache: true})
	if err != nil {
		testenv.Missing(t, "Redis at %s does not answer: %v", addr, err)
	}
	t.Cleanup(c.Close)
	return c
}

// cleanPrefix deletes every key under prefix when t ends.
func cleanPrefix(t testing.TB, c goredis.UniversalClient, prefix string) {
	t.Cleanup(func() {
		ctx := context.Background()
		del := func(c *goredis.Client) {
			iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
		}
		switch c := c.(type) {
		case *goredis.Client:
			del(c)
		case *goredis.ClusterClient:
			c.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error { del(c); return nil })
		}
	})
}

func TestConformance(t *testing.T) {
	c := sharedClient(t)
	rc := storeClient(t)
	storetest.RunQuotaStore(t, func(t *testing.T) sluice.QuotaStore {
		prefix := "sluicetest:" + testenv.Unique(t) + ":"
		cleanPrefix(t, c, prefix)
		return redis.New(rc, redis.Options{Prefix: prefix, CallerClock: true})
	})
}
