package sluice

import "context"

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
