package quota_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

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

func (f *flaky) Reset(ctx context.Context, key string) error {
	if err := f.check(ctx); err != nil {
		return err
	}
	return f.QuotaStore.Reset(ctx, key)
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

// TestBreakerProbeCallerGaveUp: a probe whose caller gave up before the
// store answered says nothing of the store: the breaker stays open, and
// the next call probes again.
func TestBreakerProbeCallerGaveUp(t *testing.T) {
	f := newFlaky(t)
	f.hang = true
	l := &quota.Limiter{Store: f, OnError: quota.FailOpen, BreakerFailures: 1, BreakerCooldown: time.Millisecond,
		Timeout: time.Minute}
	f.down.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	l.Take(ctx, "k", &twoPerHour, 1) // times out on the caller's deadline: no news
	cancel()
	if l.BreakerOpen() {
		t.Fatal("breaker opened by a call whose caller gave up")
	}
	f.hang = false // a plain failure opens it
	l.Take(context.Background(), "k", &twoPerHour, 1)
	if !l.BreakerOpen() {
		t.Fatal("breaker closed after a failure")
	}
	f.hang = true
	time.Sleep(5 * time.Millisecond) // past the cool-down
	calls := f.calls.Load()
	gone, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	if _, err := l.Take(gone, "k", &twoPerHour, 1); err == nil {
		t.Fatal("a take whose caller gave up answered")
	}
	if f.calls.Load() != calls+1 {
		t.Fatalf("the probe did not reach the store")
	}
	if !l.BreakerOpen() {
		t.Fatal("a probe whose caller gave up closed the breaker: the store never answered")
	}
	// The next call probes again; the store is back and closes it.
	f.down.Store(false)
	if d, err := l.Take(context.Background(), "k", &twoPerHour, 1); err != nil || !d.Allowed || l.BreakerOpen() {
		t.Fatalf("probe after recovery: %+v, %v; breaker open %v", d, err, l.BreakerOpen())
	}
}

// TestRejectionCacheEviction: a full cache evicts the rejection put longest
// ago, so the newest size rejections are all still cached.
func TestRejectionCacheEviction(t *testing.T) {
	ctx := context.Background()
	f := newFlaky(t)
	now := time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)
	const size = 50
	l := &quota.Limiter{Store: f, RejectionCacheSize: size, Now: func() time.Time { return now }}
	key := func(i int) string { return "k" + strconv.Itoa(i) }
	for i := range 3 * size {
		for range 3 { // two admitted, one rejected and cached
			l.Take(ctx, key(i), &twoPerHour, 1)
		}
	}
	calls := f.calls.Load()
	for i := 2 * size; i < 3*size; i++ {
		if d, _ := l.Take(ctx, key(i), &twoPerHour, 1); d.Allowed {
			t.Fatalf("key %d admitted", i)
		}
	}
	if got := f.calls.Load() - calls; got != 0 {
		t.Fatalf("%d of the newest %d rejections went to the store, want 0 (all cached)", got, size)
	}
	// The oldest were evicted: they go to the store.
	if l.Take(ctx, key(0), &twoPerHour, 1); f.calls.Load() != calls+1 {
		t.Fatalf("the oldest rejection is still cached in a full cache")
	}
}

// bus is an InvalidationBus that records what is published.
type bus struct {
	mu  sync.Mutex
	got []sluice.Invalidation
}

func (b *bus) Publish(ctx context.Context, inv sluice.Invalidation) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got = append(b.got, inv)
	return nil
}

func (b *bus) Subscribe(fn func(sluice.Invalidation)) func() { return func() {} }

