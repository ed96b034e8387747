package sluice

import (
	"context"
	"time"
)

// Channels through which an account uses its quota (CONTRACT.md §10).
const (
	ChannelAPI      = "api"
	ChannelTelegram = "telegram"
)

// UsageKeyTelegram is the UsageEvent.KeyID of a decision made for the bot.
const UsageKeyTelegram = "telegram"

// UsageOutcome is what became of a request for units.
type UsageOutcome uint8

const (
	// UsageAdmitted: the units were charged.
	UsageAdmitted UsageOutcome = iota
	// UsageRejected: the request was refused with a 429 (or the bot's
	// over-quota reply); nothing was charged.
	UsageRejected
	// UsageRefunded: units charged by an earlier admitted request were
	// given back (the generator failed).
	UsageRefunded
	// UsageShadow: the request would have been rejected but the limiter
	// runs in shadow mode and let it through.
	UsageShadow
)

// UsageEvent is one quota decision, as the usage history, the alerts and
// anything else that watches decisions see it.
type UsageEvent struct {
	AccountID int64
	Plan      string
	KeyID     string // the API key's lookup ID, or UsageKeyTelegram
	Channel   string // ChannelAPI or ChannelTelegram
	Model     string
	Time      time.Time // of the decision, by the quota store's clock
	Outcome   UsageOutcome
	// Units are the units charged (admitted, shadow), asked for
	// (rejected) or given back (refunded).
	Units int64
	// Window names the window that refused (rejected and shadow only):
	// the blocking window of the decision.
	Window string
	// Decision is the decision itself, with every window's figures after
	// it; nil for a refund. It is only valid during the call to Record.
	Decision *Decision
}

// UsageRecorder watches quota decisions. Record is called on the request
// path after every decision, so it must never block, never fail and never
// keep e or e.Decision after it returns: it copies what it needs and does
// its work in the background. Implementations are safe for concurrent use.
type UsageRecorder interface {
	Record(e *UsageEvent)
}

// UsageRecorders is a UsageRecorder that passes every event to each of its
// elements in turn.
type UsageRecorders []UsageRecorder

// Record passes e to every recorder.
func (rs UsageRecorders) Record(e *UsageEvent) {
	for _, r := range rs {
		r.Record(e)
	}
}

// Granularities of the usage history (CONTRACT.md §10).
const (
	GranularityMinute = "minute"
	GranularityHour   = "hour"
	GranularityDay    = "day"
)

// Groupings of the usage history.
const (
	GroupByKey     = "key"
	GroupByChannel = "channel"
	GroupByModel   = "model"
)

// UsageQuery asks for an account's history: buckets of Granularity whose
// start is in [From, To), split by GroupBy ("" for no split).
type UsageQuery struct {
	AccountID   int64
	Granularity string
	From, To    time.Time
	GroupBy     string
}

// UsageBucket is what an account did in one bucket of time (and one group,
// if the query asked for a split). Images are the units charged net of
// refunds; Requests the admitted requests; Rejected the refused ones.
type UsageBucket struct {
	Start    time.Time
	Group    string // the key ID, channel or model; "" without GroupBy
	Images   int64
	Requests int64
	Rejected int64
	Refunded int64
	// Shadow are the units let through in shadow mode that enforcement
	// would have refused (counted in Images and Requests too).
	Shadow int64
	// RejectedHour and RejectedDay are the part of Rejected that the
	// window named "hour" or "day" refused.
	RejectedHour, RejectedDay int64
}

// UsageTotal is an account's images over a span of time, for TopUsage.
type UsageTotal struct {
	AccountID int64
	Images    int64
}

// UsageService answers questions about the recorded history. Buckets with
// nothing in them are left out; buckets come oldest first (by group within
// one start). Implementations are safe for concurrent use.
type UsageService interface {
	UsageHistory(ctx context.Context, q UsageQuery) ([]UsageBucket, error)
	// TopUsage returns the accounts that charged the most images in
	// [from, to), most first, at most limit of them.
	TopUsage(ctx context.Context, from, to time.Time, limit int) ([]UsageTotal, error)
}

// UsageCount is what the usage history adds to one row of one granularity:
// the bucket starting at Start (UTC, aligned to the granularity) of one
// account, key, channel and model. Counts of units are Images (charged or
// let through in shadow mode), Refunded and Shadow; counts of requests are
// Requests (admitted, shadow included), Rejected and its part refused by
// the window named "hour" (RejectedHour) or "day" (RejectedDay).
type UsageCount struct {
	Granularity string
	Start       time.Time
	AccountID   int64
	KeyID       string
	Channel     string
	Model       string

	Images, Requests, Rejected, Refunded, Shadow int64
	RejectedHour, RejectedDay                    int64
}

// UsageStore keeps the usage history: the UsageService over rows that
// AddUsage adds to. Several gateways may add to one store at once; the
// sums stay exact because every write is an addition. TopUsage reads the
// coarsest granularity to which both from and to are aligned (so a day's
// total is one row per account and key, not 1,440). Implementations are
// safe for concurrent use.
type UsageStore interface {
	UsageService
	// AddUsage adds every count to its row, creating the rows that do not
	// exist, all or nothing. The counts name distinct rows.
	AddUsage(ctx context.Context, counts []UsageCount) error
	// PurgeUsage deletes the rows of granularity g whose bucket starts
	// before before, and returns how many it deleted.
	PurgeUsage(ctx context.Context, g string, before time.Time) (int64, error)
}

// UsageGranularity returns the length of a bucket of granularity g, and
// false for an unknown granularity. Buckets are aligned to UTC: minutes,
// hours and days start at multiples of their length since the Unix epoch.
func UsageGranularity(g string) (time.Duration, bool) {
	switch g {
	case GranularityMinute:
		return time.Minute, true
	case GranularityHour:
		return time.Hour, true
	case GranularityDay:
		return 24 * time.Hour, true
	}
	return 0, false
}
