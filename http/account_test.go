package http_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/sluicehq/sluice"
	sluicehttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/quota"
)

// fakeMailer records what the gateway mails.
type fakeMailer struct{ sent chan *sluice.Email }

func newFakeMailer() *fakeMailer { return &fakeMailer{sent: make(chan *sluice.Email, 100)} }

func (m *fakeMailer) Send(e *sluice.Email) error { m.sent <- e; return nil }

// next waits for the next mail.
func (m *fakeMailer) next(t *testing.T) *sluice.Email {
	t.Helper()
	select {
	case e := <-m.sent:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no mail was sent")
		return nil
	}
}

// none checks that nothing more was mailed. The resetter works in order,
// so once the mail of a later request has arrived, earlier requests that
// sent nothing are done.
func (m *fakeMailer) none(t *testing.T) {
	t.Helper()
	select {
	case e := <-m.sent:
		t.Fatalf("unexpected mail to %s: %s", e.To, e.Subject)
	default:
	}
}

var resetTokenRE = regexp.MustCompile(`slr_[0-9A-Za-z]{40}`)

func resetToken(t *testing.T, e *sluice.Email) string {
	t.Helper()
	tok := resetTokenRE.FindString(e.Text)
	if tok == "" {
		t.Fatalf("no reset token in the mail:\n%s", e.Text)
	}
	return tok
}

// withServer changes the Server before it opens.
func withServer(f func(s *sluicehttp.Server)) harnessOpt {
	return func(h *harness, _ *quota.Limiter) { f(h.S) }
}

// noAuthLimits turns every per-IP limit off, for tests of something else.
var noAuthLimits = withServer(func(s *sluicehttp.Server) {
	off := sluicehttp.Rate{Limit: sluice.Unlimited}
	s.AuthLimits.Login, s.AuthLimits.Register, s.AuthLimits.ForgotPassword = off, off, off
})

// from sends a request through the gateway's handler as if from the peer
// address remote ("203.0.113.7:1234").
func (h *harness) from(remote, method, path, body string, hdr http.Header) *response {
	h.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = remote
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h.S.Handler().ServeHTTP(rec, req)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	// As a client reads them: canonical names.
	hdrs := http.Header{}
	for k, vs := range res.Header {
		for _, v := range vs {
			hdrs.Add(k, v)
		}
	}
	return &response{Status: res.StatusCode, Header: hdrs, Body: b}
}

func xff(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }

// register creates an account through the API.
func (h *harness) register(email, password string) int64 {
	h.t.Helper()
	res := h.do("POST", "/auth/register", "", fmt.Sprintf(`{"email":%q,"password":%q}`, email, password))
	wantStatus(h.t, res, http.StatusCreated)
	var v struct {
		UserID int64 `json:"user_id"`
	}
	json.Unmarshal(res.Body, &v)
	return v.UserID
}

// login logs in through the API and returns the session token.
func (h *harness) login(email, password string) string {
	h.t.Helper()
	res := h.do("POST", "/auth/login", "", fmt.Sprintf(`{"email":%q,"password":%q}`, email, password))
	wantStatus(h.t, res, http.StatusOK)
	var v struct{ Token string }
	json.Unmarshal(res.Body, &v)
	return v.Token
}

func body(res *response) string { return strings.TrimSpace(string(res.Body)) }

