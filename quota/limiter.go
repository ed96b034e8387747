package quota

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice"
)

// Mode is whether a Limiter rejects.
type Mode uint8

const (
	// Enforce rejects requests that do not fit.
	Enforce Mode = iota
	// Shadow decides and counts like Enforce, and logs what it would have
	// rejected, but lets every request through. A request that would have
	// been rejected is not charged: the counters stay at the limit.
	Shadow
)

// ParseMode parses "enforce" or "shadow".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "enforce":
		return Enforce, nil
	case "shadow":
		return Shadow, nil
	}
	return 0, errors.New(`unknown mode (want enforce or shadow)`)
}

// FailurePolicy is what a Limiter does when its store cannot decide.
type FailurePolicy uint8

const (
	// FailClosed answers with an EUNAVAILABLE error: no request goes
	// through unchecked.
	FailClosed FailurePolicy = iota
	// FailOpen admits the request unchecked.
	FailOpen
	// FailLocal decides with the Limiter's Fallback store instead.
	FailLocal
)

// ParseFailurePolicy parses "closed", "open" or "local".
func ParseFailurePolicy(s string) (FailurePolicy, error) {
	switch s {
	case "closed":
		return FailClosed, nil
	case "open":
		return FailOpen, nil
	case "local":
		return FailLocal, nil
	}
	return 0, errors.New(`unknown failure policy (want closed, open or local)`)
}

// Limiter implements sluice.QuotaService over a sluice.QuotaStore, deciding
// at the current time. Its fields must not change once it is in use; it is
// safe for concurrent use. The zero values of the optional fields keep the
// plain behaviour: no timeout, a breaker with the defaults, no rejection
// cache.
//
// # Failures
//
// Each call to Store runs under Timeout. A call that fails (an error, a
// timeout) is answered by the failure policy OnError: FailClosed returns an
// EUNAVAILABLE error, FailOpen admits without counting, FailLocal decides
// with Fallback. Every such answer calls OnFallback and logs a warning (at
// most one line a second; the rest are counted in the next line).
//
// After BreakerFailures consecutive failures the breaker opens: for
// BreakerCooldown no call goes to Store and every decision is the failure
// policy's at once, so that a dead store costs no latency. Then one call
// probes the store; its success closes the breaker (the store is back, no
// restart needed), its failure opens it for another cooldown.
//
// Refunds of decisions that Fallback made go to Fallback: the Limiter
// remembers those decisions (key and Decision.Time, for FallbackMemory) in
// a bounded table.
//
// # Rejection cache
//
// With RejectionCacheSize set, a rejection by Store is remembered, keyed by key, policy and n, until the
// instant it says the request could fit (by this process's clock: the
// answer's receipt plus RetryAfter, so one round trip late rather than
// early); the same request until then is rejected locally with the
// same figures (which may lag: another window's Remaining may have grown
// meanwhile) and a RetryAfter counted down, without a round trip.
// Admissions are never cached and always go to Store, so no instance can
// over-admit; a refund or reset made through another instance may make a
// cached rejection stricter than Store would be, until it expires (or
// RejectionCacheTTL has passed). Reset and Refund through this Limiter
// forget the key's cached rejections, and publish InvalidateQuota on Bus so
// that the other instances' Limiters forget theirs (Invalidate) at once.
type Limiter struct {
	Store    sluice.QuotaStore
	Mode     Mode
	OnError  FailurePolicy
	Fallback sluice.QuotaStore // for FailLocal
	Logger   *slog.Logger      // nil: slog.Default()
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	// Timeout bounds each call to Store; 0 means none.
	Timeout time.Duration
	// BreakerFailures and BreakerCooldown tune the circuit breaker; 0
	// means DefaultBreakerFailures and DefaultBreakerCooldown.
	BreakerFailures int
	BreakerCooldown time.Duration
	// RejectionCacheSize bounds the rejection cache; 0 turns it off. A
	// store in this process answers as fast as the cache, and exactly:
	// only a remote store wants one (DefaultRejectionCacheSize).
	RejectionCacheSize int
	// RejectionCacheTTL bounds how long a rejection stays cached; 0 means
	// until the instant it says the request may fit. It bounds how long a
	// reset or refund made elsewhere goes unseen if Bus lost its message
	// (DefaultRejectionCacheTTL).
	RejectionCacheTTL time.Duration
	// Bus, if set, carries this Limiter's resets and refunds to the other
	// instances (see Invalidate). A failed Publish is logged; the others
	// then see the change within their RejectionCacheTTL.
	Bus sluice.InvalidationBus
	// OnFallback, if set, is called once per call that Store could not
	// answer, with the operation ("take", "peek", "refund") and the error
	// (ErrBreakerOpen while the breaker is open). It must not block.
	OnFallback func(op string, err error)

	init       sync.Once
	brk        breaker
	rejected   rejections
	local      localDecisions
	lastLog    atomic.Int64 // Unix nanoseconds of the last fallback log line
	suppressed atomic.Int64 // fallback log lines not written since
	mode       atomic.Int64 // 1 + the Mode set by SetMode; 0: the Mode field (mode.go)
}

