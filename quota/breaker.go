package quota

import (
	"sync"
	"time"
)

// Breaker defaults.
const (
	DefaultBreakerFailures = 5
	DefaultBreakerCooldown = time.Second
)

// breaker is a circuit breaker: closed, it lets every call through; after
// failures consecutive failures it opens and lets none through for
// cooldown; then it lets one probe through (half-open) and closes again if
// that succeeds, or opens for another cooldown if it fails. Safe for
// concurrent use; the zero value is a closed breaker with the defaults.
type breaker struct {
	failures int           // 0: DefaultBreakerFailures
	cooldown time.Duration // 0: DefaultBreakerCooldown

	mu      sync.Mutex
	fails   int       // consecutive failures
	openTil time.Time // zero: closed
	probing bool      // a half-open probe is in flight
}

// allow reports whether a call may go to the store at now. A true answer
// while the breaker is open after its cooldown makes that call the probe,
// which must be followed by done.
func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openTil.IsZero() {
		return true
	}
	if now.Before(b.openTil) || b.probing {
		return false
	}
	b.probing = true
	return true
}

// done records the outcome of a call that allow let through.
func (b *breaker) done(now time.Time, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
	if ok {
		b.fails, b.openTil = 0, time.Time{}
		return
	}
	b.fails++
	limit := b.failures
	if limit <= 0 {
		limit = DefaultBreakerFailures
	}
	if b.fails >= limit || !b.openTil.IsZero() {
		cool := b.cooldown
		if cool <= 0 {
			cool = DefaultBreakerCooldown
		}
		b.openTil = now.Add(cool)
	}
}

// open reports whether the breaker is open (or half-open).
func (b *breaker) open() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.openTil.IsZero()
}