// TestAuthIPLimits: for each auth endpoint, every request from one client
// counts and the one past the limit gets the exact 429; another client is
// unaffected; X-Forwarded-For from an untrusted peer changes nothing;
// through a trusted proxy the real client is limited; one IPv6 /64 is one
// client.
func TestAuthIPLimits(t *testing.T) {
	for _, ep := range []struct {
		path, route string
		limit       int
		window      string
		length      int
		advance     time.Duration
		bodies      []string // cycled; every request counts, good or bad
	}{
		{"/auth/login", "POST /auth/login", 10, "minute", 60, 19 * time.Second,
			[]string{`{}`, `not json`, `{"email":"nobody@example.com","password":7}`, `{"email":"x"}`}},
		{"/auth/register", "POST /auth/register", 10, "minute", 60, 19 * time.Second,
			[]string{`{}`, `[`, `{"email":"bad","password":"long enough"}`, `{"email":"a@example.com","password":"short"}`}},
		{"/auth/forgot-password", "POST /auth/forgot-password", 3, "hour", 3600, 3559 * time.Second,
			[]string{`{"email":"nobody@example.com"}`, `{}`, `{"email":"x@example.com"}`}},
	} {
		t.Run(ep.path[6:], func(t *testing.T) {
			h := newHarness(t, withServer(func(s *sluicehttp.Server) {
				s.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
			}))
			// fill sends the limit's worth of requests, none rejected.
			fill := func(remote string, hdr http.Header) {
				t.Helper()
				for i := range ep.limit {
					res := h.from(remote, "POST", ep.path, ep.bodies[i%len(ep.bodies)], hdr)
					if res.Status == http.StatusTooManyRequests {
						t.Fatalf("request %d from %s %v: 429 %s", i+1, remote, hdr, res.Body)
					}
					if got, want := res.Header.Get("RateLimit"), fmt.Sprintf(`"%s";r=%d;t=%d`, ep.window, ep.limit-1-i, ep.length); i == 0 && got != want {
						t.Fatalf("RateLimit = %q, want %q", got, want)
					}
				}
			}
			rejected := func(remote string, hdr http.Header) *response {
				t.Helper()
				res := h.from(remote, "POST", ep.path, ep.bodies[0], hdr)
				if res.Status != http.StatusTooManyRequests {
					t.Fatalf("from %s %v: %d %s, want 429", remote, hdr, res.Status, res.Body)
				}
				return res
			}
			admitted := func(remote string, hdr http.Header) {
				t.Helper()
				if res := h.from(remote, "POST", ep.path, ep.bodies[0], hdr); res.Status == http.StatusTooManyRequests {
					t.Fatalf("from %s %v: 429 %s", remote, hdr, res.Body)
				}
			}

			fill("203.0.113.7:1000", nil)
			h.Clock.Add(ep.advance)
			res := rejected("203.0.113.7:1001", nil)
			want := fmt.Sprintf(`{"error":"rate_limit_exceeded","message":"Rate limit reached: %d requests/%s per IP on %s","retry_after":41}`,
				ep.limit, ep.window, ep.route)
			if body(res) != want {
				t.Fatalf("429 body\n got %s\nwant %s", res.Body, want)
			}
			for k, v := range map[string]string{
				"Retry-After":      "41",
				"RateLimit-Policy": fmt.Sprintf(`"%s";q=%d;w=%d`, ep.window, ep.limit, ep.length),
				"RateLimit":        fmt.Sprintf(`"%s";r=0;t=41`, ep.window),
				"Content-Type":     "application/json",
			} {
				if got := res.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if got := rateHeaders(res); got["X-RateLimit-Limit-Hour"] != "" || got["X-RateLimit-Remaining-Day"] != "" {
				t.Errorf("account headers on an auth answer: %v", got)
			}

			// A spoofed X-Forwarded-For from a peer that is no proxy
			// changes nothing.
			if r2 := rejected("203.0.113.7:1002", xff("198.51.100.23")); body(r2) != want {
				t.Errorf("spoofed: %s", r2.Body)
			}
			rejected("203.0.113.7:1003", xff("10.0.0.1, 198.51.100.23"))
			// Another client is unaffected.
			admitted("203.0.113.8:1000", nil)
			// Through the trusted proxy, the same client is still
			// limited, whatever it puts left of its own address.
			rejected("10.0.0.5:80", xff("203.0.113.7"))
			rejected("10.0.0.5:80", xff("198.51.100.99, 203.0.113.7"))
			rejected("10.0.0.5:80", xff("198.51.100.99, 203.0.113.7, 10.1.2.3"))
			// A client behind the proxy gets its own limit; the
			// proxy's other clients do not share it.
			fill("10.0.0.5:80", xff("198.51.100.50"))
			rejected("10.0.0.6:80", xff("198.51.100.50"))
			admitted("10.0.0.5:80", xff("198.51.100.51"))
			// Two addresses in one IPv6 /64 share a limit; the next
			// /64 does not.
			fill("[2001:db8:1:2::1]:1000", nil)
			rejected("[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:1000", nil)
			rejected("10.0.0.5:80", xff("2001:db8:1:2::77"))
			admitted("[2001:db8:1:3::1]:1000", nil)

			// The rejected requests did not count: at retry_after the
			// first client is admitted again.
			h.Clock.Add(41 * time.Second)
			admitted("203.0.113.7:1004", nil)
		})
	}
}

// TestAuthLimitsConfigured: the limits and their words come from
// AuthLimits.
func TestAuthLimitsConfigured(t *testing.T) {
	h := newHarness(t, withServer(func(s *sluicehttp.Server) {
		s.AuthLimits.Register = sluicehttp.Rate{Limit: 2, Per: 30 * time.Second}
	}))
	for range 2 {
		h.from("192.0.2.1:1", "POST", "/auth/register", `{}`, nil)
	}
	res := h.from("192.0.2.1:1", "POST", "/auth/register", `{}`, nil)
	if want := `{"error":"rate_limit_exceeded","message":"Rate limit reached: 2 requests/30s per IP on POST /auth/register","retry_after":30}`; body(res) != want {
		t.Fatalf("got %s\nwant %s", res.Body, want)
	}
	if got := res.Header.Get("RateLimit-Policy"); got != `"30s";q=2;w=30` {
		t.Fatalf("RateLimit-Policy = %q", got)
	}
}

// sameAnswer fails unless a and b have the same status, body and headers
// (but for the request id).
func sameAnswer(t *testing.T, what string, a, b *response) {
	t.Helper()
	if a.Status != b.Status || string(a.Body) != string(b.Body) {
		t.Fatalf("%s: answers differ:\n%d %s\n%d %s", what, a.Status, a.Body, b.Status, b.Body)
	}
	ha, hb := a.Header.Clone(), b.Header.Clone()
	for _, h := range []http.Header{ha, hb} {
		h.Del("X-Request-Id")
		h.Del("Date")
	}
	if fmt.Sprint(ha) != fmt.Sprint(hb) {
		t.Fatalf("%s: headers differ:\n%v\n%v", what, ha, hb)
	}
}

// TestNoEnumeration: forgot-password and login answer a known and an
// unknown email alike; only the owner's inbox sees a difference.
func TestNoEnumeration(t *testing.T) {
	mailer := newFakeMailer()
	h := newHarness(t, withServer(func(s *sluicehttp.Server) { s.Mailer = mailer }))
	h.register("ada@example.com", "correct horse battery")
	// An account an admin created without a password.
	wantStatus(t, h.do("POST", "/admin/accounts", adminToken, `{"email":"nopass@example.com"}`), http.StatusCreated)

	unknown := h.from("198.51.100.1:1", "POST", "/auth/forgot-password", `{"email":"nobody@example.com"}`, nil)
	nopass := h.from("198.51.100.2:1", "POST", "/auth/forgot-password", `{"email":"nopass@example.com"}`, nil)
	known := h.from("198.51.100.3:1", "POST", "/auth/forgot-password", `{"email":"Ada@Example.com"}`, nil)
	wantStatus(t, known, http.StatusAccepted)
	if body(known) != `{"status":"sent"}` {
		t.Fatalf("body %s", known.Body)
	}
	sameAnswer(t, "forgot-password, unknown vs known", unknown, known)
	sameAnswer(t, "forgot-password, no password vs known", nopass, known)
	// The account with no password can set one by reset: it gets a mail
	// too (it exists); the unknown email gets none.
	if m := mailer.next(t); m.To != "nopass@example.com" {
		t.Fatalf("first mail to %s", m.To)
	}
	if m := mailer.next(t); m.To != "ada@example.com" || m.Subject != sluicehttp.ResetMailSubject {
		t.Fatalf("second mail: %+v", m)
	}
	mailer.none(t)

	wrong := h.from("198.51.100.4:1", "POST", "/auth/login", `{"email":"ada@example.com","password":"wrong password"}`, nil)
	nobody := h.from("198.51.100.5:1", "POST", "/auth/login", `{"email":"nobody@example.com","password":"wrong password"}`, nil)
	nopw := h.from("198.51.100.6:1", "POST", "/auth/login", `{"email":"nopass@example.com","password":"wrong password"}`, nil)
	wantStatus(t, wrong, http.StatusUnauthorized)
	if body(wrong) != `{"error":"invalid_credentials","message":"Invalid email or password."}` {
		t.Fatalf("body %s", wrong.Body)
	}
	sameAnswer(t, "login, unknown vs wrong password", nobody, wrong)
	sameAnswer(t, "login, no password vs wrong password", nopw, wrong)
}

// TestLoginDelays: failed logins are free up to LoginFreeFailures, then
// each attempt waits twice as long after the last failure; a success
// clears it. An unknown email is delayed the same way.
func TestLoginDelays(t *testing.T) {
	h := newHarness(t, noAuthLimits)
	h.register("ada@example.com", "correct horse battery")
	login := func(email, pw string) *response {
		t.Helper()
		return h.do("POST", "/auth/login", "", fmt.Sprintf(`{"email":%q,"password":%q}`, email, pw))
	}
	wait := func(res *response, secs int) {
		t.Helper()
		unit := "seconds"
		if secs == 1 {
			unit = "second"
		}
		want := fmt.Sprintf(`{"error":"rate_limit_exceeded","message":"Too many failed logins for this account; retry in %d %s.","retry_after":%d}`, secs, unit, secs)
		if res.Status != http.StatusTooManyRequests || body(res) != want || res.Header.Get("Retry-After") != fmt.Sprint(secs) {
			t.Fatalf("got %d %s (Retry-After %q)\nwant 429 %s", res.Status, res.Body, res.Header.Get("Retry-After"), want)
		}
	}
	// The case of the email does not matter: one account, one count.
	for i, email := range []string{"ada@example.com", "ADA@example.com", "ada@example.com", "Ada@Example.Com", "ada@example.com"} {
		if res := login(email, "wrong password"); res.Status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d %s", i+1, res.Status, res.Body)
		}
	}
	first := login("ada@example.com", "wrong password")
	wait(first, 2)
	// Even the right password waits: it is a delay for everyone.
	wait(login("ada@example.com", "correct horse battery"), 2)
	h.Clock.Add(time.Second)
	wait(login("ada@example.com", "wrong password"), 1)
	h.Clock.Add(time.Second)
	wantStatus(t, login("ada@example.com", "wrong password"), http.StatusUnauthorized)
	wait(login("ada@example.com", "wrong password"), 4)
	h.Clock.Add(4 * time.Second)
	wantStatus(t, login("ada@example.com", "wrong password"), http.StatusUnauthorized)
	wait(login("ada@example.com", "wrong password"), 8)
	h.Clock.Add(8 * time.Second)
	wantStatus(t, login("ada@example.com", "correct horse battery"), http.StatusOK)
	// The success cleared the count: failures are free again.
	wantStatus(t, login("ada@example.com", "wrong password"), http.StatusUnauthorized)
	wantStatus(t, login("ada@example.com", "wrong password"), http.StatusUnauthorized)

	// The same for an email nobody registered, byte for byte.
	for range sluicehttp.LoginFreeFailures {
		wantStatus(t, login("nobody@example.com", "wrong password"), http.StatusUnauthorized)
	}
	again := login("nobody@example.com", "wrong password")
	sameAnswer(t, "delay, unknown vs known", again, first)

	// The delay has a ceiling, and old failures leave the window.
	h.Clock.Add(sluicehttp.LoginFailureWindow)
	wantStatus(t, login("nobody@example.com", "wrong password"), http.StatusUnauthorized)
}

