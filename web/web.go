// Package web is the web console of sluice (CONTRACT.md §11): server-rendered
// pages for the people who use sluice (sign up, sign in, reset a password,
// and /account: plan, usage, keys, Telegram, plans, alerts, history) and for
// its operator (/ops/: find accounts, change them, top accounts, the audit
// log). Templates and assets are embedded in the binary; the little
// JavaScript there is (assets/console.js) only improves pages that work
// without it: live gauges, local times and a copy button.
//
// It meets the rest of sluice through the root's interfaces only: accounts,
// quota, usage history, audit log and, for everything about passwords and
// sessions, sluice.AuthService, so that a sign-in on a form counts against
// the same per-IP limits and failed-login delays as POST /auth/login.
//
// Security:
//
//   - Every state-changing form is a POST carrying a CSRF token: an HMAC,
//     keyed by a secret derived from the admin token, of a random value in
//     an HttpOnly cookie of the browser's own (csrfCookie). A POST without
//     a matching token is 403 csrf_failed (a JSON body for JSON clients, a
//     page for people).
//   - The user's session is the session token of POST /auth/login, in an
//     HttpOnly, SameSite=Lax cookie, Secure when the request came over TLS
//     or public_url is https. Signing out ends the browser's session (every
//     session of the account if the store cannot end one alone).
//   - The operator signs in with the admin token and gets a cookie holding
//     an expiry and an HMAC of it, keyed by a secret derived from the admin
//     token: every instance with the token accepts it, the token itself is
//     never in it, and changing the token ends every operator session.
//   - Every answer carries a Content-Security-Policy without inline scripts
//     or styles and with frame-ancestors 'none', nosniff and a
//     Referrer-Policy; pages are not cached.
package web

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// AlertSettings turns an account's quota alerts by mail on and off
// (sluice.AccountService does). Whether they are on is the account's
// MailAlertsOff.
type AlertSettings interface {
	SetMailAlerts(ctx context.Context, accountID int64, on bool) error
}

// Server is the web console. Set its fields, then mount Routes; the fields
// must not change after that. The optional services (Usage, Audit, Search,
// Alerts) may be nil: the sections that need them say "not available" or
// are left out. A Server is safe for concurrent use.
type Server struct {
	Accounts sluice.AccountService
	Auth     sluice.AuthService
	Quota    sluice.QuotaService
	Usage    sluice.UsageService    // nil: no charts, no top accounts
	Audit    sluice.AuditLog        // nil: no audit events
	Search   sluice.AccountSearcher // nil: the operator cannot search
	Alerts   AlertSettings          // nil: no mail alert control (alerts are off)
	// Sessions ends the session of a user who signs out; nil: signing
	// out ends every session of the account.
	Sessions sluice.SessionEnder
	// Plans and Windows are those in force at the start; SetPlans
	// replaces them.
	Plans   []sluice.Plan
	Windows sluice.WindowConfig
	// AdminToken signs in the operator; the keys of the CSRF tokens and
	// operator cookies are derived from it. Empty: /ops/ refuses every
	// sign-in, and CSRF tokens use a random key of this process.
	AdminToken string
	// PublicURL is where users reach sluice; an https URL makes every
	// cookie Secure.
	PublicURL string
	// TelegramBot is the bot's username, without "@"; when set the account
	// page links to https://t.me/<bot>?start=<code>.
	TelegramBot string
	Logger      *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	once    sync.Once
	pages   map[string]*template.Template
	csrfKey []byte
	opsKey  []byte // nil: no operator sign-in
	cat     atomic.Pointer[catalog]
	botName atomic.Pointer[string] // SetTelegramBot's; nil: TelegramBot
	secure  bool
}

// Routes returns the console's routes, as patterns ("GET /login") that
// http.ServeMux takes, to mount beside the API.
func (s *Server) Routes() map[string]http.Handler {
	s.init()
	routes := map[string]http.HandlerFunc{
		"GET /{$}":                                  s.handleRoot,
		"GET /assets/{file}":                        s.handleAsset,
		"GET /signup":                               s.handleSignupPage,
		"POST /signup":                              s.handleSignup,
		"GET /login":                                s.handleLoginPage,
		"POST /login":                               s.handleLogin,
		"POST /logout":                              s.handleLogout,
		"GET /forgot-password":                      s.handleForgotPage,
		"POST /forgot-password":                     s.handleForgot,
		"GET /reset-password":                       s.handleResetPage,
		"POST /reset-password":                      s.handleReset,
		"GET /account":                              s.user(s.handleAccount),
		"GET /account/usage.json":                   s.user(s.handleUsageJSON),
		"POST /account/keys":                        s.user(s.handleCreateKey),
		"GET /account/keys/{id}/revoke":             s.user(s.handleRevokePage),
		"POST /account/keys/{id}/revoke":            s.user(s.handleRevoke),
		"POST /account/telegram":                    s.user(s.handleTelegram),
		"POST /account/alerts":                      s.user(s.handleAlerts),
		"GET /ops":                                  s.handleOpsRedirect,
		"GET /ops/{$}":                              s.ops(s.handleOpsHome),
		"GET /ops/login":                            s.handleOpsLoginPage,
		"POST /ops/login":                           s.handleOpsLogin,
		"POST /ops/logout":                          s.handleOpsLogout,
		"GET /ops/audit":                            s.ops(s.handleOpsAudit),
		"GET /ops/accounts/{id}":                    s.ops(s.handleOpsAccount),
		"POST /ops/accounts/{id}/plan":              s.ops(s.handleOpsPlan),
		"POST /ops/accounts/{id}/limits":            s.ops(s.handleOpsLimits),
		"POST /ops/accounts/{id}/limits/delete":     s.ops(s.handleOpsDeleteLimits),
		"POST /ops/accounts/{id}/usage/reset":       s.ops(s.handleOpsResetUsage),
		"GET /ops/accounts/{id}/keys/{key}/revoke":  s.ops(s.handleOpsRevokePage),
		"POST /ops/accounts/{id}/keys/{key}/revoke": s.ops(s.handleOpsRevoke),
	}
	out := make(map[string]http.Handler, len(routes))
	for p, h := range routes {
		out[p] = s.wrap(h)
	}
	return out
}

