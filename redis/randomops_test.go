package redis_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/quota"
	"github.com/sluicehq/sluice/redis"
)

// randomOps drives one key with random operations, a take of 0–2 units
// eight times in ten, else a refund of an earlier admitted take, and
// checks every take against the quota package's decision on the same
// calls; st is that package's state of the key.
type randomOps struct {
	p        *sluice.Policy
	key      string
	r        *rand.Rand
	st       [][]uint64
	admitted []admittedTake
}

// admittedTake is a take that charged n units at the instant at.
type admittedTake struct {
	n  int64
	at time.Time
}

func newRandomOps(p *sluice.Policy, key string, r *rand.Rand) *randomOps {
	return &randomOps{p: p, key: key, r: r, st: make([][]uint64, len(p.Windows))}
}

// step makes one operation on s at now, or at Redis's clock if now is
// zero, and returns the instant it was decided at; what names the
// operation in a failure.
func (o *randomOps) step(t *testing.T, s *redis.Store, now time.Time, what string) time.Time {
	t.Helper()
	ctx := context.Background()
	server := now.IsZero()
	if server {
		now = time.Now()
	}
	if o.r.IntN(10) < 8 || len(o.admitted) == 0 {
		n := int64(o.r.IntN(3))
		got, err := s.Take(ctx, o.key, o.p, n, now)
		if err != nil {
			t.Fatal(err)
		}
		want := quota.Take(o.p, o.st, n, got.Time)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("%s: take %d: (-quota +redis):\n%s", what, n, diff)
		}
		if got.Allowed && n > 0 {
			o.admitted = append(o.admitted, admittedTake{n, got.Time})
		}
		return got.Time
	}
	j := o.r.IntN(len(o.admitted))
	a := o.admitted[j]
	o.admitted = append(o.admitted[:j], o.admitted[j+1:]...)
	if err := s.Refund(ctx, o.key, o.p, a.n, a.at, now); err != nil {
		t.Fatal(err)
	}
	if server {
		// the refund's instant is Redis's, a little before this
		d, err := s.Peek(ctx, o.key, o.p, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		now = d.Time
	}
	quota.Refund(o.p, o.st, a.n, a.at, now)
	return now
}