// TestPasswordReset: the token in the mail resets the password once, ends
// every session and works for an hour.
func TestPasswordReset(t *testing.T) {
	mailer := newFakeMailer()
	h := newHarness(t, noAuthLimits, withServer(func(s *sluicehttp.Server) {
		s.Mailer = mailer
		s.ResetURL = "https://app.example.com/reset?lang=en"
	}))
	h.register("ada@example.com", "correct horse battery")
	session := h.login("ada@example.com", "correct horse battery")
	wantStatus(t, h.do("GET", "/v1/keys", session, ""), http.StatusOK)

	wantStatus(t, h.do("POST", "/auth/forgot-password", "", `{"email":"ada@example.com"}`), http.StatusAccepted)
	m := mailer.next(t)
	tok := resetToken(t, m)
	if m.To != "ada@example.com" || !strings.Contains(m.Text, "https://app.example.com/reset?lang=en&token="+tok) {
		t.Fatalf("mail:\n%s", m.Text)
	}

	// A password that is too short does not spend the token.
	res := h.do("POST", "/auth/reset-password", "", fmt.Sprintf(`{"token":%q,"password":"short"}`, tok))
	wantStatus(t, res, http.StatusBadRequest)
	res = h.do("POST", "/auth/reset-password", "", fmt.Sprintf(`{"token":%q,"password":"new staple horse"}`, tok))
	wantStatus(t, res, http.StatusOK)
	if body(res) != `{"status":"password_reset"}` {
		t.Fatalf("body %s", res.Body)
	}
	res = h.do("GET", "/v1/keys", session, "")
	if res.Status != http.StatusUnauthorized || body(res) != `{"error":"unauthorized","message":"Invalid or expired session token."}` {
		t.Fatalf("old session after reset: %d %s", res.Status, res.Body)
	}
	wantStatus(t, h.do("POST", "/auth/login", "", `{"email":"ada@example.com","password":"correct horse battery"}`), http.StatusUnauthorized)
	h.login("ada@example.com", "new staple horse")

	// Used once.
	res = h.do("POST", "/auth/reset-password", "", fmt.Sprintf(`{"token":%q,"password":"third password"}`, tok))
	want := `{"error":"invalid_request","message":"The reset token is invalid, expired or already used; ask for a new one with POST /auth/forgot-password.","field":"token"}`
	if res.Status != http.StatusBadRequest || body(res) != want {
		t.Fatalf("reused token: %d %s", res.Status, res.Body)
	}
	// Valid for an hour.
	wantStatus(t, h.do("POST", "/auth/forgot-password", "", `{"email":"ada@example.com"}`), http.StatusAccepted)
	tok = resetToken(t, mailer.next(t))
	h.Clock.Add(sluicehttp.ResetTokenTTL)
	res = h.do("POST", "/auth/reset-password", "", fmt.Sprintf(`{"token":%q,"password":"third password"}`, tok))
	if res.Status != http.StatusBadRequest || body(res) != want {
		t.Fatalf("expired token: %d %s", res.Status, res.Body)
	}
}

