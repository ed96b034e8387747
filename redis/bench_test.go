package redis_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/redis"
)

// BenchmarkDecide measures decisions per second with 64 concurrent callers
// against the machine's Redis: the store deciding a two-window sliding
// policy (hour and day, exact) in one EVALSHA, next to a naive fixed-window
// baseline of one window (INCR and EXPIRE, pipelined: one round trip).
// Keys are spread over 10,000 accounts (keys=10000, a realistic spread) or
// all on one hot account (keys=1). It reports p50 and p99 latency.
//
//	go test -run '^$' -bench Decide -benchtime 200000x ./redis/
func BenchmarkDecide(b *testing.B) {
	c := sharedClient(b)
	c.Options().PoolSize = 128 // the baseline's client; the store's is rueidis
	prefix := "sluicebench:" + testenv.Unique(b) + ":"
	cleanPrefix(b, c, prefix)
	ctx := context.Background()
	s := redis.New(storeClient(b), redis.Options{Prefix: prefix})
	p := sluice.Policy{Windows: []sluice.Window{
		{Name: "hour", Length: time.Hour, Limit: 1_000_000},
		{Name: "day", Length: 24 * time.Hour, Limit: 10_000_000},
	}}
	for _, accounts := range []int{10_000, 1} {
		b.Run(fmt.Sprintf("sliding-2-windows/keys=%d", accounts), func(b *testing.B) {
			runCallers(b, accounts, func(key string) error {
				_, err := s.Take(ctx, key, &p, 1, time.Now())
				return err
			})
		})
		b.Run(fmt.Sprintf("incr-expire-baseline/keys=%d", accounts), func(b *testing.B) {
			runCallers(b, accounts, func(key string) error {
				k := prefix + "base:" + key + ":" + strconv.FormatInt(time.Now().Unix()/3600, 10)
				pipe := c.Pipeline()
				incr := pipe.Incr(ctx, k)
				pipe.Expire(ctx, k, time.Hour)
				if _, err := pipe.Exec(ctx); err != nil {
					return err
				}
				_ = incr.Val() <= 1_000_000
				return nil
			})
		})
	}
}

// BenchmarkDecideLongState measures one caller's decisions on an account
// charged in each of the last 2,000 seconds, what a busy account carries:
// 2,000 pairs per window before the bound, at most 128 since, where the
// script's cost per call shows if it grows with the state.
//
//	go test -run '^$' -bench DecideLongState -benchtime 5000x ./redis/
func BenchmarkDecideLongState(b *testing.B) {
	c := sharedClient(b)
	prefix := "sluicebench:" + testenv.Unique(b) + ":"
	cleanPrefix(b, c, prefix)
	ctx := context.Background()
	s := redis.New(storeClient(b), redis.Options{Prefix: prefix, CallerClock: true})
	p := sluice.Policy{Windows: []sluice.Window{
		{Name: "hour", Length: time.Hour, Limit: 1_000_000},
		{Name: "day", Length: 24 * time.Hour, Limit: 10_000_000},
	}}
	const pairs = 2000
	now := time.Now()
	for i := range pairs {
		if _, err := s.Take(ctx, "{acct:1}", &p, 1, now.Add(time.Duration(i-pairs)*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := s.Take(ctx, "{acct:1}", &p, 1, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemory reports the bytes Redis holds for one account (MEMORY
// USAGE of its key) under an hour/day sliding policy with 1, 100 and 1,000
// units charged, each in a second of its own (the worst case: one pair per
// unit per window, up to the bound of 128 pairs).
//
//	go test -run '^$' -bench Memory -benchtime 1x ./redis/
func BenchmarkMemory(b *testing.B) {
	c := sharedClient(b)
	prefix := "sluicebench:" + testenv.Unique(b) + ":"
	cleanPrefix(b, c, prefix)
	ctx := context.Background()
	s := redis.New(storeClient(b), redis.Options{Prefix: prefix, CallerClock: true})
	p := sluice.Policy{Windows: []sluice.Window{
		{Name: "hour", Length: time.Hour, Limit: 1000},
		{Name: "day", Length: 24 * time.Hour, Limit: 1000},
	}}
	for _, units := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint(units), func(b *testing.B) {
			key := fmt.Sprintf("{acct:%d}", units)
			if err := s.Reset(ctx, key); err != nil {
				b.Fatal(err)
			}
			now := time.Now().Add(-time.Duration(units) * time.Second)
			for i := range units {
				if d, err := s.Take(ctx, key, &p, 1, now.Add(time.Duration(i)*time.Second)); err != nil || !d.Allowed {
					b.Fatalf("take %d: %+v %v", i, d, err)
				}
			}
			n, err := c.MemoryUsage(ctx, prefix+key).Result()
			if err != nil {
				b.Fatal(err)
			}
			v, _ := c.StrLen(ctx, prefix+key).Result()
			b.ReportMetric(float64(n), "bytes/account")
			b.ReportMetric(float64(v), "state-bytes")
		})
	}
}

var _ goredis.UniversalClient = (*goredis.Client)(nil)

// runCallers runs b.N decisions from 64 concurrent callers on keys drawn from
// accounts accounts, and reports decisions/s and p50/p99 latency.
func runCallers(b *testing.B, accounts int, decide func(key string) error) {
	const callers = 64
	lat := make([][]time.Duration, callers)
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for i := g; i < b.N; i += callers {
				key := "{acct:" + strconv.Itoa(r.IntN(accounts)) + "}"
				t := time.Now()
				if err := decide(key); err != nil {
					b.Error(err)
					return
				}
				lat[g] = append(lat[g], time.Since(t))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(len(all))/el.Seconds(), "decisions/s")
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	}
}
