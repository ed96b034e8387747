package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/alert"
	"github.com/sluicehq/sluice/history"
	shttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/internal/cache"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/flock"
	"github.com/sluicehq/sluice/mail"
	"github.com/sluicehq/sluice/otel"
	"github.com/sluicehq/sluice/postgres"
	"github.com/sluicehq/sluice/quota"
	"github.com/sluicehq/sluice/redis"
	"github.com/sluicehq/sluice/sqlite"
	"github.com/sluicehq/sluice/telegram"
	"github.com/sluicehq/sluice/web"
)

var errHelp = errors.New("help requested")

// Main is `sluice serve`: it wires the stores, the limiter, the generator
// and the HTTP gateway together from the configuration. The end-to-end tests
// run it on 127.0.0.1:0 with a temporary data directory.
type Main struct {
	Config config.Config
	// Getenv reads the environment; tests replace it.
	Getenv func(string) string

	Stdout, Stderr io.Writer
	Logger         *slog.Logger

	Accounts sluice.AccountService
	Quota    *quota.Limiter // plan quotas
	// AuthQuota decides the auth endpoints' limits over the same store,
	// with their own failure policy (quota.on_store_error_auth).
	AuthQuota *quota.Limiter
	Server    *shttp.Server
	Bot       *telegram.Bot // nil unless telegram.token is set
	// Mailer sends the password-reset mail: over SMTP when mail.smtp_host
	// is set, else to the log and <data>/outbox/.
	Mailer *mail.Queue
	// Audit is the audit log: the account store itself (not its cache),
	// which writes the events of its changes.
	Audit sluice.AuditLog
	// Alerts sends the quota alerts; nil when alerts.thresholds is empty.
	Alerts *alert.Notifier

	// Idempotency keeps the answers of keyed image requests, in the
	// account store's database.
	Idempotency sluice.IdempotencyStore
	// BotUpdates is the Telegram bot's journal of updates, in the account
	// store's database.
	BotUpdates sluice.BotUpdateStore
	// History records every quota decision into the usage history, in the
	// account database; Close flushes it.
	History *history.Recorder
	// usage are the watchers of every quota decision: the history, and
	// the alerts when they are on.
	usage sluice.UsageRecorders
	// Console is the web console, mounted beside the API.
	Console *web.Server

	// reloads counts the configuration reloads by result.
	reloads *prometheus.CounterVec
	// What Reload needs (reload.go): how ParseFlags read the
	// configuration, the configuration running (m.Config stays as Run
	// started), and the generator a reload replaces.
	configPath, flagAddr, flagData string
	reloadMu                       sync.Mutex // serializes reloads; guards running
	running                        config.Config
	images                         *swapImages

	closers []func() error // run in reverse by Close
	// quotaLock keeps other gateways off the embedded counters; nil
	// with Redis.
	quotaLock *flock.Lock
}

// NewMain returns a Main with the default configuration.
func NewMain(stdout, stderr io.Writer) *Main {
	return &Main{Config: config.Default(), Getenv: os.Getenv, Stdout: stdout, Stderr: stderr}
}

// ParseFlags reads the flags of `sluice serve` and loads the configuration:
// defaults, then the file, then SLUICE_* variables, then the flags.
func (m *Main) ParseFlags(args []string) error {
	fset := flag.NewFlagSet("sluice serve", flag.ContinueOnError)
	fset.SetOutput(m.Stderr)
	path := fset.String("config", "", "YAML configuration `file` (every key has a default)")
	addr := fset.String("addr", "", "listen `address` (default :8080, or server.addr)")
	data := fset.String("data", "", "data `directory` (default ./sluice-data, or server.data)")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return err
	}
	if fset.NArg() > 0 {
		return fmt.Errorf("sluice serve: unexpected argument %q", fset.Arg(0))
	}
	m.configPath, m.flagAddr, m.flagData = *path, *addr, *data
	cfg, err := config.Load(*path, m.Getenv)
	if err != nil {
		return err
	}
	if *addr != "" {
		cfg.Server.Addr = *addr
	}
	if *data != "" {
		cfg.Server.Data = *data
	}
	m.Config = cfg
	return nil
}