// TestPasswordResetSpendsOtherMails: of two reset mails, the one used
// spends the other, so an older mail (a leaked inbox, a forwarded message)
// cannot set the password again after a reset.
func TestPasswordResetSpendsOtherMails(t *testing.T) {
	mailer := newFakeMailer()
	h := newHarness(t, noAuthLimits, withServer(func(s *sluicehttp.Server) { s.Mailer = mailer }))
	h.register("ada@example.com", "correct horse battery")
	wantStatus(t, h.do("POST", "/auth/forgot-password", "", `{"email":"ada@example.com"}`), http.StatusAccepted)
	first := resetToken(t, mailer.next(t))
	wantStatus(t, h.do("POST", "/auth/forgot-password", "", `{"email":"ada@example.com"}`), http.StatusAccepted)
	second := resetToken(t, mailer.next(t))

	res := h.do("POST", "/auth/reset-password", "", fmt.Sprintf(`{"token":%q,"password":"new staple horse"}`, second))
	wantStatus(t, res, http.StatusOK)
	res = h.do("POST", "/auth/reset-password", "", fmt.Sprintf(`{"token":%q,"password":"attacker's choice"}`, first))
	want := `{"error":"invalid_request","message":"The reset token is invalid, expired or already used; ask for a new one with POST /auth/forgot-password.","field":"token"}`
	if res.Status != http.StatusBadRequest || body(res) != want {
		t.Fatalf("other mail's token after a reset: %d %s", res.Status, res.Body)
	}
	h.login("ada@example.com", "new staple horse")
}

