package redis_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/quota"
	"github.com/sluicehq/sluice/redis"
)

// The script decides calendar and token-bucket calls on one flat path,
// which also handles what an earlier build left to a general path: windows
// without a limit, and zones whose offset changes near now. pathCases are
// policies of each kind: one, two and four limited windows, and one window
// without a limit, each in zones of one offset (UTC, +05:30 whose windows
// start on the half hour, New York in summer) and in a zone that changes
// its offset within two days (Berlin before summer time: a table of
// offsets, or of midnights).
func pathCases(t *testing.T) []pathCase {
	zones := []struct {
		name  string
		start time.Time
	}{
		{"UTC", time.Date(2027, 1, 10, 22, 0, 0, 0, time.UTC)},
		{"Asia/Kolkata", time.Date(2027, 1, 10, 22, 0, 0, 0, time.UTC)},
		{"America/New_York", time.Date(2027, 7, 10, 22, 0, 0, 0, time.UTC)},
		{"Europe/Berlin", time.Date(2027, 3, 26, 22, 0, 0, 0, time.UTC)},
	}
	limited := []sluice.Window{
		{Name: "minute", Length: time.Minute, Limit: 6},
		{Name: "hour", Length: time.Hour, Limit: 40},
		{Name: "day", Length: 24 * time.Hour, Limit: 100},
		{Name: "week", Length: 7 * 24 * time.Hour, Limit: 300},
	}
	shapes := []struct {
		name    string
		windows []sluice.Window
	}{
		{"one", limited[:1]},
		{"two", limited[1:3]},
		{"four", limited},
		{"unlimited", []sluice.Window{limited[0], {Name: "day", Length: 24 * time.Hour, Limit: sluice.Unlimited}}},
	}
	var cases []pathCase
	for _, alg := range []sluice.Algorithm{sluice.Calendar, sluice.TokenBucket} {
		for _, z := range zones {
			loc, err := time.LoadLocation(z.name)
			if err != nil {
				t.Skipf("no time zone data: %v", err)
			}
			for _, sh := range shapes {
				cases = append(cases, pathCase{
					name:  fmt.Sprintf("%v/%s/%s", alg, z.name, sh.name),
					p:     sluice.Policy{Algorithm: alg, Location: loc, Windows: sh.windows},
					start: z.start,
				})
			}
		}
	}
	return cases
}

type pathCase struct {
	name  string
	p     sluice.Policy
	start time.Time
}

// pathStep returns how far the clock moves before an operation: one time
// in three not at all, so that takes at one instant fill a bucket or a
// window exactly to its limit; else up to 40 s.
func pathStep(r *rand.Rand) time.Duration {
	if r.IntN(3) == 0 {
		return 0
	}
	return time.Duration(r.IntN(40_000)) * time.Millisecond
}

// TestCalendarAndBucketPaths checks random takes and refunds on every
// pathCase against the quota package's decisions on the same calls.
func TestCalendarAndBucketPaths(t *testing.T) {
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	s := redis.New(storeClient(t), redis.Options{Prefix: prefix, CallerClock: true})
	for i, pc := range pathCases(t) {
		ops := newRandomOps(&pc.p, "{"+pc.name+"}", rand.New(rand.NewPCG(uint64(i), 11)))
		now := pc.start
		for op := range 400 {
			now = now.Add(pathStep(ops.r))
			ops.step(t, s, now, fmt.Sprintf("%s, op %d", pc.name, op))
		}
	}
}

