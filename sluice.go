// Package sluice is the vocabulary of the sluice quota gateway: plans,
// accounts, keys, quota policies and decisions, and the interfaces that the
// implementation packages (inmem, sqlite, redis, postgres, http, telegram,
// imagegen) meet through. It depends on the standard library only.
package sluice

import (
	"context"
	"time"
)

// Limit is a number of units allowed in one window. Unlimited means the
// window has no limit at all.
type Limit int64

// Unlimited is the Limit of a window that never rejects.
const Unlimited Limit = -1

// IsUnlimited reports whether l is Unlimited.
func (l Limit) IsUnlimited() bool { return l < 0 }

// Algorithm is how a window counts units (CONTRACT.md §3).
type Algorithm uint8

const (
	// Sliding allows at most Limit units in any rolling window of Length,
	// exact at one-second resolution.
	Sliding Algorithm = iota
	// Calendar counts in fixed windows aligned to the clock: windows of a
	// day start at midnight in the policy's Location, others at multiples
	// of Length since midnight.
	Calendar
	// TokenBucket holds Limit units and refills continuously at Limit per
	// Length.
	TokenBucket
)

var algorithmNames = [...]string{Sliding: "sliding", Calendar: "calendar", TokenBucket: "token_bucket"}

func (a Algorithm) String() string {
	if int(a) < len(algorithmNames) {
		return algorithmNames[a]
	}
	return "unknown"
}

// MaxWindows is the most windows a Policy may have. Decisions hold their
// window statuses in an array of this size so that deciding allocates
// nothing.
const MaxWindows = 4

// Window is one named window of a Policy.
type Window struct {
	Name   string        // "hour", "day", ...
	Length time.Duration // whole seconds for Sliding
	Limit  Limit
}

// Policy is a set of windows, all counted with one algorithm. A request is
// admitted only if it fits in every window, and is then charged in every
// window. The zero Location means UTC.
type Policy struct {
	Algorithm Algorithm
	Windows   []Window
	Location  *time.Location
}

// Unlimited reports whether no window of p has a limit, so that no request
// can ever be rejected (its windows still count what is used).
func (p *Policy) Unlimited() bool {
	for _, w := range p.Windows {
		if !w.Limit.IsUnlimited() {
			return false
		}
	}
	return true
}

// WindowStatus is where a key stands in one window.
type WindowStatus struct {
	Name   string
	Length time.Duration
	Limit  Limit // Unlimited: Remaining and Reset mean nothing
	// Remaining is the number of units left after the request decided.
	Remaining int64
	// Reset is the start of the Unix second at which Remaining next grows;
	// the decision's own second when Remaining equals Limit.
	Reset time.Time
	// Short reports that this window has no room for the request; only
	// set on rejections.
	Short bool
	// Counted is the number of units the window counts after the request
	// decided, whether it has a limit or not; above Limit when a limit
	// was lowered below what had been used. For a token bucket, the whole
	// units missing from a full bucket.
	Counted int64
}

// Used is the number of units counted in the window (Counted).
func (s WindowStatus) Used() int64 { return s.Counted }

// Decision is the answer to a request for units. Being over a limit is a
// Decision with Allowed false, not an error.
type Decision struct {
	Allowed bool
	// Shadow reports that the request would have been rejected but was let
	// through because the limiter runs in shadow mode.
	Shadow bool
	// Time is the instant the decision was made at, by the clock of the
	// store that made it. A refund of the charge names this instant.
	Time time.Time
	// RetryAfter, on a rejection, is how long until the same request would
	// be admitted barring other traffic: the longest wait of the windows
	// that lack room. It is InfDuration if the request can never fit.
	RetryAfter time.Duration
	// Blocking is the index in Windows of the window RetryAfter comes
	// from, or -1.
	Blocking int
	// N is the number of windows in Windows.
	N       int
	Windows [MaxWindows]WindowStatus
}

// InfDuration is the RetryAfter of a request that can never be admitted,
// because it asks for more units than a window's limit.
const InfDuration = time.Duration(1<<63 - 1)

// Charged reports whether d took units from the counters: an admission
// that was neither a shadow one (let through over the limit, uncounted) nor
// a fail-open one (no window decided). Only such a charge is refunded.
func (d *Decision) Charged() bool { return d.Allowed && !d.Shadow && d.N > 0 }

// Statuses returns the windows of d.
func (d *Decision) Statuses() []WindowStatus { return d.Windows[:d.N] }

// RetryAfterSeconds is RetryAfter rounded up to whole seconds, at least 1,
// as sent in Retry-After and retry_after. A retry sent that many seconds
// after the decision is admitted (barring other traffic).
func (d *Decision) RetryAfterSeconds() int64 {
	s := int64((d.RetryAfter + time.Second - 1) / time.Second)
	if d.RetryAfter == InfDuration {
		s = int64(InfDuration / time.Second)
	}
	if s < 1 {
		s = 1
	}
	return s
}

// QuotaStore keeps the counters of keys under policies. Implementations are
// safe for concurrent use, and every method is atomic across all windows of
// the policy.
//
// Time is a parameter: a store that owns a clock (a shared store, whose
// clock decides so that gateways agree) may decide at its own time instead
// of now, and says so in Decision.Time.
type QuotaStore interface {
	// Take asks for n units for key under p at now: admitted and charged in
	// every window if n fits in every window, otherwise nothing is charged.
	Take(ctx context.Context, key string, p *Policy, n int64, now time.Time) (Decision, error)

	// Refund gives back n units charged for key by a Take decided at the
	// instant at (its Decision.Time). Units that no longer count at now
	// are not refunded; a refund never raises Remaining above what it
	// would be had the charge not been made.
	Refund(ctx context.Context, key string, p *Policy, n int64, at, now time.Time) error

	// Peek returns the decision a Take of zero units would return at now,
	// charging nothing.
	Peek(ctx context.Context, key string, p *Policy, now time.Time) (Decision, error)

	// Reset forgets every counter of key.
	Reset(ctx context.Context, key string) error
}
