package http

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice"
)

// Indexes of the windows in an account's policy.
const (
	hourWindow = sluice.HourWindow
	dayWindow  = sluice.DayWindow
)

// windowConfig is the part of l that decides an account's policy; every
// channel builds policies from it (sluice.WindowConfig).
func (l *Limits) windowConfig() sluice.WindowConfig {
	return sluice.WindowConfig{Algorithm: l.Algorithm, Hour: l.Hour, Day: l.Day, Location: l.Location}
}

// quotaCtx is an account resolved for a request: its plan, the key of its
// counters and its policy. The policy's windows live in the struct so that
// one allocation holds it all.
type quotaCtx struct {
	account *sluice.Account
	plan    *sluice.Plan
	key     string
	policy  sluice.Policy
	windows [2]sluice.Window
	// keyID is the API key's lookup ID ("" for a session); model and
	// event are set by recordTake, for the usage history (history.go).
	keyID string
	model string
	event sluice.UsageEvent
}

// quotaFor resolves the account's plan and policy, in the configuration
// of r. An account whose plan is
// not configured any more is an internal error: an operator removed a plan
// that accounts still use.
func (s *Server) quotaFor(r *http.Request, a *sluice.Account) (*quotaCtx, error) {
	c := s.cfg(r)
	p := c.plans[a.Plan]
	if p == nil {
		return nil, fmt.Errorf("account %d: plan %q is not configured", a.ID, a.Plan)
	}
	hour, day := a.Limits(p)
	q := &quotaCtx{account: a, plan: p, key: sluice.AccountQuotaKey(a.ID)}
	wc := c.limits.windowConfig()
	q.windows = wc.AccountWindows(hour, day)
	q.policy = wc.Policy(q.windows[:])
	return q, nil
}

// The quota calls, timed.

func (s *Server) take(ctx context.Context, q *quotaCtx, n int64) (sluice.Decision, error) {
	ctx, span := s.startSpan(ctx, "quota.take", trace.SpanKindInternal)
	t := time.Now()
	d, err := s.Quota.Take(ctx, q.key, &q.policy, n)
	s.metrics.take.Observe(time.Since(t).Seconds())
	if span != nil && err == nil {
		s.decisionAttributes(span, &d, n)
	}
	endSpan(span, err)
	return d, err
}

func (s *Server) peek(ctx context.Context, q *quotaCtx) (sluice.Decision, error) {
	t := time.Now()
	d, err := s.Quota.Peek(ctx, q.key, &q.policy)
	s.metrics.peek.Observe(time.Since(t).Seconds())
	return d, err
}

// refund gives back the n units that d charged. It runs even if the client
// went away (ctx canceled), and only logs a failure: the answer to the
// client does not change.
func (s *Server) refund(ctx context.Context, q *quotaCtx, n int64, d sluice.Decision, reason string) {
	ctx = context.WithoutCancel(ctx)
	t := time.Now()
	err := s.Quota.Refund(ctx, q.key, &q.policy, n, d)
	s.metrics.refund.Observe(time.Since(t).Seconds())
	if err != nil {
		s.logger().LogAttrs(ctx, slog.LevelWarn, "refund failed",
			slog.Int64("account_id", q.account.ID), slog.Int64("n", n), slog.String("error", err.Error()))
		return
	}
	s.metrics.refunds.WithLabelValues(reason).Add(float64(n))
	s.recordRefund(q, n, &d)
}

func (s *Server) resetUsage(ctx context.Context, key string) error {
	t := time.Now()
	err := s.Quota.Reset(ctx, key)
	s.metrics.reset.Observe(time.Since(t).Seconds())
	return err
}

// peekHeaders sets the rate-limit headers from a Peek of q. If the quota
// service cannot answer, the response goes without them.
func (s *Server) peekHeaders(w http.ResponseWriter, r *http.Request, q *quotaCtx) {
	d := s.peekForHeaders(r, q)
	setRateHeaders(w.Header(), &d)
}

// peekForHeaders returns a Peek of q for the rate-limit headers, or, if the
// quota service cannot answer, logs why and returns the zero Decision
// (which sets none).
func (s *Server) peekForHeaders(r *http.Request, q *quotaCtx) sluice.Decision {
	d, err := s.peek(r.Context(), q)
	if err != nil {
		s.logger().LogAttrs(r.Context(), slog.LevelWarn, "peek for rate-limit headers",
			slog.String("request_id", requestID(r)), slog.String("error", err.Error()))
		return sluice.Decision{}
	}
	return d
}

// failWithUsage answers an error to a request whose account is known, with
// the account's current figures in the headers (CONTRACT.md §4: errors
// included).
func (s *Server) failWithUsage(w http.ResponseWriter, r *http.Request, q *quotaCtx, err error) {
	s.peekHeaders(w, r, q)
	s.Error(w, r, err)
}

// headerNames are the rate-limit header names of a window, spelled as the
// public page spells them.
type headerNames struct{ limit, remaining, reset string }

var windowHeaders = map[string]headerNames{
	"hour": {"X-RateLimit-Limit-Hour", "X-RateLimit-Remaining-Hour", "X-RateLimit-Reset-Hour"},
	"day":  {"X-RateLimit-Limit-Day", "X-RateLimit-Remaining-Day", "X-RateLimit-Reset-Day"},
}

func namesOf(window string) headerNames {
	if n, ok := windowHeaders[window]; ok {
		return n
	}
	t := window
	if t != "" && 'a' <= t[0] && t[0] <= 'z' {
		t = string(t[0]-'a'+'A') + t[1:]
	}
	return headerNames{"X-RateLimit-Limit-" + t, "X-RateLimit-Remaining-" + t, "X-RateLimit-Reset-" + t}
}

