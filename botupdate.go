package sluice

import (
	"context"
	"time"
)

// BotUpdate is an update that the Telegram bot received, as its journal
// keeps it (CONTRACT.md §7 "Many instances"): from the moment an instance
// receives it, before Telegram is told it arrived, until it has been
// handled, so that an update whose instance stops before handling it is
// handled by another instance (or by the same one, restarted), and an update
// delivered twice is handled once.
//
// An update not Done is held by one instance (Holder) until LeaseUntil,
// which the holder keeps moving while it runs; when the lease has ended,
// any instance may claim it. Like an idempotency claim, it carries the
// charge its holder took from the quota for it (Charged), which the
// instance that claims it after a stop inherits instead of charging again.
type BotUpdate struct {
	Bot     int64  // the bot's Telegram user id (the token's first part)
	ID      int64  // Telegram's update_id
	Payload []byte // the update, as the JSON Telegram sent
	// Holder names the instance that handles the update: random, chosen
	// by each instance when it starts, so that an instance that stopped
	// cannot touch what another claimed since.
	Holder     string
	LeaseUntil time.Time
	Done       bool
	// Attempts is how many times the update was held: 1 when received,
	// one more per claim, so that an update that stops every instance
	// that handles it is given up.
	Attempts   int
	ReceivedAt time.Time
	// ExpiresAt ends the record: an update not done by then is no longer
	// claimed (Telegram keeps an update 24 hours), and DeleteExpired may
	// delete it, done or not; a delivery of it after that would be new.
	ExpiresAt time.Time
	// Charged is the units the holder took from the quota for the update
	// at the instant ChargedAt, inherited by a claim until ChargedUntil;
	// 0 when nothing is charged (yet, or any more).
	Charged      int64
	ChargedAt    time.Time
	ChargedUntil time.Time
}

// BotUpdateStore is the journal of the bot's updates, shared by every
// instance that shares the account store. Implementations are safe for
// concurrent use, and atomic across instances: an update is added once, and
// claimed by one instance at a time.
//
// A holder holds an update until another claims it, whatever its lease
// says: Charge, Finish and Renew of a holder whose lease ended still apply
// while nobody has claimed the update (as an idempotency claim's do).
type BotUpdateStore interface {
	// Add records u, held by u.Holder until u.LeaseUntil with Attempts 1
	// and nothing charged, unless the journal has an update of u.Bot with
	// u.ID (a delivery of it again), and reports whether it did.
	Add(ctx context.Context, u *BotUpdate) (added bool, err error)

	// Renew moves to until the lease of every update of bot not done that
	// holder holds: one call keeps all of an instance's updates.
	Renew(ctx context.Context, bot int64, holder string, until time.Time) error

	// Release ends at now the lease of every update of bot not done that
	// holder holds, so that any instance may claim them at once (the
	// holder is stopping).
	Release(ctx context.Context, bot int64, holder string, now time.Time) error

	// Claim takes over up to n updates of bot that are not done, whose
	// lease ended at or before now, that have not expired and that another
	// holder holds (a holder renews its own, even late), lowest ID
	// first, for holder until until, and returns them as stored after the
	// claim: Attempts one more; the charge kept if ChargedUntil is after
	// now, else zeroed. Two instances claiming at once never get the same
	// update.
	Claim(ctx context.Context, bot int64, holder string, until, now time.Time, n int) ([]*BotUpdate, error)

	// Charge records on the update id, not done and held by holder, that
	// units were taken from the quota for it at the instant at, to be
	// inherited until until; units 0 clears the charge (it was refunded).
	// It is an *Error with code ENOTFOUND if holder does not hold the
	// update, or it is done.
	Charge(ctx context.Context, bot, id int64, holder string, units int64, at, until time.Time) error

	// Finish marks the update id, held by holder, done, and clears its
	// charge and payload. It is an *Error with code ENOTFOUND if holder
	// does not hold the update, or it is done.
	Finish(ctx context.Context, bot, id int64, holder string) error

	// DeleteExpired deletes the updates whose ExpiresAt is at or before
	// now, done or not, and returns how many. A charge still recorded on
	// one (its holder stopped, and no instance handled it for a day) is
	// dropped with it, not refunded.
	DeleteExpired(ctx context.Context, now time.Time) (int64, error)
}
