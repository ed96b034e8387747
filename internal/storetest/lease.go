package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	sluice "github.com/sluicehq/sluice"
)

// RunLeaseService runs the conformance suite of sluice.LeaseService. Every
// call of open returns two handles on one new, empty store, as two
// instances see it.
func RunLeaseService(t *testing.T, open func(t *testing.T) (a, b sluice.LeaseService)) {
	t.Run("Steps", func(t *testing.T) {
		a, b := open(t)
		testLeaseSteps(t, a, b)
	})
	t.Run("Concurrent", func(t *testing.T) {
		a, b := open(t)
		ctx := context.Background()
		var (
			mu  sync.Mutex
			got []int64
			wg  sync.WaitGroup
		)
		for i := range 16 {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Go(func() {
				f, err := s.AcquireLease(ctx, "race", time.Minute)
				if err != nil {
					t.Error(err)
				}
				if f > 0 {
					mu.Lock()
					got = append(got, f)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(got) != 1 {
			t.Fatalf("%d of 16 concurrent acquires got the lease: %v", len(got), got)
		}
	})
}

func testLeaseSteps(t *testing.T, a, b sluice.LeaseService) {
	ctx := context.Background()
	const ttl = 400 * time.Millisecond
	f1, err := a.AcquireLease(ctx, "poller", ttl)
	if err != nil || f1 <= 0 {
		t.Fatalf("first acquire: %d, %v", f1, err)
	}
	if f, err := b.AcquireLease(ctx, "poller", ttl); err != nil || f != 0 {
		t.Fatalf("acquire while held: %d, %v; want 0", f, err)
	}
	if f, err := b.AcquireLease(ctx, "other", ttl); err != nil || f <= 0 {
		t.Fatalf("another name: %d, %v", f, err)
	}
	// Renewed past its first TTL, it is still held.
	for range 3 {
		time.Sleep(ttl / 3)
		if ok, err := a.RenewLease(ctx, "poller", f1, ttl); err != nil || !ok {
			t.Fatalf("renew: %v, %v", ok, err)
		}
	}
	if f, _ := b.AcquireLease(ctx, "poller", ttl); f != 0 {
		t.Fatal("acquired a renewed lease")
	}
	// Expired, it is taken with a larger token; the old one is powerless.
	time.Sleep(ttl + 150*time.Millisecond)
	if ok, err := a.RenewLease(ctx, "poller", f1, ttl); err != nil || ok {
		t.Fatalf("renew of an expired lease: %v, %v", ok, err)
	}
	f2, err := b.AcquireLease(ctx, "poller", ttl)
	if err != nil || f2 <= f1 {
		t.Fatalf("acquire after expiry: %d, %v; want > %d", f2, err, f1)
	}
	if ok, err := a.RenewLease(ctx, "poller", f1, ttl); err != nil || ok {
		t.Fatalf("renew with a stale token: %v, %v", ok, err)
	}
	if err := a.ReleaseLease(ctx, "poller", f1); err != nil {
		t.Fatal(err)
	}
	if f, _ := a.AcquireLease(ctx, "poller", ttl); f != 0 {
		t.Fatal("a stale token released the holder's lease")
	}
	// Released, it is free at once.
	if err := b.ReleaseLease(ctx, "poller", f2); err != nil {
		t.Fatal(err)
	}
	if f3, err := a.AcquireLease(ctx, "poller", ttl); err != nil || f3 <= f2 {
		t.Fatalf("acquire after release: %d, %v; want > %d", f3, err, f2)
	}
}
