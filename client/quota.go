package client

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Quota is a snapshot of what the client knows about the account's quota:
// the figures of the latest responses, less the units of the requests it has
// in flight.
type Quota struct {
	// Known reports that a response has told the client where the account
	// stands. Before that the client sends one request at a time.
	Known bool
	// Unlimited reports that the account has no limits (Elite), and the
	// client never throttles it: the first successful response carried no
	// quota headers, or, once the client knew the account's windows,
	// unlimitedAfter successful responses in a row did.
	Unlimited bool
	// Windows are the account's limited windows: hour, day, then others.
	Windows []WindowQuota
	// InFlight is the number of units reserved by requests that have not
	// been answered yet.
	InFlight int64
}

// WindowQuota is where the account stands in one window.
type WindowQuota struct {
	Name      string
	Limit     int64 // -1 if the server did not say
	Remaining int64 // as of the latest response, not counting requests in flight
	// Reset is when Remaining next grows, by the local clock (the server's
	// Unix second corrected for the clocks' skew). With sliding windows
	// that is when the oldest counted unit leaves the window, which may
	// free a single unit, not the whole limit.
	Reset time.Time
	// Length is the window's length, 0 if the server did not say.
	Length time.Duration
}

// windowState is the view of one window.
type windowState struct {
	WindowHeader
	reset time.Time // Reset on the local clock
}

// view is the quota view shared by every goroutine that uses a Client. It
// holds the server's latest figures per window and the units reserved by
// requests in flight, and makes callers wait (reserve) until the units they
// need are known to be there, so that the client never sends a request that
// the figures say would be refused.
//
// The rules:
//
//   - Unknown view (no response yet): one request at a time goes out, to
//     learn where the account stands; the others wait for its answer.
//   - Unlimited (a 2xx without quota headers before any with them, or
//     unlimitedAfter of them in a row since): everything goes.
//   - Otherwise a request for n units goes if, in every window,
//     Remaining - InFlight >= n. If a window lacks room, the request waits
//     until that window's Reset (the latest Reset among the windows that
//     lack room), or until an answer changes the view. Once a Reset has
//     passed, the window may have grown by a unit or by the whole limit:
//     one request goes out to find out, the others wait for its answer.
//     This is what makes sliding windows saturate: each unit is used as
//     soon as it frees, and no more is assumed to have freed than the
//     server says.
//   - A request for more units than a window's limit goes out at once: no
//     wait can admit it, and the server answers why (400).
//
// Answers update the view: each window's figures are replaced by the
// answer's, unless the answer is older than what the view holds (an earlier
// Reset, or the same Reset with more Remaining: answers to concurrent
// requests can arrive out of order, and within one Reset period Remaining
// only falls). Windows the answer does not name are dropped. A 2xx without
// quota headers leaves a view that holds windows alone: one such answer (a
// proxy that strips headers, a replayed answer) is no reason to stop
// throttling; only unlimitedAfter of them in a row, with no answer with
// headers between them, say the account has become unlimited (its plan
// changed). Before the view knows anything, one such answer is enough, as
// it is what every answer to an Elite account looks like.
//
// Clocks: Reset comes as a Unix second of the server's clock and waiting
// uses the local clock. Every answer bounds the skew between them: the
// server decided in the Unix second S = Reset - t (from the RateLimit
// field's relative t=, else the Date header), while the local clock stood
// between the request's sending and the answer's arrival, so
// skew = server - local lies in (S - arrived, S + 1 - sent). The view keeps
// the intersection of these intervals over all answers (starting afresh if
// they stop overlapping: a clock jumped) and waits with its lower end,
// which puts each reset at the latest local instant it can be: a wait
// never ends before the server's reset, whichever clock is ahead. The
// price is lateness: as much as the earliest fraction of a second, past
// the server's whole second, at which an answer has arrived — up to a
// second after one answer, a few milliseconds once answers have come at
// many points of the second, as they do in a busy client. (Waiting by
// the relative t= alone would always be late by that answer's fraction.)
//
// All fields are guarded by mu.
type view struct {
	mu        sync.Mutex
	known     bool
	unlimited bool
	windows   []windowState
	inflight  int64 // units
	requests  int   // requests in flight that reserved units (n > 0)
	changed   chan struct{}

	skewKnown      bool
	skewLo, skewHi time.Duration

	// bare counts the 2xx answers without quota headers in a row since
	// the view last held windows.
	bare int
}

