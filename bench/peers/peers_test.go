// Package peers benchmarks sluice's in-process quota store side by side with
// the in-memory stores of other Go rate limiters, on the workload of inmem's
// BenchmarkTake, in one process:
//
//	cd bench/peers && go test -run '^$' -bench . -benchtime 1s -count 5
//
// (add -benchmem for B/op; every case reports allocs/op). It is a module of
// its own so that the peers never enter sluice's go.mod. Serial cases also
// report cpu-ns/op, the CPU time of the benchmark's thread per take (Linux:
// getrusage), which the other work of a shared machine disturbs far less
// than the wall clock's ns/op; compare implementations by it when the load
// is high (uptime).
//
// The peers, each with its in-memory store:
//
//   - golimiter: github.com/sethvargo/go-limiter memorystore (token bucket);
//   - throttled: github.com/throttled/throttled/v2 GCRA on its memstore;
//   - rate: golang.org/x/time/rate, a map of *rate.Limiter behind one
//     mutex, as its users build it (token bucket);
//   - ulule: github.com/ulule/limiter/v3 memory store (fixed window).
//
// sluice decides two exact sliding windows (hour and day) atomically in
// every case. A peer counts one window ("1w", an hour), or two ("2w": an
// hour limiter, then a day limiter if the hour admitted), which is what a
// user of a single-window library must do for two windows, and is not
// atomic. Limits are never reached (every take is admitted), so that every
// library does its full work.
//
// Clocks: sluice and rate are given the benchmark's clock (a millisecond
// more per take in "spread", fixed in "burst"). go-limiter and ulule read
// the wall clock themselves (go-limiter through a linkname to time.now,
// ulule through time.Now) and have no way to be given another. throttled's
// memstore can be given a clock function (SetTimeNow), but one clock shared
// by goroutines would be an atomic that they all write, a cost of the
// benchmark rather than of the library, so throttled reads time.Now too.
// Over a benchmark's second the wall clock moves about as far as the
// "burst" clock (not at all, in whole seconds), so the peers that read it
// see a burst in every case: "spread" changes nothing for them, while it
// makes sluice's windows grow a charge word per take.
package peers

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	golimiter "github.com/sethvargo/go-limiter"
	"github.com/sethvargo/go-limiter/memorystore"
	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/inmem"
	"github.com/throttled/throttled/v2"
	"github.com/throttled/throttled/v2/store/memstore"
	ulule "github.com/ulule/limiter/v3"
	ululememory "github.com/ulule/limiter/v3/drivers/store/memory"
	"golang.org/x/time/rate"
)

// limit is every window's limit: never reached.
const limit = 1 << 30

var windows = []time.Duration{time.Hour, 24 * time.Hour}

// policy is sluice's: the two windows, decided at once.
var policy = sluice.Policy{Windows: []sluice.Window{
	{Name: "hour", Length: windows[0], Limit: limit},
	{Name: "day", Length: windows[1], Limit: limit},
}}

// A taker admits (or not) one unit for key at now, in every window it
// counts. It is safe for concurrent use.
type taker interface {
	take(key string, now time.Time) bool
	close()
}

// impl makes a taker counting n windows (sluice: always both).
type impl struct {
	name string
	new  func(n int) taker
}

var impls = []impl{
	{"sluice", newSluice},
	{"golimiter", newGoLimiter},
	{"throttled", newThrottled},
	{"rate", newRate},
	{"ulule", newUlule},
}

type sluiceTaker struct{ s *inmem.Store }

func newSluice(int) taker { return sluiceTaker{inmem.New(inmem.Options{})} }

func (t sluiceTaker) take(key string, now time.Time) bool {
	d, err := t.s.Take(context.Background(), key, &policy, 1, now)
	return err == nil && d.Allowed
}

func (t sluiceTaker) close() { t.s.Close() }

type goLimiterTaker []golimiter.Store

func newGoLimiter(n int) taker {
	var t goLimiterTaker
	for _, w := range windows[:n] {
		s, err := memorystore.New(&memorystore.Config{Tokens: limit, Interval: w})
		if err != nil {
			panic(err)
		}
		t = append(t, s)
	}
	return t
}

func (t goLimiterTaker) take(key string, _ time.Time) bool {
	for _, s := range t {
		if _, _, _, ok, err := s.Take(context.Background(), key); err != nil || !ok {
			return false
		}
	}
	return true
}

func (t goLimiterTaker) close() {
	for _, s := range t {
		s.Close(context.Background())
	}
}

type throttledTaker []*throttled.GCRARateLimiterCtx

func newThrottled(n int) taker {
	var t throttledTaker
	for _, w := range windows[:n] {
		st, err := memstore.NewCtx(0)
		if err != nil {
			panic(err)
		}
		l, err := throttled.NewGCRARateLimiterCtx(st, throttled.RateQuota{MaxRate: throttled.PerDuration(limit, w), MaxBurst: limit})
		if err != nil {
			panic(err)
		}
		t = append(t, l)
	}
	return t
}

func (t throttledTaker) take(key string, _ time.Time) bool {
	for _, l := range t {
		if limited, _, err := l.RateLimitCtx(context.Background(), key, 1); err != nil || limited {
			return false
		}
	}
	return true
}

func (throttledTaker) close() {}

// rateStore is how users of x/time/rate keep a limiter per key.
type rateStore struct {
	mu     sync.Mutex
	m      map[string]*rate.Limiter
	window time.Duration
}

type rateTaker []*rateStore