// TestForgotPerEmail: one address gets at most ForgotPasswordEmail mails,
// however many clients ask; the answers do not change.
func TestForgotPerEmail(t *testing.T) {
	mailer := newFakeMailer()
	h := newHarness(t, withServer(func(s *sluicehttp.Server) { s.Mailer = mailer }))
	h.register("victim@example.com", "correct horse battery")
	h.register("other@example.com", "correct horse battery")
	var answers []*response
	for i := range 5 {
		res := h.from(fmt.Sprintf("198.51.100.%d:1", i+1), "POST", "/auth/forgot-password", `{"email":"victim@example.com"}`, nil)
		wantStatus(t, res, http.StatusAccepted)
		answers = append(answers, res)
	}
	sameAnswer(t, "first vs limited", answers[0], answers[4])
	h.from("198.51.100.9:1", "POST", "/auth/forgot-password", `{"email":"other@example.com"}`, nil)
	for range 3 {
		if m := mailer.next(t); m.To != "victim@example.com" {
			t.Fatalf("mail to %s", m.To)
		}
	}
	if m := mailer.next(t); m.To != "other@example.com" {
		t.Fatalf("mail to %s, want the other address (the victim's limit is spent)", m.To)
	}
	mailer.none(t)
	// An hour later the victim can ask again.
	h.Clock.Add(time.Hour)
	h.from("198.51.100.10:1", "POST", "/auth/forgot-password", `{"email":"victim@example.com"}`, nil)
	if m := mailer.next(t); m.To != "victim@example.com" {
		t.Fatalf("mail to %s", m.To)
	}
}

// TestRegister: a Starter account that can log in; the same email in
// another case is taken.
func TestRegister(t *testing.T) {
	h := newHarness(t)
	res := h.do("POST", "/auth/register", "", `{"email":" Ada@Example.com ","password":"correct horse battery"}`)
	wantStatus(t, res, http.StatusCreated)
	var v struct {
		UserID int64  `json:"user_id"`
		Email  string `json:"email"`
		Plan   string `json:"plan"`
	}
	if err := json.Unmarshal(res.Body, &v); err != nil || v.UserID == 0 || v.Email != "Ada@Example.com" || v.Plan != "starter" {
		t.Fatalf("body %s", res.Body)
	}
	a, err := h.DB.FindAccountByID(context.Background(), v.UserID)
	if err != nil || !strings.HasPrefix(a.PasswordHash, "$argon2id$v=19$m=19456,t=2,p=1$") || a.Plan != "starter" {
		t.Fatalf("stored %+v, %v", a, err)
	}
	res = h.do("POST", "/auth/register", "", `{"email":"ada@example.COM","password":"another password"}`)
	if res.Status != http.StatusConflict || body(res) != `{"error":"email_taken","message":"An account with this email already exists."}` {
		t.Fatalf("taken: %d %s", res.Status, res.Body)
	}
	res = h.do("POST", "/auth/login", "", `{"email":"ADA@example.com","password":"correct horse battery"}`)
	wantStatus(t, res, http.StatusOK)
	var s struct {
		Token     string `json:"token"`
		ExpiresAt string `json:"expires_at"`
	}
	json.Unmarshal(res.Body, &s)
	if !regexp.MustCompile(`^sls_[0-9A-Za-z]{40}$`).MatchString(s.Token) ||
		s.ExpiresAt != h.Clock.Now().Add(sluicehttp.DefaultSessionTTL).UTC().Format(time.RFC3339) {
		t.Fatalf("session %+v", s)
	}
	if res.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", res.Header.Get("Cache-Control"))
	}
}

