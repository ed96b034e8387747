package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicehq/sluice"
)

// T0 is the suite's time origin: the top of an hour, so that calendar
// windows of 10 and 30 seconds start at it.
var T0 = time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)

// RunQuotaStore runs the conformance suite for sluice.QuotaStore against the
// stores that open returns, each fresh (or at least with no keys of its own
// in common with another). The store must decide at the times the suite
// passes: a store that owns a clock runs the suite in a mode that takes the
// caller's.
func RunQuotaStore(t *testing.T, open func(t *testing.T) sluice.QuotaStore) {
	t.Run("Sliding", func(t *testing.T) {
		p := policy(sluice.Sliding, 3, 10*time.Second, 5, 30*time.Second)
		runSteps(t, open(t), &p, []step{
			{at: 0, n: 1, allowed: true, rem: []int64{2, 4}, reset: []int64{10, 30}},
			{at: ms(500), n: 2, allowed: true, rem: []int64{0, 2}, reset: []int64{10, 30}},
			{at: ms(1000), n: 1, rem: []int64{0, 2}, reset: []int64{10, 30}, retry: 9 * time.Second, blocking: 0},
			{at: ms(9999), n: 1, rem: []int64{0, 2}, reset: []int64{10, 30}, retry: time.Millisecond, blocking: 0},
			{at: ms(10000), n: 1, allowed: true, rem: []int64{2, 1}, reset: []int64{20, 30}},
			{at: ms(11000), n: 2, rem: []int64{2, 1}, reset: []int64{20, 30}, retry: 19 * time.Second, blocking: 1},
			{at: ms(29999), n: 2, rem: []int64{3, 1}, reset: []int64{29, 30}, retry: time.Millisecond, blocking: 1},
			{at: ms(30000), n: 2, allowed: true, rem: []int64{1, 2}, reset: []int64{40, 40}},
		})
	})
	t.Run("SlidingRetryExact", func(t *testing.T) {
		// A retry at exactly now+retry_after is admitted, one a second
		// earlier is not, from a fractional now.
		p := policy(sluice.Sliding, 2, 60*time.Second, 10, 600*time.Second)
		s, key := open(t), keyFor(t)
		take(t, s, key, &p, 2, T0.Add(ms(300)))
		now := T0.Add(ms(20_700))
		d := take(t, s, key, &p, 1, now)
		if d.Allowed {
			t.Fatal("third unit admitted")
		}
		after := time.Duration(d.RetryAfterSeconds()) * time.Second
		if got := take(t, s, key, &p, 1, now.Add(after-time.Second)); got.Allowed {
			t.Fatalf("admitted a second before retry_after %v", after)
		}
		if got := take(t, s, key, &p, 1, now.Add(after)); !got.Allowed {
			t.Fatalf("rejected at retry_after %v: %+v", after, got)
		}
	})
	t.Run("Calendar", func(t *testing.T) {
		p := policy(sluice.Calendar, 3, 10*time.Second, 5, 30*time.Second)
		runSteps(t, open(t), &p, []step{
			{at: 0, n: 2, allowed: true, rem: []int64{1, 3}, reset: []int64{10, 30}},
			{at: ms(9000), n: 2, rem: []int64{1, 3}, reset: []int64{10, 30}, retry: time.Second, blocking: 0},
			{at: ms(10000), n: 2, allowed: true, rem: []int64{1, 1}, reset: []int64{20, 30}},
			{at: ms(12500), n: 2, rem: []int64{1, 1}, reset: []int64{20, 30}, retry: ms(17500), blocking: 1},
			{at: ms(30000), n: 3, allowed: true, rem: []int64{0, 2}, reset: []int64{40, 60}},
			{at: ms(41000), peek: true, allowed: true, rem: []int64{3, 2}, reset: []int64{41, 60}},
		})
	})
	t.Run("CalendarDayInZone", func(t *testing.T) {
		// A day window starts at midnight in the policy's zone, and lasts
		// 23 hours on the day the clocks go forward.
		ny, err := time.LoadLocation("America/New_York")
		if err != nil {
			t.Skipf("no time zone data: %v", err)
		}
		p := sluice.Policy{Algorithm: sluice.Calendar, Location: ny,
			Windows: []sluice.Window{{Name: "day", Length: 24 * time.Hour, Limit: 1}}}
		s, key := open(t), keyFor(t)
		at := time.Date(2026, 3, 8, 1, 0, 0, 0, ny) // the day of the change to EDT
		take(t, s, key, &p, 1, at)
		d := take(t, s, key, &p, 1, at)
		want := time.Date(2026, 3, 9, 0, 0, 0, 0, ny)
		if d.Allowed || !d.Windows[0].Reset.Equal(want) || d.RetryAfter != want.Sub(at) || d.RetryAfter != 22*time.Hour {
			t.Fatalf("got allowed=%v reset=%v retry=%v, want rejected until %v (22h)", d.Allowed, d.Windows[0].Reset, d.RetryAfter, want)
		}
		if d := take(t, s, key, &p, 1, want); !d.Allowed {
			t.Fatal("rejected after local midnight")
		}
	})
	t.Run("TokenBucket", func(t *testing.T) {
		p := policy(sluice.TokenBucket, 2, 10*time.Second, 4, 40*time.Second)
		runSteps(t, open(t), &p, []step{
			{at: 0, n: 2, allowed: true, rem: []int64{0, 2}, reset: []int64{5, 10}},
			{at: ms(1000), n: 1, rem: []int64{0, 2}, reset: []int64{5, 10}, retry: 4 * time.Second, blocking: 0},
			{at: ms(5000), n: 1, allowed: true, rem: []int64{0, 1}, reset: []int64{10, 10}},
			{at: ms(7500), peek: true, allowed: true, rem: []int64{0, 1}, reset: []int64{10, 10}},
			{at: ms(100_000), peek: true, allowed: true, rem: []int64{2, 4}, reset: []int64{100, 100}},
		})
	})
	t.Run("AllOrNothing", func(t *testing.T) {
		for _, alg := range algorithms {
			p := policy(alg, 10, 10*time.Second, 4, 30*time.Second)
			runSteps(t, open(t), &p, []step{
				{at: 0, n: 3, allowed: true, rem: []int64{7, 1}},
				{at: 0, n: 2, rem: []int64{7, 1}, blocking: 1},
				{at: 0, n: 1, allowed: true, rem: []int64{6, 0}},
			})
		}
	})
	t.Run("TooLarge", func(t *testing.T) {
		for _, alg := range algorithms {
			p := policy(alg, 3, 10*time.Second, 5, 30*time.Second)
			s, key := open(t), keyFor(t)+alg.String()
			d := take(t, s, key, &p, 4, T0)
			if d.Allowed || d.RetryAfter != sluice.InfDuration || d.Blocking != 0 {
				t.Errorf("%v: n > limit: got allowed=%v retry=%v blocking=%d, want rejected forever by window 0", alg, d.Allowed, d.RetryAfter, d.Blocking)
			}
			if d := peek(t, s, key, &p, T0); d.Windows[0].Remaining != 3 {
				t.Errorf("%v: a rejection charged: remaining %d", alg, d.Windows[0].Remaining)
			}
		}
	})
	t.Run("UnlimitedWindow", func(t *testing.T) {
		for _, alg := range algorithms {
			p := policy(alg, int64(sluice.Unlimited), 10*time.Second, 2, 30*time.Second)
			runSteps(t, open(t), &p, []step{
				{at: 0, n: 1, allowed: true, rem: []int64{0, 1}},
				{at: 0, n: 1, allowed: true, rem: []int64{0, 0}},
				{at: 0, n: 1, rem: []int64{0, 0}, blocking: 1},
			})
		}
	})
	t.Run("UnlimitedCounts", func(t *testing.T) {
		// A window without a limit counts what it used (CONTRACT.md §6)
		// and never rejects; a policy without any limit too.
		for _, alg := range algorithms {
			p := policy(alg, int64(sluice.Unlimited), 10*time.Second, int64(sluice.Unlimited), 30*time.Second)
			s, key := open(t), keyFor(t)+alg.String()
			for i := range 5 {
				if d := take(t, s, key, &p, 3, T0.Add(ms(int64(i)*100))); !d.Allowed || d.Windows[0].Counted != int64(3*(i+1)) {
					t.Fatalf("%v: take %d: %+v", alg, i, d)
				}
			}
			d := take(t, s, key, &p, 1, T0.Add(ms(2000)))
			d2 := peek(t, s, key, &p, T0.Add(ms(2000)))
			if d.Windows[0].Counted != 16 || d2.Windows[1].Counted != 16 {
				t.Errorf("%v: counted %d (take), %d (peek), want 16", alg, d.Windows[0].Counted, d2.Windows[1].Counted)
			}
			refund(t, s, key, &p, 1, d.Time, T0.Add(ms(2000)))
			if d := peek(t, s, key, &p, T0.Add(ms(2000))); d.Windows[0].Counted != 15 || d.Windows[1].Counted != 15 {
				t.Errorf("%v: after a refund: counted %d, %d, want 15", alg, d.Windows[0].Counted, d.Windows[1].Counted)
			}
			// The short window forgets, the long one still counts.
			if d := peek(t, s, key, &p, T0.Add(ms(12_000))); d.Windows[0].Counted != 0 || d.Windows[1].Counted != 15 {
				t.Errorf("%v: at +12s: counted %d, %d, want 0, 15", alg, d.Windows[0].Counted, d.Windows[1].Counted)
			}
			if d := peek(t, s, key, &p, T0.Add(ms(31_000))); d.Windows[1].Counted != 0 {
				t.Errorf("%v: at +31s: counted %d, want 0", alg, d.Windows[1].Counted)
			}
		}
	})
	t.Run("UnlimitedSlidingDay", func(t *testing.T) {
		// A sliding window without a limit counts in steps of
		// ceil(length/512) seconds, rounded up (169 s for a day), so that
		// a busy key holds a bounded state: a charge counts up to a step
		// longer than it would exactly.
		p := sluice.Policy{Algorithm: sluice.Sliding, Windows: []sluice.Window{{Name: "day", Length: 24 * time.Hour, Limit: sluice.Unlimited}}}
		s, key := open(t), keyFor(t)
		var last sluice.Decision
		for i := range 1000 {
			last = take(t, s, key, &p, 1, T0.Add(time.Duration(i)*7*time.Second))
		}
		if last.Windows[0].Counted != 1000 {
			t.Fatalf("counted %d, want 1000", last.Windows[0].Counted)
		}
		refund(t, s, key, &p, 1, last.Time, last.Time)
		// At T0+1d+500s, the charges made up to T0+500s would be out;
		// counted in steps of 169 s from the epoch, those up to the end of
		// the step that holds T0+500s still count.
		now := T0.Add(24*time.Hour + 500*time.Second)
		const g = 169
		want, exact := int64(0), int64(0)
		for i := range 999 { // the last one was refunded
			at := T0.Unix() + int64(i)*7
			if (at+g-1)/g*g > now.Unix()-86400 {
				want++
			}
			if at > now.Unix()-86400 {
				exact++
			}
		}
		if d := peek(t, s, key, &p, now); d.Windows[0].Counted != want || want <= exact {
			t.Fatalf("at +1d+500s: counted %d, want %d (exactly: %d)", d.Windows[0].Counted, want, exact)
		}
	})
	t.Run("LimitRemovedAndSet", func(t *testing.T) {
		// A plan change from limited to unlimited and back keeps what
		// was used.
		for _, alg := range algorithms {
			limited := policy(alg, 10, time.Hour, 20, 24*time.Hour)
			free := policy(alg, int64(sluice.Unlimited), time.Hour, int64(sluice.Unlimited), 24*time.Hour)
			s, key := open(t), keyFor(t)+alg.String()
			take(t, s, key, &limited, 4, T0)
			if d := peek(t, s, key, &free, T0); d.Windows[0].Counted != 4 {
				t.Errorf("%v: peek unlimited: counted %d, want 4", alg, d.Windows[0].Counted)
			}
			if d := take(t, s, key, &free, 2, T0); !d.Allowed || d.Windows[0].Counted != 6 {
				t.Errorf("%v: take unlimited: %+v, want counted 6", alg, d.Windows[0])
			}
			d := peek(t, s, key, &limited, T0)
			if d.Windows[0].Remaining != 4 || d.Windows[0].Counted != 6 || d.Windows[1].Remaining != 14 {
				t.Errorf("%v: limited again: %+v, want 4 of 10 remaining, 6 counted, 14 of 20", alg, d.Windows[:2])
			}
		}
	})
	t.Run("ZeroUnits", func(t *testing.T) {
		for _, alg := range algorithms {
			p := policy(alg, 1, 10*time.Second, 1, 30*time.Second)
			runSteps(t, open(t), &p, []step{
				{at: 0, n: 0, allowed: true, rem: []int64{1, 1}},
				{at: 0, n: 1, allowed: true, rem: []int64{0, 0}},
				{at: 0, n: 0, allowed: true, rem: []int64{0, 0}},
			})
		}
	})
	t.Run("Refund", func(t *testing.T) {
		for _, alg := range algorithms {
			p := policy(alg, 3, 10*time.Second, 5, 30*time.Second)
			s, key := open(t), keyFor(t)+alg.String()
			d := take(t, s, key, &p, 2, T0)
			refund(t, s, key, &p, 2, d.Time, T0.Add(ms(1500)))
			refund(t, s, key, &p, 2, d.Time, T0.Add(ms(1500))) // a second refund gives nothing more
			got := peek(t, s, key, &p, T0.Add(ms(1500)))
			if got.Windows[0].Remaining != 3 || got.Windows[1].Remaining != 5 {
				t.Errorf("%v: after refund: remaining %d, %d; want 3, 5", alg, got.Windows[0].Remaining, got.Windows[1].Remaining)
			}
		}
	})
	t.Run("RefundKeepsOtherCharges", func(t *testing.T) {
		p := policy(sluice.Sliding, 3, 10*time.Second, 5, 30*time.Second)
		s, key := open(t), keyFor(t)
		d := take(t, s, key, &p, 2, T0)
		take(t, s, key, &p, 1, T0.Add(ms(1000)))
		refund(t, s, key, &p, 2, d.Time, T0.Add(ms(2000)))
		got := peek(t, s, key, &p, T0.Add(ms(2000)))
		want := []int64{2, 4}
		if r := []int64{got.Windows[0].Remaining, got.Windows[1].Remaining}; !cmp.Equal(r, want) || got.Windows[0].Reset.Unix() != T0.Unix()+11 {
			t.Errorf("remaining %v reset %v, want %v reset +11s (the unit charged at +1s)", r, got.Windows[0].Reset.Unix()-T0.Unix(), want)
		}
	})
	t.Run("RefundAfterWindow", func(t *testing.T) {
		// Units that no longer count in a window are not refunded there.
		p := policy(sluice.Sliding, 3, 10*time.Second, 5, 30*time.Second)
		s, key := open(t), keyFor(t)
		d := take(t, s, key, &p, 2, T0)
		take(t, s, key, &p, 3, T0.Add(ms(12_000)))
		refund(t, s, key, &p, 2, d.Time, T0.Add(ms(12_000)))
		got := peek(t, s, key, &p, T0.Add(ms(12_000)))
		if got.Windows[0].Remaining != 0 || got.Windows[1].Remaining != 2 {
			t.Errorf("remaining %d, %d; want 0, 2", got.Windows[0].Remaining, got.Windows[1].Remaining)
		}
	})
	t.Run("PeekChargesNothing", func(t *testing.T) {
		for _, alg := range algorithms {
			p := policy(alg, 3, 10*time.Second, 5, 30*time.Second)
			s, key := open(t), keyFor(t)+alg.String()
			take(t, s, key, &p, 1, T0)
			for range 5 {
				if d := peek(t, s, key, &p, T0); d.Windows[0].Remaining != 2 || !d.Allowed {
					t.Fatalf("%v: peek: remaining %d allowed %v", alg, d.Windows[0].Remaining, d.Allowed)
				}
			}
			// Peeking at a key never seen is a full window.
			if d := peek(t, s, key+"-never", &p, T0); d.Windows[0].Remaining != 3 || d.Windows[0].Reset.Unix() != T0.Unix() {
				t.Fatalf("%v: fresh key: %+v", alg, d.Windows[0])
			}
		}
	})
	t.Run("Reset", func(t *testing.T) {
		p := policy(sluice.Sliding, 2, 10*time.Second, 5, 30*time.Second)
		s, key := open(t), keyFor(t)
		take(t, s, key, &p, 2, T0)
		if err := s.Reset(context.Background(), key); err != nil {
			t.Fatal(err)
		}
		if d := take(t, s, key, &p, 2, T0); !d.Allowed || d.Windows[1].Remaining != 3 {
			t.Fatalf("after reset: %+v", d)
		}
	})
	t.Run("KeysIndependent", func(t *testing.T) {
		p := policy(sluice.Sliding, 1, 10*time.Second, 5, 30*time.Second)
		s, key := open(t), keyFor(t)
		take(t, s, key+"a", &p, 1, T0)
		if d := take(t, s, key+"b", &p, 1, T0); !d.Allowed {
			t.Fatal("one key's charge limited another key")
		}
	})
	t.Run("LimitLowered", func(t *testing.T) {
		// A plan change to a lower limit: Remaining is 0, not negative,
		// and Reset is when the count falls under the new limit.
		p := policy(sluice.Sliding, 10, 10*time.Second, 20, 30*time.Second)
		s, key := open(t), keyFor(t)
		take(t, s, key, &p, 4, T0)
		take(t, s, key, &p, 1, T0.Add(ms(2000)))
		low := policy(sluice.Sliding, 3, 10*time.Second, 20, 30*time.Second)
		runSteps(t, s, &low, []step{
			{key: key, at: ms(3000), n: 1, rem: []int64{0, 15}, reset: []int64{10, 30}, retry: 7 * time.Second, blocking: 0},
			{key: key, at: ms(10_000), n: 1, allowed: true, rem: []int64{1, 14}, reset: []int64{12, 30}},
		})
	})
	t.Run("LimitLoweredToZero", func(t *testing.T) {
		// An operator sets a limit of 0 on an account that has used some:
		// every call still answers (remaining 0, a take refused for
		// ever), none fails.
		for _, alg := range algorithms {
			p := policy(alg, 3, 10*time.Second, 5, 30*time.Second)
			s, key := open(t), keyFor(t)+alg.String()
			take(t, s, key, &p, 2, T0)
			zero := policy(alg, 0, 10*time.Second, 5, 30*time.Second)
			for _, at := range []time.Duration{0, ms(1500), ms(4000)} {
				d := peek(t, s, key, &zero, T0.Add(at))
				if d.Windows[0].Remaining != 0 || d.Windows[0].Limit != 0 || d.Windows[1].Remaining != 3 {
					t.Errorf("%v: peek at +%v: %+v", alg, at, d.Windows[:2])
				}
				d = take(t, s, key, &zero, 1, T0.Add(at))
				if d.Allowed || d.RetryAfter != sluice.InfDuration || d.Blocking != 0 {
					t.Errorf("%v: take at +%v: allowed=%v retry=%v blocking=%d, want refused for ever by window 0", alg, at, d.Allowed, d.RetryAfter, d.Blocking)
				}
			}
			// Raised again, the account is where it was.
			if d := peek(t, s, key, &p, T0.Add(ms(4000))); d.Windows[1].Remaining != 3 {
				t.Errorf("%v: after the limit is raised again: %+v", alg, d.Windows[:2])
			}
		}
	})
	t.Run("PeekUnderAnotherPolicy", func(t *testing.T) {
		// A peek under another algorithm or shape (limits.algorithm
		// changed between restarts, another caller's policy) answers as if
		// fresh and keeps the counters: the next take decides.
		for _, alg := range algorithms {
			p := policy(alg, 3, 10*time.Second, 5, 30*time.Second)
			s, key := open(t), keyFor(t)+alg.String()
			take(t, s, key, &p, 2, T0)
			take(t, s, key+"-twin", &p, 2, T0)
			others := []sluice.Policy{
				policy((alg+1)%3, 3, 10*time.Second, 5, 30*time.Second),
				policy((alg+2)%3, 3, 10*time.Second, 5, 30*time.Second),
				{Algorithm: alg, Windows: p.Windows[:1]},
				policy(alg, 3, 20*time.Second, 5, 60*time.Second),
				policy(alg, 0, 10*time.Second, 1, 30*time.Second),
			}
			for i := range others {
				o := &others[i]
				d := peek(t, s, key, o, T0.Add(ms(1000)))
				if o.Algorithm != alg || len(o.Windows) != len(p.Windows) {
					if !d.Allowed || d.Windows[0].Remaining != int64(o.Windows[0].Limit) {
						t.Errorf("%v: peek under %v %+v: not fresh: %+v", alg, o.Algorithm, o.Windows, d.Windows[:d.N])
					}
				}
			}
			for _, at := range []time.Duration{ms(1000), ms(6000)} {
				got, want := peek(t, s, key, &p, T0.Add(at)), peek(t, s, key+"-twin", &p, T0.Add(at))
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%v: at +%v, the key peeked under other policies differs from its twin (-twin +peeked):\n%s", alg, at, diff)
				}
			}
		}
	})
	for _, alg := range algorithms {
		t.Run("Model/"+alg.String(), func(t *testing.T) { runModel(t, open, alg) })
	}
	t.Run("Model/sliding-busy", func(t *testing.T) { runBusyModel(t, open) })
	t.Run("Concurrent", func(t *testing.T) {
		// 64 goroutines on one key with a limit of 1,000: exactly 1,000
		// admitted, and every window agrees.
		p := policy(sluice.Sliding, 1000, time.Hour, 1500, 24*time.Hour)
		s, key := open(t), keyFor(t)
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 30 {
					d, err := s.Take(context.Background(), key, &p, 1, T0)
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						admitted.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		d := peek(t, s, key, &p, T0)
		if admitted.Load() != 1000 || d.Windows[0].Remaining != 0 || d.Windows[1].Remaining != 500 {
			t.Fatalf("admitted %d, remaining %d/%d; want 1000, 0/500", admitted.Load(), d.Windows[0].Remaining, d.Windows[1].Remaining)
		}
	})
	t.Run("ConcurrentMixed", func(t *testing.T) {
		// Requests of 1 to 3 units and refunds, concurrently: what the
		// windows count is exactly what was admitted and not refunded.
		p := policy(sluice.Sliding, 500, time.Hour, 700, 24*time.Hour)
		s, key := open(t), keyFor(t)
		var net atomic.Int64
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(g), 1))
				for range 60 {
					n := 1 + r.Int64N(3)
					d, err := s.Take(context.Background(), key, &p, n, T0)
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						net.Add(n)
						if r.IntN(4) == 0 {
							if err := s.Refund(context.Background(), key, &p, n, d.Time, T0); err != nil {
								t.Error(err)
								return
							}
							net.Add(-n)
						}
					}
				}
			}()
		}
		wg.Wait()
		d := peek(t, s, key, &p, T0)
		if used := d.Windows[0].Used(); used != net.Load() || used > 500 || d.Windows[1].Used() != used {
			t.Fatalf("windows count %d and %d, admitted net of refunds %d (limit 500)", used, d.Windows[1].Used(), net.Load())
		}
	})
}