// Handler returns the console alone on a mux of its own, for tests and for
// mounting it without the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for p, h := range s.Routes() {
		mux.Handle(p, h)
	}
	return mux
}

// catalog is the plans and windows in force: Plans and Windows until
// SetPlans replaces them. It is never changed, only replaced.
type catalog struct {
	plans   []sluice.Plan
	byID    map[string]*sluice.Plan
	windows sluice.WindowConfig
}

func newCatalog(plans []sluice.Plan, w sluice.WindowConfig) *catalog {
	c := &catalog{plans: plans, byID: make(map[string]*sluice.Plan, len(plans)), windows: w}
	for i := range plans {
		c.byID[plans[i].ID] = &plans[i]
	}
	return c
}

// SetPlans makes plans and windows those of the pages from the next
// request on (a configuration reload). It is safe for concurrent use.
func (s *Server) SetPlans(plans []sluice.Plan, w sluice.WindowConfig) {
	s.init()
	s.cat.Store(newCatalog(plans, w))
}

// SetTelegramBot sets the bot's username (without "@") for the t.me link
// of the Telegram section, once the bot knows it. It is safe for
// concurrent use.
func (s *Server) SetTelegramBot(name string) { s.botName.Store(&name) }

// telegramBot is the bot's username: SetTelegramBot's, else TelegramBot.
func (s *Server) telegramBot() string {
	if p := s.botName.Load(); p != nil {
		return *p
	}
	return s.TelegramBot
}

// catalog returns the plans and windows in force.
func (s *Server) catalog() *catalog { return s.cat.Load() }

func (s *Server) init() {
	s.once.Do(func() {
		s.pages = parsePages()
		if s.AdminToken != "" {
			s.csrfKey = derive(s.AdminToken, "sluice console csrf v1")
			s.opsKey = derive(s.AdminToken, "sluice console operator session v1")
		} else {
			s.csrfKey = []byte(sluice.RandomString(43))
		}
		s.cat.Store(newCatalog(s.Plans, s.Windows))
		s.secure = strings.HasPrefix(strings.ToLower(s.PublicURL), "https:")
	})
}

// assetVersion is a hash of the embedded assets: pages link to
// /assets/<file>?v=<version>, so that a browser may keep the files for a
// long time and still gets new ones from a new binary at once.
var assetVersion = sync.OnceValue(func() string {
	h := sha256.New()
	fs.WalkDir(assetFS, "assets", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := assetFS.ReadFile(p)
			h.Write([]byte(p))
			h.Write(b)
		}
		return nil
	})
	return strconvHex(h.Sum(nil)[:8])
})

func assetURL(name string) string { return "/assets/" + name + "?v=" + assetVersion() }

// derive returns a key of its own for purpose, from the admin token.
func derive(token, purpose string) []byte {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

func strconvHex(b []byte) string {
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, hex[c>>4], hex[c&0xf])
	}
	return string(out)
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// contentSecurityPolicy allows the console's own files only: no inline
// script or style (charts and gauges are SVG drawn with attributes), no
// framing, forms posted to the console only.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// maxForm bounds the body of a form POST.
const maxForm = 64 << 10

// wrap sets the security headers of every answer, bounds form bodies and
// checks the CSRF token of every POST.
func (s *Server) wrap(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("X-Frame-Options", "DENY")
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			if err := r.ParseForm(); err != nil {
				s.badForm(w, r)
				return
			}
			if !s.checkCSRF(r) {
				s.csrfFailed(w, r)
				return
			}
		}
		h(w, r)
	})
}

// clientIP is the request's client address, as the API counts it.
func (s *Server) clientIP(r *http.Request) netip.Addr {
	if s.Auth == nil {
		return netip.Addr{}
	}
	return s.Auth.ClientIP(r)
}

func (s *Server) secureCookies(r *http.Request) bool { return s.secure || r.TLS != nil }

// handleAsset serves the embedded CSS and JavaScript.
func (s *Server) handleAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	b, err := assetFS.ReadFile("assets/" + name)
	if err != nil || strings.Contains(name, "/") {
		s.notFound(w, r)
		return
	}
	switch {
	case strings.HasSuffix(name, ".css"):
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case strings.HasSuffix(name, ".js"):
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case strings.HasSuffix(name, ".svg"):
		w.Header().Set("Content-Type", "image/svg+xml")
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	etag := `"` + assetVersion() + `"`
	if r.URL.Query().Get("v") == assetVersion() {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=300")
	}
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(b)
}

// handleRoot sends a signed-in user to /account, others to /login.
func (s *Server) handleRoot(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.session(r); ok {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (s *Server) handleOpsRedirect(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, "/ops/", http.StatusMovedPermanently)
}
