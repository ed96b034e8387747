package web

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	shttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/quota"
	"github.com/sluicehq/sluice/sqlite"
)

// env is the console mounted beside the real gateway, on real stores: a
// SQLite file and the in-memory quota store.
type env struct {
	t       testing.TB
	console *Server
	api     *shttp.Server
	db      *sqlite.DB
	ts      *httptest.Server
	// dbBehind sets the account store's clock back from the wall clock
	// (nanoseconds), to date what a test creates.
	dbBehind *atomic.Int64
}

func newEnv(t testing.TB, edit func(*Server, *shttp.Server)) *env {
	t.Helper()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "sluice.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	behind := new(atomic.Int64)
	db.Now = func() time.Time { return time.Now().Add(-time.Duration(behind.Load())) }
	store := inmem.New(inmem.Options{})
	t.Cleanup(func() { store.Close() })
	q := &quota.Limiter{Store: store}
	api := &shttp.Server{Accounts: db, Quota: q, Images: nil, Plans: sluice.DefaultPlans(), Models: sluice.DefaultModels(),
		AdminToken: "admin-token-for-tests", Logger: quiet}
	c := &Server{Accounts: db, Auth: api, Quota: q, Search: db, Sessions: db, Plans: sluice.DefaultPlans(),
		AdminToken: api.AdminToken, Logger: quiet}
	if edit != nil {
		edit(c, api)
	}
	api.Handlers = c.Routes()
	ts := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		ts.Close()
		api.Close(context.Background())
	})
	return &env{t: t, console: c, api: api, db: db, ts: ts, dbBehind: behind}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// client is a browser: a cookie jar, redirects not followed.
type client struct {
	e   *env
	c   *http.Client
	jar *cookiejar.Jar
}