// ErrBreakerOpen is the error a Limiter reports for calls it did not make
// because the store failed repeatedly.
var ErrBreakerOpen = errors.New("quota store circuit breaker open")

var (
	_ sluice.QuotaService = (*Limiter)(nil)
	_ sluice.QuotaSyncer  = (*Limiter)(nil)
)

var errUnavailable = &sluice.Error{Code: sluice.EUNAVAILABLE, Message: "The quota service is unavailable; please retry shortly."}

func (l *Limiter) setup() {
	l.init.Do(func() {
		l.brk.failures, l.brk.cooldown = l.BreakerFailures, l.BreakerCooldown
		l.rejected.size = l.RejectionCacheSize
		l.rejected.maxAge = l.RejectionCacheTTL
	})
}

func (l *Limiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

func (l *Limiter) logger() *slog.Logger {
	if l.Logger != nil {
		return l.Logger
	}
	return slog.Default()
}

// call runs f against Store under the breaker and the timeout.
func (l *Limiter) call(ctx context.Context, f func(ctx context.Context) error) error {
	if !l.brk.allow(time.Now()) {
		return ErrBreakerOpen
	}
	cctx, cancel := ctx, context.CancelFunc(func() {})
	if l.Timeout > 0 {
		cctx, cancel = context.WithTimeout(ctx, l.Timeout)
	}
	err := f(cctx)
	cancel()
	// The store answered (a request it refused as invalid included), or
	// it did not; a request the caller gave up on says nothing either way,
	// and a probe that says nothing leaves the breaker open.
	outcome := failed
	switch {
	case err == nil || sluice.ErrorCode(err) == sluice.EINVALID:
		outcome = answered
	case ctx.Err() != nil:
		outcome = unknown
	}
	l.brk.done(time.Now(), outcome)
	return err
}

// Take decides a request of n units for key under p. A policy without any
// limit goes to the store too, which counts what it uses (never rejecting).
func (l *Limiter) Take(ctx context.Context, key string, p *sluice.Policy, n int64) (sluice.Decision, error) {
	l.setup()
	now := l.now()
	var req string // the rejection cache's key, built only if there is one
	if l.rejected.size > 0 {
		req = requestKey(p, n)
	}
	d, cached, gen := l.rejected.get(key, req, now)
	if !cached {
		var err error
		err = l.call(ctx, func(ctx context.Context) error {
			d, err = l.Store.Take(ctx, key, p, n, now)
			return err
		})
		if err == nil {
			l.rejected.put(key, req, d, now, l.now(), gen)
		} else if sluice.ErrorCode(err) == sluice.EINVALID {
			return d, err
		} else if p.Unlimited() {
			// Nothing to enforce: admit without counting rather than
			// fail a plan without limits because the store is away.
			l.fallback(ctx, "take", err)
			d = unlimited(p, now)
		} else {
			var local bool
			if d, local, err = l.fail(ctx, "take", err, func(s sluice.QuotaStore) (sluice.Decision, error) {
				return s.Take(ctx, key, p, n, now)
			}); err != nil {
				return d, err
			}
			if local && d.Allowed && n > 0 {
				l.local.add(key, d.Time, now)
			}
		}
	}
	if !d.Allowed && l.currentMode() == Shadow {
		l.logger().LogAttrs(ctx, slog.LevelInfo, "shadow: would reject",
			slog.String("key", key), slog.Int64("n", n),
			slog.String("window", d.Windows[max(d.Blocking, 0)].Name),
			slog.Int64("retry_after", d.RetryAfterSeconds()))
		d.Allowed, d.Shadow = true, true
	}
	return d, nil
}

// Refund gives back the n units that the admitted decision d charged. It
// does nothing for decisions that charged nothing (rejections, shadow
// admissions, fail-open admissions). A decision that
// Fallback made is refunded there.
func (l *Limiter) Refund(ctx context.Context, key string, p *sluice.Policy, n int64, d sluice.Decision) error {
	l.setup()
	if !d.Charged() {
		return nil
	}
	now := l.now()
	if l.Fallback != nil && l.local.take(key, d.Time, now) {
		return l.Fallback.Refund(ctx, key, p, n, d.Time, now)
	}
	err := l.call(ctx, func(ctx context.Context) error {
		return l.Store.Refund(ctx, key, p, n, d.Time, now)
	})
	if err != nil {
		l.fallback(ctx, "refund", err)
		return err
	}
	l.rejected.forget(key)
	l.publish(ctx, key)
	return nil
}

// Peek returns the figures of every window of key without charging.
func (l *Limiter) Peek(ctx context.Context, key string, p *sluice.Policy) (sluice.Decision, error) {
	l.setup()
	now := l.now()
	var d sluice.Decision
	err := l.call(ctx, func(ctx context.Context) error {
		var err error
		d, err = l.Store.Peek(ctx, key, p, now)
		return err
	})
	if err != nil {
		d, _, err = l.fail(ctx, "peek", err, func(s sluice.QuotaStore) (sluice.Decision, error) {
			return s.Peek(ctx, key, p, now)
		})
	}
	return d, err
}

// Sync returns once the counters of key survive a crash of this process
// (sluice.QuotaSyncer): at once unless Store keeps charges in memory
// between writes, as the embedded store does between flushes. A charge
// made by Fallback is not synced: it is this instance's memory only.
func (l *Limiter) Sync(ctx context.Context, key string) error {
	if s, ok := l.Store.(sluice.QuotaSyncer); ok {
		return s.Sync(ctx, key)
	}
	return nil
}

// Reset forgets the counters of key. The store's call runs under Timeout,
// not under the breaker: an operator's reset is tried even while the
// decisions fail over.
func (l *Limiter) Reset(ctx context.Context, key string) error {
	l.setup()
	l.rejected.forget(key)
	sctx, cancel := ctx, context.CancelFunc(func() {})
	if l.Timeout > 0 {
		sctx, cancel = context.WithTimeout(ctx, l.Timeout)
	}
	err := l.Store.Reset(sctx, key)
	cancel()
	if l.Fallback != nil {
		if ferr := l.Fallback.Reset(ctx, key); err == nil {
			err = ferr
		}
	}
	l.rejected.forget(key) // again: a rejection cached while the store reset
	if err == nil {
		l.publish(ctx, key)
	}
	return err
}

// Invalidate applies an invalidation received from another instance:
// InvalidateQuota forgets the key's cached rejections, InvalidateAll all of
// them; other kinds are not the Limiter's. It does not block.
func (l *Limiter) Invalidate(inv sluice.Invalidation) {
	l.setup()
	switch inv.Kind {
	case sluice.InvalidateQuota:
		l.rejected.forget(inv.ID)
	case sluice.InvalidateAll:
		l.rejected.clear()
	}
}

// publish tells the other instances that key's counters changed, within
// Timeout; a failure is logged, not returned: the change was made.
func (l *Limiter) publish(ctx context.Context, key string) {
	if l.Bus == nil {
		return
	}
	if l.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.Timeout)
		defer cancel()
	}
	if err := l.Bus.Publish(ctx, sluice.Invalidation{Kind: sluice.InvalidateQuota, ID: key}); err != nil {
		l.logger().LogAttrs(ctx, slog.LevelWarn, "quota: publishing an invalidation failed; other instances see the change within their rejection cache's TTL",
			slog.String("key", key), slog.String("error", err.Error()))
	}
}

