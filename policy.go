package sluice

import "time"

// Indexes of the windows in an account's policy.
const (
	HourWindow = 0
	DayWindow  = 1
)

// WindowConfig is how a deployment counts every account's quota: one
// algorithm, the lengths of the "hour" and "day" windows and the location
// of calendar days (CONTRACT.md §3, the limits.* configuration). Every
// channel (the HTTP API, the Telegram bot) builds an account's policy from
// it and counts under AccountQuotaKey, so that all channels draw from the
// same counters. The zero value is a sliding hour and day in UTC.
type WindowConfig struct {
	Algorithm Algorithm
	Hour      time.Duration  // length of the "hour" window; 0 means 1h
	Day       time.Duration  // length of the "day" window; 0 means 24h
	Location  *time.Location // of calendar days; nil means UTC
}

// AccountWindows returns the windows of an account whose limits are hour
// and day (Account.Limits), at the indexes HourWindow and DayWindow. It
// returns an array so that a caller can keep the windows in a struct of its
// own without another allocation.
func (c WindowConfig) AccountWindows(hour, day Limit) [2]Window {
	h, d := c.Hour, c.Day
	if h <= 0 {
		h = time.Hour
	}
	if d <= 0 {
		d = 24 * time.Hour
	}
	return [2]Window{
		HourWindow: {Name: "hour", Length: h, Limit: hour},
		DayWindow:  {Name: "day", Length: d, Limit: day},
	}
}

// AccountPolicy returns the policy of an account whose limits are hour and
// day, over windows of its own.
func (c WindowConfig) AccountPolicy(hour, day Limit) Policy {
	w := c.AccountWindows(hour, day)
	return c.Policy(w[:])
}

// Policy returns the policy over windows (from AccountWindows) under c's
// algorithm and location.
func (c WindowConfig) Policy(windows []Window) Policy {
	return Policy{Algorithm: c.Algorithm, Windows: windows, Location: c.Location}
}