// TestLoginRehash: a hash made with weaker parameters is replaced at the
// next login.
func TestLoginRehash(t *testing.T) {
	h := newHarness(t)
	salt := make([]byte, 16)
	rand.Read(salt)
	key := argon2.IDKey([]byte("old password!"), salt, 1, 8*1024, 1, 32)
	b64 := base64.RawStdEncoding
	old := fmt.Sprintf("$argon2id$v=19$m=8192,t=1,p=1$%s$%s", b64.EncodeToString(salt), b64.EncodeToString(key))
	a := &sluice.Account{Email: "old@example.com", PasswordHash: old, Plan: "starter"}
	if err := h.DB.CreateAccount(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	h.login("old@example.com", "old password!")
	got, _ := h.DB.FindAccountByID(context.Background(), a.ID)
	if got.PasswordHash == old || !strings.HasPrefix(got.PasswordHash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash after login: %s", got.PasswordHash)
	}
	if ok, rehash := sluicehttp.VerifyPassword(got.PasswordHash, "old password!"); !ok || rehash {
		t.Fatalf("new hash: ok %v rehash %v", ok, rehash)
	}
}

// TestOwnKeys: an account manages its keys with a session; a revoked key
// fails on its very next use.
func TestOwnKeys(t *testing.T) {
	h := newHarness(t, withServer(func(s *sluicehttp.Server) { s.SessionTTL = time.Hour }))
	id := h.register("ada@example.com", "correct horse battery")
	session := h.login("ada@example.com", "correct horse battery")

	// Starter has no API access: 403, with the account's figures.
	res := h.do("POST", "/v1/keys", session, `{"name":"ci"}`)
	if res.Status != http.StatusForbidden || !strings.Contains(string(res.Body), `"error":"api_access_not_included"`) ||
		!strings.Contains(string(res.Body), `"plan":"starter"`) || res.Header.Get("X-RateLimit-Limit-Hour") != "5" {
		t.Fatalf("starter: %d %s %v", res.Status, res.Body, res.Header)
	}
	// Listing is open to every plan.
	res = h.do("GET", "/v1/keys", session, "")
	if res.Status != http.StatusOK || body(res) != `{"keys":[]}` || res.Header.Get("X-RateLimit-Remaining-Hour") != "5" {
		t.Fatalf("empty list: %d %s", res.Status, res.Body)
	}

	wantStatus(t, h.do("PUT", fmt.Sprintf("/admin/accounts/%d/plan", id), adminToken, `{"plan":"vip"}`), http.StatusOK)
	res = h.do("POST", "/v1/keys", session, `{"name":" ci "}`)
	wantStatus(t, res, http.StatusCreated)
	var k struct {
		ID, Name, Key string
		CreatedAt     string `json:"created_at"`
	}
	json.Unmarshal(res.Body, &k)
	if k.Name != "ci" || !strings.HasPrefix(k.Key, "slk_"+k.ID) || k.CreatedAt != T0.Format(time.RFC3339) ||
		res.Header.Get("Cache-Control") != "no-store" || res.Header.Get("X-RateLimit-Limit-Hour") != "100" {
		t.Fatalf("created: %s %v", res.Body, res.Header)
	}

	wantStatus(t, h.generate(k.Key, 2), http.StatusOK)
	h.Clock.Add(time.Minute)
	res = h.do("GET", "/v1/keys", session, "")
	want := fmt.Sprintf(`{"keys":[{"id":%q,"name":"ci","prefix":"slk_%s","created_at":%q,"last_used_at":%q}]}`,
		k.ID, k.ID, T0.Format(time.RFC3339), T0.Format(time.RFC3339))
	if res.Status != http.StatusOK || body(res) != want || res.Header.Get("X-RateLimit-Remaining-Hour") != "98" {
		t.Fatalf("list: %d %s\nwant %s", res.Status, res.Body, want)
	}

	// An API key cannot manage keys.
	res = h.do("GET", "/v1/keys", k.Key, "")
	if res.Status != http.StatusUnauthorized || !strings.Contains(string(res.Body), "not an API key") {
		t.Fatalf("with an API key: %d %s", res.Status, res.Body)
	}

	res = h.do("DELETE", "/v1/keys/"+k.ID, session, "")
	if res.Status != http.StatusNoContent || len(res.Body) != 0 || res.Header.Get("X-RateLimit-Remaining-Hour") != "98" {
		t.Fatalf("revoke: %d %s %v", res.Status, res.Body, res.Header)
	}
	res = h.generate(k.Key, 1)
	if res.Status != http.StatusUnauthorized || body(res) != `{"error":"invalid_api_key","message":"This API key has been revoked."}` {
		t.Fatalf("revoked key: %d %s", res.Status, res.Body)
	}
	res = h.do("DELETE", "/v1/keys/"+k.ID, session, "")
	if res.Status != http.StatusNotFound || res.Header.Get("X-RateLimit-Limit-Hour") != "100" {
		t.Fatalf("revoke twice: %d %s", res.Status, res.Body)
	}
	wantStatus(t, h.do("GET", "/v1/keys", session, ""), http.StatusOK)
	if body(h.do("GET", "/v1/keys", session, "")) != `{"keys":[]}` {
		t.Fatal("a revoked key is listed")
	}

	// Another account's key cannot be revoked.
	_, other := h.account("vip")
	otherID := other[4:16]
	if res := h.do("DELETE", "/v1/keys/"+otherID, session, ""); res.Status != http.StatusNotFound {
		t.Fatalf("another account's key: %d %s", res.Status, res.Body)
	}
	wantStatus(t, h.generate(other, 1), http.StatusOK)

	// Sessions expire.
	h.Clock.Add(time.Hour)
	if res := h.do("GET", "/v1/keys", session, ""); res.Status != http.StatusUnauthorized {
		t.Fatalf("expired session: %d %s", res.Status, res.Body)
	}
}

// TestSessionAuth: what the account endpoints say to bad credentials.
func TestSessionAuth(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name, header, want string
	}{
		{"missing", "", `{"error":"unauthorized","message":"Missing session token; log in with POST /auth/login and send Authorization: Bearer <token>."}`},
		{"not bearer", "Basic abc", `{"error":"unauthorized","message":"The Authorization header must be \"Bearer <session token>\"."}`},
		{"malformed", "Bearer sls_short", `{"error":"unauthorized","message":"Invalid or expired session token."}`},
		{"unknown", "Bearer sls_" + sluice.RandomString(40), `{"error":"unauthorized","message":"Invalid or expired session token."}`},
		{"api key", "Bearer slk_whatever", `{"error":"unauthorized","message":"This endpoint needs a session token from POST /auth/login, not an API key."}`},
	} {
		for _, r := range []struct{ method, path string }{{"GET", "/v1/keys"}, {"POST", "/v1/keys"}, {"DELETE", "/v1/keys/abc"}, {"POST", "/v1/telegram/link"}} {
			hdr := http.Header{}
			if tc.header != "" {
				hdr.Set("Authorization", tc.header)
			}
			res := h.doHeader(r.method, r.path, "", `{"name":"x"}`, hdr)
			if res.Status != http.StatusUnauthorized || body(res) != tc.want {
				t.Errorf("%s %s %s: %d %s", tc.name, r.method, r.path, res.Status, res.Body)
			}
		}
	}
	// Not under /openai/v1/, and only these methods.
	if res := h.do("GET", "/openai/v1/keys", "", ""); res.Status != http.StatusNotFound {
		t.Errorf("/openai/v1/keys: %d", res.Status)
	}
	if res := h.do("PUT", "/v1/keys", "", ""); res.Status != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "POST, GET, HEAD" {
		t.Errorf("PUT /v1/keys: %d %v", res.Status, res.Header.Get("Allow"))
	}
	if res := h.do("GET", "/auth/login", "", ""); res.Status != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "POST" {
		t.Errorf("GET /auth/login: %d %v", res.Status, res.Header.Get("Allow"))
	}
}