// Run starts the gateway and returns once it is listening. Close stops it.
func (m *Main) Run(ctx context.Context) error {
	cfg := &m.Config
	if err := cfg.Validate(); err != nil {
		return err
	}
	m.running = *cfg
	if m.Logger == nil {
		m.Logger = newLogger(cfg.Log, m.Stderr)
	}
	log := m.Logger
	if err := os.MkdirAll(cfg.Server.Data, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if cfg.Quota.Store == config.StoreEmbedded {
		// Released last, once the counters are written (closers run
		// in reverse).
		lk, err := lockQuota(ctx, filepath.Join(cfg.Server.Data, "quota.db"), cfg.Server.ShutdownTimeout+quotaLockMargin, log)
		if err != nil {
			return err
		}
		m.quotaLock = lk
		m.closers = append(m.closers, lk.Unlock)
	}

	// Accounts.
	var pg *postgres.DB         // for the invalidation bus
	var marks sluice.AlertMarks // of sent alerts, in the account database
	var usage sluice.UsageStore
	switch {
	case cfg.Database.URL == "":
		db, err := sqlite.Open(ctx, filepath.Join(cfg.Server.Data, "sluice.db"))
		if err != nil {
			return err
		}
		m.closers = append(m.closers, db.Close)
		m.Accounts = cache.New(db, cache.DefaultTTL)
		m.Audit = db
		marks = db
		m.Idempotency, m.BotUpdates = db.Idempotency(), db.BotUpdates()
		usage = db
	default:
		db, err := postgres.Open(ctx, cfg.Database.URL)
		if err != nil {
			return err
		}
		m.closers = append(m.closers, db.Close)
		pg = db
		// Other instances write to the same database: a revocation or
		// plan change made there is seen here at once (openBus), or
		// within cache.DefaultTTL if its message is lost.
		m.Accounts = cache.New(db, cache.DefaultTTL)
		m.Audit = db
		marks = db
		m.Idempotency, m.BotUpdates = db.Idempotency(), db.BotUpdates()
		usage = db
	}
	m.closers = append(m.closers, janitor("sessions and tokens", janitorInterval, m.Accounts.DeleteExpired, log))
	m.closers = append(m.closers, janitor("idempotency records", janitorInterval, m.Idempotency.DeleteExpired, log))
	m.closers = append(m.closers, janitor("telegram updates", janitorInterval, m.BotUpdates.DeleteExpired, log))

	// Quota.
	var store sluice.QuotaStore
	switch cfg.Quota.Store {
	case config.StoreEmbedded:
		s, err := inmem.Open(ctx, filepath.Join(cfg.Server.Data, "quota.db"), cfg.Quota.FlushInterval, inmem.Options{Logger: log})
		if err != nil {
			return err
		}
		m.closers = append(m.closers, s.Close)
		store = s
	case config.StoreRedis:
		s, err := redis.Open(ctx, cfg.Redis.URL, redis.Options{Prefix: cfg.Redis.Prefix})
		if err != nil {
			return err
		}
		m.closers = append(m.closers, s.Close)
		store = s
	default:
		return fmt.Errorf("quota.store: unknown store %q", cfg.Quota.Store)
	}
	mode, err := quota.ParseMode(cfg.Limits.Mode)
	if err != nil {
		return fmt.Errorf("limits.mode: %w", err)
	}
	authMode, err := quota.ParseMode(cfg.Limits.Auth.Mode)
	if err != nil {
		return fmt.Errorf("limits.auth.mode: %w", err)
	}
	// Two limiters over the one store: plan quotas and the auth endpoints'
	// limits each have their own mode (limits.mode, limits.auth.mode),
	// failure policy (quota.on_store_error, quota.on_store_error_auth) and
	// circuit breaker.
	newLimiter := func(mode quota.Mode, field, policy string) (*quota.Limiter, error) {
		onErr, err := quota.ParseFailurePolicy(policy)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		l := &quota.Limiter{Store: store, Mode: mode, OnError: onErr, Logger: log}
		if cfg.Quota.Store == config.StoreRedis {
			// Bound each round trip, and spare Redis the requests of
			// keys known to be over their limit. (The embedded store
			// decides in memory: a timeout would only cost a context.)
			l.Timeout = cfg.Quota.Timeout
			l.RejectionCacheSize = quota.DefaultRejectionCacheSize
			l.RejectionCacheTTL = quota.DefaultRejectionCacheTTL
		}
		if onErr == quota.FailLocal {
			local := inmem.New(inmem.Options{Logger: log})
			m.closers = append(m.closers, local.Close)
			l.Fallback = local
		}
		return l, nil
	}
	if m.Quota, err = newLimiter(mode, "quota.on_store_error", cfg.Quota.OnStoreError); err != nil {
		return err
	}
	if m.AuthQuota, err = newLimiter(authMode, "quota.on_store_error_auth", cfg.Quota.OnStoreErrorAuth); err != nil {
		return err
	}
	if err := m.testClockOffset(); err != nil {
		return err
	}
	if err := m.openBus(pg, log); err != nil {
		return err
	}

	// Traces: off unless the OTEL_* variables ask for them (README
	// "Tracing"). The provider's closer comes before the gateway's, so
	// that it runs after the gateway has drained and exports the spans of
	// the last requests.
	tracer, stopTracing, err := otel.Setup(ctx, m.Getenv, Version)
	if err != nil {
		return err
	}
	m.closers = append(m.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return stopTracing(ctx)
	})

	// Images, through the generator that a reload replaces.
	m.images = &swapImages{}
	m.images.set(newGenerator(cfg.Upstream, tracer != nil))
	m.closers = append(m.closers, m.images.close)
	images := m.images

	// Mail. Its closer comes before the gateway's, so it runs after the
	// gateway has drained and handed over its last messages.
	var transport mail.Transport = &mail.Outbox{Dir: filepath.Join(cfg.Server.Data, "outbox"), From: cfg.Mail.From, Logger: log}
	if cfg.Mail.SMTPHost != "" {
		transport = &mail.SMTP{Host: cfg.Mail.SMTPHost, Port: cfg.Mail.SMTPPort, Username: cfg.Mail.Username,
			Password: cfg.Mail.Password, From: cfg.Mail.From}
	}
	m.Mailer = mail.New(transport, mail.Options{Logger: log})
	m.closers = append(m.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), m.Config.Server.ShutdownTimeout)
		defer cancel()
		return m.Mailer.Close(ctx)
	})

	token, created, err := adminToken(cfg.Server.Data, m.Getenv("SLUICE_ADMIN_TOKEN"))
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	fallbacks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_quota_store_fallbacks_total",
		Help: "Quota store calls that failed or were skipped by the open circuit breaker, answered by quota.on_store_error.",
	}, []string{"op", "on_store_error"})
	reg.MustRegister(fallbacks)
	m.Quota.OnFallback = func(op string, err error) { fallbacks.WithLabelValues(op, cfg.Quota.OnStoreError).Inc() }
	m.AuthQuota.OnFallback = func(op string, err error) { fallbacks.WithLabelValues("auth_"+op, cfg.Quota.OnStoreErrorAuth).Inc() }
	// Series at zero from the start, so that rate() and the dashboard
	// (docs/grafana/sluice.json) see them before the first failure.
	fallbacks.WithLabelValues("take", cfg.Quota.OnStoreError)
	fallbacks.WithLabelValues("auth_take", cfg.Quota.OnStoreErrorAuth)
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_config_reloads_total",
		Help: "Configuration reloads (SIGHUP, POST /admin/reload) by result: ok, error (refused; the running configuration stays).",
	}, []string{"result"})
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	reg.MustRegister(m.reloads)
	for name, l := range map[string]*quota.Limiter{"quota": m.Quota, "auth": m.AuthQuota} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "sluice_quota_breaker_open",
			Help:        "1 while the quota store's circuit breaker is open (decisions go to the failure policy without a store call), by limiter (quota, auth).",
			ConstLabels: prometheus.Labels{"limiter": name},
		}, func() float64 { return b2f(l.BreakerOpen()) }))
	}

	// The usage history (usage.record: false leaves it out). Its closer
	// comes before the gateway's and the bot's, so it runs after them and
	// flushes their last decisions.
	if cfg.Usage.Record {
		m.startHistory(usage, reg, log)
	}
	m.Server = &shttp.Server{
		Accounts:  m.Accounts,
		Quota:     m.Quota,
		AuthQuota: m.AuthQuota,
		Images:    images,
		Plans:     cfg.Plans,
		Models:    cfg.Models,
		Limits: shttp.Limits{
			Algorithm: cfg.Limits.Algorithm,
			Hour:      cfg.Limits.Windows.Hour,
			Day:       cfg.Limits.Windows.Day,
			Location:  cfg.Limits.Timezone,
			MaxN:      cfg.Limits.MaxN,
		},
		AdminToken:   token,
		MaxBody:      int64(cfg.Server.MaxBody),
		ReadTimeout:  cfg.Server.ReadTimeout,
		WriteTimeout: cfg.Server.WriteTimeout,
		IdleTimeout:  cfg.Server.IdleTimeout,
		Logger:       log,
		Registry:     reg,
		Mailer:       m.Mailer,
		AuthLimits: shttp.AuthLimits{
			Login:               shttp.Rate(cfg.Limits.Auth.Login),
			Register:            shttp.Rate(cfg.Limits.Auth.Register),
			ForgotPassword:      shttp.Rate(cfg.Limits.Auth.ForgotPassword),
			ForgotPasswordEmail: shttp.Rate(cfg.Limits.Auth.ForgotPasswordEmail),
		},
		TrustedProxies: cfg.Server.TrustedProxies,
		ResetURL:       cfg.Mail.ResetURL,
		Audit:          m.Audit,
		History:        usage,
		Reloader:       m.Reload,
		Tracer:         tracer,
		QuotaStore:     cfg.Quota.Store,
	}
	if len(m.usage) > 0 {
		m.Server.Usage = m.usage
	}
	m.Server.Idempotency = shttp.Idempotency{
		Store:   m.Idempotency,
		TTL:     cfg.Limits.IdempotencyTTL,
		MaxBody: int64(cfg.Limits.IdempotencyMaxBody),
	}
	m.mountConsole(usage, token)
	if cfg.Telegram.Token != "" {
		// Before Open: the webhook is a route of the gateway, and the
		// bot must stop after the gateway (closers run in reverse).
		if err := m.newBot(images, log); err != nil {
			return err
		}
	}
	if err := m.newAlerts(marks, reg, log); err != nil {
		return err
	}
	if err := m.Server.Open(cfg.Server.Addr); err != nil {
		return err
	}
	m.closers = append(m.closers, m.shutdown)
	if m.Bot != nil {
		if err := m.startBot(ctx); err != nil {
			return err
		}
	}
	log.Info("sluice listening", "addr", m.Server.Addr().String(), "data", cfg.Server.Data,
		"algorithm", cfg.Limits.Algorithm.String(), "mode", cfg.Limits.Mode, "version", Version)
	m.quickstart(token, created)
	return nil
}