// unlimitedAfter is how many 2xx answers without quota headers in a row
// turn a view that holds windows into an unlimited one.
const unlimitedAfter = 3

func newView() *view { return &view{changed: make(chan struct{})} }

// notify wakes every waiter. mu must be held.
func (v *view) notify() {
	close(v.changed)
	v.changed = make(chan struct{})
}

// decision is what a request for n units should do now.
type decision struct {
	send bool
	// until, if not zero, is when the view may let the request go: a
	// waiter sleeps until then or until the view changes.
	until time.Time
	// exhausted names the window in which the server said fewer than n
	// units are left (the one of them with the latest Reset), so that only
	// its Reset can let the request go; empty if the request only waits
	// for the answers to requests in flight. left is what the server said
	// is left in it, and reset is its Reset.
	exhausted string
	left      int64
	reset     time.Time
}

// decide returns what a request for n units does at now. mu must be held.
func (v *view) decide(n int64, now time.Time) decision {
	if n <= 0 || v.unlimited {
		return decision{send: true}
	}
	if !v.known {
		if v.requests == 0 {
			return decision{send: true}
		}
		return decision{} // wait for the answer of the request out
	}
	var (
		d          decision
		blocked    bool // a window lacks room until its Reset
		stale      bool // a window lacks room but its Reset has passed
		impossible bool // n is more than a window's limit
	)
	for i := range v.windows {
		w := &v.windows[i]
		switch {
		case w.Limit >= 0 && n > w.Limit:
			impossible = true
		case w.Remaining-v.inflight >= n:
		case !now.Before(w.reset):
			stale = true
		default:
			blocked = true
			if w.reset.After(d.until) {
				d.until = w.reset
			}
			if w.Remaining < n && (d.exhausted == "" || w.reset.After(d.reset)) {
				d.exhausted, d.left, d.reset = w.Name, w.Remaining, w.reset
			}
		}
	}
	switch {
	case impossible:
		return decision{send: true}
	case blocked:
		return d
	case stale && v.requests > 0:
		return decision{} // an answer in flight will say more
	}
	return decision{send: true}
}

// reserve waits until a request for n units may go, then counts its units
// as in flight; the caller must call release exactly once afterwards. If
// the wait would be longer than maxWait (negative: no limit) or end after
// ctx's deadline, it returns at once a *Error with Code rate_limit_exceeded
// and Status 0 (the request was not sent). waited is how long it waited.
func (v *view) reserve(ctx context.Context, n int64, maxWait time.Duration, now func() time.Time) (waited time.Duration, err error) {
	var start time.Time // when it began to wait; zero if it did not
	v.mu.Lock()
	for {
		t := now()
		d := v.decide(n, t)
		if d.send {
			if n > 0 {
				v.inflight += n
				v.requests++
			}
			v.mu.Unlock()
			return sinceStart(start, t), nil
		}
		if d.exhausted != "" {
			// The server said the window has less than n: waiting
			// for answers in flight cannot help, only its Reset can.
			wait := d.reset.Sub(t)
			deadline, hasDeadline := ctx.Deadline()
			if maxWait >= 0 && wait > maxWait || hasDeadline && deadline.Before(d.reset) {
				v.mu.Unlock()
				return sinceStart(start, t), quotaError(d, wait)
			}
		}
		if start.IsZero() {
			start = t
		}
		ch := v.changed
		v.mu.Unlock()
		if err := sleepOrChange(ctx, ch, d.until, t); err != nil {
			return sinceStart(start, now()), err
		}
		v.mu.Lock()
	}
}

func sinceStart(start, now time.Time) time.Duration {
	if start.IsZero() {
		return 0
	}
	return max(now.Sub(start), 1)
}

// resetMargin is how long after a window's Reset a waiter wakes: the
// server counts whole seconds, so a request that arrives a hair after the
// second begins is admitted; the margin covers timer slack.
const resetMargin = 5 * time.Millisecond