// TestTelegramLink: a single-use code for the bot, stored as a hash, good
// for ten minutes.
func TestTelegramLink(t *testing.T) {
	h := newHarness(t)
	id := h.register("ada@example.com", "correct horse battery")
	session := h.login("ada@example.com", "correct horse battery")
	res := h.do("POST", "/v1/telegram/link", session, "")
	wantStatus(t, res, http.StatusCreated)
	var v struct {
		Code      string `json:"code"`
		ExpiresAt string `json:"expires_at"`
	}
	json.Unmarshal(res.Body, &v)
	if !regexp.MustCompile(`^[0-9A-Za-z]{10}$`).MatchString(v.Code) ||
		v.ExpiresAt != T0.Add(10*time.Minute).Format(time.RFC3339) || res.Header.Get("X-RateLimit-Limit-Hour") != "5" {
		t.Fatalf("link: %s %v", res.Body, res.Header)
	}
	ctx := context.Background()
	// What the bot does with it.
	got, err := h.DB.ConsumeToken(ctx, sluice.TokenTelegramLink, sluice.HashToken(v.Code), T0.Add(10*time.Minute-time.Second))
	if err != nil || got != id {
		t.Fatalf("ConsumeToken = %d, %v; want %d", got, err, id)
	}
	if _, err := h.DB.ConsumeToken(ctx, sluice.TokenTelegramLink, sluice.HashToken(v.Code), T0); sluice.ErrorCode(err) != sluice.ENOTFOUND {
		t.Fatalf("second use: %v", err)
	}
	res = h.do("POST", "/v1/telegram/link", session, "")
	json.Unmarshal(res.Body, &v)
	if _, err := h.DB.ConsumeToken(ctx, sluice.TokenTelegramLink, sluice.HashToken(v.Code), T0.Add(10*time.Minute)); sluice.ErrorCode(err) != sluice.ENOTFOUND {
		t.Fatalf("after ten minutes: %v", err)
	}
}

