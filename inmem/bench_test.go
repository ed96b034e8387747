package inmem_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/inmem"
)

// benchPolicy is a two-window sliding policy whose limits are never reached,
// so that every take is admitted and charged.
var benchPolicy = sluice.Policy{Windows: []sluice.Window{
	{Name: "hour", Length: time.Hour, Limit: 1 << 30},
	{Name: "day", Length: 24 * time.Hour, Limit: 1 << 30},
}}

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = sluice.AccountQuotaKey(int64(i))
	}
	return keys
}

// BenchmarkTake measures an admitted take on a table of 100,000 keys, in
// every combination of:
//
//   - clock: "spread" advances the clock a millisecond per take, so each
//     key is charged every 100 s and its windows grow a charge per take, as
//     a busy account's do; "burst" makes every take in one second, so each
//     key's state stays two words a window;
//   - order: "seq" walks the keys in order (the order their state was
//     allocated in, which the hardware prefetcher rewards), "random" picks
//     keys at random (every take a cache miss);
//   - "serial" on one goroutine, "parallel" on GOMAXPROCS (b.RunParallel),
//     each goroutine with its own position or random stream.
func BenchmarkTake(b *testing.B) {
	for _, clock := range []struct {
		name string
		step time.Duration
	}{{"spread", time.Millisecond}, {"burst", 0}} {
		for _, random := range []bool{false, true} {
			order := map[bool]string{false: "seq", true: "random"}[random]
			ctx := context.Background()
			keys := benchKeys(100_000)
			start := time.Unix(1_800_000_000, 0)
			setup := func() *inmem.Store {
				s := inmem.New(inmem.Options{})
				for _, k := range keys {
					s.Take(ctx, k, &benchPolicy, 1, start)
				}
				return s
			}
			// next returns a function that yields the keys of one goroutine.
			next := func(seed uint64) func() string {
				r := rand.New(rand.NewPCG(seed, 0))
				i := r.IntN(len(keys))
				return func() string {
					if random {
						return keys[r.IntN(len(keys))]
					}
					i++
					if i == len(keys) {
						i = 0
					}
					return keys[i]
				}
			}
			name := clock.name + "/" + order
			b.Run(name+"/serial", func(b *testing.B) {
				s := setup()
				defer s.Close()
				key, now := next(1), start
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					now = now.Add(clock.step)
					if d, _ := s.Take(ctx, key(), &benchPolicy, 1, now); !d.Allowed {
						b.Fatal("rejected")
					}
				}
			})
			b.Run(name+"/parallel", func(b *testing.B) {
				s := setup()
				defer s.Close()
				var seed atomic.Uint64
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					key, now := next(seed.Add(1)), start
					for pb.Next() {
						now = now.Add(clock.step)
						if d, _ := s.Take(ctx, key(), &benchPolicy, 1, now); !d.Allowed {
							b.Fatal("rejected")
						}
					}
				})
			})
		}
	}
}

// BenchmarkTakeHotKey is every goroutine on one key.
func BenchmarkTakeHotKey(b *testing.B) {
	ctx := context.Background()
	s := inmem.New(inmem.Options{})
	defer s.Close()
	start := time.Unix(1_800_000_000, 0)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		now := start
		for pb.Next() {
			now = now.Add(time.Millisecond)
			s.Take(ctx, "hot", &benchPolicy, 1, now)
		}
	})
}

// BenchmarkTakePersistent is BenchmarkTake on a store that flushes to
// SQLite every second.
func BenchmarkTakePersistent(b *testing.B) {
	ctx := context.Background()
	s, err := inmem.Open(ctx, b.TempDir()+"/quota.db", time.Second, inmem.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	keys := benchKeys(100_000)
	now := time.Unix(1_800_000_000, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		now = now.Add(time.Millisecond)
		s.Take(ctx, keys[i%len(keys)], &benchPolicy, 1, now)
	}
}

// BenchmarkMemoryPerKey reports the heap held per key with one unit charged
// in each of two sliding windows, over 1,000,000 keys.
func BenchmarkMemoryPerKey(b *testing.B) {
	const n = 1_000_000
	ctx := context.Background()
	keys := make([]string, n) // made before measuring: the caller owns them
	for i := range keys {
		keys[i] = "{acct:" + strconv.Itoa(i) + "}"
	}
	now := time.Unix(1_800_000_000, 0)
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := inmem.New(inmem.Options{SweepInterval: time.Hour})
		for _, k := range keys {
			s.Take(ctx, k, &benchPolicy, 1, now)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/key")
		runtime.KeepAlive(s)
		s.Close()
	}
}

// BenchmarkTakeSync is a take followed by a Sync of its key on a store that
// flushes every second: what a charge costs with embedded storage when an
// idempotency claim or a journaled Telegram prompt is to record it.
func BenchmarkTakeSync(b *testing.B) {
	ctx := context.Background()
	s, err := inmem.Open(ctx, b.TempDir()+"/quota.db", time.Second, inmem.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	keys := benchKeys(1000)
	now := time.Unix(1_800_000_000, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		k := keys[i%len(keys)]
		s.Take(ctx, k, &benchPolicy, 1, now)
		if err := s.Sync(ctx, k); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompact measures the sweep that follows a spike of 1,000,000
// keys of which 100,000 still count: the sweep forgets the rest and
// compacts the arena, every shard waiting meanwhile. It reports the heap
// held before and after (a collection each).
func BenchmarkCompact(b *testing.B) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	perIP := sluice.Policy{Windows: []sluice.Window{{Name: "minute", Length: time.Minute, Limit: 10}}}
	keys := make([]string, 1_000_000) // made before measuring: the caller owns them
	for i := range keys {
		keys[i] = "{ip:" + strconv.Itoa(i) + "}"
	}
	var before, after runtime.MemStats
	for b.Loop() {
		b.StopTimer()
		s := inmem.New(inmem.Options{SweepInterval: time.Hour})
		for i, k := range keys {
			if i%10 == 0 {
				s.Take(ctx, k, &benchPolicy, 1, now) // an hour and a day: still counts
			} else {
				s.Take(ctx, k, &perIP, 1, now)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.StartTimer()
		s.Sweep(now.Add(2 * time.Minute))
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if n := s.Len(); n != 100_000 {
			b.Fatalf("%d keys after the sweep, want 100,000", n)
		}
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(before.HeapAlloc)/(1<<20), "MB-before")
	b.ReportMetric(float64(after.HeapAlloc)/(1<<20), "MB-after")
}