// publicURL is server.public_url, or http://<the listen address> (with
// localhost for an address without a host).
func (m *Main) publicURL() string {
	if u := m.Config.Server.PublicURL; u != "" {
		return strings.TrimRight(u, "/")
	}
	host, port, _ := net.SplitHostPort(m.Config.Server.Addr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// mountConsole adds the web console's routes to the gateway, and makes
// reset mails link to its reset page unless mail.reset_url says otherwise.
// The mail alert switch shows only when alerts are on.
func (m *Main) mountConsole(usage sluice.UsageService, adminToken string) {
	var alerts web.AlertSettings
	if len(m.Config.Alerts.Thresholds) > 0 {
		alerts = m.Accounts
	}
	search, _ := m.Accounts.(sluice.AccountSearcher)
	sessions, _ := m.Accounts.(sluice.SessionEnder)
	cfg := &m.Config
	m.Console = &web.Server{
		Accounts:   m.Accounts,
		Auth:       m.Server,
		Quota:      m.Quota,
		Usage:      usage,
		Audit:      m.Audit,
		Search:     search,
		Alerts:     alerts,
		Sessions:   sessions,
		Plans:      cfg.Plans,
		Windows:    windowConfig(cfg),
		AdminToken: adminToken,
		PublicURL:  m.publicURL(),
		Logger:     m.Logger,
	}
	if m.Server.ResetURL == "" {
		m.Server.ResetURL = m.publicURL() + "/reset-password"
	}
	if m.Server.Handlers == nil {
		m.Server.Handlers = map[string]http.Handler{}
	}
	for pattern, h := range m.Console.Routes() {
		m.Server.Handlers[pattern] = h
	}
}

// shutdown drains the HTTP server within the configured time.
func (m *Main) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), m.Config.Server.ShutdownTimeout)
	defer cancel()
	return m.Server.Close(ctx)
}

