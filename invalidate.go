package sluice

import (
	"context"
	"strings"
	"sync"
)

// InvalidationKind names what an Invalidation is about.
type InvalidationKind uint8

const (
	// InvalidateAll says that messages may have been lost (the bus has
	// just (re)subscribed): a receiver drops everything it caches. A bus
	// delivers it to its subscribers; nobody publishes it.
	InvalidateAll InvalidationKind = iota
	// InvalidateAccount: the account whose decimal id is ID changed (plan,
	// override, password, linked Telegram user).
	InvalidateAccount
	// InvalidateAPIKey: the API key whose id is ID changed (revoked).
	InvalidateAPIKey
	// InvalidateQuota: the counters of the quota key ID changed in a way
	// that may admit what was rejected (a reset, a refund).
	InvalidateQuota
)

var invalidationNames = [...]string{InvalidateAll: "all", InvalidateAccount: "account", InvalidateAPIKey: "api_key", InvalidateQuota: "quota"}

func (k InvalidationKind) String() string {
	if int(k) < len(invalidationNames) {
		return invalidationNames[k]
	}
	return "unknown"
}

// Invalidation tells the gateway instances that something they may cache
// changed. It carries ids only, never a secret or the new value: a
// receiver forgets and reads again from the store.
type Invalidation struct {
	Kind InvalidationKind
	ID   string
}

// InvalidationBus carries Invalidations between the gateway instances that
// share stores, so that a change made through one applies on all of them
// at once rather than when their caches' entries expire.
//
// Guarantees, which every implementation must keep:
//
//   - Best effort, at most once. A message can be lost (a subscriber
//     reconnecting, the bus down): caches keep a short TTL as the bound on
//     staleness, and the bus makes up for what it may have missed by
//     delivering InvalidateAll to every subscriber each time it
//     (re)subscribes, including the first time.
//   - A message published by an instance is not delivered back to that
//     instance's own subscribers: the publisher applies its change itself.
//     (Applying it twice would be harmless, only wasteful.)
//   - Callbacks of one Subscribe run one at a time, in the order the bus
//     received the messages, on a goroutine of the bus; they must not
//     block (forget an entry and return).
//
// Implementations are safe for concurrent use.
type InvalidationBus interface {
	// Publish sends inv to the other instances. An error means it may not
	// have been sent; the change then waits for the receivers' TTL.
	Publish(ctx context.Context, inv Invalidation) error
	// Subscribe calls fn with every Invalidation received from now on,
	// and with InvalidateAll on every (re)subscription. The returned
	// function stops the calls; fn is not called once it has returned.
	Subscribe(fn func(Invalidation)) (cancel func())
}

// EncodeInvalidation is the message that carries inv from the instance
// named origin (a name without spaces) over a bus: "v1 <origin> <kind>
// <id>".
func EncodeInvalidation(origin string, inv Invalidation) string {
	return "v1 " + origin + " " + inv.Kind.String() + " " + inv.ID
}

// DecodeInvalidation parses a message of EncodeInvalidation. A message of
// a kind it does not know (from a newer version) is InvalidateAll, which is
// always safe; one it cannot parse is not valid.
func DecodeInvalidation(msg string) (origin string, inv Invalidation, valid bool) {
	f := strings.SplitN(msg, " ", 4)
	if len(f) != 4 || f[0] != "v1" || f[1] == "" {
		return "", Invalidation{}, false
	}
	inv.ID = f[3]
	switch f[2] {
	case "account":
		inv.Kind = InvalidateAccount
	case "api_key":
		inv.Kind = InvalidateAPIKey
	case "quota":
		inv.Kind = InvalidateQuota
	default:
		inv = Invalidation{Kind: InvalidateAll}
	}
	return f[1], inv, true
}

// InvalidationSubscribers are the callbacks of an InvalidationBus's
// Subscribe. The zero value is ready for use; it is safe for concurrent
// use, and a callback may not subscribe or cancel while it runs.
type InvalidationSubscribers struct {
	mu   sync.RWMutex // held for reading while the callbacks run
	fns  map[uint64]func(Invalidation)
	next uint64
}

// Subscribe adds fn, until the returned cancel is called.
func (s *InvalidationSubscribers) Subscribe(fn func(Invalidation)) (cancel func()) {
	s.mu.Lock()
	if s.fns == nil {
		s.fns = make(map[uint64]func(Invalidation))
	}
	id := s.next
	s.next++
	s.fns[id] = fn
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.fns, id)
		s.mu.Unlock()
	}
}

// Deliver calls every callback with inv.
func (s *InvalidationSubscribers) Deliver(inv Invalidation) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, fn := range s.fns {
		fn(inv)
	}
}