func (e *env) client() *client {
	jar, _ := cookiejar.New(nil)
	return &client{e: e, jar: jar, c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (c *client) do(method, path string, form url.Values, header ...string) answer {
	c.e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.e.ts.URL+path, body)
	if err != nil {
		c.e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf loads path and returns the CSRF token of its forms.
func (c *client) csrf(path string) string {
	c.e.t.Helper()
	p := c.do("GET", path, nil)
	m := csrfRE.FindStringSubmatch(p.body)
	if m == nil {
		c.e.t.Fatalf("GET %s: %d, no CSRF token in\n%s", path, p.status, p.body)
	}
	return m[1]
}

// post sends a form with the CSRF token of the page at from.
func (c *client) post(from, path string, form url.Values, header ...string) answer {
	c.e.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf", c.csrf(from))
	return c.do("POST", path, form, header...)
}

func (e *env) register(email, password string) *sluice.Account {
	e.t.Helper()
	a, err := e.api.Register(context.Background(), email, password)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// signIn registers and signs in a user.
func (e *env) signIn(email string) (*client, *sluice.Account) {
	e.t.Helper()
	a := e.register(email, "correct horse")
	c := e.client()
	if p := c.post("/login", "/login", url.Values{"email": {email}, "password": {"correct horse"}}); p.status != 303 || p.header.Get("Location") != "/account" {
		e.t.Fatalf("sign in: %d %s %s", p.status, p.header.Get("Location"), p.body)
	}
	return c, a
}

func (e *env) opsClient() *client {
	e.t.Helper()
	c := e.client()
	if p := c.post("/ops/login", "/ops/login", url.Values{"token": {"admin-token-for-tests"}}); p.status != 303 {
		e.t.Fatalf("operator sign-in: %d %s", p.status, p.body)
	}
	return c
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t, nil)
	p := e.client().do("GET", "/login", nil)
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "same-origin",
		"X-Frame-Options":         "DENY",
		"Cache-Control":           "no-store",
		"Content-Type":            "text/html; charset=utf-8",
	}
	for k, v := range want {
		if got := p.header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if strings.Contains(p.body, "<script>") || regexp.MustCompile(`<script(?: [^>]*)?>[^<]`).MatchString(p.body) {
		t.Errorf("the page has an inline script:\n%s", p.body)
	}
	if regexp.MustCompile(`\sstyle=`).MatchString(p.body) {
		t.Errorf("the page has an inline style")
	}
	// Every input has a label.
	for _, id := range regexp.MustCompile(`<input id="([^"]+)"`).FindAllStringSubmatch(p.body, -1) {
		if !strings.Contains(p.body, `<label for="`+id[1]+`"`) {
			t.Errorf("input %s has no label", id[1])
		}
	}
	// Pages link to versioned assets, which may be kept for long.
	m := regexp.MustCompile(`href="(/assets/style\.css\?v=[0-9a-f]+)"`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no versioned stylesheet in\n%s", p.body)
	}
	if a := e.client().do("GET", m[1], nil); a.status != 200 || !strings.Contains(a.header.Get("Cache-Control"), "immutable") ||
		a.header.Get("Content-Type") != "text/css; charset=utf-8" {
		t.Errorf("GET %s: %d %v", m[1], a.status, a.header)
	}
	if a := e.client().do("GET", "/assets/nothing.js", nil); a.status != 404 {
		t.Errorf("GET /assets/nothing.js: %d", a.status)
	}
	for _, c := range []string{"GET /assets/style.css", "GET /assets/console.js"} {
		_, path, _ := strings.Cut(c, " ")
		a := e.client().do("GET", path, nil)
		if a.status != 200 || a.header.Get("Content-Security-Policy") == "" || a.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d %v", c, a.status, a.header)
		}
	}
}

func TestCookieFlags(t *testing.T) {
	for _, tc := range []struct {
		name   string
		public string
		tls    bool
		secure bool
	}{
		{"plain http", "http://localhost:8080", false, false},
		{"https public URL", "https://sluice.example.com", false, true},
		{"TLS", "", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Server, _ *shttp.Server) { c.PublicURL = tc.public })
			e.register("ann@example.com", "correct horse")
			c := e.client()
			tok := c.csrf("/login")
			req := httptest.NewRequest("POST", "/login", strings.NewReader(url.Values{"csrf": {tok},
				"email": {"ann@example.com"}, "password": {"correct horse"}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			for _, ck := range c.jar.Cookies(mustURL(e.ts.URL)) {
				req.AddCookie(ck)
			}
			if tc.tls {
				req.TLS = &tls.ConnectionState{}
			}
			w := httptest.NewRecorder()
			e.api.Handler().ServeHTTP(w, req)
			if w.Code != 303 {
				t.Fatalf("sign in: %d %s", w.Code, w.Body)
			}
			var session *http.Cookie
			for _, ck := range w.Result().Cookies() {
				if ck.Name == sessionCookie {
					session = ck
				}
			}
			if session == nil {
				t.Fatal("no session cookie")
			}
			if !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Path != "/" || session.MaxAge <= 0 || session.Secure != tc.secure {
				t.Errorf("session cookie %+v, want HttpOnly, SameSite=Lax, Path=/, a Max-Age, Secure=%v", session, tc.secure)
			}
		})
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// TestCSRF: every state-changing form refuses a POST without its token
// (403 csrf_failed), or with the token of another browser.
func TestCSRF(t *testing.T) {
	e := newEnv(t, nil)
	user, a := e.signIn("ann@example.com")
	ops := e.opsClient()
	posts := []string{"/signup", "/login", "/logout", "/forgot-password", "/reset-password", "/account/keys",
		"/account/keys/x/revoke", "/account/telegram", "/account/alerts", "/ops/login", "/ops/logout",
		"/ops/accounts/1/plan", "/ops/accounts/1/limits", "/ops/accounts/1/limits/delete",
		"/ops/accounts/1/usage/reset", "/ops/accounts/1/keys/x/revoke"}
	other := e.client().csrf("/login") // a valid token of another browser
	for _, path := range posts {
		for _, c := range []*client{user, ops} {
			for _, token := range []string{"", "forged", other} {
				form := url.Values{"plan": {"vip"}}
				if token != "" {
					form.Set("csrf", token)
				}
				p := c.do("POST", path, form, "Accept", "application/json")
				if p.status != 403 {
					t.Errorf("POST %s with token %q: %d, want 403", path, token, p.status)
					continue
				}
				var body map[string]string
				if err := json.Unmarshal([]byte(p.body), &body); err != nil || body["error"] != "csrf_failed" || body["message"] == "" {
					t.Errorf("POST %s: body %s, want a csrf_failed error", path, p.body)
				}
				if h := c.do("POST", path, form); h.status != 403 || !strings.Contains(h.body, "security token") {
					t.Errorf("POST %s as a page: %d %s", path, h.status, h.body)
				}
			}
		}
	}
	// Nothing was changed.
	if got, _ := e.db.FindAccountByID(t.Context(), a.ID); got.Plan != "starter" {
		t.Errorf("plan = %s after refused POSTs", got.Plan)
	}
	if p := user.do("GET", "/account", nil); p.status != 200 {
		t.Errorf("the session ended by a refused POST /logout: %d", p.status)
	}
}

func TestRedirects(t *testing.T) {
	e := newEnv(t, nil)
	anon := e.client()
	user, _ := e.signIn("ann@example.com")
	ops := e.opsClient()
	for _, tc := range []struct {
		c      *client
		path   string
		status int
		where  string
	}{
		{anon, "/", 303, "/login"},
		{user, "/", 303, "/account"},
		{anon, "/account", 303, "/login"},
		{user, "/login", 303, "/account"},
		{anon, "/ops/", 303, "/ops/login"},
		{user, "/ops/", 303, "/ops/login"},
		{anon, "/ops", 301, "/ops/"},
		{ops, "/ops/login", 303, "/ops/"},
		{ops, "/ops/", 200, ""},
		{ops, "/ops/accounts/999", 404, ""},
		{ops, "/ops/accounts/abc", 404, ""},
		{anon, "/v1/nothing", 404, ""},
	} {
		p := tc.c.do("GET", tc.path, nil)
		if p.status != tc.status || p.header.Get("Location") != tc.where {
			t.Errorf("GET %s: %d %q, want %d %q", tc.path, p.status, p.header.Get("Location"), tc.status, tc.where)
		}
	}
	// Unknown API paths keep the API's JSON 404.
	if p := anon.do("GET", "/v1/nothing", nil); !strings.Contains(p.body, `"error":"not_found"`) {
		t.Errorf("GET /v1/nothing: %s", p.body)
	}
	if p := anon.do("GET", "/account/usage.json", nil, "Accept", "application/json"); p.status != 401 || !strings.Contains(p.body, "unauthorized") {
		t.Errorf("usage.json without a session: %d %s", p.status, p.body)
	}
}

// TestSignOut: signing out ends the browser's session for good, and only
// it.
func TestSignOut(t *testing.T) {
	e := newEnv(t, nil)
	user, a := e.signIn("ann@example.com")
	_, cli, err := e.api.Login(t.Context(), "ann@example.com", "correct horse") // a script's session
	if err != nil {
		t.Fatal(err)
	}
	saved := user.jar.Cookies(mustURL(e.ts.URL))
	if p := user.post("/account", "/logout", nil); p.status != 303 || p.header.Get("Location") != "/login?done=signed-out" {
		t.Fatalf("sign out: %d %s", p.status, p.header.Get("Location"))
	}
	if p := user.do("GET", "/account", nil); p.status != 303 {
		t.Fatalf("after sign-out: %d", p.status)
	}
	// The old cookie, replayed, is dead too.
	replay := e.client()
	replay.jar.SetCookies(mustURL(e.ts.URL), saved)
	if p := replay.do("GET", "/account", nil); p.status != 303 {
		t.Fatalf("replayed cookie after sign-out: %d", p.status)
	}
	for _, ck := range saved {
		if strings.Contains(ck.Value, "correct horse") {
			t.Fatal("a cookie holds the password")
		}
	}
	if _, err := e.db.FindSession(t.Context(), cli.TokenHash, time.Now()); err != nil {
		t.Errorf("signing out of the browser ended the account's other session: %v", err)
	}
	// Without a SessionEnder, every session ends.
	e = newEnv(t, func(c *Server, _ *shttp.Server) { c.Sessions = nil })
	user, a = e.signIn("ann@example.com")
	_, cli, _ = e.api.Login(t.Context(), "ann@example.com", "correct horse")
	user.post("/account", "/logout", nil)
	if _, err := e.db.FindSession(t.Context(), cli.TokenHash, time.Now()); sluice.ErrorCode(err) != sluice.ENOTFOUND {
		t.Errorf("without a SessionEnder, the other session survives sign-out: %v", err)
	}
	_ = a
}

// TestSignInLimits: console sign-ins count against POST /auth/login's per-IP
// limit, and the 429 says in words when to try again.
func TestSignInLimits(t *testing.T) {
	e := newEnv(t, func(_ *Server, api *shttp.Server) {
		api.AuthLimits.Login = shttp.Rate{Limit: 3, Per: time.Minute}
	})
	e.register("ann@example.com", "correct horse")
	c := e.client()
	form := func() url.Values { return url.Values{"email": {"ann@example.com"}, "password": {"wrong password"}} }
	if p := c.post("/login", "/login", form()); p.status != 401 || !strings.Contains(p.body, "Wrong email or password.") {
		t.Fatalf("first attempt: %d %s", p.status, p.body)
	}
	// One attempt through the JSON endpoint draws from the same limit.
	req, _ := http.NewRequest("POST", e.ts.URL+"/auth/login", strings.NewReader(`{"email":"x@example.com","password":"whatever1"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if p := c.post("/login", "/login", form()); p.status != 401 {
		t.Fatalf("third attempt: %d", p.status)
	}
	p := c.post("/login", "/login", form())
	if p.status != 429 || p.header.Get("Retry-After") == "" {
		t.Fatalf("fourth attempt: %d %v", p.status, p.header)
	}
	if !regexp.MustCompile(`Too many attempts from your network\. Try again in \d+ (?:seconds|minute) \(at \d\d:\d\d:\d\d UTC\)\.`).MatchString(p.body) {
		t.Fatalf("the 429 page does not say when to try again:\n%s", p.body)
	}
}

// TestAntiEnumeration: an unknown email and a wrong password look the
// same on the sign-in form, and forgot-password says the same for both.
func TestAntiEnumeration(t *testing.T) {
	e := newEnv(t, nil)
	e.register("ann@example.com", "correct horse")
	strip := regexp.MustCompile(`name="csrf" value="[^"]+"|value="[^"]*@example.com"`)
	var bodies []string
	for _, email := range []string{"ann@example.com", "bob@example.com"} {
		c := e.client()
		p := c.post("/login", "/login", url.Values{"email": {email}, "password": {"wrong password"}})
		if p.status != 401 {
			t.Fatalf("%s: %d", email, p.status)
		}
		bodies = append(bodies, strip.ReplaceAllString(p.body, ""))
		f := c.post("/forgot-password", "/forgot-password", url.Values{"email": {email}})
		if f.status != 200 || !strings.Contains(f.body, "If an account has this email") {
			t.Fatalf("forgot %s: %d %s", email, f.status, f.body)
		}
		bodies = append(bodies, strip.ReplaceAllString(f.body, ""))
	}
	if bodies[0] != bodies[2] || bodies[1] != bodies[3] {
		t.Errorf("the answers differ for a known and an unknown email")
	}
}

// TestEscaping: an email and a key name holding markup are shown as text.
func TestEscaping(t *testing.T) {
	e := newEnv(t, nil)
	const hostile = `<script>alert(1)</script>`
	a := &sluice.Account{Email: hostile + "@example.com", Plan: "vip"}
	if err := e.db.CreateAccount(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	k := &sluice.APIKey{ID: "abcdefghijkl", AccountID: a.ID, Name: `"><img src=x onerror=alert(1)>`, Hash: make([]byte, 32)}
	if err := e.db.CreateAPIKey(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	ops := e.opsClient()
	for _, path := range []string{"/ops/?q=script", "/ops/accounts/1"} {
		p := ops.do("GET", path, nil)
		if p.status != 200 {
			t.Fatalf("GET %s: %d", path, p.status)
		}
		if strings.Contains(p.body, hostile) || strings.Contains(p.body, "<img src=x") {
			t.Errorf("GET %s holds raw markup:\n%s", path, p.body)
		}
		if !strings.Contains(p.body, "&lt;script&gt;alert(1)&lt;/script&gt;@example.com") {
			t.Errorf("GET %s does not show the email as text", path)
		}
	}
	// A key name through the user's own form.
	user, _ := e.signIn("bob@example.com")
	e.db.SetPlan(t.Context(), 2, "vip")
	p := user.post("/account", "/account/keys", url.Values{"name": {hostile}})
	if p.status != 200 || strings.Contains(p.body, hostile) || !strings.Contains(p.body, "&lt;script&gt;") {
		t.Errorf("new key page: %d, raw markup or no text:\n%s", p.status, p.body)
	}
}

// TestOpsSession: the operator's cookie never holds the token, and is
// refused when tampered with, expired, or signed under another token.
func TestOpsSession(t *testing.T) {
	e := newEnv(t, nil)
	ops := e.opsClient()
	var cookie *http.Cookie
	for _, ck := range ops.jar.Cookies(mustURL(e.ts.URL + "/ops/")) {
		if ck.Name == opsCookie {
			cookie = ck
		}
	}
	if cookie == nil || strings.Contains(cookie.Value, "admin-token-for-tests") {
		t.Fatalf("operator cookie %v", cookie)
	}
	other := &Server{AdminToken: "another-token"}
	other.init()
	now := time.Now()
	for _, tc := range []struct {
		name  string
		value string
		ok    bool
	}{
		{"as given", cookie.Value, true},
		{"tampered expiry", "9" + cookie.Value, false},
		{"expired", e.console.opsCookieValue(now.Add(-time.Second)), false},
		{"another token", other.opsCookieValue(now.Add(time.Hour)), false},
		{"empty", "", false},
		{"garbage", "abc.def", false},
	} {
		req := httptest.NewRequest("GET", "/ops/", nil)
		req.AddCookie(&http.Cookie{Name: opsCookie, Value: tc.value})
		if got := e.console.opsSignedIn(req); got != tc.ok {
			t.Errorf("%s: signed in = %v, want %v", tc.name, got, tc.ok)
		}
	}
	// A wrong token is refused next to the field.
	c := e.client()
	if p := c.post("/ops/login", "/ops/login", url.Values{"token": {"guess"}}); p.status != 401 || !strings.Contains(p.body, "This is not the admin token.") {
		t.Errorf("wrong token: %d", p.status)
	}
	// Without an admin token nobody signs in.
	none := newEnv(t, func(c *Server, _ *shttp.Server) { c.AdminToken = "" })
	if p := none.client().post("/ops/login", "/ops/login", url.Values{"token": {""}}); p.status != 401 {
		t.Errorf("empty admin token: %d", p.status)
	}
}

// TestOpsActions: plan change, override (with a field error), usage reset
// and a key revocation, each through its form.
func TestOpsActions(t *testing.T) {
	e := newEnv(t, nil)
	a := e.register("ann@example.com", "correct horse")
	ops := e.opsClient()
	page := "/ops/accounts/1"
	if p := ops.post(page, page+"/plan", url.Values{"plan": {"vip"}}); p.status != 303 || p.header.Get("Location") != page+"?done=plan-changed" {
		t.Fatalf("plan: %d %s", p.status, p.body)
	}
	if p := ops.post(page, page+"/plan", url.Values{"plan": {"platinum"}}); p.status != 400 || !strings.Contains(p.body, "Choose one of the plans.") {
		t.Fatalf("unknown plan: %d", p.status)
	}
	if p := ops.post(page, page+"/limits", url.Values{"hour": {"1,000"}, "day": {""}}); p.status != 303 {
		t.Fatalf("override: %d %s", p.status, p.body)
	}
	got, _ := e.db.FindAccountByID(t.Context(), a.ID)
	if got.Plan != "vip" || got.Override == nil || got.Override.Hour != 1000 || !got.Override.Day.IsUnlimited() {
		t.Fatalf("account after the changes: %+v %+v", got, got.Override)
	}
	if p := ops.post(page, page+"/limits", url.Values{"hour": {"-1"}, "day": {"x"}}); p.status != 400 ||
		!strings.Contains(p.body, `id="hour-err"`) || !strings.Contains(p.body, `id="day-err"`) {
		t.Fatalf("bad override: %d", p.status)
	}
	if p := ops.post(page, page+"/limits/delete", nil); p.status != 303 {
		t.Fatalf("remove override: %d", p.status)
	}
	if p := ops.post(page, page+"/usage/reset", nil); p.status != 400 || !strings.Contains(p.body, "Tick the box") {
		t.Fatalf("reset without confirming: %d", p.status)
	}
	if p := ops.post(page, page+"/usage/reset", url.Values{"confirm": {"yes"}}); p.status != 303 {
		t.Fatalf("reset: %d", p.status)
	}
	key, id, hash := sluice.NewAPIKey()
	_ = key
	e.db.CreateAPIKey(t.Context(), &sluice.APIKey{ID: id, AccountID: a.ID, Name: "k", Hash: hash})
	if p := ops.do("GET", page+"/keys/"+id+"/revoke", nil); p.status != 200 || !strings.Contains(p.body, "Revoke the key “k”?") {
		t.Fatalf("confirmation page: %d", p.status)
	}
	if p := ops.post(page, page+"/keys/"+id+"/revoke", nil); p.status != 303 {
		t.Fatalf("revoke: %d", p.status)
	}
	if k, _ := e.db.FindAPIKey(t.Context(), id); k.RevokedAt.IsZero() {
		t.Fatal("the key is not revoked")
	}
	if p := ops.post(page, page+"/keys/"+id+"/revoke", nil); p.status != 404 {
		t.Fatalf("revoke again: %d", p.status)
	}
}

// TestUsageJSON: the endpoint the gauges poll has /v1/usage's shape.
func TestUsageJSON(t *testing.T) {
	e := newEnv(t, nil)
	user, a := e.signIn("ann@example.com")
	pol := sluice.WindowConfig{}.AccountPolicy(5, 20)
	if _, err := e.console.Quota.Take(t.Context(), sluice.AccountQuotaKey(a.ID), &pol, 2); err != nil {
		t.Fatal(err)
	}
	p := user.do("GET", "/account/usage.json", nil)
	var got struct {
		Plan string
		Hour struct {
			Limit, Used, Remaining, Reset *int64
			Percent                       int
		}
	}
	if err := json.Unmarshal([]byte(p.body), &got); err != nil {
		t.Fatalf("%d %s: %v", p.status, p.body, err)
	}
	if got.Plan != "starter" || *got.Hour.Limit != 5 || *got.Hour.Used != 2 || *got.Hour.Remaining != 3 || got.Hour.Percent != 40 || got.Hour.Reset == nil {
		t.Fatalf("usage.json = %s", p.body)
	}
}

// TestUnlimitedUsed: an Elite account sees what it used in its unlimited
// windows, on the page and in usage.json.
func TestUnlimitedUsed(t *testing.T) {
	e := newEnv(t, nil)
	user, a := e.signIn("eve@example.com")
	if err := e.db.SetPlan(t.Context(), a.ID, "elite"); err != nil {
		t.Fatal(err)
	}
	pol := sluice.WindowConfig{}.AccountPolicy(sluice.Unlimited, sluice.Unlimited)
	if _, err := e.console.Quota.Take(t.Context(), sluice.AccountQuotaKey(a.ID), &pol, 3); err != nil {
		t.Fatal(err)
	}
	p := user.do("GET", "/account", nil)
	if !strings.Contains(p.body, `<span data-f="used">3</span> <span class="of">used</span>`) || !strings.Contains(p.body, "Unlimited: no limit") {
		t.Errorf("account page of an Elite account that used 3:\n%s", p.body)
	}
	p = user.do("GET", "/account/usage.json", nil)
	var got struct{ Hour, Day struct{ Limit, Used *int64 } }
	if err := json.Unmarshal([]byte(p.body), &got); err != nil {
		t.Fatalf("%d %s: %v", p.status, p.body, err)
	}
	if got.Hour.Limit != nil || got.Hour.Used == nil || *got.Hour.Used != 3 || *got.Day.Used != 3 {
		t.Errorf("usage.json = %s", p.body)
	}
}

// TestSetPlans: plans reloaded into the console show on the next page:
// the account's limits and the plans table.
func TestSetPlans(t *testing.T) {
	e := newEnv(t, nil)
	user, _ := e.signIn("ann@example.com")
	if p := user.do("GET", "/account", nil); !strings.Contains(p.body, `of <span data-f="limit">5</span> used`) {
		t.Fatalf("Starter before the reload:\n%s", p.body)
	}
	plans := sluice.DefaultPlans()
	plans[0].Hour, plans[0].Name = 7, "Starter Plus"
	e.console.SetPlans(plans, sluice.WindowConfig{})
	p := user.do("GET", "/account", nil)
	if !strings.Contains(p.body, `of <span data-f="limit">7</span> used`) || !strings.Contains(p.body, "Starter Plus") {
		t.Errorf("after the reload, the page does not show the new Starter plan:\n%s", p.body)
	}
}

// fakeHistory is a UsageService and AuditLog with canned answers: the
// stores that implement them come from other packages.
type fakeHistory struct {
	hourly, daily []sluice.UsageBucket
	events        []*sluice.AuditEvent
	top           []sluice.UsageTotal
	topHour       []sluice.UsageTotal // the top of spans of an hour, if set
}

func (f *fakeHistory) UsageHistory(_ context.Context, q sluice.UsageQuery) ([]sluice.UsageBucket, error) {
	bs := f.hourly
	if q.Granularity == sluice.GranularityDay {
		bs = f.daily
	}
	var out []sluice.UsageBucket
	for _, b := range bs {
		if !b.Start.Before(q.From) && b.Start.Before(q.To) {
			out = append(out, b)
		}
	}
	return out, nil
}

func (f *fakeHistory) TopUsage(_ context.Context, from, to time.Time, _ int) ([]sluice.UsageTotal, error) {
	if f.topHour != nil && to.Sub(from) < 2*time.Hour {
		return f.topHour, nil
	}
	return f.top, nil
}

func (f *fakeHistory) RecordAudit(_ context.Context, e *sluice.AuditEvent) error {
	f.events = append([]*sluice.AuditEvent{e}, f.events...)
	return nil
}

func (f *fakeHistory) ListAudit(context.Context, sluice.AuditFilter) ([]*sluice.AuditEvent, error) {
	return f.events, nil
}

// TestHistoryAndAudit: with a usage history and an audit log, the account
// page draws the chart (and its table) and says what happened, by whom.
func TestHistoryAndAudit(t *testing.T) {
	now := time.Date(2026, 12, 7, 14, 20, 0, 0, time.UTC)
	f := &fakeHistory{
		hourly: []sluice.UsageBucket{
			{Start: time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC), Group: sluice.ChannelAPI, Images: 7},
			{Start: time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC), Group: sluice.ChannelTelegram, Images: 3},
		},
		events: []*sluice.AuditEvent{
			{ID: 2, At: now, Actor: sluice.Actor{Type: sluice.ActorUser, ID: "1", IP: "203.0.113.7"}, Action: sluice.AuditKeyCreated,
				AccountID: 1, Details: map[string]any{"key_id": "abc", "name": "laptop"}},
			{ID: 1, At: now, Actor: sluice.Actor{Type: sluice.ActorAdmin}, Action: sluice.AuditPlanChanged,
				AccountID: 1, Details: map[string]any{"from": "starter", "to": "vip"}},
		},
		top: []sluice.UsageTotal{{AccountID: 1, Images: 10}},
	}
	e := newEnv(t, func(c *Server, _ *shttp.Server) {
		c.Usage, c.Audit = f, f
		c.Now = func() time.Time { return now }
	})
	user, _ := e.signIn("ann@example.com")
	p := user.do("GET", "/account", nil)
	t.Logf("page weight: /account with history and audit: %d bytes of HTML", len(p.body))
	for _, want := range []string{
		`data-chart-total="10"`,
		`<tr><td>13:00</td><td class="num">7</td><td class="num">3</td><td class="num">10</td></tr>`,
		`class="seg-api"`, `class="seg-tg"`,
		`API key “laptop” created</span> <span class="muted">by you from 203.0.113.7`,
		`Plan changed from starter to vip</span> <span class="muted">by the operator`,
	} {
		if !strings.Contains(p.body, want) {
			t.Errorf("the account page does not hold %s", want)
		}
	}
	ops := e.opsClient()
	if p := ops.do("GET", "/ops/", nil); !strings.Contains(p.body, `<a href="/ops/accounts/1">ann@example.com</a>`) || !strings.Contains(p.body, ">10<") {
		t.Errorf("top accounts missing:\n%s", p.body)
	}
	if p := ops.do("GET", "/ops/audit", nil); !strings.Contains(p.body, "Plan changed from starter to vip") {
		t.Errorf("audit log page:\n%s", p.body)
	}
	// A usage reset by the operator is recorded with the admin as actor.
	if p := ops.post("/ops/accounts/1", "/ops/accounts/1/usage/reset", url.Values{"confirm": {"yes"}}); p.status != 303 {
		t.Fatalf("reset: %d", p.status)
	}
	if ev := f.events[0]; ev.Action != sluice.AuditUsageReset || ev.Actor.Type != sluice.ActorAdmin || ev.AccountID != 1 {
		t.Errorf("recorded %+v", ev)
	}
}

// TestActor: a user's change carries the user as actor, with the IP.
func TestActor(t *testing.T) {
	var got sluice.Actor
	e := newEnv(t, func(c *Server, _ *shttp.Server) {
		c.Accounts = actorSpy{AccountService: c.Accounts, got: &got}
	})
	user, a := e.signIn("ann@example.com")
	e.db.SetPlan(t.Context(), a.ID, "vip")
	user.post("/account", "/account/keys", url.Values{"name": {"k"}})
	if got.Type != sluice.ActorUser || got.ID != "1" || got.IP != "127.0.0.1" {
		t.Errorf("actor = %+v", got)
	}
}

type actorSpy struct {
	sluice.AccountService
	got *sluice.Actor
}

func (s actorSpy) CreateAPIKey(ctx context.Context, k *sluice.APIKey) error {
	*s.got = sluice.ActorFrom(ctx)
	return s.AccountService.CreateAPIKey(ctx, k)
}

type alertSpy struct{ calls []bool }

func (a *alertSpy) SetMailAlerts(_ context.Context, _ int64, on bool) error {
	a.calls = append(a.calls, on)
	return nil
}

// TestAlerts: the mail alert control shows only when the store can keep
// the choice, and posts it.
func TestAlerts(t *testing.T) {
	e := newEnv(t, nil)
	user, _ := e.signIn("ann@example.com")
	if p := user.do("GET", "/account", nil); strings.Contains(p.body, "Mail alerts") {
		t.Error("the alert control shows without a store for it")
	}
	if p := user.post("/account", "/account/alerts", url.Values{"email": {"off"}}); p.status != 404 {
		t.Errorf("POST /account/alerts without a store: %d", p.status)
	}

	spy := &alertSpy{}
	e = newEnv(t, func(c *Server, _ *shttp.Server) {
		c.Alerts = spy
	})
	user, _ = e.signIn("ann@example.com")
	p := user.do("GET", "/account", nil)
	if !strings.Contains(p.body, "They are <strong>on</strong>") || !strings.Contains(p.body, "Turn mail alerts off") || strings.Contains(p.body, "Turn mail alerts on") {
		t.Errorf("alert control:\n%s", p.body)
	}
	if p := user.post("/account", "/account/alerts", url.Values{"email": {"off"}}); p.status != 303 || p.header.Get("Location") != "/account?done=alerts-off#alerts" {
		t.Errorf("turn off: %d %s", p.status, p.header.Get("Location"))
	}
	if p := user.post("/account", "/account/alerts", url.Values{"email": {"maybe"}}); p.status != 400 {
		t.Errorf("a bad choice: %d", p.status)
	}
	if len(spy.calls) != 1 || spy.calls[0] {
		t.Errorf("SetMailAlerts calls %v, want [false]", spy.calls)
	}
}

// TestLoginDelay: the API's growing delay after failed logins applies to
// the sign-in form, in words.
func TestLoginDelay(t *testing.T) {
	e := newEnv(t, func(_ *Server, api *shttp.Server) {
		api.AuthLimits.Login = shttp.Rate{Limit: 100, Per: time.Minute}
	})
	e.register("ann@example.com", "correct horse")
	c := e.client()
	var last answer
	for i := 0; i < shttp.LoginFreeFailures+1; i++ {
		last = c.post("/login", "/login", url.Values{"email": {"ann@example.com"}, "password": {"wrong password"}})
	}
	if last.status != 429 || !regexp.MustCompile(`Too many failed sign-ins for this account\. Try again in (a second|\d+ seconds)`).MatchString(last.body) {
		t.Fatalf("after %d failures: %d\n%s", shttp.LoginFreeFailures+1, last.status, last.body)
	}
}