// quotaLockMargin is how much longer than its shutdown timeout a gateway
// may take to stop: the last flush of its counters and the hand-over of its
// bot's messages.
const quotaLockMargin = 10 * time.Second

// lockQuota keeps a second gateway off the embedded counters at path: it
// would admit a whole plan of its own, and overwrite these counts. If the
// gateway holding them is stopping, it waits for it, at most wait (as long
// as a gateway may take to stop), so that a restart whose new process
// starts while the old one drains loads the counters the old one wrote;
// otherwise it fails after a second.
func lockQuota(ctx context.Context, path string, wait time.Duration, log *slog.Logger) (*flock.Lock, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	logged := false
	// A holder about to stop may not have said so yet (a restart that
	// signals the old process and starts the new one at once): give it a
	// second to.
	grace := time.Now().Add(time.Second)
	lk, err := flock.Acquire(ctx, path+".lock", func(h flock.Holder) bool {
		if h.Note != lockStopping {
			return time.Now().Before(grace)
		}
		if !logged {
			logged = true
			log.Warn("the gateway that serves this data directory's counters is stopping; waiting for it",
				slog.String("file", path), slog.String("pid", h.PID), slog.Duration("at_most", wait))
		}
		return true
	})
	if errors.Is(err, flock.ErrBusy) {
		return nil, fmt.Errorf("%w: another gateway serves these counters, and the embedded quota store serves one at a time (stop it, or set quota.store: redis to run several)", err)
	}
	return lk, err
}

