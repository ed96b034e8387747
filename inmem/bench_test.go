package inmem_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
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

// BenchmarkTake measures an admitted take on a table of 100,000 keys.
// "spread": the clock advances a millisecond per take, so each key is
// charged every 100 s and its windows grow a charge per take, as a busy
// account's do; "burst": every take in one second, merging into one charge.
func BenchmarkTake(b *testing.B) {
	for _, step := range []struct {
		name string
		d    time.Duration
	}{{"spread", time.Millisecond}, {"burst", 0}} {
		b.Run(step.name, func(b *testing.B) {
			ctx := context.Background()
			s := inmem.New(inmem.Options{})
			defer s.Close()
			keys := benchKeys(100_000)
			now := time.Unix(1_800_000_000, 0)
			for _, k := range keys {
				s.Take(ctx, k, &benchPolicy, 1, now)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				now = now.Add(step.d)
				if d, _ := s.Take(ctx, keys[i%len(keys)], &benchPolicy, 1, now); !d.Allowed {
					b.Fatal("rejected")
				}
			}
		})
	}
}

// BenchmarkTakeParallel is BenchmarkTake from GOMAXPROCS goroutines on
// random keys.
func BenchmarkTakeParallel(b *testing.B) {
	ctx := context.Background()
	s := inmem.New(inmem.Options{})
	defer s.Close()
	keys := benchKeys(100_000)
	start := time.Unix(1_800_000_000, 0)
	for _, k := range keys {
		s.Take(ctx, k, &benchPolicy, 1, start)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 0))
		now := start
		for pb.Next() {
			now = now.Add(time.Millisecond)
			if d, _ := s.Take(ctx, keys[r.IntN(len(keys))], &benchPolicy, 1, now); !d.Allowed {
				b.Fatal("rejected")
			}
		}
	})
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
