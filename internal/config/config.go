// Package config is the configuration of the sluice gateway: one YAML file
// whose every key has a default, overridden by SLUICE_* environment
// variables (CONTRACT.md §8).
//
// A Config is a plain value: copy it freely; it is safe for concurrent reads.
// Load builds one from defaults, a file and the environment, and validates
// it. A Config built in code (tests, flags applied by cmd) should be checked
// with Validate before use.
//
// Value syntax, the same in the file and in the environment:
//
//   - durations are Go durations ("90s", "1h30m", "100ms") or whole days
//     optionally followed by a Go duration ("7d", "1d12h"); a bare number
//     is not a duration;
//   - sizes are a byte count ("65536") or a whole number with a unit: KiB,
//     MiB, GiB (powers of 1024) or KB, MB, GB (powers of 1000), like "64KiB";
//   - rates (the auth limits) are "N/duration" like "10/1m" or "3/1h"; a
//     duration without a number counts one unit ("10/m"); "unlimited" turns
//     the limit off;
//   - plan limits (plans[].hour, plans[].day) are whole numbers, or null
//     (or "unlimited") for no limit;
//   - server.trusted_proxies is a list of CIDRs, or in the environment a
//     comma-separated string; a bare IP is a one-address prefix;
//   - alerts.thresholds is a list of whole numbers, or in the environment
//     (or as one string in the file) a comma-separated string like
//     "80,100".
package config

import (
	"log/slog"
	"net/netip"
	"time"

	_ "time/tzdata" // limits.timezone must load on machines without a zoneinfo database

	"github.com/sluicehq/sluice"
)

// Config is the whole configuration. Struct tags name the YAML keys; the
// environment variable of a key is EnvName of its dotted path. Fields tagged
// secret hold credentials: they never appear in error messages and Redacted
// blanks them ("url": only the credentials inside the URL).
type Config struct {
	Server   Server         `yaml:"server"`
	Limits   Limits         `yaml:"limits"`
	Plans    []sluice.Plan  `yaml:"plans"`  // YAML keys: id, name, hour, day, models, api
	Models   []sluice.Model `yaml:"models"` // YAML keys: id, tier, owned_by
	Upstream Upstream       `yaml:"upstream"`
	Quota    Quota          `yaml:"quota"`
	Redis    Redis          `yaml:"redis"`
	Database Database       `yaml:"database"`
	Usage    Usage          `yaml:"usage"`
	Telegram Telegram       `yaml:"telegram"`
	Mail     Mail           `yaml:"mail"`
	Log      Log            `yaml:"log"`
	Alerts   Alerts         `yaml:"alerts"`
}