// sleepOrChange waits until ch is closed, or until `until` (plus
// resetMargin) if it is not zero, or until ctx is done.
func sleepOrChange(ctx context.Context, ch <-chan struct{}, until, now time.Time) error {
	if until.IsZero() {
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	t := time.NewTimer(until.Sub(now) + resetMargin)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release ends the reservation of n units made by reserve. resp, if not
// nil, is the answer to the request; sent and arrived are when the request
// went out and when its answer came, by the local clock.
func (v *view) release(n int64, resp *http.Response, sent, arrived time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if n > 0 {
		v.inflight -= n
		v.requests--
	}
	if resp != nil {
		v.update(resp.StatusCode, resp.Header, sent, arrived)
	}
	v.notify()
}

// update merges an answer into the view. mu must be held.
func (v *view) update(status int, h http.Header, sent, arrived time.Time) {
	ws := ParseRateLimitHeaders(h)
	if len(ws) == 0 {
		// No quota headers: an unlimited account if the request
		// succeeded (see unlimitedAfter for a view that holds windows).
		// Errors without headers (a bad key, a proxy's error page) say
		// nothing about the quota.
		if status < 200 || status >= 300 {
			return
		}
		if v.known && !v.unlimited {
			if v.bare++; v.bare < unlimitedAfter {
				return
			}
		}
		v.known, v.unlimited, v.windows = true, true, nil
		return
	}
	v.bare = 0
	v.observeSkew(ws, h, sent, arrived)
	skew := v.skew()
	next := make([]windowState, 0, len(ws))
	for _, w := range ws {
		s := windowState{WindowHeader: w}
		switch {
		case w.Reset > 0:
			s.reset = time.Unix(min(w.Reset, 1<<40), 0).Add(-skew)
		case w.ResetIn >= 0:
			s.reset = arrived.Add(time.Duration(min(w.ResetIn, maxSeconds)) * time.Second)
		default:
			// No reset at all: look again in a second.
			s.reset = arrived.Add(time.Second)
		}
		if old := v.window(w.Name); old != nil && old.Limit == w.Limit && newer(&old.WindowHeader, &w) {
			s = *old
		}
		next = append(next, s)
	}
	v.known, v.unlimited, v.windows = true, false, next
}

// newer reports whether the view's figures cur are newer than those of an
// answer a: an answer with an earlier Reset, or with the same Reset and
// more Remaining, was decided before the one the view holds.
func newer(cur, a *WindowHeader) bool {
	if cur.Reset == 0 || a.Reset == 0 {
		return false
	}
	return a.Reset < cur.Reset || a.Reset == cur.Reset && a.Remaining > cur.Remaining
}

func (v *view) window(name string) *windowState {
	for i := range v.windows {
		if v.windows[i].Name == name {
			return &v.windows[i]
		}
	}
	return nil
}

// observeSkew narrows the skew interval with an answer. mu must be held.
func (v *view) observeSkew(ws []WindowHeader, h http.Header, sent, arrived time.Time) {
	var server int64 = -1 // Unix second of the server's decision
	for _, w := range ws {
		if w.Reset > 0 && w.ResetIn >= 0 {
			server = w.Reset - w.ResetIn
			break
		}
	}
	if server < 0 {
		d, err := http.ParseTime(h.Get("Date"))
		if err != nil {
			return
		}
		server = d.Unix()
	}
	s := time.Unix(server, 0)
	lo, hi := s.Sub(arrived), s.Add(time.Second).Sub(sent)
	if lo > hi {
		return // an arrival before the sending: not from this clock
	}
	if v.skewKnown && lo <= v.skewHi && hi >= v.skewLo {
		lo, hi = max(lo, v.skewLo), min(hi, v.skewHi)
	}
	// Disjoint intervals mean that a clock jumped: start afresh.
	v.skewKnown, v.skewLo, v.skewHi = true, lo, hi
}

// skew is server clock minus local clock, as used for waiting: the lowest
// value the answers allow, which puts every reset at the latest local time
// it can be, so that a wait never ends before the server's reset. mu must
// be held.
func (v *view) skew() time.Duration {
	if !v.skewKnown {
		return 0
	}
	return v.skewLo
}

// snapshot returns the view as a Quota.
func (v *view) snapshot() Quota {
	v.mu.Lock()
	defer v.mu.Unlock()
	q := Quota{Known: v.known, Unlimited: v.unlimited, InFlight: v.inflight}
	for _, w := range v.windows {
		q.Windows = append(q.Windows, WindowQuota{Name: w.Name, Limit: w.Limit, Remaining: w.Remaining, Reset: w.reset, Length: w.Length})
	}
	q.Windows = slices.Clip(q.Windows)
	return q
}
