package redis_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/redis"
)

// TestRollingUpgrade: during a rolling upgrade, gateways of the build
// before the expiry field (its script, testdata/quota-5d0b74f.lua) and of
// this one decide on the same keys in turn. Every decision, whichever
// script makes it on whatever the other wrote, is the quota package's on
// the same calls, under each algorithm, with a daily limit above the
// 128-pair bound so that busy sliding windows coarsen.
func TestRollingUpgrade(t *testing.T) {
	old := previousScript(t)
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	opts := redis.Options{Prefix: prefix, CallerClock: true}
	stores := []*redis.Store{redis.WithScript(redis.New(storeClient(t), opts), old), redis.New(storeClient(t), opts)}
	windows := []sluice.Window{
		{Name: "hour", Length: time.Hour, Limit: 100},
		{Name: "day", Length: 24 * time.Hour, Limit: 1000},
	}
	for _, alg := range []sluice.Algorithm{sluice.Sliding, sluice.Calendar, sluice.TokenBucket} {
		p := sluice.Policy{Algorithm: alg, Windows: windows}
		key := fmt.Sprintf("{acct:%d}", alg)
		ops := newRandomOps(&p, key, rand.New(rand.NewPCG(uint64(alg), 7)))
		now := time.Unix(1_800_000_000, 0)
		for op := range 1500 {
			now = now.Add(time.Duration(ops.r.IntN(90_000)) * time.Millisecond)
			which := ops.r.IntN(2) // 0: the old script, 1: this one
			ops.step(t, stores[which], now, fmt.Sprintf("%v, op %d, script %d", alg, op, which))
		}
	}
}

// previousScript returns the quota script of the build before the expiry
// field (5d0b74f): what an older gateway runs during a rolling upgrade, and
// a script whose calendar and token-bucket decisions all take the general
// path.
func previousScript(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/quota-5d0b74f.lua")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