// lockStopping is the quota lock's note while its gateway stops.
const lockStopping = "stopping"

// Close stops the gateway: it stops accepting requests, drains the ones in
// flight, then flushes the counters and closes the stores.
func (m *Main) Close() error {
	if m.quotaLock != nil {
		m.quotaLock.Note(lockStopping) // a gateway starting on these counters waits
	}
	var errs []error
	for i := len(m.closers) - 1; i >= 0; i-- {
		errs = append(errs, m.closers[i]())
	}
	m.closers, m.quotaLock = nil, nil
	return errors.Join(errs...)
}

// adminToken returns the admin API's token: from the environment if set,
// else the one stored in the data directory, else a new one stored there
// with mode 0600 (created reports that).
func adminToken(dir, fromEnv string) (token string, created bool, err error) {
	if fromEnv != "" {
		return fromEnv, false, nil
	}
	path := filepath.Join(dir, "admin-token")
	b, err := os.ReadFile(path)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, false, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("admin token: %w", err)
	}
	token = "sla_" + sluice.RandomString(40)
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("admin token: %w", err)
	}
	return token, true, nil
}

// quickstart prints how to get going. The admin token is printed only when
// it was just generated; later starts say where it is kept.
func (m *Main) quickstart(token string, created bool) {
	base := m.Server.URL()
	shown := "$SLUICE_ADMIN_TOKEN"
	w := m.Stdout
	fmt.Fprintf(w, "\nsluice %s is running at %s\n\n", Version, base)
	switch {
	case created:
		fmt.Fprintf(w, "Admin token (shown once; kept in %s, mode 0600):\n\n  export SLUICE_ADMIN_TOKEN=%s\n\n",
			filepath.Join(m.Config.Server.Data, "admin-token"), token)
	case subtle.ConstantTimeCompare([]byte(token), []byte(m.Getenv("SLUICE_ADMIN_TOKEN"))) == 1:
		fmt.Fprintf(w, "Admin token: from SLUICE_ADMIN_TOKEN.\n\n")
	default:
		fmt.Fprintf(w, "Admin token: in %s\n\n  export SLUICE_ADMIN_TOKEN=$(cat %s)\n\n",
			filepath.Join(m.Config.Server.Data, "admin-token"), filepath.Join(m.Config.Server.Data, "admin-token"))
	}
	fmt.Fprintf(w, `Quickstart:

  # 1. an account on the VIP plan (100 images/hour, 1,000/day, API access)
  curl -s %[1]s/admin/accounts -H "Authorization: Bearer %[2]s" \
    -d '{"email":"you@example.com","plan":"vip"}'

  # 2. an API key for it (use the user_id printed above; the key is shown once)
  curl -s %[1]s/admin/accounts/1/keys -H "Authorization: Bearer %[2]s" -d '{"name":"first"}'
  export SLUICE_KEY=slk_...   # the "key" printed above

  # 3. an image, with your quota in the X-RateLimit-* headers
  curl -s -D - %[1]s/v1/images/generations -H "Authorization: Bearer $SLUICE_KEY" \
    -d '{"model":"sluice-sketch","prompt":"a lighthouse at dusk"}' -o image.json

  # where you stand, without spending anything
  curl -s %[1]s/v1/usage -H "Authorization: Bearer $SLUICE_KEY"

OpenAI SDKs work with base_url=%[1]s/openai/v1 (or %[1]s/v1).

Web console: %[1]s/ (sign up, keys, usage); operator console: %[1]s/ops/
(sign in with the admin token). Stop with Ctrl-C.

`, base, shown)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	if c.Format == config.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// janitorInterval is how often expired sessions, single-use tokens and
// idempotency records are deleted.
const janitorInterval = 10 * time.Minute

// janitor calls deleteExpired, which deletes the rows of what that have
// expired at now, at every tick of every, and returns the function that
// stops it. With several instances on one database each does it; the
// deletes are idempotent.
func janitor(what string, every time.Duration, deleteExpired func(ctx context.Context, now time.Time) (int64, error), log *slog.Logger) func() error {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				n, err := deleteExpired(ctx, now)
				cancel()
				if err != nil {
					log.Warn("deleting expired "+what+" failed", "error", err.Error())
				} else if n > 0 {
					log.Debug("deleted expired "+what, "n", n)
				}
			}
		}
	}()
	return func() error {
		close(stop)
		<-done
		return nil
	}
}