// Server is the HTTP listener.
type Server struct {
	Addr string `yaml:"addr"`
	// Data is the data directory: the SQLite database, persisted counters,
	// the admin token and the mail outbox.
	Data    string `yaml:"data"`
	MaxBody Size   `yaml:"max_body"`
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	// Prefixes are masked: 10.1.2.3/8 is stored as 10.0.0.0/8.
	TrustedProxies []netip.Prefix `yaml:"trusted_proxies"`
	// Timeouts of net/http.Server; 0 means none, except ShutdownTimeout.
	// WriteTimeout must leave room for Upstream.Timeout.
	ReadTimeout     time.Duration `yaml:"read_timeout"`
	WriteTimeout    time.Duration `yaml:"write_timeout"`
	IdleTimeout     time.Duration `yaml:"idle_timeout"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// PublicURL is the URL users reach sluice at (scheme, host and an
	// optional path, no query), for links in mails and the web console:
	// reset mails link to PublicURL + "/reset-password" unless
	// mail.reset_url is set. Empty means http://<the listen address>.
	PublicURL string `yaml:"public_url"`
}

// Limits is how quotas are counted (CONTRACT.md §3) and the per-IP limits of
// the auth endpoints (§6).
type Limits struct {
	Algorithm sluice.Algorithm `yaml:"algorithm"`
	Windows   Windows          `yaml:"windows"`
	// Timezone is where a calendar day starts; never nil in a valid Config.
	Timezone *time.Location `yaml:"timezone"`
	Mode     string         `yaml:"mode"`  // ModeEnforce or ModeShadow
	MaxN     int            `yaml:"max_n"` // most images in one request
	Auth     AuthLimits     `yaml:"auth"`
	// IdempotencyTTL is how long the 200 answer of a request sent with an
	// Idempotency-Key is kept and replayed (CONTRACT.md §9).
	IdempotencyTTL time.Duration `yaml:"idempotency_ttl"`
	// IdempotencyMaxBody bounds the answer kept for a replay; a larger
	// one is delivered but kept without its body, and a retry is refused.
	IdempotencyMaxBody Size `yaml:"idempotency_max_body"`
}

// Limit modes.
const (
	ModeEnforce = "enforce"
	ModeShadow  = "shadow" // decide, count and log, but never reject
)

// Windows are the lengths of the two windows of every plan, in whole seconds.
type Windows struct {
	Hour time.Duration `yaml:"hour"`
	Day  time.Duration `yaml:"day"`
}

// AuthLimits are the limits of the auth endpoints. All are per client IP
// except ForgotPasswordEmail, which is per target email address, so that one
// inbox cannot be flooded from many addresses.
type AuthLimits struct {
	Login               Rate `yaml:"login"`
	Register            Rate `yaml:"register"`
	ForgotPassword      Rate `yaml:"forgot_password"`
	ForgotPasswordEmail Rate `yaml:"forgot_password_email"`
	// Mode is ModeEnforce or ModeShadow for these limits and the delays
	// after failed logins, independent of Limits.Mode, so that trying
	// plan quotas in shadow does not open the auth endpoints to guessing.
	Mode string `yaml:"mode"`
}

// Upstream is the image generator. An empty URL means the built-in demo
// generator.
type Upstream struct {
	// URL is the base URL of an OpenAI-compatible API, as an OpenAI SDK
	// takes it: sluice posts to URL + "/images/generations".
	URL     string        `yaml:"url" secret:"url"`
	APIKey  string        `yaml:"api_key" secret:"true"`
	Timeout time.Duration `yaml:"timeout"`
}

// Quota is the counter store.
type Quota struct {
	Store string `yaml:"store"` // StoreEmbedded or StoreRedis
	// FlushInterval bounds what the embedded store can lose in a crash:
	// counters are persisted to the data directory at least this often;
	// 0 writes every charge and refund before the answer (synchronous).
	FlushInterval time.Duration `yaml:"flush_interval"`
	// OnStoreError is what happens to a plan quota when the store cannot
	// decide: FailClosed, FailOpen or FailLocal.
	OnStoreError string `yaml:"on_store_error"`
	// OnStoreErrorAuth is the same for the per-IP and per-email limits of
	// the auth endpoints, a class of its own so that, say, image requests
	// may fail open while logins stay closed.
	OnStoreErrorAuth string `yaml:"on_store_error_auth"`
	// Timeout bounds one decision of a shared store, connecting
	// included. It is there to notice a store that hangs (the breaker then
	// spares the next requests the wait), not to enforce a latency: on a
	// loaded machine a healthy decision can take hundreds of milliseconds,
	// and one cut short fails by on_store_error.
	Timeout time.Duration `yaml:"timeout"`
}

// Quota stores.
const (
	StoreEmbedded = "embedded"
	StoreRedis    = "redis"
)

// Failure policies of the quota store.
const (
	FailClosed = "closed" // answer 503 quota_unavailable
	FailOpen   = "open"   // admit without counting
	FailLocal  = "local"  // count in this instance's memory until the store is back
)

// Redis is the shared quota store.
type Redis struct {
	// URL is a redis://, rediss://, Sentinel or Cluster URL.
	URL string `yaml:"url" secret:"url"`
	// Prefix is put in front of every key.
	Prefix string `yaml:"prefix"`
}

// Database is the account store.
type Database struct {
	// URL is empty for SQLite in the data directory, or a postgres:// URL.
	URL string `yaml:"url" secret:"url"`
}

// Usage is the usage history (CONTRACT.md §10), kept in the account
// database.
type Usage struct {
	// Record turns the recording on (the default). Off, no decision is
	// recorded (the history endpoints show what was recorded before); the
	// quota alerts still watch every decision.
	Record bool `yaml:"record"`
	// FlushInterval is how often recorded decisions are written; a crash
	// loses at most this much history.
	FlushInterval time.Duration `yaml:"flush_interval"`
	Retention     Retention     `yaml:"retention"`
}

// Retention is how long the history keeps each granularity; 0 keeps it for
// ever.
type Retention struct {
	Minute time.Duration `yaml:"minute"`
	Hour   time.Duration `yaml:"hour"`
	Day    time.Duration `yaml:"day"`
}

// Telegram is the bot. An empty Token turns the bot off; an empty
// WebhookURL means long polling.
type Telegram struct {
	Token string `yaml:"token" secret:"true"`
	// APIURL is the Bot API base URL (tests point it at a fake).
	APIURL     string `yaml:"api_url" secret:"url"`
	WebhookURL string `yaml:"webhook_url" secret:"url"`
	// WebhookSecret is the secret_token Telegram sends in the
	// X-Telegram-Bot-Api-Secret-Token header of every webhook delivery.
	WebhookSecret string `yaml:"webhook_secret" secret:"true"`
	// UpgradeURL, if set, is the link of the "Upgrade" button under the
	// bot's over-quota reply (a pricing page).
	UpgradeURL string `yaml:"upgrade_url"`
	// Outbox bounds the bot's replies waiting to be sent.
	Outbox TelegramOutbox `yaml:"outbox"`
}

// defaultTelegramOutbox is the default of telegram.outbox (the telegram
// package's DefaultOutbox* constants).
var defaultTelegramOutbox = TelegramOutbox{ChatMessages: 20, ChatBytes: 8 * MiB, Messages: 2000, Bytes: 64 * MiB}

// TelegramOutbox bounds the bot's replies waiting to be sent (queued or in
// flight), per chat and overall, in number and in bytes (text and image).
// At a bound, a prompt is refused with a message to the user, and an image
// that cannot be queued is refunded.
type TelegramOutbox struct {
	ChatMessages int  `yaml:"chat_messages"`
	ChatBytes    Size `yaml:"chat_bytes"`
	Messages     int  `yaml:"messages"`
	Bytes        Size `yaml:"bytes"`
}

// Mail is the mailer. An empty SMTPHost means mail goes to the log and the
// outbox directory in the data directory.
type Mail struct {
	SMTPHost string `yaml:"smtp_host"`
	SMTPPort int    `yaml:"smtp_port"`
	Username string `yaml:"username"`
	Password string `yaml:"password" secret:"true"`
	From     string `yaml:"from"` // an address like "Sluice <noreply@example.com>"
	// ResetURL is the page of a web front end where a user chooses a new
	// password; reset mails link to it with token=… added to its query.
	// Empty: the mail holds the token and the API call only.
	ResetURL string `yaml:"reset_url"`
}

// Alerts are the quota alerts (CONTRACT.md §10).
type Alerts struct {
	// Thresholds are percents of a window's limit, each 1..100, ascending
	// and unique; an alert goes out when the use crosses one. Empty turns
	// the alerts off.
	Thresholds Ints `yaml:"thresholds"`
	// WebhookURL receives every alert as a signed POST; empty: none.
	WebhookURL string `yaml:"webhook_url" secret:"url"`
	// WebhookSecret signs the webhooks (Standard Webhooks): "whsec_" and
	// base64 is the key the base64 encodes, anything else is its own
	// bytes. Required with WebhookURL.
	WebhookSecret string `yaml:"webhook_secret" secret:"true"`
}

// Log is the logger.
type Log struct {
	Level  slog.Level `yaml:"level"`  // debug, info, warn or error
	Format string     `yaml:"format"` // LogText or LogJSON
}

// Log formats.
const (
	LogText = "text"
	LogJSON = "json"
)

// DefaultTelegramAPI is the default Bot API base URL.
const DefaultTelegramAPI = "https://api.telegram.org"

// Default returns the configuration of a gateway started without a file:
// the plans of CONTRACT.md §2, the demo models and generator, and embedded
// storage in ./sluice-data.
func Default() Config {
	return Config{
		Server: Server{
			Addr:            ":8080",
			Data:            "./sluice-data",
			MaxBody:         64 * KiB,
			ReadTimeout:     10 * time.Second,
			WriteTimeout:    90 * time.Second,
			IdleTimeout:     120 * time.Second,
			ShutdownTimeout: 30 * time.Second,
		},
		Limits: Limits{
			Algorithm: sluice.Sliding,
			Windows:   Windows{Hour: time.Hour, Day: 24 * time.Hour},
			Timezone:  time.UTC,
			Mode:      ModeEnforce,
			MaxN:      4,
			Auth: AuthLimits{
				Login:               Rate{Limit: 10, Per: time.Minute},
				Register:            Rate{Limit: 10, Per: time.Minute},
				ForgotPassword:      Rate{Limit: 3, Per: time.Hour},
				ForgotPasswordEmail: Rate{Limit: 3, Per: time.Hour},
				Mode:                ModeEnforce,
			},
			IdempotencyTTL:     sluice.DefaultIdempotencyTTL,
			IdempotencyMaxBody: sluice.DefaultIdempotencyMaxBody,
		},
		Plans:    sluice.DefaultPlans(),
		Models:   sluice.DefaultModels(),
		Upstream: Upstream{Timeout: 60 * time.Second},
		Quota: Quota{
			Store:            StoreEmbedded,
			FlushInterval:    time.Second,
			OnStoreError:     FailClosed,
			OnStoreErrorAuth: FailClosed,
			Timeout:          2 * time.Second, // README: quota.timeout
		},
		Redis:    Redis{Prefix: "sluice:"},
		Usage:    Usage{Record: true, FlushInterval: 10 * time.Second, Retention: Retention{Minute: 48 * time.Hour, Hour: 2160 * time.Hour, Day: 17520 * time.Hour}},
		Telegram: Telegram{APIURL: DefaultTelegramAPI, Outbox: defaultTelegramOutbox},
		Mail:     Mail{SMTPPort: 587},
		Log:      Log{Level: slog.LevelInfo, Format: LogText},
		Alerts:   Alerts{Thresholds: Ints{80, 100}},
	}
}

// PlanByID returns the plan with the id, pointing into c.Plans.
func (c *Config) PlanByID(id string) (*sluice.Plan, bool) {
	for i := range c.Plans {
		if c.Plans[i].ID == id {
			return &c.Plans[i], true
		}
	}
	return nil, false
}

// ModelByID returns the model with the id, pointing into c.Models.
func (c *Config) ModelByID(id string) (*sluice.Model, bool) {
	for i := range c.Models {
		if c.Models[i].ID == id {
			return &c.Models[i], true
		}
	}
	return nil, false
}