// TestCalendarAndBucketPathsAgree: where a key's policy changes (a limit
// raised, removed or set again, a window made longer: what a bucket's
// state is converted or rescaled for), this build's script decides as the
// previous build's (testdata), whose general path (a table a window and
// closures) decided every call of these cases; each script has its own
// keys, and both get the same calls.
func TestCalendarAndBucketPathsAgree(t *testing.T) {
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	previous := redis.WithScript(redis.New(storeClient(t), redis.Options{Prefix: prefix + "previous:", CallerClock: true}), previousScript(t))
	current := redis.New(storeClient(t), redis.Options{Prefix: prefix + "current:", CallerClock: true})
	ctx := context.Background()
	for i, pc := range pathCases(t) {
		r := rand.New(rand.NewPCG(uint64(i), 13))
		p, key, now := pc.p, "{"+pc.name+"}", pc.start
		var admitted []admittedTake
		for op := range 600 {
			now = now.Add(pathStep(r))
			if op%100 == 99 {
				ws := append([]sluice.Window(nil), p.Windows...)
				switch op / 100 % 3 {
				case 0:
					for i := range ws {
						if !ws[i].Limit.IsUnlimited() {
							ws[i].Limit *= 2
						}
					}
				case 1:
					ws[len(ws)-1].Limit = sluice.Unlimited
				case 2:
					ws[len(ws)-1].Limit = 20
					ws[0].Length += time.Minute
				}
				p.Windows = ws
			}
			what := fmt.Sprintf("%s, op %d, windows %+v", pc.name, op, p.Windows)
			if r.IntN(10) < 8 || len(admitted) == 0 {
				n := int64(r.IntN(3))
				want, err := previous.Take(ctx, key, &p, n, now)
				if err != nil {
					t.Fatal(err)
				}
				got, err := current.Take(ctx, key, &p, n, now)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("%s: take %d: (-previous +current):\n%s", what, n, diff)
				}
				if got.Allowed && n > 0 {
					admitted = append(admitted, admittedTake{n, got.Time})
				}
				continue
			}
			j := r.IntN(len(admitted))
			a := admitted[j]
			admitted = append(admitted[:j], admitted[j+1:]...)
			for _, s := range []*redis.Store{previous, current} {
				if err := s.Refund(ctx, key, &p, a.n, a.at, now); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// TestBucketPolicyChanges spells out, against the quota package, orders of
// events that the random tests rarely reach:
//
//   - a token-bucket window whose limit is removed becomes a count of its
//     units in the current fixed window, and a take refused by another
//     window must still keep that count (converted again a day later, the
//     old debt would count in the new day);
//   - a bucket whose limit is lowered to 0 while it holds a debt has no
//     room even for a peek, ever.
func TestBucketPolicyChanges(t *testing.T) {
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	s := redis.New(storeClient(t), redis.Options{Prefix: prefix, CallerClock: true})
	limited := sluice.Policy{Algorithm: sluice.TokenBucket, Windows: []sluice.Window{
		{Name: "hour", Length: time.Hour, Limit: 2},
		{Name: "day", Length: 24 * time.Hour, Limit: 10},
	}}
	removed := limited
	removed.Windows = []sluice.Window{limited.Windows[0], {Name: "day", Length: 24 * time.Hour, Limit: sluice.Unlimited}}
	zero := limited
	zero.Windows = []sluice.Window{limited.Windows[0], {Name: "day", Length: 24 * time.Hour, Limit: 0}}
	type step struct {
		p     *sluice.Policy
		at    time.Duration
		n     int64
		allow bool
	}
	ctx := context.Background()
	t0 := time.Date(2027, 1, 10, 9, 0, 0, 0, time.UTC)
	for key, steps := range map[string][]step{
		"{removed}": {
			{&limited, 0, 1, true},
			{&limited, time.Second, 1, true},
			{&removed, 2 * time.Second, 1, false}, // the hour is full; the day becomes a count
			{&removed, 25 * time.Hour, 1, true},   // the next day: the count starts again
		},
		"{zero}": {
			{&limited, 0, 1, true},
			{&zero, time.Second, 0, false},
			{&zero, time.Hour, 0, false},
		},
	} {
		st := make([][]uint64, 2)
		for i, step := range steps {
			got, err := s.Take(ctx, key, step.p, step.n, t0.Add(step.at))
			if err != nil {
				t.Fatal(err)
			}
			want := quota.Take(step.p, st, step.n, got.Time)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("%s take %d: (-quota +redis):\n%s", key, i+1, diff)
			}
			if got.Allowed != step.allow {
				t.Fatalf("%s take %d: allowed %v, want %v", key, i+1, got.Allowed, step.allow)
			}
		}
	}
}
