package sluice

import (
	"context"
	"time"
)

// LeaseService elects one holder of a named lease among the gateway
// instances that share a store, for work that only one of them may do at a
// time (the Telegram bot's long polling: Telegram answers 409 to a second
// poller).
//
// A lease is held for a TTL from the moment it was acquired or last
// renewed, and identified by its fencing token: a number that grows with
// every acquisition of the name, so that a holder whose lease expired (a
// paused process) can never renew, release or otherwise act under a lease
// that another instance has acquired since.
//
// Guarantees, which every implementation must keep:
//
//   - At most one holder: AcquireLease succeeds only when the lease is not
//     held (never acquired, released, or expired).
//   - The store measures the TTL on its own clock, starting no earlier
//     than the call was sent: a holder that counts ttl from the instant
//     before it sent the call holds the lease at least until then on its
//     own clock (up to the drift of the two clocks over ttl).
//   - RenewLease and ReleaseLease act only if fence is still the holder.
//
// Implementations are safe for concurrent use.
type LeaseService interface {
	// AcquireLease takes the lease name for ttl if nobody holds it, and
	// returns its fencing token (> 0); it returns 0 if another holds it.
	AcquireLease(ctx context.Context, name string, ttl time.Duration) (fence int64, err error)
	// RenewLease extends the lease held under fence to ttl from now; it
	// reports false if the lease is no longer fence's (expired, taken).
	RenewLease(ctx context.Context, name string, fence int64, ttl time.Duration) (bool, error)
	// ReleaseLease gives up the lease held under fence, so that another
	// instance may take it at once; it does nothing if the lease is no
	// longer fence's.
	ReleaseLease(ctx context.Context, name string, fence int64) error
}
