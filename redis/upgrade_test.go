package redis_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/quota"
	"github.com/sluicehq/sluice/redis"
)

// TestRollingUpgrade: during a rolling upgrade, gateways of the build
// before the expiry field (its script, testdata/quota-5d0b74f.lua) and of
// this one decide on the same keys in turn. Every decision, whichever
// script makes it on whatever the other wrote, is the quota package's on
// the same calls, under each algorithm, with a daily limit above the
// 128-pair bound so that busy sliding windows coarsen.
func TestRollingUpgrade(t *testing.T) {
	old, err := os.ReadFile("testdata/quota-5d0b74f.lua")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	opts := redis.Options{Prefix: prefix, CallerClock: true}
	stores := []*redis.Store{redis.WithScript(redis.New(storeClient(t), opts), string(old)), redis.New(storeClient(t), opts)}
	windows := []sluice.Window{
		{Name: "hour", Length: time.Hour, Limit: 100},
		{Name: "day", Length: 24 * time.Hour, Limit: 1000},
	}
	for _, alg := range []sluice.Algorithm{sluice.Sliding, sluice.Calendar, sluice.TokenBucket} {
		p := sluice.Policy{Algorithm: alg, Windows: windows}
		key := fmt.Sprintf("{acct:%d}", alg)
		st := make([][]uint64, len(windows))
		r := rand.New(rand.NewPCG(uint64(alg), 7))
		now := time.Unix(1_800_000_000, 0)
		type charge struct {
			n  int64
			at time.Time
		}
		var admitted []charge
		for op := range 1500 {
			now = now.Add(time.Duration(r.IntN(90_000)) * time.Millisecond)
			which := r.IntN(2) // 0: the old script, 1: this one
			s := stores[which]
			if k := r.IntN(10); k < 8 || len(admitted) == 0 {
				n := int64(r.IntN(3))
				got, err := s.Take(ctx, key, &p, n, now)
				if err != nil {
					t.Fatal(err)
				}
				want := quota.Take(&p, st, n, now)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("%v, op %d, script %d: take %d: (-quota +redis):\n%s", alg, op, which, n, diff)
				}
				if got.Allowed && n > 0 {
					admitted = append(admitted, charge{n, now})
				}
				continue
			}
			j := r.IntN(len(admitted))
			a := admitted[j]
			admitted = append(admitted[:j], admitted[j+1:]...)
			if err := s.Refund(ctx, key, &p, a.n, a.at, now); err != nil {
				t.Fatal(err)
			}
			quota.Refund(&p, st, a.n, a.at, now)
		}
	}
}
