package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/redis"
)

// TestLease: one holder at a time; fencing tokens grow; a stale token can
// neither renew nor release; an expired lease is taken over.
func TestLease(t *testing.T) {
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	s := redis.New(storeClient(t), redis.Options{Prefix: prefix})
	const ttl = 300 * time.Millisecond

	f1, err := s.AcquireLease(ctx, "poller", ttl)
	if err != nil || f1 <= 0 {
		t.Fatalf("first acquire: %d, %v", f1, err)
	}
	if f, err := s.AcquireLease(ctx, "poller", ttl); err != nil || f != 0 {
		t.Fatalf("acquire while held: %d, %v; want 0", f, err)
	}
	if f, err := s.AcquireLease(ctx, "other", ttl); err != nil || f <= 0 {
		t.Fatalf("another name: %d, %v", f, err)
	}
	// Renewed past its first TTL, it is still held.
	for range 3 {
		time.Sleep(ttl / 3)
		if ok, err := s.RenewLease(ctx, "poller", f1, ttl); err != nil || !ok {
			t.Fatalf("renew: %v, %v", ok, err)
		}
	}
	if f, _ := s.AcquireLease(ctx, "poller", ttl); f != 0 {
		t.Fatal("acquired a renewed lease")
	}
	// Expired, it is taken with a larger token; the old one is powerless.
	time.Sleep(ttl + 100*time.Millisecond)
	f2, err := s.AcquireLease(ctx, "poller", ttl)
	if err != nil || f2 <= f1 {
		t.Fatalf("acquire after expiry: %d, %v; want > %d", f2, err, f1)
	}
	if ok, err := s.RenewLease(ctx, "poller", f1, ttl); err != nil || ok {
		t.Fatalf("renew with a stale token: %v, %v", ok, err)
	}
	if err := s.ReleaseLease(ctx, "poller", f1); err != nil {
		t.Fatal(err)
	}
	if f, _ := s.AcquireLease(ctx, "poller", ttl); f != 0 {
		t.Fatal("a stale token released the holder's lease")
	}
	// Released, it is free at once.
	if err := s.ReleaseLease(ctx, "poller", f2); err != nil {
		t.Fatal(err)
	}
	if f3, err := s.AcquireLease(ctx, "poller", ttl); err != nil || f3 <= f2 {
		t.Fatalf("acquire after release: %d, %v", f3, err)
	}
}

func TestMarkOnce(t *testing.T) {
	ctx := context.Background()
	c := sharedClient(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	cleanPrefix(t, c, prefix)
	a := redis.New(storeClient(t), redis.Options{Prefix: prefix})
	b := redis.New(storeClient(t), redis.Options{Prefix: prefix})
	steps := []struct {
		s    *redis.Store
		key  string
		want bool
	}{
		{a, "tg:1", true},
		{b, "tg:1", false},
		{a, "tg:1", false},
		{b, "tg:2", true},
	}
	for i, st := range steps {
		got, err := st.s.MarkOnce(ctx, st.key, time.Second)
		if err != nil || got != st.want {
			t.Fatalf("step %d MarkOnce(%s) = %v, %v; want %v", i, st.key, got, err, st.want)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	if got, err := a.MarkOnce(ctx, "tg:1", time.Second); err != nil || !got {
		t.Fatalf("after the TTL: %v, %v; want new", got, err)
	}
}