func newRate(n int) taker {
	var t rateTaker
	for _, w := range windows[:n] {
		t = append(t, &rateStore{m: make(map[string]*rate.Limiter), window: w})
	}
	return t
}

func (rs *rateStore) allow(key string, now time.Time) bool {
	rs.mu.Lock()
	l := rs.m[key]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(float64(limit)/rs.window.Seconds()), limit)
		rs.m[key] = l
	}
	rs.mu.Unlock()
	return l.AllowN(now, 1)
}

func (t rateTaker) take(key string, now time.Time) bool {
	for _, rs := range t {
		if !rs.allow(key, now) {
			return false
		}
	}
	return true
}

func (rateTaker) close() {}

type ululeTaker []*ulule.Limiter

func newUlule(n int) taker {
	var t ululeTaker
	for _, w := range windows[:n] {
		t = append(t, ulule.New(ululememory.NewStore(), ulule.Rate{Period: w, Limit: limit}))
	}
	return t
}

func (t ululeTaker) take(key string, _ time.Time) bool {
	for _, l := range t {
		if c, err := l.Get(context.Background(), key); err != nil || c.Reached {
			return false
		}
	}
	return true
}

func (ululeTaker) close() {}

// peerWindows is the numbers of windows a peer is run with: one, and two
// in sequence. sluice always decides two, atomically.
func peerWindows(im impl) []int {
	if im.name == "sluice" {
		return []int{2}
	}
	return []int{1, 2}
}

func implName(im impl, n int) string {
	if im.name == "sluice" {
		return "sluice-2w"
	}
	return im.name + "-" + strconv.Itoa(n) + "w"
}

func keys(n int) []string {
	k := make([]string, n)
	for i := range k {
		k[i] = sluice.AccountQuotaKey(int64(i))
	}
	return k
}

var start = time.Unix(1_800_000_000, 0)

// BenchmarkTake is inmem's BenchmarkTake for every implementation: 100,000
// keys, clock spread (a millisecond a take) or burst (one second), keys in
// order (seq) or at random, on one goroutine (serial) or GOMAXPROCS.
func BenchmarkTake(b *testing.B) {
	ks := keys(100_000)
	for _, clock := range []struct {
		name string
		step time.Duration
	}{{"spread", time.Millisecond}, {"burst", 0}} {
		for _, random := range []bool{false, true} {
			order := map[bool]string{false: "seq", true: "random"}[random]
			next := func(seed uint64) func() string {
				r := rand.New(rand.NewPCG(seed, 0))
				i := r.IntN(len(ks))
				return func() string {
					if random {
						return ks[r.IntN(len(ks))]
					}
					i++
					if i == len(ks) {
						i = 0
					}
					return ks[i]
				}
			}
			for _, im := range impls {
				for _, nw := range peerWindows(im) {
					setup := func() taker {
						t := im.new(nw)
						for _, k := range ks {
							t.take(k, start)
						}
						return t
					}
					name := clock.name + "/" + order + "/" + implName(im, nw)
					b.Run(name+"/serial", func(b *testing.B) {
						t := setup()
						defer t.close()
						key, now := next(1), start
						runtime.LockOSThread()
						defer runtime.UnlockOSThread()
						b.ReportAllocs()
						b.ResetTimer()
						cpu := threadCPU()
						for b.Loop() {
							now = now.Add(clock.step)
							if !t.take(key(), now) {
								b.Fatal("rejected")
							}
						}
						b.ReportMetric(float64(threadCPU()-cpu)/float64(b.N), "cpu-ns/op")
					})
					b.Run(name+"/parallel", func(b *testing.B) {
						t := setup()
						defer t.close()
						var seed atomic.Uint64
						b.ReportAllocs()
						b.ResetTimer()
						b.RunParallel(func(pb *testing.PB) {
							key, now := next(seed.Add(1)), start
							for pb.Next() {
								now = now.Add(clock.step)
								if !t.take(key(), now) {
									b.Error("rejected")
									return
								}
							}
						})
					})
				}
			}
		}
	}
}

// BenchmarkTakeHotKey is every goroutine (GOMAXPROCS) on one key, the clock
// a millisecond more per take.
func BenchmarkTakeHotKey(b *testing.B) {
	for _, im := range impls {
		for _, nw := range peerWindows(im) {
			b.Run(implName(im, nw), func(b *testing.B) {
				t := im.new(nw)
				defer t.close()
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					now := start
					for pb.Next() {
						now = now.Add(time.Millisecond)
						t.take("hot", now)
					}
				})
			})
		}
	}
}

// BenchmarkMemoryPerKey reports the heap held per key with one unit
// charged in each window, over 1,000,000 keys: inmem's BenchmarkMemoryPerKey
// for every implementation.
func BenchmarkMemoryPerKey(b *testing.B) {
	const n = 1_000_000
	ks := make([]string, n) // made before measuring: the caller owns them
	for i := range ks {
		ks[i] = "{acct:" + strconv.Itoa(i) + "}"
	}
	for _, im := range impls {
		for _, nw := range peerWindows(im) {
			b.Run(implName(im, nw), func(b *testing.B) {
				for b.Loop() {
					var before, after runtime.MemStats
					runtime.GC()
					runtime.ReadMemStats(&before)
					t := im.new(nw)
					for _, k := range ks {
						t.take(k, start)
					}
					runtime.GC()
					runtime.ReadMemStats(&after)
					b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/key")
					runtime.KeepAlive(t)
					t.close()
				}
			})
		}
	}
}