// TestRejectionCacheInvalidation: two Limiters (two instances) on one
// store. A reset or refund through one is published; the other forgets its
// cached rejections on receiving it; InvalidateAll forgets every one; with
// a TTL, a rejection is cached no longer than it.
func TestRejectionCacheInvalidation(t *testing.T) {
	ctx := context.Background()
	f := newFlaky(t)
	now := time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	var pub bus
	a := &quota.Limiter{Store: f, RejectionCacheSize: 10, Now: clock, Bus: &pub}
	b := &quota.Limiter{Store: f, RejectionCacheSize: 10, Now: clock, RejectionCacheTTL: time.Second}
	quotaKey := sluice.Invalidation{Kind: sluice.InvalidateQuota, ID: "k"}
	var ds []sluice.Decision
	for range 3 {
		d, _ := a.Take(ctx, "k", &twoPerHour, 1)
		ds = append(ds, d)
	}
	steps := []struct {
		name    string
		do      func()
		allowed bool // b's next take of k
		store   bool // went to the store
	}{
		{"b rejected, from the store", func() {}, false, true},
		{"b rejected, cached", func() {}, false, false},
		{"reset through a, message received", func() { a.Reset(ctx, "k"); b.Invalidate(quotaKey) }, true, true},
		{"b exhausts it again", func() { b.Take(ctx, "k", &twoPerHour, 1) }, false, true},
		{"cached", func() {}, false, false},
		{"another key's message", func() { b.Invalidate(sluice.Invalidation{Kind: sluice.InvalidateQuota, ID: "k2"}) }, false, false},
		{"an account's message", func() { b.Invalidate(sluice.Invalidation{Kind: sluice.InvalidateAccount, ID: "k"}) }, false, false},
		{"resubscribed: all", func() { b.Invalidate(sluice.Invalidation{Kind: sluice.InvalidateAll}) }, false, true},
		{"cached", func() {}, false, false},
		{"past b's TTL", func() { now = now.Add(time.Second) }, false, true},
		{"cached again", func() {}, false, false},
		{"refund through a, message received", func() {
			a.Refund(ctx, "k", &twoPerHour, 1, ds[0])
			b.Invalidate(quotaKey)
		}, true, true},
	}
	for _, s := range steps {
		s.do()
		calls := f.calls.Load()
		d, err := b.Take(ctx, "k", &twoPerHour, 1)
		if err != nil || d.Allowed != s.allowed || (f.calls.Load() > calls) != s.store {
			t.Fatalf("%s: allowed %v (want %v), store asked %v (want %v), err %v",
				s.name, d.Allowed, s.allowed, f.calls.Load() > calls, s.store, err)
		}
	}
	want := []sluice.Invalidation{quotaKey, quotaKey}
	if diff := cmp.Diff(want, pub.got); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
}

// TestResetTimeout: a reset on a store that hangs ends after Timeout.
func TestResetTimeout(t *testing.T) {
	f := newFlaky(t)
	f.hang = true
	f.down.Store(true)
	l := &quota.Limiter{Store: f, Timeout: 20 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- l.Reset(context.Background(), "k") }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a reset on a hung store succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a reset on a hung store still runs 5s later, with a 20ms timeout")
	}
}

// gated is a QuotaStore whose Takes wait for a value on gate while it is
// set.
type gated struct {
	sluice.QuotaStore
	gate  chan struct{}
	calls atomic.Int64
}

func (g *gated) Take(ctx context.Context, key string, p *sluice.Policy, n int64, now time.Time) (sluice.Decision, error) {
	g.calls.Add(1)
	if g.gate != nil {
		<-g.gate
	}
	return g.QuotaStore.Take(ctx, key, p, n, now)
}

// TestRejectionDuringInvalidation: a rejection the store made before a
// reset, received after the reset's invalidation, is not cached: the next
// request asks the store again.
func TestRejectionDuringInvalidation(t *testing.T) {
	ctx := context.Background()
	g := &gated{QuotaStore: newFlaky(t)}
	l := &quota.Limiter{Store: g, RejectionCacheSize: 10}
	for range 2 {
		l.Take(ctx, "k", &twoPerHour, 1)
	}
	g.gate = make(chan struct{})
	done := make(chan sluice.Decision)
	go func() { d, _ := l.Take(ctx, "k", &twoPerHour, 1); done <- d }()
	for g.calls.Load() != 3 {
		time.Sleep(time.Millisecond)
	}
	l.Invalidate(sluice.Invalidation{Kind: sluice.InvalidateQuota, ID: "k"}) // a reset elsewhere
	g.gate <- struct{}{}
	if d := <-done; d.Allowed {
		t.Fatal("the third take was admitted")
	}
	g.gate = nil
	l.Take(ctx, "k", &twoPerHour, 1)
	if got := g.calls.Load(); got != 4 {
		t.Fatalf("the take after the invalidation was answered from the cache (store calls %d, want 4)", got)
	}
}

// slowStore answers every Take a round trip after it was asked, by the
// test's clock, with a rejection whose RetryAfter counts from its answer.
type slowStore struct {
	sluice.QuotaStore
	clock *time.Time
	rtt   time.Duration
	retry time.Duration
}

func (s *slowStore) Take(ctx context.Context, key string, p *sluice.Policy, n int64, now time.Time) (sluice.Decision, error) {
	*s.clock = s.clock.Add(s.rtt)
	return sluice.Decision{Time: *s.clock, RetryAfter: s.retry, Blocking: 0, N: 1,
		Windows: [sluice.MaxWindows]sluice.WindowStatus{{Name: "hour", Length: time.Hour, Limit: 2, Reset: s.clock.Add(s.retry)}}}, nil
}