// Ping reports whether the store answers (within Timeout); a store without
// a Ping method is taken to be reachable. It ignores the breaker, so that
// /readyz tells the truth about the store.
func (l *Limiter) Ping(ctx context.Context) error {
	if p, ok := l.Store.(interface{ Ping(context.Context) error }); ok {
		if l.Timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, l.Timeout)
			defer cancel()
		}
		return p.Ping(ctx)
	}
	return nil
}

// BreakerOpen reports whether the circuit breaker is open: the store failed
// repeatedly and calls are answered by the failure policy.
func (l *Limiter) BreakerOpen() bool { return l.brk.open() }

// fail applies the failure policy to a store error; local reports that
// Fallback decided.
func (l *Limiter) fail(ctx context.Context, op string, err error, retry func(sluice.QuotaStore) (sluice.Decision, error)) (d sluice.Decision, local bool, _ error) {
	if ctx.Err() != nil {
		return sluice.Decision{}, false, ctx.Err()
	}
	l.fallback(ctx, op, err)
	switch l.OnError {
	case FailOpen:
		return sluice.Decision{Allowed: true, Time: l.now(), Blocking: -1}, false, nil
	case FailLocal:
		if l.Fallback != nil {
			d, err := retry(l.Fallback)
			return d, err == nil, err
		}
	}
	return sluice.Decision{}, false, errUnavailable
}

