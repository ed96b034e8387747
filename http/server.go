// Package http is the gateway of sluice: the HTTP API of CONTRACT.md §4–§6
// (images, models and usage under /v1/ and /openai/v1/, the admin API and
// the operations endpoints), its middleware (request ids, access log,
// recovery, metrics), the rate-limit headers and the JSON error bodies. It is
// the only package that maps sluice error codes to HTTP statuses.
//
// Decisions the contract leaves open:
//
//   - GET /v1/models needs an API key whose plan includes API access, like
//     every API call; other plans get 403 api_access_not_included.
//   - GET /v1/usage takes an API key (a bearer starting with
//     sluice.APIKeyPrefix, whose plan must include API access) or a session
//     token (any plan).
//   - Under /openai/v1/ an error is {"error":{"message","type","code",
//     "param"}} and the extra fields of the flat body (retry_after, plan,
//     model, limit_hour, limit_day) stay inside the "error" object.
//   - A request for more images than a window's limit can never be
//     admitted, so it is a 400 naming "n", not a 429.
//   - Unknown routes are 404 not_found, wrong methods 405
//     method_not_allowed with Allow, both JSON.
//   - GET /readyz answers {"status","checks"} (not a §5 error body): it is
//     for probes, and says which check failed but not why.
//
// Accounts and auth (CONTRACT.md §6; account.go, authlimit.go, clientip.go,
// reset.go):
//
//   - The per-IP limits of register, login and forgot-password are
//     one-window sliding policies in the QuotaService under keys like
//     "{ip:login:203.0.113.7}" (IPv6: "{ip:login:2001:db8:1:2::/64}"),
//     decided before the body is read, so that every request counts. They
//     follow limits.mode (shadow counts but never rejects) and the quota
//     failure policy (fail-closed: 503). Their answers carry the IETF
//     RateLimit and RateLimit-Policy fields of that window ("minute",
//     "hour", or the length like "30s") but no X-RateLimit-* fields, which
//     are an account's.
//   - POST /auth/reset-password has no per-IP limit (the contract names
//     three endpoints): its token has 238 random bits and a malformed one
//     costs no store call.
//   - Failed logins slow an account down instead of locking it: after
//     LoginFreeFailures failures in LoginFailureWindow, each attempt waits
//     2^k seconds (at most LoginMaxDelay) after the last failure, answered
//     429 rate_limit_exceeded with retry_after. The state is kept per email
//     hash in the QuotaService, so it is shared by every instance that
//     shares the quota store and counts unknown emails like known ones. The
//     delay is checked even in shadow mode: it protects accounts, not quota.
//   - POST /auth/forgot-password answers 202 for every well-formed email,
//     having only enqueued it; the lookup, the per-email limit
//     (AuthLimits.ForgotPasswordEmail, over which no mail is sent and the
//     answer is still 202), the token and the mail happen in one background
//     goroutine. A full queue drops the reset with an error in the log.
//   - The reset token is single-use for ResetTokenTTL; an invalid, expired
//     or used one is 400 invalid_request naming "token". A reset ends every
//     session and clears the failed logins. It answers
//     {"status":"password_reset"}.
//   - The account endpoints under /v1/ take a session token only (an API
//     key is 401 unauthorized) and send the account's X-RateLimit-* fields
//     like every /v1/ answer. Any plan may list and revoke keys and link
//     Telegram; creating keys needs API access. An account can hold
//     MaxKeysPerAccount live keys.
//   - GET /v1/alerts and PUT /v1/alerts {"email":false} (session token,
//     any plan) read and set the account's quota alerts by mail; both
//     answer {"email":bool}. The thresholds are the deployment's.
//   - Register, Login, ForgotPassword, ResetPassword, CheckAuthLimit and
//     ClientIP are the same steps as exported methods (sluice.AuthService):
//     the JSON handlers are thin wrappers of them, and the web console
//     calls them, so both share the limits, delays and answers above.
//   - Passwords are 8 to 256 characters, checked before hashing; emails are
//     bare addresses of at most 254 bytes, trimmed of surrounding space.
//
// The audit log (CONTRACT.md §10; audit.go): the admin API acts as
// Actor{admin, IP}, a user's own changes as Actor{user, account, IP};
// GET /admin/audit and GET /v1/audit list the events, and answer 404 when
// the Server has no Audit.
package http

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice"
)

