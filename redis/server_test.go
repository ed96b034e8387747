package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
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
	a := redis.New(c, redis.Options{Prefix: prefix})
	b := redis.New(c, redis.Options{Prefix: prefix})
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
	if err != nil || ttl <= 59*time.Minute || ttl > time.Hour+time.Second {
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
	s := redis.New(c, redis.Options{Prefix: prefix, CallerClock: true})
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
	// header 2 + per window: present 1, count 4, one pair 8.
	if len(v) != 2+2*(1+4+8) {
		t.Fatalf("state of 100 units in one second is %d bytes, want %d", len(v), 2+2*13)
	}
}

func TestPolicyChange(t *testing.T) {
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	s := redis.New(c, redis.Options{Prefix: prefix, CallerClock: true})
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
	c := sharedClient(t)
	s := redis.New(c, redis.Options{CallerClock: true})
	p := sluice.Policy{Algorithm: sluice.TokenBucket, Windows: []sluice.Window{{Name: "day", Length: 24 * time.Hour, Limit: 1e9}}}
	if _, err := s.Take(context.Background(), "sluicetest:never", &p, 1, time.Now()); err == nil {
		t.Fatal("no error for a bucket the script cannot count exactly")
	}
}