// TestRejectionCacheNeverEarly: a cached rejection counts its wait from
// when the store's answer came, so the retry_after it tells later is never
// shorter than the store's (a retry at the time it gives succeeds). Before,
// it counted from before the call: one round trip early, which a whole
// second of rounding did not always cover (scripts/accuracy saw 18 ms).
func TestRejectionCacheNeverEarly(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)
	s := &slowStore{clock: &now, rtt: 100 * time.Millisecond, retry: 2 * time.Second}
	l := &quota.Limiter{Store: s, RejectionCacheSize: 10, Now: func() time.Time { return now }}
	d, err := l.Take(ctx, "k", &twoPerHour, 1)
	if err != nil || d.Allowed {
		t.Fatalf("first: %+v, %v", d, err)
	}
	fits := now.Add(s.retry) // the store's answer came at now
	now = now.Add(900 * time.Millisecond)
	d, err = l.Take(ctx, "k", &twoPerHour, 1) // from the cache
	if err != nil || d.Allowed {
		t.Fatalf("cached: %+v, %v", d, err)
	}
	if told := now.Add(time.Duration(d.RetryAfterSeconds()) * time.Second); told.Before(fits) {
		t.Fatalf("cached rejection says retry at %v, %v before the request fits", told.Format("15:04:05.000"), fits.Sub(told))
	}
}

// startStore decides every Take at the instant it is asked, by the test's
// clock, and answers a round trip later; it admits from boundary on.
type startStore struct {
	sluice.QuotaStore
	clock    *time.Time
	rtt      time.Duration
	boundary time.Time
	calls    int
}

func (s *startStore) Take(ctx context.Context, key string, p *sluice.Policy, n int64, now time.Time) (sluice.Decision, error) {
	s.calls++
	at := *s.clock
	*s.clock = at.Add(s.rtt)
	d := sluice.Decision{Allowed: !at.Before(s.boundary), Time: at, Blocking: -1, N: 1,
		Windows: [sluice.MaxWindows]sluice.WindowStatus{{Name: "hour", Length: time.Hour, Limit: 2, Reset: s.boundary}}}
	if !d.Allowed {
		d.RetryAfter, d.Blocking = s.boundary.Sub(at), 0
	}
	return d, nil
}

// TestRejectionCacheNeverFalse: a store that decided at the start of the
// call counted its RetryAfter from there, so a cached rejection stops
// answering at the call's start plus RetryAfter, where the request may
// already fit: the store decides from then on, while the cached answers
// before tell the later bound (TestRejectionCacheNeverEarly). Before, the
// cache refused for a round trip past the window's end (scripts/accuracy
// saw a false refusal 3 ms into a calendar window).
func TestRejectionCacheNeverFalse(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)
	s := &startStore{clock: &now, rtt: 100 * time.Millisecond, boundary: now.Add(time.Second)}
	l := &quota.Limiter{Store: s, RejectionCacheSize: 10, Now: func() time.Time { return now }}
	if d, err := l.Take(ctx, "k", &twoPerHour, 1); err != nil || d.Allowed {
		t.Fatalf("first: %+v, %v", d, err)
	}
	now = now.Add(400 * time.Millisecond)
	d, err := l.Take(ctx, "k", &twoPerHour, 1)
	if err != nil || d.Allowed || s.calls != 1 {
		t.Fatalf("before the boundary: %+v, %v, store calls %d (want a cached rejection)", d, err, s.calls)
	}
	if told := now.Add(d.RetryAfter); told.Before(s.boundary) {
		t.Fatalf("cached rejection says retry at %v, before the boundary %v", told.Format("15:04:05.000"), s.boundary.Format("15:04:05.000"))
	}
	now = s.boundary.Add(10 * time.Millisecond)
	if d, err := l.Take(ctx, "k", &twoPerHour, 1); err != nil || !d.Allowed {
		t.Fatalf("10 ms past the boundary: %+v, %v, store calls %d (want admitted by the store)", d, err, s.calls)
	}
}

// TestRejectionCacheExactSeconds: a cached rejection tells the whole
// seconds the store would tell (CONTRACT.md §2: a retry sent then
// succeeds, one sent a second earlier is rejected), though the cache only
// knows that the request fits from some instant within a round trip. Where
// that round trip straddles a whole second, the store is asked.
func TestRejectionCacheExactSeconds(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)
	now := t0
	s := &startStore{clock: &now, rtt: 100 * time.Millisecond, boundary: t0.Add(3 * time.Second)}
	l := &quota.Limiter{Store: s, RejectionCacheSize: 10, Now: func() time.Time { return now }}
	const steps = 270
	for k := range steps {
		now = t0.Add(time.Duration(k) * 10 * time.Millisecond)
		at := now
		d, err := l.Take(ctx, "k", &twoPerHour, 1)
		if err != nil || d.Allowed {
			t.Fatalf("at +%v: %+v, %v", at.Sub(t0), d, err)
		}
		want := int64((s.boundary.Sub(at) + time.Second - 1) / time.Second)
		if got := d.RetryAfterSeconds(); got != want {
			t.Fatalf("at +%v: retry_after %d, want %d (the request fits at +%v)", at.Sub(t0), got, want, s.boundary.Sub(t0))
		}
	}
	// The round trip is a tenth of a second: the store is asked about a
	// tenth of the time, the cache answers the rest.
	if s.calls > steps/5 {
		t.Errorf("the store was asked %d times in %d takes", s.calls, steps)
	}
	t.Logf("store asked %d times in %d takes", s.calls, steps)
}