var algorithms = []sluice.Algorithm{sluice.Sliding, sluice.Calendar, sluice.TokenBucket}

func policy(alg sluice.Algorithm, l1 int64, w1 time.Duration, l2 int64, w2 time.Duration) sluice.Policy {
	return sluice.Policy{Algorithm: alg, Windows: []sluice.Window{
		{Name: "hour", Length: w1, Limit: sluice.Limit(l1)},
		{Name: "day", Length: w2, Limit: sluice.Limit(l2)},
	}}
}

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

// keyFor returns a key of the test's own.
func keyFor(t *testing.T) string { return "storetest:" + t.Name() }

// step is one request of a step table: at T0+at, take n units (or peek) and
// expect the decision's admission, remaining units and resets (seconds after
// T0; nil: not checked), and for a rejection retry_after (0: not checked)
// and the blocking window.
type step struct {
	key      string // "": the test's key
	at       time.Duration
	n        int64
	peek     bool
	allowed  bool
	rem      []int64
	reset    []int64
	retry    time.Duration
	blocking int
}

func runSteps(t *testing.T, s sluice.QuotaStore, p *sluice.Policy, steps []step) {
	t.Helper()
	key := keyFor(t) + p.Algorithm.String()
	for i, st := range steps {
		k := key
		if st.key != "" {
			k = st.key
		}
		now := T0.Add(st.at)
		var d sluice.Decision
		if st.peek {
			d = peek(t, s, k, p, now)
		} else {
			d = take(t, s, k, p, st.n, now)
		}
		name := fmt.Sprintf("%v step %d (at +%v, n=%d)", p.Algorithm, i, st.at, st.n)
		if d.Allowed != st.allowed {
			t.Errorf("%s: allowed = %v, want %v", name, d.Allowed, st.allowed)
		}
		for w := range st.rem {
			if got := d.Windows[w].Remaining; got != st.rem[w] {
				t.Errorf("%s: %s remaining = %d, want %d", name, p.Windows[w].Name, got, st.rem[w])
			}
		}
		for w := range st.reset {
			if got := d.Windows[w].Reset.Unix() - T0.Unix(); got != st.reset[w] {
				t.Errorf("%s: %s reset = +%ds, want +%ds", name, p.Windows[w].Name, got, st.reset[w])
			}
		}
		if !st.allowed {
			if st.retry != 0 && d.RetryAfter != st.retry {
				t.Errorf("%s: retry after %v, want %v", name, d.RetryAfter, st.retry)
			}
			if d.Blocking != st.blocking {
				t.Errorf("%s: blocking window %d, want %d", name, d.Blocking, st.blocking)
			}
		}
	}
}

