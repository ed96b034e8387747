package redis_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/quota"
	"github.com/sluicehq/sluice/redis"
)

// TestExpiry: at Redis's clock, after every take, peek and refund, under
// each algorithm, the key expires no earlier than its state counts
// something (quota.Expiry of the same calls on the quota package's state)
// and no later than the latest such expiry plus the headroom the script
// adds (a sixteenth of the longest window), whether the write set the
// expiry (PXAT) or kept it (KEEPTTL); and that a write whose state needs
// no later expiry than the key has keeps it.
func TestExpiry(t *testing.T) {
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	s := redis.New(storeClient(t), redis.Options{Prefix: prefix})
	windows := []sluice.Window{
		{Name: "a", Length: time.Second, Limit: 4},
		{Name: "b", Length: 3 * time.Second, Limit: 9},
		{Name: "c", Length: 16 * time.Second, Limit: sluice.Unlimited},
	}
	for _, alg := range []sluice.Algorithm{sluice.Sliding, sluice.Calendar, sluice.TokenBucket} {
		for _, nw := range []int{2, 3} {
			p := sluice.Policy{Algorithm: alg, Windows: windows[:nw]}
			key := fmt.Sprintf("k%d-%d", alg, nw)
			headroom := windows[nw-1].Length.Milliseconds() / 16
			if alg == sluice.Calendar {
				headroom = 0
			}
			ops := newRandomOps(&p, key, rand.New(rand.NewPCG(uint64(nw), uint64(alg))))
			var latest int64 // the latest expiry the state needed, Unix ms
			var prev int64   // the key's expiry after the last operation (0: none)
			for op := range 100 {
				time.Sleep(time.Duration(ops.r.IntN(20)) * time.Millisecond)
				now := ops.step(t, s, time.Time{}, fmt.Sprintf("%v, %d windows, op %d", alg, nw, op))
				need := quota.Expiry(&p, ops.st) * 1000
				latest = max(latest, need)
				at, err := c.PExpireTime(ctx, prefix+key).Result()
				if err != nil {
					t.Fatal(err)
				}
				ms := at.Milliseconds()
				if at == -2*time.Nanosecond && need > now.UnixMilli() {
					// gone since the operation: fine if its need has passed
					// by now (a calendar window that ended in between)
					tm, err := c.Time(ctx).Result()
					if err != nil {
						t.Fatal(err)
					}
					if need <= tm.UnixMilli() {
						prev = 0
						continue
					}
				}
				switch {
				case need <= now.UnixMilli():
					// counts nothing: may be gone, or kept within the headroom
					if ms > 0 && ms > latest+headroom {
						t.Fatalf("%v, %d windows, op %d: expires at %d, needs nothing; latest need %d", alg, nw, op, ms, latest)
					}
				case at == -2*time.Nanosecond || ms <= 0:
					t.Fatalf("%v, %d windows, op %d: key gone or without an expiry (%v), needs %d", alg, nw, op, at, need)
				case ms < need || ms > latest+headroom:
					t.Fatalf("%v, %d windows, op %d: expires at %d, needs %d, latest need %d (+%d ms)", alg, nw, op, ms, need, latest, headroom)
				case prev > 0 && need <= prev && ms != prev:
					t.Fatalf("%v, %d windows, op %d: expiry moved from %d to %d, though %d covered the need %d (KEEPTTL)", alg, nw, op, prev, ms, prev, need)
				}
				prev = max(ms, 0)
			}
		}
	}
}

// TestStateWithoutExpiry: a sliding state as the script before the expiry
// field wrote it (its windows and totals, with a TTL set by PX) is read,
// and written back with the field and an expiry at least as late as its
// newest charge needs.
func TestStateWithoutExpiry(t *testing.T) {
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	s := redis.New(storeClient(t), redis.Options{Prefix: prefix})
	tm, err := s.Time(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sec := uint32(tm.Unix())
	// ">BB" algorithm, windows; per window ">BI4" present, pairs, then the
	// pairs ">I4I4": 3 units 10s ago; the trailer ">d" per window.
	old := []byte{0, 2}
	for range 2 {
		old = append(old, 1, 0, 0, 0, 1)
		old = binary.BigEndian.AppendUint32(old, sec-10)
		old = binary.BigEndian.AppendUint32(old, 3)
	}
	for range 2 {
		old = binary.BigEndian.AppendUint64(old, math.Float64bits(3))
	}
	if err := c.Set(ctx, prefix+"k", old, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	d, err := s.Take(ctx, "k", &hourDay, 1, time.Now())
	if err != nil || !d.Allowed || d.Windows[0].Remaining != 96 || d.Windows[1].Remaining != 996 {
		t.Fatalf("take on an old state: %+v, %v; want 96 and 996 left", d, err)
	}
	v, err := c.Get(ctx, prefix+"k").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if want := len(old) + 2*8 + 8; len(v) != want { // a pair per window, the field
		t.Fatalf("state is %d bytes, want %d", len(v), want)
	}
	field := int64(math.Float64frombits(binary.BigEndian.Uint64(v[len(v)-8:])))
	at, err := c.PExpireTime(ctx, prefix+"k").Result()
	if err != nil {
		t.Fatal(err)
	}
	need := (d.Time.Unix() + 24*3600) * 1000
	if at.Milliseconds() != field || field < need || field > need+24*3600*1000/16 {
		t.Fatalf("expires at %d, field %d; want the field, from %d to a sixteenth of a day more", at.Milliseconds(), field, need)
	}
	// a take in the same second keeps the expiry
	if _, err := s.Take(ctx, "k", &hourDay, 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	if at2, err := c.PExpireTime(ctx, prefix+"k").Result(); err != nil || at2 != at {
		t.Fatalf("expiry after a second take: %v (%v), want %v kept", at2, err, at)
	}
}
