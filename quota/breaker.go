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

// outcome is what a call that allow let through says of the store.
type outcome uint8

const (
	answered outcome = iota // the store answered: it is healthy
	failed                  // it failed or timed out
	unknown                 // the caller gave up first: no news
)

// done records the outcome of a call that allow let through. An unknown
// outcome changes nothing but ends the probe, if the call was one, so that
// the next call probes again: only an answer closes the breaker.
func (b *breaker) done(now time.Time, o outcome) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
	if o == unknown {
		return
	}
	if o == answered {
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