// TestAuthBadInput: every kind of bad body on every endpoint is a §5 error
// (golden), and nothing is stored.
func TestAuthBadInput(t *testing.T) {
	mailer := newFakeMailer()
	h := newHarness(t, noAuthLimits, withServer(func(s *sluicehttp.Server) { s.Mailer = mailer }))
	h.register("ada@example.com", "correct horse battery")
	id := h.register("vip@example.com", "correct horse battery")
	wantStatus(t, h.do("PUT", fmt.Sprintf("/admin/accounts/%d/plan", id), adminToken, `{"plan":"vip"}`), http.StatusOK)
	session := h.login("vip@example.com", "correct horse battery")

	huge := `{"email":"a@example.com","password":"` + strings.Repeat("a", 70<<10) + `"}`
	long := strings.Repeat("é", sluicehttp.MaxPassword+1)
	longEmail := strings.Repeat("a", 243) + "@example.com"
	type tc struct {
		name, path, body string
		status           int
	}
	cases := []tc{
		{"register_empty", "/auth/register", ``, 400},
		{"register_not_json", "/auth/register", `email=a@example.com`, 400},
		{"register_array", "/auth/register", `["a@example.com","password1"]`, 400},
		{"register_email_type", "/auth/register", `{"email":7,"password":"correct horse"}`, 400},
		{"register_password_type", "/auth/register", `{"email":"b@example.com","password":true}`, 400},
		{"register_email_missing", "/auth/register", `{"password":"correct horse"}`, 400},
		{"register_password_missing", "/auth/register", `{"email":"b@example.com"}`, 400},
		{"register_email_null", "/auth/register", `{"email":null,"password":"correct horse"}`, 400},
		{"register_email_invalid", "/auth/register", `{"email":"b.example.com","password":"correct horse"}`, 400},
		{"register_email_name", "/auth/register", `{"email":"B <b@example.com>","password":"correct horse"}`, 400},
		{"register_email_long", "/auth/register", `{"email":"` + longEmail + `","password":"correct horse"}`, 400},
		{"register_password_short", "/auth/register", `{"email":"b@example.com","password":"1234567"}`, 400},
		{"register_password_long", "/auth/register", `{"email":"b@example.com","password":"` + long + `"}`, 400},
		{"register_unknown_field", "/auth/register", `{"email":"b@example.com","password":"correct horse","plan":"vip"}`, 400},
		{"register_trailing", "/auth/register", `{"email":"b@example.com","password":"correct horse"} {}`, 400},
		{"register_too_large", "/auth/register", huge, 413},
		{"login_empty", "/auth/login", ``, 400},
		{"login_not_json", "/auth/login", `<xml/>`, 400},
		{"login_email_missing", "/auth/login", `{"password":"correct horse"}`, 400},
		{"login_password_missing", "/auth/login", `{"email":"ada@example.com"}`, 400},
		{"login_password_type", "/auth/login", `{"email":"ada@example.com","password":12345678}`, 400},
		{"login_password_long", "/auth/login", `{"email":"ada@example.com","password":"` + long + `"}`, 400},
		{"login_email_long", "/auth/login", `{"email":"` + longEmail + `","password":"x"}`, 400},
		{"login_unknown_field", "/auth/login", `{"email":"ada@example.com","password":"x","remember":true}`, 400},
		{"login_too_large", "/auth/login", huge, 413},
		{"forgot_empty", "/auth/forgot-password", ``, 400},
		{"forgot_not_json", "/auth/forgot-password", `ada@example.com`, 400},
		{"forgot_email_missing", "/auth/forgot-password", `{}`, 400},
		{"forgot_email_type", "/auth/forgot-password", `{"email":["ada@example.com"]}`, 400},
		{"forgot_email_invalid", "/auth/forgot-password", `{"email":"ada"}`, 400},
		{"forgot_unknown_field", "/auth/forgot-password", `{"email":"ada@example.com","bcc":"eve@example.com"}`, 400},
		{"forgot_too_large", "/auth/forgot-password", `{"email":"` + strings.Repeat("a", 70<<10) + `"}`, 413},
		{"reset_empty", "/auth/reset-password", ``, 400},
		{"reset_not_json", "/auth/reset-password", `token=slr_x`, 400},
		{"reset_token_missing", "/auth/reset-password", `{"password":"correct horse"}`, 400},
		{"reset_token_malformed", "/auth/reset-password", `{"token":"slr_short","password":"correct horse"}`, 400},
		{"reset_token_unknown", "/auth/reset-password", `{"token":"slr_` + strings.Repeat("A", 40) + `","password":"correct horse"}`, 400},
		{"reset_token_type", "/auth/reset-password", `{"token":1,"password":"correct horse"}`, 400},
		{"reset_password_missing", "/auth/reset-password", `{"token":"slr_` + strings.Repeat("A", 40) + `"}`, 400},
		{"reset_password_short", "/auth/reset-password", `{"token":"slr_` + strings.Repeat("A", 40) + `","password":"short"}`, 400},
		{"reset_password_long", "/auth/reset-password", `{"token":"slr_` + strings.Repeat("A", 40) + `","password":"` + long + `"}`, 400},
		{"reset_unknown_field", "/auth/reset-password", `{"token":"x","password":"correct horse","email":"ada@example.com"}`, 400},
		{"reset_too_large", "/auth/reset-password", huge, 413},
		{"keys_empty", "/v1/keys", ``, 400},
		{"keys_not_json", "/v1/keys", `name=ci`, 400},
		{"keys_name_missing", "/v1/keys", `{}`, 400},
		{"keys_name_blank", "/v1/keys", `{"name":"   "}`, 400},
		{"keys_name_type", "/v1/keys", `{"name":{"first":"ci"}}`, 400},
		{"keys_name_long", "/v1/keys", `{"name":"` + strings.Repeat("k", sluicehttp.MaxKeyName+1) + `"}`, 400},
		{"keys_unknown_field", "/v1/keys", `{"name":"ci","scopes":["all"]}`, 400},
		{"keys_too_large", "/v1/keys", `{"name":"` + strings.Repeat("k", 70<<10) + `"}`, 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := ""
			if c.path == "/v1/keys" {
				tok = session
			}
			res := h.do("POST", c.path, tok, c.body)
			wantStatus(t, res, c.status)
			golden(t, "auth_"+c.name, res.Body)
			if tok != "" && res.Header.Get("X-RateLimit-Limit-Hour") != "100" {
				t.Errorf("no account headers on a /v1/ error")
			}
		})
	}

	// Nothing was stored: no new account, no key, no password change, no
	// mail.
	ctx := context.Background()
	for _, email := range []string{"b@example.com", "a@example.com", longEmail} {
		if _, err := h.DB.FindAccountByEmail(ctx, email); sluice.ErrorCode(err) != sluice.ENOTFOUND {
			t.Errorf("account %s: %v", email, err)
		}
	}
	if keys, err := h.DB.ListAPIKeys(ctx, id); err != nil || len(keys) != 0 {
		t.Errorf("keys: %v %v", keys, err)
	}
	h.login("ada@example.com", "correct horse battery")
	wantStatus(t, h.do("POST", "/auth/forgot-password", "", `{"email":"ada@example.com"}`), http.StatusAccepted)
	if m := mailer.next(t); m.To != "ada@example.com" {
		t.Fatalf("mail to %s", m.To)
	}
	mailer.none(t)

	// The longest password is fine.
	h.register("max@example.com", strings.Repeat("é", sluicehttp.MaxPassword))
}
