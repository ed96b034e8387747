package redis_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/redis"
)

var hourDay = sluice.Policy{Windows: []sluice.Window{
	{Name: "hour", Length: time.Hour, Limit: 100},
	{Name: "day", Length: 24 * time.Hour, Limit: 1000},
}}

// TestServerClock: without a caller clock, Redis's TIME decides: two stores
// passed clocks ten minutes apart make the same decisions, at Redis's time,
// and every key they write has a TTL.
func TestServerClock(t *testing.T) {
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	rc := storeClient(t)
	a := redis.New(rc, redis.Options{Prefix: prefix})
	b := redis.New(rc, redis.Options{Prefix: prefix})
	p := sluice.Policy{Windows: []sluice.Window{{Name: "hour", Length: time.Hour, Limit: 3}}}
	fast := time.Now().Add(10 * time.Minute)
	slow := time.Now().Add(-10 * time.Minute)
	var admitted int
	var resets []int64
	for i := range 6 {
		s, now := a, fast
		if i%2 == 1 {
			s, now = b, slow
		}
		d, err := s.Take(ctx, "{acct:1}", &p, 1, now)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			admitted++
		}
		if skew := time.Since(d.Time); skew < -time.Second || skew > time.Second {
			t.Fatalf("decision time %v is not the server's (now %v)", d.Time, time.Now())
		}
		resets = append(resets, d.Windows[0].Reset.Unix())
		if !d.Allowed && (d.RetryAfter <= 59*time.Minute || d.RetryAfter > time.Hour) {
			t.Fatalf("retry after %v, want about an hour", d.RetryAfter)
		}
	}
	if admitted != 3 {
		t.Fatalf("admitted %d, want 3", admitted)
	}
	if resets[0] != resets[5] {
		t.Fatalf("resets differ: %v", resets)
	}
	ttl, err := c.PTTL(ctx, prefix+"{acct:1}").Result()
	// an hour, plus the headroom of a sixteenth of the window
	if err != nil || ttl <= 59*time.Minute || ttl > time.Hour+time.Hour/16+time.Second {
		t.Fatalf("ttl %v (%v), want about an hour", ttl, err)
	}
}

// TestCompact: a sliding state is bounded by the limit, not by the units
// charged: one (second, units) pair per second that has a charge.
func TestCompact(t *testing.T) {
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	s := redis.New(storeClient(t), redis.Options{Prefix: prefix, CallerClock: true})
	now := time.Now()
	for range 500 {
		if _, err := s.Take(ctx, "k", &hourDay, 1, now); err != nil {
			t.Fatal(err)
		}
	}
	v, err := c.Get(ctx, prefix+"k").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	// header 2 + per window: present 1, count 4, one pair 8; then the
	// trailer of running totals, 8 per window, and the expiry, 8.
	if want := 2 + 2*(1+4+8) + 2*8 + 8; len(v) != want {
		t.Fatalf("state of 100 units in one second is %d bytes, want %d", len(v), want)
	}
}

func TestPolicyChange(t *testing.T) {
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	s := redis.New(storeClient(t), redis.Options{Prefix: prefix, CallerClock: true})
	now := time.Now()
	s.Take(ctx, "k", &hourDay, 100, now)
	cal := hourDay
	cal.Algorithm = sluice.Calendar
	d, err := s.Take(ctx, "k", &cal, 1, now)
	if err != nil || !d.Allowed || d.Windows[0].Remaining != 99 {
		t.Fatalf("after a change of algorithm: %+v, %v; want a fresh state", d, err)
	}
}

func TestTokenBucketTooLarge(t *testing.T) {
	s := redis.New(storeClient(t), redis.Options{CallerClock: true})
	p := sluice.Policy{Algorithm: sluice.TokenBucket, Windows: []sluice.Window{{Name: "day", Length: 24 * time.Hour, Limit: 1e9}}}
	if _, err := s.Take(context.Background(), "sluicetest:never", &p, 1, time.Now()); err == nil {
		t.Fatal("no error for a bucket the script cannot count exactly")
	}
}