func take(t *testing.T, s sluice.QuotaStore, key string, p *sluice.Policy, n int64, now time.Time) sluice.Decision {
	t.Helper()
	d, err := s.Take(context.Background(), key, p, n, now)
	if err != nil {
		t.Fatalf("take: %v", err)
	}
	return d
}

func peek(t *testing.T, s sluice.QuotaStore, key string, p *sluice.Policy, now time.Time) sluice.Decision {
	t.Helper()
	d, err := s.Peek(context.Background(), key, p, now)
	if err != nil {
		t.Fatalf("peek: %v", err)
	}
	return d
}

func refund(t *testing.T, s sluice.QuotaStore, key string, p *sluice.Policy, n int64, at, now time.Time) {
	t.Helper()
	if err := s.Refund(context.Background(), key, p, n, at, now); err != nil {
		t.Fatalf("refund: %v", err)
	}
}

// runModel drives random takes, refunds, peeks and time jumps through the
// store and the reference model, and requires the same decision, field for
// field, every time.
func runModel(t *testing.T, open func(t *testing.T) sluice.QuotaStore, alg sluice.Algorithm) {
	s := open(t)
	seeds, ops := 40, 300
	if testing.Short() {
		seeds = 10
	}
	lengths := []time.Duration{3 * time.Second, 7 * time.Second, 20 * time.Second, 60 * time.Second}
	// Time moves forward across seeds, as a clock does: a store may forget
	// what counts nothing at the latest time it has decided at.
	start := T0
	for seed := range seeds {
		r := rand.New(rand.NewPCG(uint64(seed), uint64(alg)))
		p := sluice.Policy{Algorithm: alg}
		for i := range 1 + r.IntN(3) {
			l := sluice.Limit(1 + r.IntN(12))
			if r.IntN(8) == 0 {
				l = sluice.Unlimited
			}
			length := lengths[r.IntN(len(lengths))]
			if l == sluice.Unlimited && r.IntN(2) == 0 {
				length = 1200 * time.Second // a sliding one counts in steps of 3 s
			}
			p.Windows = append(p.Windows, sluice.Window{Name: fmt.Sprint("w", i), Length: length, Limit: l})
		}
		m := newModel(p)
		key := fmt.Sprintf("%s/%d", keyFor(t), seed)
		now := start.Add(time.Duration(r.IntN(1000)) * time.Millisecond)
		var admitted []sluice.Decision
		var ns []int64
		// Shadow keys get every admitted take and every refund of the key,
		// at the same times, so that each holds the key's state: a
		// rejection is checked on one, which is then retired. (Replaying
		// the key's history later would decide at times before the latest
		// the store has seen, at which a store may have forgotten part of
		// it.)
		shadows := []string{key + "/shadow0", key + "/shadow1"}
		if testing.Short() {
			shadows = shadows[:1]
		}
		for op := range ops {
			switch r.IntN(6) {
			case 0:
				now = now.Add(time.Duration(r.IntN(1000)) * time.Millisecond)
			case 1:
				now = now.Add(time.Duration(r.IntN(70)) * time.Second)
			}
			what := fmt.Sprintf("seed %d op %d (%v, %+v) at +%v", seed, op, alg, p.Windows, now.Sub(T0))
			switch k := r.IntN(10); {
			case k < 6:
				n := int64(r.IntN(5))
				got := take(t, s, key, &p, n, now)
				want := m.take(n, now)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("%s: take %d: decision differs from the model (-want +got):\n%s", what, n, diff)
				}
				if got.Allowed && n > 0 {
					admitted = append(admitted, got)
					ns = append(ns, n)
					for _, k := range shadows {
						if d := take(t, s, k, &p, n, now); !d.Allowed {
							t.Fatalf("%s: take %d: admitted on the key, refused on its shadow %s", what, n, k)
						}
					}
				}
				if !got.Allowed && got.RetryAfter != sluice.InfDuration {
					// Retry exactness: the same request is refused a
					// second before now+retry_after and admitted at it,
					// barring other traffic: on a copy of the model, and
					// (a few times a seed) on the store, on a shadow key.
					after := time.Duration(got.RetryAfterSeconds()) * time.Second
					c := m.clone()
					if d := c.take(n, now.Add(after-time.Second)); d.Allowed {
						t.Fatalf("%s: take %d: model admits at now+retry_after-1s (retry_after %v)", what, n, after)
					}
					if d := c.take(n, now.Add(after)); !d.Allowed {
						t.Fatalf("%s: take %d: model refuses at now+retry_after %v: %+v", what, n, after, d)
					}
					if len(shadows) > 0 {
						checkRetry(t, s, shadows[0], &p, n, now, after, what)
						shadows = shadows[1:]
						// The store has decided at now+retry_after: its
						// clock may not go back (a store may forget what
						// counts nothing at the latest time it decided at).
						now = now.Add(after)
					}
				}
			case k < 8 && len(admitted) > 0:
				j := r.IntN(len(admitted))
				refund(t, s, key, &p, ns[j], admitted[j].Time, now)
				m.refund(ns[j], admitted[j].Time, now)
				for _, k := range shadows {
					refund(t, s, k, &p, ns[j], admitted[j].Time, now)
				}
				admitted = append(admitted[:j], admitted[j+1:]...)
				ns = append(ns[:j], ns[j+1:]...)
			default:
				got := peek(t, s, key, &p, now)
				want := m.take(0, now)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("%s: peek: decision differs from the model (-want +got):\n%s", what, diff)
				}
			}
		}
		start = now.Add(time.Hour)
	}
}