// Defaults of the Server's fields.
const (
	DefaultMaxBody           = 64 << 10
	DefaultMaxN              = 4
	DefaultReadHeaderTimeout = 10 * time.Second
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes = 32 << 10
	// readyTimeout bounds the checks of GET /readyz.
	readyTimeout = time.Second
)

// Limits are the deployment's quota settings that the gateway turns into a
// policy per account (CONTRACT.md §3, §8 limits.*).
type Limits struct {
	Algorithm sluice.Algorithm
	Hour      time.Duration  // length of the "hour" window; 0 means 1h
	Day       time.Duration  // length of the "day" window; 0 means 24h
	Location  *time.Location // of calendar days; nil means UTC
	MaxN      int            // most images in one request; 0 means DefaultMaxN
}

// ReadyCheck is one check of GET /readyz.
type ReadyCheck struct {
	Name string
	Ping func(ctx context.Context) error
}

// Server is the HTTP gateway. Set its fields, then call Handler (to mount
// it yourself) or Open (to listen); the fields must not change after that:
// Reload changes Plans, Models, Limits and AuthLimits for the next requests.
// Close stops it. A Server is safe for concurrent use.
type Server struct {
	Accounts sluice.AccountService
	// Quota decides the accounts' plan quotas.
	Quota sluice.QuotaService
	// AuthQuota decides the limits of the auth endpoints (per IP, per
	// email, failed logins): a QuotaService of its own so that its failure
	// policy can differ from the plan quotas'. nil means Quota.
	AuthQuota sluice.QuotaService
	Images    sluice.ImageGenerator
	Plans     []sluice.Plan
	Models    []sluice.Model
	Limits    Limits
	// AdminToken is the bearer token of the admin API; empty disables the
	// admin API (every call is 401).
	AdminToken string
	// MaxBody bounds request bodies; 0 means DefaultMaxBody.
	MaxBody int64
	// Timeouts of the http.Server that Open starts, as in net/http: 0
	// means none. The answer to an image request is written only once the
	// images are done, so a WriteTimeout must outlast the upstream's
	// timeout, or a long generation is cut off (and charged). Request
	// headers always have DefaultReadHeaderTimeout.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// Logger receives the access log and errors; nil means slog.Default().
	Logger *slog.Logger
	// Registry receives the metrics and is served at /metrics; nil means a
	// registry of the Server's own.
	Registry *prometheus.Registry
	// Now returns the current time, for session expiry and the last use of
	// keys; nil means time.Now. Quota decisions use the QuotaService's
	// clock, not this one.
	Now func() time.Time
	// Ready are the checks of GET /readyz; nil means the Ping of Accounts
	// ("accounts") and of Quota ("quota").
	Ready []ReadyCheck
	// Handlers are extra routes mounted beside the gateway's, such as the
	// Telegram bot's webhook: each key is a pattern "METHOD /path" as
	// http.ServeMux takes it. They run behind the gateway's middleware
	// (request ids, access log, recovery) and answer for themselves.
	Handlers map[string]http.Handler

	// Mailer sends the password-reset mail; nil means none is sent (a
	// warning is logged and the request answered as usual).
	Mailer sluice.Mailer
	// AuthLimits are the limits of the auth endpoints; zero Rates take
	// the defaults of CONTRACT.md §6.
	AuthLimits AuthLimits
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// (CONTRACT.md §6); none means the peer is the client.
	TrustedProxies []netip.Prefix
	// SessionTTL is how long a login lasts; 0 means DefaultSessionTTL.
	SessionTTL time.Duration
	// Usage receives every quota decision of an image request (admitted,
	// rejected, shadow) and every refund: the usage history and the quota
	// alerts watch them. nil means none is recorded.
	Usage sluice.UsageRecorder
	// History answers GET /v1/usage/history and the admin usage
	// endpoints; nil means they answer 404 not_found.
	History sluice.UsageService

	// ResetURL is the page of the operator's web front end where a user
	// chooses a new password: reset mails link to it with "token=…" added
	// to its query. Empty: the mail holds the token and the API call only.
	ResetURL string
	// Audit is the audit log (usually the account store itself, which
	// writes the events of its own changes): GET /admin/audit and GET
	// /v1/audit read it, and the usage and password resets are recorded
	// in it. nil: those endpoints answer 404 and the resets go unrecorded
	// (see audit.go).
	Audit sluice.AuditLog
	// Idempotency keeps the answers of image requests sent with an
	// Idempotency-Key (CONTRACT.md §9; idempotency.go).
	Idempotency Idempotency
	// Reloader re-reads the configuration and applies it (Reload) for
	// POST /admin/reload; an error is answered as it is (a sluice.Error
	// naming the field at fault). nil: the endpoint answers 404.
	Reloader func(ctx context.Context) (*ReloadReport, error)
	// Tracer makes the spans of requests (trace.go); nil means no traces,
	// at the cost of a nil check.
	Tracer trace.Tracer
	// QuotaStore names the quota store ("embedded", "redis") on the spans
	// of quota decisions.
	QuotaStore string

	once    sync.Once
	handler http.Handler
	mux     *http.ServeMux
	// cur is the configuration that Reload changes (live.go): Plans,
	// Models, Limits prepared for lookups.
	cur     atomic.Pointer[live]
	maxBody int64
	metrics *metrics
	reg     *prometheus.Registry
	touches *toucher
	auth    *authState

	mu     sync.Mutex // guards ln, srv and closed
	ln     net.Listener
	srv    *http.Server
	closed bool
}

