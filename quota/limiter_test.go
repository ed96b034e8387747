package quota_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/quota"
)

// flaky is a QuotaStore over inmem that fails (or hangs until its context
// ends) while down is set, and counts the calls that reach it.
type flaky struct {
	sluice.QuotaStore
	down  atomic.Bool
	hang  bool
	calls atomic.Int64
}

func (f *flaky) check(ctx context.Context) error {
	f.calls.Add(1)
	if !f.down.Load() {
		return nil
	}
	if f.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return errors.New("connection refused")
}

func (f *flaky) Take(ctx context.Context, key string, p *sluice.Policy, n int64, now time.Time) (sluice.Decision, error) {
	if err := f.check(ctx); err != nil {
		return sluice.Decision{}, err
	}
	return f.QuotaStore.Take(ctx, key, p, n, now)
}

func (f *flaky) Refund(ctx context.Context, key string, p *sluice.Policy, n int64, at, now time.Time) error {
	if err := f.check(ctx); err != nil {
		return err
	}
	return f.QuotaStore.Refund(ctx, key, p, n, at, now)
}

var twoPerHour = sluice.Policy{Windows: []sluice.Window{{Name: "hour", Length: time.Hour, Limit: 2}}}

func newFlaky(t *testing.T) *flaky {
	s := inmem.New(inmem.Options{})
	t.Cleanup(func() { s.Close() })
	return &flaky{QuotaStore: s}
}

func TestBreaker(t *testing.T) {
	ctx := context.Background()
	f := newFlaky(t)
	var fallbacks atomic.Int64
	l := &quota.Limiter{Store: f, OnError: quota.FailOpen, BreakerFailures: 3, BreakerCooldown: 50 * time.Millisecond,
		OnFallback: func(op string, err error) { fallbacks.Add(1) }}
	f.down.Store(true)
	for i := range 10 {
		d, err := l.Take(ctx, "k", &twoPerHour, 1)
		if err != nil || !d.Allowed {
			t.Fatalf("take %d while down, fail-open: %+v, %v", i, d, err)
		}
	}
	if got := f.calls.Load(); got != 3 {
		t.Fatalf("%d calls reached the dead store, want 3 (then the breaker opens)", got)
	}
	if fallbacks.Load() != 10 || !l.BreakerOpen() {
		t.Fatalf("fallbacks %d (want 10), breaker open %v", fallbacks.Load(), l.BreakerOpen())
	}
	// Back up: after the cool-down one probe closes the breaker.
	f.down.Store(false)
	time.Sleep(60 * time.Millisecond)
	if d, err := l.Take(ctx, "k", &twoPerHour, 1); err != nil || !d.Allowed || d.N != 1 {
		t.Fatalf("after recovery: %+v, %v", d, err)
	}
	if l.BreakerOpen() {
		t.Fatal("breaker still open after a successful probe")
	}
}

func TestTimeoutClosed(t *testing.T) {
	f := newFlaky(t)
	f.hang = true
	f.down.Store(true)
	l := &quota.Limiter{Store: f, OnError: quota.FailClosed, Timeout: 20 * time.Millisecond}
	start := time.Now()
	_, err := l.Take(context.Background(), "k", &twoPerHour, 1)
	if sluice.ErrorCode(err) != sluice.EUNAVAILABLE {
		t.Fatalf("err = %v, want EUNAVAILABLE", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("took %v with a 20ms timeout", el)
	}
}

// TestLocalRefund: a decision made by the fallback store is refunded there,
// even once the main store is back.
func TestLocalRefund(t *testing.T) {
	ctx := context.Background()
	f := newFlaky(t)
	local := inmem.New(inmem.Options{})
	defer local.Close()
	l := &quota.Limiter{Store: f, OnError: quota.FailLocal, Fallback: local}
	f.down.Store(true)
	d, err := l.Take(ctx, "k", &twoPerHour, 2)
	if err != nil || !d.Allowed {
		t.Fatalf("local take: %+v, %v", d, err)
	}
	f.down.Store(false)
	if err := l.Refund(ctx, "k", &twoPerHour, 2, d); err != nil {
		t.Fatal(err)
	}
	if p, _ := local.Peek(ctx, "k", &twoPerHour, time.Now()); p.Windows[0].Remaining != 2 {
		t.Fatalf("fallback store remaining %d after the refund, want 2", p.Windows[0].Remaining)
	}
	if f.calls.Load() != 1 {
		t.Fatalf("the refund went to the main store")
	}
}

func TestRejectionCache(t *testing.T) {
	ctx := context.Background()
	f := newFlaky(t)
	now := time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)
	l := &quota.Limiter{Store: f, RejectionCacheSize: 10, Now: func() time.Time { return now }}
	for range 2 {
		l.Take(ctx, "k", &twoPerHour, 1)
	}
	d1, _ := l.Take(ctx, "k", &twoPerHour, 1)
	calls := f.calls.Load()
	now = now.Add(10 * time.Minute)
	d2, err := l.Take(ctx, "k", &twoPerHour, 1)
	if err != nil || d2.Allowed || f.calls.Load() != calls {
		t.Fatalf("second rejection: %+v, %v; store calls %d -> %d, want none", d2, err, calls, f.calls.Load())
	}
	if d2.RetryAfter != d1.RetryAfter-10*time.Minute || d2.Windows[0] != d1.Windows[0] {
		t.Fatalf("cached rejection: retry %v (first %v), windows %+v vs %+v", d2.RetryAfter, d1.RetryAfter, d2.Windows[0], d1.Windows[0])
	}
	// Admissions are never cached; once the wait is over the store decides.
	now = now.Add(d2.RetryAfter)
	if d, _ := l.Take(ctx, "k", &twoPerHour, 1); !d.Allowed || f.calls.Load() != calls+1 {
		t.Fatalf("after the wait: %+v", d)
	}
}