// openBus connects the instances that share stores with an invalidation
// bus (README "Freshness across instances"): on their Redis if they share
// one (it also carries resets and refunds, for the rejection caches), else
// on their PostgreSQL (pg, nil without one). The accounts cache and both
// limiters publish their changes and apply the others'. Without a shared
// store there is no one to tell.
func (m *Main) openBus(pg *postgres.DB, log *slog.Logger) error {
	var bus sluice.InvalidationBus
	switch {
	case m.Config.Quota.Store == config.StoreRedis:
		b, err := redis.OpenBus(m.Config.Redis.URL, redis.BusOptions{Prefix: m.Config.Redis.Prefix, Logger: log})
		if err != nil {
			return err
		}
		m.closers = append(m.closers, b.Close)
		bus = b
	case pg != nil:
		b := postgres.NewBus(pg, log)
		m.closers = append(m.closers, b.Close) // before pg's closer runs
		bus = b
	default:
		return nil
	}
	accounts, _ := m.Accounts.(*cache.Accounts)
	if accounts != nil {
		accounts.Bus, accounts.Logger = bus, log
	}
	if m.Config.Quota.Store == config.StoreRedis { // embedded counters: nothing to tell
		m.Quota.Bus, m.AuthQuota.Bus = bus, bus
	}
	stop := bus.Subscribe(func(inv sluice.Invalidation) {
		if accounts != nil {
			accounts.Invalidate(inv)
		}
		m.Quota.Invalidate(inv)
		m.AuthQuota.Invalidate(inv)
	})
	m.closers = append(m.closers, func() error { stop(); return nil })
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// windowConfig is how the configuration's windows make an account's
// policy.
func windowConfig(c *config.Config) sluice.WindowConfig {
	return sluice.WindowConfig{Algorithm: c.Limits.Algorithm, Hour: c.Limits.Windows.Hour,
		Day: c.Limits.Windows.Day, Location: c.Limits.Timezone}
}

// testClockOffsetEnv is for testing only, and undocumented for users: a
// duration ("10m", "-10m") added to this process's clock wherever the
// limiters read it, so that scripts/accuracy can run gateways whose clocks
// disagree as separate processes (the in-process tests set Quota.Now
// instead). With the Redis store in its default mode Redis's clock decides,
// so the offset must change no decision.
const testClockOffsetEnv = "SLUICE_TEST_CLOCK_OFFSET"

func (m *Main) testClockOffset() error {
	v := m.Getenv(testClockOffsetEnv)
	if v == "" {
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%s: %w", testClockOffsetEnv, err)
	}
	now := func() time.Time { return time.Now().Add(d) }
	m.Quota.Now, m.AuthQuota.Now = now, now
	return nil
}
