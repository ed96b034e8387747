package quota

import (
	"context"
	"errors"
	"log/slog"
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
// safe for concurrent use.
type Limiter struct {
	Store    sluice.QuotaStore
	Mode     Mode
	OnError  FailurePolicy
	Fallback sluice.QuotaStore // for FailLocal
	Logger   *slog.Logger      // nil: slog.Default()
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

var _ sluice.QuotaService = (*Limiter)(nil)

var errUnavailable = &sluice.Error{Code: sluice.EUNAVAILABLE, Message: "The quota service is unavailable; please retry shortly."}

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

// Take decides a request of n units for key under p. A policy without any
// limit is admitted without asking the store.
func (l *Limiter) Take(ctx context.Context, key string, p *sluice.Policy, n int64) (sluice.Decision, error) {
	now := l.now()
	if p.Unlimited() {
		return unlimited(p, now), nil
	}
	d, err := l.Store.Take(ctx, key, p, n, now)
	if err != nil {
		if d, err = l.fail(ctx, "take", err, func(s sluice.QuotaStore) (sluice.Decision, error) {
			return s.Take(ctx, key, p, n, now)
		}); err != nil {
			return d, err
		}
	}
	if !d.Allowed && l.Mode == Shadow {
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
// admissions, unlimited policies, fail-open admissions).
func (l *Limiter) Refund(ctx context.Context, key string, p *sluice.Policy, n int64, d sluice.Decision) error {
	if !d.Allowed || d.Shadow || d.N == 0 || p.Unlimited() {
		return nil
	}
	now := l.now()
	err := l.Store.Refund(ctx, key, p, n, d.Time, now)
	if err != nil && l.OnError == FailLocal && l.Fallback != nil {
		return l.Fallback.Refund(ctx, key, p, n, d.Time, now)
	}
	return err
}

// Peek returns the figures of every window of key without charging.
func (l *Limiter) Peek(ctx context.Context, key string, p *sluice.Policy) (sluice.Decision, error) {
	now := l.now()
	if p.Unlimited() {
		return unlimited(p, now), nil
	}
	d, err := l.Store.Peek(ctx, key, p, now)
	if err != nil {
		return l.fail(ctx, "peek", err, func(s sluice.QuotaStore) (sluice.Decision, error) {
			return s.Peek(ctx, key, p, now)
		})
	}
	return d, nil
}

// Reset forgets the counters of key.
func (l *Limiter) Reset(ctx context.Context, key string) error {
	err := l.Store.Reset(ctx, key)
	if l.Fallback != nil {
		if ferr := l.Fallback.Reset(ctx, key); err == nil {
			err = ferr
		}
	}
	return err
}

// Ping reports whether the store answers; a store without a Ping method is
// taken to be reachable.
func (l *Limiter) Ping(ctx context.Context) error {
	if p, ok := l.Store.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx)
	}
	return nil
}

// fail applies the failure policy to a store error.
func (l *Limiter) fail(ctx context.Context, op string, err error, retry func(sluice.QuotaStore) (sluice.Decision, error)) (sluice.Decision, error) {
	if ctx.Err() != nil {
		return sluice.Decision{}, ctx.Err()
	}
	l.logger().LogAttrs(ctx, slog.LevelWarn, "quota store failed", slog.String("op", op), slog.String("error", err.Error()))
	switch l.OnError {
	case FailOpen:
		return sluice.Decision{Allowed: true, Time: l.now(), Blocking: -1}, nil
	case FailLocal:
		if l.Fallback != nil {
			return retry(l.Fallback)
		}
	}
	return sluice.Decision{}, errUnavailable
}

// unlimited is the decision for a policy without limits.
func unlimited(p *sluice.Policy, now time.Time) sluice.Decision {
	d := sluice.Decision{Allowed: true, Time: now, Blocking: -1, N: len(p.Windows)}
	for i, w := range p.Windows {
		d.Windows[i] = sluice.WindowStatus{Name: w.Name, Length: w.Length, Limit: sluice.Unlimited}
	}
	return d
}