// runBusyModel is runModel for busy keys: sliding windows with limits far
// above maxWords, charged in most seconds, so that the store must coarsen
// its oldest charges. It requires the model's decision field for field,
// that no take is admitted beyond what the charges admitted so far allow
// exactly (coarsening never over-admits), and retry exactness.
func runBusyModel(t *testing.T, open func(t *testing.T) sluice.QuotaStore) {
	s := open(t)
	seeds, ops := 6, 900
	if testing.Short() {
		seeds, ops = 2, 600
	}
	start := T0.Add(100 * 24 * time.Hour)
	for seed := range seeds {
		r := rand.New(rand.NewPCG(uint64(seed), 99))
		p := sluice.Policy{Windows: []sluice.Window{
			{Name: "short", Length: time.Duration(300+r.IntN(400)) * time.Second, Limit: sluice.Limit(150 + r.IntN(200))},
			{Name: "long", Length: time.Duration(900+r.IntN(900)) * time.Second, Limit: sluice.Limit(300 + r.IntN(600))},
		}}
		m := newModel(p)
		key := fmt.Sprintf("%s/busy%d", keyFor(t), seed)
		shadow := key + "/shadow"
		now := start
		type made struct {
			sec, n int64
			d      sluice.Decision
		}
		var exact []made // every admitted take at its true second
		refundable := func() []int {
			var js []int
			for j, c := range exact {
				if c.n > 0 {
					js = append(js, j)
				}
			}
			return js
		}
		for op := range ops {
			if k := r.IntN(10); k < 7 {
				now = now.Add(time.Duration(500+r.IntN(1500)) * time.Millisecond)
			} else if k == 7 {
				now = now.Add(time.Duration(r.IntN(60)) * time.Second)
			}
			what := fmt.Sprintf("seed %d op %d (%+v) at +%v", seed, op, p.Windows, now.Sub(start))
			switch k := r.IntN(20); {
			case k < 16:
				n := int64(1 + r.IntN(3))
				got := take(t, s, key, &p, n, now)
				want := m.take(n, now)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("%s: take %d: decision differs from the model (-want +got):\n%s", what, n, diff)
				}
				if got.Allowed {
					for i, w := range p.Windows {
						var used int64
						for _, c := range exact {
							if c.sec > now.Unix()-int64(w.Length/time.Second) {
								used += c.n
							}
						}
						if used+n > int64(w.Limit) {
							t.Fatalf("%s: take %d admitted over the limit of %s: %d counted exactly", what, n, p.Windows[i].Name, used)
						}
					}
					exact = append(exact, made{now.Unix(), n, got})
					if shadow == "" {
						break
					}
					if d := take(t, s, shadow, &p, n, now); !d.Allowed {
						t.Fatalf("%s: take %d: admitted on the key, refused on its shadow", what, n)
					}
				} else if got.RetryAfter != sluice.InfDuration && r.IntN(4) == 0 {
					after := time.Duration(got.RetryAfterSeconds()) * time.Second
					c := m.clone()
					if d := c.take(n, now.Add(after-time.Second)); d.Allowed {
						t.Fatalf("%s: take %d: model admits at now+retry_after-1s (retry_after %v)", what, n, after)
					}
					if d := c.take(n, now.Add(after)); !d.Allowed {
						t.Fatalf("%s: take %d: model refuses at now+retry_after %v: %+v", what, n, after, d)
					}
					if shadow != "" {
						// Once a seed, on the store: the shadow then
						// holds another state, and the store has
						// decided at now+retry_after, which the clock
						// may not go back from.
						checkRetry(t, s, shadow, &p, n, now, after, what)
						shadow = ""
						now = now.Add(after)
					}
				}
			case k < 18:
				js := refundable()
				if len(js) == 0 {
					continue
				}
				j := js[len(js)-1-r.IntN(min(len(js), 3))] // a recent one, as a failed request's
				if r.IntN(3) == 0 {
					j = js[r.IntN(len(js))] // any, perhaps coarsened
				}
				c := &exact[j]
				refund(t, s, key, &p, c.n, c.d.Time, now)
				if shadow != "" {
					refund(t, s, shadow, &p, c.n, c.d.Time, now)
				}
				m.refund(c.n, c.d.Time, now)
				c.n = 0
			default:
				got := peek(t, s, key, &p, now)
				want := m.take(0, now)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("%s: peek: decision differs from the model (-want +got):\n%s", what, diff)
				}
			}
		}
		start = now.Add(time.Hour)
	}
}

// checkRetry requires that a take of n units on key is refused at
// now+after-1s and admitted at now+after.
func checkRetry(t *testing.T, s sluice.QuotaStore, key string, p *sluice.Policy, n int64, now time.Time, after time.Duration, what string) {
	t.Helper()
	if d := take(t, s, key, p, n, now.Add(after-time.Second)); d.Allowed {
		t.Fatalf("%s: take %d: store admits at now+retry_after-1s (retry_after %v)", what, n, after)
	}
	if d := take(t, s, key, p, n, now.Add(after)); !d.Allowed {
		t.Fatalf("%s: take %d: store refuses at now+retry_after %v: %+v", what, n, after, d)
	}
}