// Handler returns the gateway: every route behind its middleware. It
// starts the background flush of API keys' last use and the password
// resetter, which Close stops.
func (s *Server) Handler() http.Handler {
	s.init()
	return s.handler
}

func (s *Server) init() {
	s.once.Do(func() {
		s.cur.Store(newLive(Live{Plans: s.Plans, Models: s.Models, Limits: s.Limits}))
		s.maxBody = s.MaxBody
		if s.maxBody <= 0 {
			s.maxBody = DefaultMaxBody
		}
		s.reg = s.Registry
		if s.reg == nil {
			s.reg = prometheus.NewRegistry()
		}
		s.metrics = newMetrics(s.reg)
		s.touches = newToucher(s.Accounts, s.logger())
		s.initAuth()
		s.mux = s.routes()
		s.handler = http.HandlerFunc(s.serveHTTP)
	})
}

// routes registers every route. Each path that has routes also gets a
// method-less pattern answering 405, and "/" answers 404, so that the mux's
// plain-text errors never reach a client.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	methods := map[string][]string{}
	var paths []string
	handle := func(pattern string, h http.HandlerFunc) {
		method, path, _ := strings.Cut(pattern, " ")
		if methods[path] == nil {
			paths = append(paths, path)
		}
		methods[path] = append(methods[path], method)
		if method == http.MethodGet {
			methods[path] = append(methods[path], http.MethodHead)
		}
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			stateOf(r).route = pattern
			h(w, r)
		})
	}

	// The API, in both error shapes.
	for _, prefix := range []string{"/v1", "/openai/v1"} {
		handle("POST "+prefix+"/images/generations", s.handleGenerate)
		handle("GET "+prefix+"/models", s.handleModels)
		handle("GET "+prefix+"/usage", s.handleUsage)
	}

	// Auth and the account's own keys.
	handle("POST /auth/register", s.user(s.handleRegister))
	handle("POST /auth/login", s.handleLogin)
	handle("POST /auth/forgot-password", s.handleForgotPassword)
	handle("POST /auth/reset-password", s.user(s.handleResetPassword))
	handle("POST /v1/keys", s.user(s.handleCreateOwnKey))
	handle("GET /v1/keys", s.handleListKeys)
	handle("DELETE /v1/keys/{id}", s.user(s.handleRevokeKey))
	handle("POST /v1/telegram/link", s.handleTelegramLink)
	handle("GET /v1/audit", s.handleOwnAudit)
	handle("GET /v1/alerts", s.handleGetAlerts)
	handle("PUT /v1/alerts", s.user(s.handlePutAlerts))

	// Admin.
	handle("POST /admin/accounts", s.admin(s.handleCreateAccount))
	handle("GET /admin/accounts/{id}", s.admin(s.handleGetAccount))
	handle("PUT /admin/accounts/{id}/plan", s.admin(s.handleSetPlan))
	handle("PUT /admin/accounts/{id}/limits", s.admin(s.handleSetLimits))
	handle("DELETE /admin/accounts/{id}/limits", s.admin(s.handleDeleteLimits))
	handle("POST /admin/accounts/{id}/keys", s.admin(s.handleCreateKey))
	handle("GET /admin/accounts/{id}/keys", s.admin(s.handleAdminListKeys))
	handle("DELETE /admin/accounts/{id}/keys/{key}", s.admin(s.handleAdminRevokeKey))
	handle("DELETE /admin/accounts/{id}/usage", s.admin(s.handleResetUsage))
	handle("GET /admin/plans", s.admin(s.handlePlans))
	handle("GET /admin/audit", s.admin(s.handleAdminAudit))
	handle("GET /v1/usage/history", s.handleUsageHistory)
	handle("GET /admin/usage/history", s.admin(s.handleAdminUsageHistory))
	handle("GET /admin/usage/top", s.admin(s.handleAdminUsageTop))
	handle("POST /admin/reload", s.admin(s.handleReload))

	// Operations.
	handle("GET /healthz", s.handleHealthz)
	handle("GET /readyz", s.handleReadyz)
	handle("GET /metrics", s.handleMetrics())

	for pattern, h := range s.Handlers {
		handle(pattern, h.ServeHTTP)
	}

	for _, path := range paths {
		allow := strings.Join(methods[path], ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			stateOf(r).route = path
			w.Header().Set("Allow", allow)
			s.writeError(w, r, &apiError{Code: codeMethodNotAllowed,
				Message: "Method " + r.Method + " is not allowed here; use " + allow + "."})
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		stateOf(r).route = "/"
		s.notFound(w, r)
	})
	return mux
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, &apiError{Code: sluice.ENOTFOUND, Message: "There is no such endpoint."})
}