// setRateHeaders sets the headers of CONTRACT.md §4 from d, for each window
// that has a limit:
//
//	X-RateLimit-Limit-Hour: 100
//	X-RateLimit-Remaining-Hour: 87
//	X-RateLimit-Reset-Hour: 1709903600
//	RateLimit-Policy: "hour";q=100;w=3600, "day";q=1000;w=86400
//	RateLimit: "hour";r=87;t=847, "day";r=934;t=77247
//
// It is on the path of every API request, so it avoids fmt and per-header
// allocations: every value is appended to one buffer that becomes one
// string, and the values are substrings of it held in one []string. The
// names are set as written above rather than in Go's canonical form
// ("X-Ratelimit-…"); header names are case-insensitive, so clients see no
// difference except on the wire, where they read as documented.
func setRateHeaders(h http.Header, d *sluice.Decision) {
	type span struct {
		name       string
		start, end int
	}
	var (
		stack [384]byte
		spans [3*sluice.MaxWindows + 2]span
		ns    int
	)
	b := stack[:0]
	value := func(name string, start int) {
		spans[ns] = span{name, start, len(b)}
		ns++
	}
	limited := 0
	for _, w := range d.Statuses() {
		if w.Limit.IsUnlimited() {
			continue
		}
		limited++
		names := namesOf(w.Name)
		start := len(b)
		b = strconv.AppendInt(b, int64(w.Limit), 10)
		value(names.limit, start)
		start = len(b)
		b = strconv.AppendInt(b, max(w.Remaining, 0), 10)
		value(names.remaining, start)
		start = len(b)
		b = strconv.AppendInt(b, w.Reset.Unix(), 10)
		value(names.reset, start)
	}
	if limited == 0 {
		return
	}
	start := len(b)
	b = appendStructured(b, d, true)
	value("RateLimit-Policy", start)
	start = len(b)
	b = appendStructured(b, d, false)
	value("RateLimit", start)

	all := string(b)
	vals := make([]string, ns)
	for i, sp := range spans[:ns] {
		vals[i] = all[sp.start:sp.end]
		h[sp.name] = vals[i : i+1 : i+1]
	}
}

// appendStructured appends the structured-field list of an IETF RateLimit
// header for each window that has a limit: RateLimit-Policy's
// `"hour";q=100;w=3600, ...` if policy, else RateLimit's
// `"hour";r=87;t=847, ...` (t counted from the decision's second).
func appendStructured(b []byte, d *sluice.Decision, policy bool) []byte {
	now := d.Time.Unix()
	sep := false
	for _, w := range d.Statuses() {
		if w.Limit.IsUnlimited() {
			continue
		}
		if sep {
			b = append(b, ", "...)
		}
		sep = true
		b = append(b, '"')
		b = append(b, w.Name...)
		if policy {
			b = append(b, `";q=`...)
			b = strconv.AppendInt(b, int64(w.Limit), 10)
			b = append(b, ";w="...)
			b = strconv.AppendInt(b, int64(w.Length/time.Second), 10)
		} else {
			b = append(b, `";r=`...)
			b = strconv.AppendInt(b, max(w.Remaining, 0), 10)
			b = append(b, ";t="...)
			b = strconv.AppendInt(b, max(w.Reset.Unix()-now, 0), 10)
		}
	}
	return b
}

// windowWords are how a 429 names a window.
var windowWords = map[string][2]string{
	"hour": {"Hourly", "hour"},
	"day":  {"Daily", "day"},
}

// rateLimitError is the plan quota 429 of CONTRACT.md §5 for the rejection
// d: the message names the window with the longest wait and the account's
// effective limits; limit_hour and limit_day are the effective limits too.
func rateLimitError(q *quotaCtx, d *sluice.Decision) *apiError {
	w := d.Windows[max(d.Blocking, 0)]
	words, ok := windowWords[w.Name]
	if !ok {
		words = [2]string{"The " + w.Name, w.Name}
	}
	msg := make([]byte, 0, 64)
	msg = append(msg, words[0]...)
	msg = append(msg, " limit reached: "...)
	msg = strconv.AppendInt(msg, int64(w.Limit), 10)
	msg = append(msg, " requests/"...)
	msg = append(msg, words[1]...)
	msg = append(msg, " on "...)
	msg = append(msg, q.plan.Name...)
	msg = append(msg, " plan"...)
	return &apiError{
		Code:       sluice.ERATELIMIT,
		Message:    string(msg),
		RetryAfter: d.RetryAfterSeconds(),
		Plan:       q.plan.ID,
		planLimits: true,
		LimitHour:  q.windows[hourWindow].Limit,
		LimitDay:   q.windows[dayWindow].Limit,
	}
}

// tooManyError answers a request for more units than a window's limit, which
// no wait can admit: a 400 naming n, not a 429.
func tooManyError(q *quotaCtx, d *sluice.Decision, n int64) error {
	w := d.Windows[max(d.Blocking, 0)]
	words, ok := windowWords[w.Name]
	if !ok {
		words = [2]string{w.Name, w.Name}
	}
	if w.Limit == 0 {
		return sluice.FieldError("n", "No images can be generated: the account's limit is 0 images/%s on %s plan.", words[1], q.plan.Name)
	}
	return sluice.FieldError("n", "n is %d but the limit is %d images/%s on %s plan; ask for fewer images per request.",
		n, w.Limit, words[1], q.plan.Name)
}
