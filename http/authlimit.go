package http

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice"
)

var _ sluice.AuthService = (*Server)(nil)

// Rate is a limit of Limit requests in any window of Per. A Limit of
// sluice.Unlimited turns the limit off.
type Rate struct {
	Limit sluice.Limit
	Per   time.Duration // whole seconds; rounded up otherwise
}

// AuthLimits are the limits of the auth endpoints (CONTRACT.md §6). A zero
// Rate takes its default.
type AuthLimits struct {
	Login          Rate // per client IP on POST /auth/login
	Register       Rate // per client IP on POST /auth/register
	ForgotPassword Rate // per client IP on POST /auth/forgot-password
	// ForgotPasswordEmail limits the reset mails to one address, whoever
	// asks for them, so that nobody can flood an inbox from many IPs.
	ForgotPasswordEmail Rate
}

// Defaults of AuthLimits.
var (
	DefaultLoginLimit               = Rate{Limit: 10, Per: time.Minute}
	DefaultRegisterLimit            = Rate{Limit: 10, Per: time.Minute}
	DefaultForgotPasswordLimit      = Rate{Limit: 3, Per: time.Hour}
	DefaultForgotPasswordEmailLimit = Rate{Limit: 3, Per: time.Hour}
)

// Growing delays after failed logins, per account (by email). The first
// LoginFreeFailures failures within LoginFailureWindow cost nothing; after
// failure number LoginFreeFailures+k-1 the next attempt must wait 2^k
// seconds since that failure, at most LoginMaxDelay. It is a delay, never a
// lock-out: an attacker gets a few guesses an hour, the owner gets in as
// soon as the delay has passed, and a successful login clears it. Parallel
// attempts do not multiply the guesses: each attempt claims its turn
// atomically before its password is verified (see loginFailures).
const (
	LoginFreeFailures  = 5
	LoginFailureWindow = 15 * time.Minute
	LoginMaxDelay      = 5 * time.Minute
)

// rateLimit is one limit of an auth endpoint, as a one-window sliding
// policy under quota keys prefix + "<who>}". Its rule changes with a
// reload (Server.Reload); each request loads it once.
type rateLimit struct {
	prefix string // "{ip:login:"
	def    Rate   // when the configured Rate is zero
	what   string // how the 429 names the limit
	rule   atomic.Pointer[rateRule]
}

// rateRule is the immutable part of a rateLimit that a reload replaces.
type rateRule struct {
	off     bool
	prefix  string
	policy  sluice.Policy
	windows [1]sluice.Window
	message string // of the 429
}

// newRateLimit builds the limit named name ("login") from r, or def if r is
// zero. what is how the 429 names the limit ("per IP on POST /auth/login").
func newRateLimit(prefix string, r, def Rate, what string) *rateLimit {
	l := &rateLimit{prefix: prefix, def: def, what: what}
	l.set(r)
	return l
}

// set makes r (or the default if r is zero) the limit's rule.
func (l *rateLimit) set(r Rate) {
	if r == (Rate{}) {
		r = l.def
	}
	u := &rateRule{prefix: l.prefix}
	if r.Limit.IsUnlimited() {
		u.off = true
		l.rule.Store(u)
		return
	}
	per := max(r.Per, time.Second)
	if rem := per % time.Second; rem != 0 {
		per += time.Second - rem
	}
	name := windowName(per)
	u.windows[0] = sluice.Window{Name: name, Length: per, Limit: r.Limit}
	u.policy = sluice.Policy{Algorithm: sluice.Sliding, Windows: u.windows[:]}
	u.message = "Rate limit reached: " + strconv.FormatInt(int64(r.Limit), 10) + " requests/" + name + " " + l.what
	l.rule.Store(u)
}