// Open listens on addr (host:port; port 0 picks a free one) and serves in a
// goroutine until Close.
func (s *Server) Open(addr string) error {
	h := s.Handler()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("http: server closed")
	}
	if s.srv != nil {
		return errors.New("http: server already open")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       s.ReadTimeout,
		WriteTimeout:      s.WriteTimeout,
		IdleTimeout:       s.IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.logger().Handler(), slog.LevelWarn),
	}
	srv := s.srv
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger().Error("http: serve", slog.String("error", err.Error()))
		}
	}()
	return nil
}

// Addr returns the address the Server listens on, or nil before Open.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// URL returns the base URL of the listening Server ("http://127.0.0.1:8080"),
// with "localhost" for an unspecified host; empty before Open.
func (s *Server) URL() string {
	a, ok := s.Addr().(*net.TCPAddr)
	if !ok {
		return ""
	}
	host := "localhost"
	if a.IP != nil && !a.IP.IsUnspecified() {
		host = a.IP.String()
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(a.Port))
}

// Close stops the Server gracefully: it stops accepting connections, waits
// for in-flight requests until ctx ends (then closes their connections),
// writes the pending last-use times of API keys and finishes the queued
// password resets (handing their mail to the Mailer, which the caller closes
// afterwards). It returns ctx's error if requests were still running when
// ctx ended.
func (s *Server) Close(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	srv := s.srv
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	var err error
	if srv != nil {
		if err = srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
	}
	if !already {
		// A bounded context of its own: ctx may have ended already.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		s.touches.close(fctx, time.Now())
		s.auth.resets.close(fctx)
		cancel()
	}
	return err
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