// fallback reports a call the store could not answer: OnFallback, and a
// log line at most once a second.
func (l *Limiter) fallback(ctx context.Context, op string, err error) {
	if l.OnFallback != nil {
		l.OnFallback(op, err)
	}
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(time.Second) || !l.lastLog.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return
	}
	policy := [...]string{FailClosed: "closed", FailOpen: "open", FailLocal: "local"}[l.OnError]
	l.logger().LogAttrs(ctx, slog.LevelWarn, "quota store failed",
		slog.String("op", op), slog.String("error", err.Error()), slog.String("on_store_error", policy),
		slog.Bool("breaker_open", l.brk.open()), slog.Int64("suppressed", l.suppressed.Swap(0)))
}

// localDecisions remembers the admissions that Fallback made, so that their
// refunds go there. Bounded: entries older than FallbackMemory are
// dropped, and at most maxLocalDecisions are kept.
type localDecisions struct {
	mu sync.Mutex
	m  map[localDecision]time.Time // local clock when made
}

type localDecision struct {
	key string
	at  int64 // Decision.Time in Unix nanoseconds
}

// FallbackMemory is how long a Limiter remembers that Fallback made an
// admission, for its refund.
const FallbackMemory = 10 * time.Minute

const maxLocalDecisions = 100_000

func (t *localDecisions) add(key string, at, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[localDecision]time.Time)
	}
	if len(t.m) >= maxLocalDecisions {
		for k, made := range t.m {
			if now.Sub(made) > FallbackMemory || len(t.m) >= maxLocalDecisions {
				delete(t.m, k)
			}
		}
	}
	t.m[localDecision{key, at.UnixNano()}] = now
}

// take reports whether Fallback made the admission, and forgets it.
func (t *localDecisions) take(key string, at, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := localDecision{key, at.UnixNano()}
	made, ok := t.m[k]
	if ok {
		delete(t.m, k)
	}
	return ok && now.Sub(made) <= FallbackMemory
}

// unlimited is the decision for a policy without limits that the store
// could not count: admitted, nothing counted.
func unlimited(p *sluice.Policy, now time.Time) sluice.Decision {
	d := sluice.Decision{Allowed: true, Time: now, Blocking: -1}
	for i, w := range p.Windows {
		d.Windows[i] = sluice.WindowStatus{Name: w.Name, Length: w.Length, Limit: sluice.Unlimited}
	}
	return d
}