// windowName names a window after its length: "second", "minute", "hour"
// and "day" for one of those, else the duration in its shortest form
// ("30s", "5m", "1h30m").
func windowName(d time.Duration) string {
	switch d {
	case time.Second:
		return "second"
	case time.Minute:
		return "minute"
	case time.Hour:
		return "hour"
	case 24 * time.Hour:
		return "day"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// takeAuth counts one request of who against l. On a rejection, or if the
// quota service cannot decide, it has answered the request.
func (s *Server) takeAuth(w http.ResponseWriter, r *http.Request, l *rateLimit, who string) bool {
	d, rule, err := s.decideAuth(r.Context(), l, who)
	if err != nil {
		s.Error(w, r, err)
		return false
	}
	setWindowHeaders(w.Header(), &d)
	if !d.Allowed {
		s.Error(w, r, rule.exceeded(&d))
		return false
	}
	return true
}

// decideAuth counts one request of who against the rule of rl in force
// (loaded once: a reload may replace it meanwhile), and returns that rule.
// An error means the quota service could not decide; a limit that is off
// decides nothing (the zero Decision, allowed).
func (s *Server) decideAuth(ctx context.Context, rl *rateLimit, who string) (sluice.Decision, *rateRule, error) {
	l := rl.rule.Load()
	if l.off {
		return sluice.Decision{Allowed: true}, l, nil
	}
	t := time.Now()
	d, err := s.authQuota().Take(ctx, l.prefix+who+"}", &l.policy, 1)
	s.metrics.take.Observe(time.Since(t).Seconds())
	return d, l, err
}

// exceeded is the 429 of a request that l refused with d.
func (l *rateRule) exceeded(d *sluice.Decision) *sluice.Error {
	return &sluice.Error{Code: sluice.ERATELIMIT, Message: l.message, RetryAfter: d.RetryAfterSeconds()}
}

// limitIP counts the request against the per-IP limit l of its endpoint.
// It runs before the body is read: every request counts, malformed ones
// included.
func (s *Server) limitIP(w http.ResponseWriter, r *http.Request, l *rateLimit) bool {
	return s.takeAuth(w, r, l, ipKey(s.clientIP(r)))
}

// CheckAuthLimit counts one request from ip against the per-IP limit of
// the endpoint (sluice.AuthService), the same limit as the JSON endpoint's:
// an attempt on the console's sign-in form and one on POST /auth/login
// draw from one count.
func (s *Server) CheckAuthLimit(ctx context.Context, endpoint string, ip netip.Addr) error {
	s.init()
	var l *rateLimit
	switch endpoint {
	case sluice.AuthLogin:
		l = s.auth.login
	case sluice.AuthRegister:
		l = s.auth.register
	case sluice.AuthForgotPassword:
		l = s.auth.forgot
	default:
		return fmt.Errorf("auth limit: unknown endpoint %q", endpoint)
	}
	d, rule, err := s.decideAuth(ctx, l, ipKey(ip))
	if err != nil {
		return err
	}
	if !d.Allowed {
		return rule.exceeded(&d)
	}
	return nil
}

// ClientIP returns the address of the client that sent r
// (sluice.AuthService; see clientIP).
func (s *Server) ClientIP(r *http.Request) netip.Addr { return s.clientIP(r) }

// setWindowHeaders sets the IETF RateLimit and RateLimit-Policy fields of
// an auth endpoint's one window:
//
//	RateLimit-Policy: "minute";q=10;w=60
//	RateLimit: "minute";r=7;t=41
//
// but none of the X-RateLimit-* fields, which describe an account's plan
// (CONTRACT.md §4) and no account is known on these endpoints.
func setWindowHeaders(h http.Header, d *sluice.Decision) {
	if d.N == 0 || d.Windows[0].Limit.IsUnlimited() {
		return // decided without the store (fail-open): no figures
	}
	win := d.Windows[0]
	b := make([]byte, 0, 64)
	b = append(b, '"')
	b = append(b, win.Name...)
	b = append(b, `";q=`...)
	b = strconv.AppendInt(b, int64(win.Limit), 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, int64(win.Length/time.Second), 10)
	split := len(b)
	b = append(b, '"')
	b = append(b, win.Name...)
	b = append(b, `";r=`...)
	b = strconv.AppendInt(b, max(win.Remaining, 0), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, max(win.Reset.Unix()-d.Time.Unix(), 0), 10)
	all := string(b)
	h["RateLimit-Policy"] = []string{all[:split]}
	h["RateLimit"] = []string{all[split:]}
}

// emailKey names an email address in quota keys: a hash of the address as
// the account store compares it (lower case), so that keys hold no
// address, and a known and an unknown address are counted alike.
func emailKey(email string) string {
	h := sha256.Sum256([]byte(strings.ToLower(email)))
	return hex.EncodeToString(h[:16])
}

// loginFailures is the failed-login state of one email address, kept in
// the quota service so that every gateway instance sharing the store
// applies the same delays:
//
//   - "{login:<email key>}" counts failures in a sliding window of
//     LoginFailureWindow;
//   - "{login:<email key>}:free" counts, in the same window, the attempts
//     let through while fewer than LoginFreeFailures failures were
//     counted, at most LoginFreeFailures;
//   - "{login:<email key>}:delay:<s>" holds one unit for s seconds. The
//     failure that makes the next attempt wait s seconds takes it, and so
//     does the one attempt let through once the wait is over.
//
// Checking and recording are one step: an attempt claims its right to
// verify a password with one atomic Take before it verifies, so that
// parallel attempts cannot all pass a check that none of them has recorded
// yet (claimLogin). With f failures counted:
//
//   - f < LoginFreeFailures: the attempt takes a unit of the free key. At
//     most LoginFreeFailures attempts verify before the delays start,
//     however many arrive at once; the others are told to wait the first
//     delay, by when those let through have been counted.
//   - f ≥ LoginFreeFailures: the attempt takes the unit of the delay key
//     of loginDelay(f). The failure that made f took it, so every attempt
//     is refused until loginDelay(f) after that failure; then exactly one
//     gets the unit, and the others are refused for loginDelay(f) more.
//   - A failure takes the delay key of the level it leads to before it
//     moves the count, so that no attempt sees the new count while that
//     key is free: loginDelay(f+1), and for a failure of a free attempt
//     the first delay's key, since free attempts that fail together may
//     each be the one that reaches LoginFreeFailures. (So the first delay
//     runs from the first of the failures that reach it within its own
//     length, not from the last.) If the count then shows another level
//     (old failures left the window meanwhile), it takes that key too.
//   - A success forgets the failures, the free attempts and the delay it
//     waited. A refused attempt is not a failure and counts nothing.
//
// So an attacker gets at most LoginFreeFailures guesses, then one per
// delay period, however many requests it sends in parallel; the owner gets
// in at the first attempt after a delay, if nobody else took that period's
// attempt first. Known and unknown emails are counted alike.
type loginFailures struct {
	key string
}

func newLoginFailures(email string) loginFailures {
	return loginFailures{key: "{login:" + emailKey(email) + "}"}
}

var (
	loginCountPolicy = sluice.Policy{Algorithm: sluice.Sliding,
		Windows: []sluice.Window{{Name: "failures", Length: LoginFailureWindow, Limit: 10_000}}}
	loginFreePolicy = sluice.Policy{Algorithm: sluice.Sliding,
		Windows: []sluice.Window{{Name: "free", Length: LoginFailureWindow, Limit: LoginFreeFailures}}}
)

// loginDelay is the wait before the next attempt after f failures.
func loginDelay(f int64) time.Duration {
	if f < LoginFreeFailures {
		return 0
	}
	k := f - LoginFreeFailures + 1
	if k >= 20 {
		return LoginMaxDelay
	}
	return min(time.Duration(1<<k)*time.Second, LoginMaxDelay)
}

func delayPolicy(d time.Duration) sluice.Policy {
	return sluice.Policy{Algorithm: sluice.Sliding, Windows: []sluice.Window{{Name: "delay", Length: d, Limit: 1}}}
}

func (l loginFailures) delayKey(d time.Duration) string {
	return l.key + ":delay:" + strconv.FormatInt(int64(d/time.Second), 10)
}

func (l loginFailures) freeKey() string { return l.key + ":free" }

// loginClaim is an attempt's right to verify a password: the failures
// counted when it was granted.
type loginClaim struct {
	failures int64
}

// claimLogin claims the right of one attempt to verify a password, or
// returns how long it must wait (wait > 0: refused, nothing recorded).
func (s *Server) claimLogin(ctx context.Context, l loginFailures) (c loginClaim, wait time.Duration, err error) {
	q := s.authQuota()
	d, err := q.Peek(ctx, l.key, &loginCountPolicy)
	if err != nil {
		return c, 0, err
	}
	if d.N > 0 {
		c.failures = d.Windows[0].Used()
	}
	key, p := l.freeKey(), &loginFreePolicy
	if delay := loginDelay(c.failures); delay > 0 {
		dp := delayPolicy(delay)
		key, p = l.delayKey(delay), &dp
	}
	d, err = q.Take(ctx, key, p, 1)
	if err != nil || d.Allowed {
		return c, 0, err
	}
	if key == l.freeKey() {
		// The free attempts are out; their failures will start the
		// first delay.
		return c, loginDelay(LoginFreeFailures), nil
	}
	return c, max(d.RetryAfter, time.Second), nil
}

// loginFailed records the failure of an attempt that held c and starts the
// delay before the next one. Errors are logged only: the attempt has
// failed either way.
func (s *Server) loginFailed(ctx context.Context, l loginFailures, c loginClaim) {
	q := s.authQuota()
	var err error
	next := loginDelay(max(c.failures+1, LoginFreeFailures))
	if next > 0 {
		p := delayPolicy(next)
		_, err = q.Take(ctx, l.delayKey(next), &p, 1)
	}
	if err == nil {
		var d sluice.Decision
		d, err = q.Take(ctx, l.key, &loginCountPolicy, 1)
		if err == nil && d.N > 0 {
			if delay := loginDelay(d.Windows[0].Used()); delay > 0 && delay != next {
				p := delayPolicy(delay)
				_, err = q.Take(ctx, l.delayKey(delay), &p, 1)
			}
		}
	}
	if err != nil {
		s.logger().LogAttrs(ctx, slog.LevelWarn, "record failed login", slog.String("error", err.Error()))
	}
}

// loginSucceeded forgets the failures, the free attempts and the delay
// the attempt that held c waited. Delay keys of lower levels are left to
// expire: they are shorter than the waits that came after them.
func (s *Server) loginSucceeded(ctx context.Context, l loginFailures, c loginClaim) {
	q := s.authQuota()
	err := q.Reset(ctx, l.freeKey())
	if c.failures > 0 && err == nil {
		err = q.Reset(ctx, l.key)
	}
	if delay := loginDelay(c.failures); delay > 0 && err == nil {
		err = q.Reset(ctx, l.delayKey(delay))
	}
	if err != nil {
		s.logger().LogAttrs(ctx, slog.LevelWarn, "clear failed logins", slog.String("error", err.Error()))
	}
}

// loginClear forgets the failed logins of an email whose password was
// reset, as a success would, without claiming an attempt.
func (s *Server) loginClear(ctx context.Context, l loginFailures) {
	var c loginClaim
	d, err := s.authQuota().Peek(ctx, l.key, &loginCountPolicy)
	if err == nil && d.N > 0 {
		c.failures = d.Windows[0].Used()
	}
	s.loginSucceeded(ctx, l, c)
}

// tooManyFailures is the 429 of an account whose next login must wait.
func tooManyFailures(wait time.Duration) *sluice.Error {
	secs := int64((wait + time.Second - 1) / time.Second)
	unit := " seconds."
	if secs == 1 {
		unit = " second."
	}
	return &sluice.Error{Code: sluice.ERATELIMIT, RetryAfter: secs,
		Message: "Too many failed logins for this account; retry in " + strconv.FormatInt(secs, 10) + unit}
}

// authQuota is the QuotaService of the auth endpoints' limits.
func (s *Server) authQuota() sluice.QuotaService {
	if s.AuthQuota != nil {
		return s.AuthQuota
	}
	return s.Quota
}