// TestUnboundedState: a sliding state as the script before the bound wrote
// it, a limited window with more than 128 pairs (an older gateway, in a
// rolling upgrade, keeps writing those), counts every unit, and the next
// charge in a new second coarsens its oldest pairs to fewer than 128, the
// first moved to the end of its cell: at most 128 with the new one. How
// many the cells hold depends on where the seconds fall in them, so the
// test charges at each of a cell's 57 offsets (the script runs on the
// caller's clock). With the wall clock alone, and asking for fewer than 128
// with the new pair, it failed at the one offset in 57 that leaves 128.
func TestUnboundedState(t *testing.T) {
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	s := redis.New(storeClient(t), redis.Options{Prefix: prefix, CallerClock: true})
	p := sluice.Policy{Windows: []sluice.Window{{Name: "hour", Length: time.Hour, Limit: 1000}}}
	base := time.Now().Truncate(time.Second)
	full := 0
	for off := range int64(57) { // ceil(3600/64) = 57 s a cell
		now := base.Add(time.Duration(off) * time.Second)
		sec := now.Unix()
		key := "k" + strconv.FormatInt(off, 10)
		// ">BB" algorithm, windows; ">BI4" present, pairs; the pairs
		// ">I4I4": a unit in each of the last 300 seconds; the trailer
		// ">d" total.
		old := []byte{0, 1, 1}
		old = binary.BigEndian.AppendUint32(old, 300)
		for i := range int64(300) {
			old = binary.BigEndian.AppendUint32(old, uint32(sec-300+i))
			old = binary.BigEndian.AppendUint32(old, 1)
		}
		old = binary.BigEndian.AppendUint64(old, math.Float64bits(300))
		if err := c.Set(ctx, prefix+key, old, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		d, err := s.Take(ctx, key, &p, 1, now)
		if err != nil || !d.Allowed || d.Windows[0].Counted != 301 || d.Windows[0].Remaining != 699 {
			t.Fatalf("offset %d: take on an unbounded state: %+v, %v; want 301 counted", off, d, err)
		}
		first := sec - 300
		first += (57 - first%57) % 57 // the end of its cell
		if got, want := d.Windows[0].Reset.Unix(), first+3600; got != want {
			t.Errorf("offset %d: reset %d, want %d (the oldest pair moved to the end of its cell)", off, got, want)
		}
		v, err := c.Get(ctx, prefix+key).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		pairs := binary.BigEndian.Uint32(v[3:])
		if pairs > 128 || len(v) != 2+1+4+8*int(pairs)+8+8 {
			t.Fatalf("offset %d: state of %d bytes, %d pairs after the charge; want at most 128", off, len(v), pairs)
		}
		if pairs == 128 {
			full++
		}
		d, err = s.Peek(ctx, key, &p, now)
		if err != nil || d.Windows[0].Counted != 301 {
			t.Fatalf("offset %d: peek: %+v, %v; want 301 counted", off, d, err)
		}
	}
	t.Logf("128 pairs after the charge at %d of 57 offsets", full)
}

// TestStateWithoutTotals: a sliding state as the script before running
// totals wrote it (no trailer) is read, its totals summed once, and written
// back with them.
func TestStateWithoutTotals(t *testing.T) {
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	s := redis.New(storeClient(t), redis.Options{Prefix: prefix, CallerClock: true})
	now := time.Now()
	sec := uint32(now.Unix())
	// ">BB" algorithm, windows; per window ">BI4" present, pairs, then
	// the pairs ">I4I4": 3 units 10s ago, 4 units 5s ago.
	var old []byte
	old = append(old, 0, 2)
	for range 2 {
		old = append(old, 1, 0, 0, 0, 2)
		old = binary.BigEndian.AppendUint32(old, sec-10)
		old = binary.BigEndian.AppendUint32(old, 3)
		old = binary.BigEndian.AppendUint32(old, sec-5)
		old = binary.BigEndian.AppendUint32(old, 4)
	}
	if err := c.Set(ctx, prefix+"k", old, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	d, err := s.Take(ctx, "k", &hourDay, 1, now)
	if err != nil || !d.Allowed || d.Windows[0].Remaining != 92 || d.Windows[1].Remaining != 992 {
		t.Fatalf("take on an old state: %+v, %v; want 92 and 992 left", d, err)
	}
	v, err := c.Get(ctx, prefix+"k").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 + 2*(1+4+3*8) + 2*8 + 8; len(v) != want {
		t.Fatalf("state is %d bytes, want %d", len(v), want)
	}
	d, err = s.Peek(ctx, "k", &hourDay, now)
	if err != nil || d.Windows[0].Remaining != 92 || d.Windows[1].Remaining != 992 {
		t.Fatalf("peek: %+v, %v; want 92 and 992 left", d, err)
	}
}

// TestClockJumps compares the store with the in-process one (the quota
// package's algorithms) while the clock jumps forward by up to a window and
// more and back by up to 6s, which the conformance model never does: charges
// then land in a second older than now, the newest pair's. The clock goes
// back only right after a write (a charge or a refund): a decision that
// charges nothing does not write back what it dropped, which the in-process
// store keeps dropped, so that going back after one of those counts units
// again that the in-process store has forgotten (the same before and after
// the script kept running totals).
func TestClockJumps(t *testing.T) {
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	s := redis.New(storeClient(t), redis.Options{Prefix: prefix, CallerClock: true})
	ref := inmem.New(inmem.Options{})
	defer ref.Close()
	p := sluice.Policy{Windows: []sluice.Window{
		{Name: "a", Length: 5 * time.Second, Limit: 6},
		{Name: "b", Length: 20 * time.Second, Limit: 15},
	}}
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Now().Truncate(time.Second)
	type charge struct {
		n  int64
		at time.Time
	}
	var admitted []charge
	wrote := false
	for op := range 3000 {
		step := time.Duration(r.IntN(16000)-6000) * time.Millisecond
		if step < 0 && !wrote {
			step = -step
		}
		now = now.Add(step)
		wrote = false
		switch k := r.IntN(10); {
		case k < 7:
			n := int64(r.IntN(4))
			got, err := s.Take(ctx, "k", &p, n, now)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := ref.Take(ctx, "k", &p, n, now)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("op %d: take %d: (-inmem +redis):\n%s", op, n, diff)
			}
			if got.Allowed && n > 0 {
				admitted = append(admitted, charge{n, now})
				wrote = true
			}
		case len(admitted) > 0:
			j := r.IntN(len(admitted))
			a := admitted[j]
			admitted = append(admitted[:j], admitted[j+1:]...)
			if err := s.Refund(ctx, "k", &p, a.n, a.at, now); err != nil {
				t.Fatal(err)
			}
			ref.Refund(ctx, "k", &p, a.n, a.at, now)
			wrote = true
		}
	}
}

// TestManyWindows compares the store with the in-process one on policies of
// one, three and four windows (the script has paths by number of windows),
// under each algorithm, with takes, peeks and refunds.
func TestManyWindows(t *testing.T) {
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	s := redis.New(storeClient(t), redis.Options{Prefix: prefix, CallerClock: true})
	all := []sluice.Window{
		{Name: "a", Length: 5 * time.Second, Limit: 6},
		{Name: "b", Length: 20 * time.Second, Limit: 15},
		{Name: "c", Length: 60 * time.Second, Limit: sluice.Unlimited},
		{Name: "d", Length: 120 * time.Second, Limit: 40},
	}
	for _, alg := range []sluice.Algorithm{sluice.Sliding, sluice.Calendar, sluice.TokenBucket} {
		for _, nw := range []int{1, 3, 4} {
			p := sluice.Policy{Algorithm: alg, Windows: all[:nw]}
			key := fmt.Sprintf("k%d-%d", alg, nw)
			ref := inmem.New(inmem.Options{})
			defer ref.Close()
			r := rand.New(rand.NewPCG(uint64(nw), uint64(alg)))
			now := time.Now().Truncate(time.Second)
			type charge struct {
				n  int64
				at time.Time
			}
			var admitted []charge
			for op := range 400 {
				now = now.Add(time.Duration(r.IntN(3000)) * time.Millisecond)
				switch k := r.IntN(10); {
				case k < 8:
					n := int64(r.IntN(4))
					got, err := s.Take(ctx, key, &p, n, now)
					if err != nil {
						t.Fatal(err)
					}
					want, _ := ref.Take(ctx, key, &p, n, now)
					if diff := cmp.Diff(want, got); diff != "" {
						t.Fatalf("%v, %d windows, op %d: take %d: (-inmem +redis):\n%s", alg, nw, op, n, diff)
					}
					if got.Allowed && n > 0 {
						admitted = append(admitted, charge{n, now})
					}
				case len(admitted) > 0:
					j := r.IntN(len(admitted))
					a := admitted[j]
					admitted = append(admitted[:j], admitted[j+1:]...)
					if err := s.Refund(ctx, key, &p, a.n, a.at, now); err != nil {
						t.Fatal(err)
					}
					ref.Refund(ctx, key, &p, a.n, a.at, now)
				}
			}
		}
	}
}
