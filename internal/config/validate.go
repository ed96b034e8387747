package config

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/quota"
)

// problems collects what Validate finds.
type problems []error

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, &Error{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// notShown ends the message about an invalid secret.
const notShown = "(the value is not shown: it may hold credentials)"

// Validate reports every problem of c, each an *Error naming its key, joined
// with errors.Join; nil if there is none. Secrets are never echoed.
func (c *Config) Validate() error {
	var p problems
	c.validateServer(&p)
	c.validateLimits(&p)
	c.validatePlans(&p)
	c.validateModels(&p)
	c.validateStores(&p)
	c.validateUsage(&p)
	c.validateTelegram(&p)
	c.validateMail(&p)
	c.validateAlerts(&p)
	if !slices.Contains(levels, c.Log.Level) {
		p.add("log.level", "must be debug, info, warn or error, got %v", c.Log.Level)
	}
	if c.Log.Format != LogText && c.Log.Format != LogJSON {
		p.add("log.format", "must be text or json, got %q", c.Log.Format)
	}
	return errors.Join(p...)
}

func (c *Config) validateServer(p *problems) {
	s := &c.Server
	if _, port, err := net.SplitHostPort(s.Addr); err != nil || !validPort(port) {
		p.add("server.addr", "must be host:port, like :8080 or 127.0.0.1:8080, got %q", s.Addr)
	}
	if s.Data == "" {
		p.add("server.data", "must not be empty")
	}
	if s.MaxBody <= 0 {
		p.add("server.max_body", "must be positive, got %d", s.MaxBody)
	}
	for i, pr := range s.TrustedProxies {
		if !pr.IsValid() {
			p.add(fmt.Sprintf("server.trusted_proxies[%d]", i), "is not a valid CIDR")
		}
	}
	nonNegative(p, "server.read_timeout", s.ReadTimeout)
	nonNegative(p, "server.idle_timeout", s.IdleTimeout)
	nonNegative(p, "server.write_timeout", s.WriteTimeout)
	if s.WriteTimeout > 0 && s.WriteTimeout <= c.Upstream.Timeout {
		p.add("server.write_timeout", "must be longer than upstream.timeout (%s) so that a slow generation can still be answered, or 0 for none; got %q",
			formatDuration(c.Upstream.Timeout), formatDuration(s.WriteTimeout))
	}
	positive(p, "server.shutdown_timeout", s.ShutdownTimeout)
	if s.PublicURL != "" {
		if u, err := url.Parse(s.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
			u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			p.add("server.public_url", "must be an http or https URL without a query, fragment or credentials, like https://sluice.example.com, got %q", s.PublicURL)
		}
	}
}

func (c *Config) validateLimits(p *problems) {
	l := &c.Limits
	if l.Algorithm > sluice.TokenBucket {
		p.add("limits.algorithm", "must be sliding, calendar or token_bucket, got %d", l.Algorithm)
	}
	wholeSeconds(p, "limits.windows.hour", l.Windows.Hour)
	wholeSeconds(p, "limits.windows.day", l.Windows.Day)
	if l.Timezone == nil {
		p.add("limits.timezone", "must be set, like UTC")
	}
	if l.Mode != ModeEnforce && l.Mode != ModeShadow {
		p.add("limits.mode", "must be enforce or shadow, got %q", l.Mode)
	}
	if l.Auth.Mode != ModeEnforce && l.Auth.Mode != ModeShadow {
		p.add("limits.auth.mode", "must be enforce or shadow, got %q", l.Auth.Mode)
	}
	if l.MaxN < 1 || l.MaxN > 100 {
		p.add("limits.max_n", "must be between 1 and 100, got %d", l.MaxN)
	}
	if l.IdempotencyTTL < time.Second {
		p.add("limits.idempotency_ttl", "must be at least 1s, got %q", formatDuration(l.IdempotencyTTL))
	}
	if l.IdempotencyMaxBody < 1 || l.IdempotencyMaxBody > MaxIdempotencyMaxBody {
		p.add("limits.idempotency_max_body", "must be from 1 byte to 512MiB, got %d bytes", int64(l.IdempotencyMaxBody))
	}
	for _, r := range []struct {
		field string
		rate  Rate
	}{
		{"limits.auth.login", l.Auth.Login},
		{"limits.auth.register", l.Auth.Register},
		{"limits.auth.forgot_password", l.Auth.ForgotPassword},
		{"limits.auth.forgot_password_email", l.Auth.ForgotPasswordEmail},
	} {
		switch {
		case r.rate.Unlimited():
		case r.rate.Limit < 1:
			p.add(r.field, "must allow at least 1 request, or be unlimited; got %q", r.rate)
		case !isWholeSeconds(r.rate.Per):
			p.add(r.field, "the duration must be a positive whole number of seconds, got %q", r.rate)
		}
	}
}

func (c *Config) validatePlans(p *problems) {
	if len(c.Plans) == 0 {
		p.add("plans", "must list at least one plan")
		return
	}
	l := &c.Limits
	countable := l.Algorithm <= sluice.TokenBucket && isWholeSeconds(l.Windows.Hour) && isWholeSeconds(l.Windows.Day)
	first := make(map[string]int, len(c.Plans))
	for i, pl := range c.Plans {
		f := fmt.Sprintf("plans[%d]", i)
		uniqueID(p, "plans", i, pl.ID, first)
		if pl.Name == "" {
			p.add(f+".name", "must not be empty")
		}
		for _, w := range []sluice.Window{
			{Name: "hour", Length: l.Windows.Hour, Limit: pl.Hour},
			{Name: "day", Length: l.Windows.Day, Limit: pl.Day},
		} {
			if planLimit(p, f+"."+w.Name, w.Limit) && countable {
				// What quota.Validate refuses would fail every request
				// of the plan, such as a limit too large for the
				// token bucket's arithmetic.
				pol := sluice.Policy{Algorithm: l.Algorithm, Windows: []sluice.Window{w}}
				if err := quota.Validate(&pol); err != nil {
					p.add(f+"."+w.Name, "the quota algorithm cannot count this limit: %v", err)
				}
			}
		}
		if pl.Models != sluice.ModelsStarter && pl.Models != sluice.ModelsAll {
			p.add(f+".models", "must be %q or %q, got %q", sluice.ModelsStarter, sluice.ModelsAll, pl.Models)
		}
	}
	if _, ok := first[sluice.DefaultPlan]; !ok {
		p.add("plans", "must include %q, the plan new accounts start on", sluice.DefaultPlan)
	}
}

// planLimit reports whether l is a valid plan limit, and a problem if not.
func planLimit(p *problems, field string, l sluice.Limit) bool {
	switch {
	case l == limitMissing:
		p.add(field, "missing: give a whole number, or null for unlimited")
	case l < 0 && l != sluice.Unlimited:
		p.add(field, "must be a whole number ≥ 0, or null for unlimited; got %d", l)
	default:
		return true
	}
	return false
}

// uniqueID checks that the id of list[i] is set and not the id of an
// earlier element; first maps the ids seen to their index.
func uniqueID(p *problems, list string, i int, id string, first map[string]int) {
	f := fmt.Sprintf("%s[%d].id", list, i)
	switch j, dup := first[id]; {
	case id == "":
		p.add(f, "must not be empty")
	case dup:
		p.add(f, "%q is already the id of %s[%d]", id, list, j)
	default:
		first[id] = i
	}
}

func (c *Config) validateModels(p *problems) {
	first := make(map[string]int, len(c.Models))
	for i, m := range c.Models {
		f := fmt.Sprintf("models[%d]", i)
		uniqueID(p, "models", i, m.ID, first)
		if m.Tier == "" {
			p.add(f+".tier", "must not be empty: %q for every plan, any other tier for Basic and above", sluice.TierStarter)
		}
	}
}

// redisSchemes are the URL schemes of redis.url: a single server, a server
// over TLS, a Unix socket, Sentinel, Cluster, and the Valkey spellings
// (redis.NewClient documents the forms).
var redisSchemes = []string{"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster", "valkey", "valkeys"}

func (c *Config) validateStores(p *problems) {
	u := &c.Upstream
	if u.URL != "" {
		if !isURL(u.URL, true, "http", "https") {
			p.add("upstream.url", "must be empty (the demo generator) or an http:// or https:// URL %s", notShown)
		} else if pu, _ := url.Parse(u.URL); strings.HasSuffix(strings.ToLower(strings.TrimSuffix(pu.Path, "/")), "/images/generations") {
			p.add("upstream.url", "must be the API's base URL, like https://api.openai.com/v1: sluice appends /images/generations")
		}
	}
	positive(p, "upstream.timeout", u.Timeout)

	q := &c.Quota
	switch q.Store {
	case StoreEmbedded:
	case StoreRedis:
		if c.Redis.URL == "" {
			p.add("redis.url", "must be set when quota.store is redis")
		}
	default:
		p.add("quota.store", "must be embedded or redis, got %q", q.Store)
	}
	nonNegative(p, "quota.flush_interval", q.FlushInterval) // 0: every charge on disk before the answer
	for _, f := range []struct{ name, v string }{{"quota.on_store_error", q.OnStoreError}, {"quota.on_store_error_auth", q.OnStoreErrorAuth}} {
		if f.v != FailClosed && f.v != FailOpen && f.v != FailLocal {
			p.add(f.name, "must be closed, open or local, got %q", f.v)
		}
	}
	positive(p, "quota.timeout", q.Timeout)

	if c.Redis.URL != "" && !isURL(c.Redis.URL, false, redisSchemes...) {
		p.add("redis.url", "must be a redis://, rediss://, unix://, Sentinel (redis+sentinel://) or Cluster (redis+cluster://) URL %s", notShown)
	}
	if c.Database.URL != "" && !isURL(c.Database.URL, false, "postgres", "postgresql") {
		p.add("database.url", "must be empty (SQLite in the data directory) or a postgres:// URL %s", notShown)
	}
}

func (c *Config) validateUsage(p *problems) {
	u := &c.Usage
	positive(p, "usage.flush_interval", u.FlushInterval)
	for _, r := range []struct {
		field     string
		d, bucket time.Duration
	}{
		{"usage.retention.minute", u.Retention.Minute, time.Minute},
		{"usage.retention.hour", u.Retention.Hour, time.Hour},
		{"usage.retention.day", u.Retention.Day, 24 * time.Hour},
	} {
		if r.d != 0 && r.d < r.bucket {
			p.add(r.field, "must be 0 (keep for ever) or at least %s, got %q", formatDuration(r.bucket), formatDuration(r.d))
		}
	}
}

func (c *Config) validateTelegram(p *problems) {
	t := &c.Telegram
	if (t.APIURL != "" || t.Token != "") && !isURL(t.APIURL, true, "http", "https") {
		p.add("telegram.api_url", "must be an http:// or https:// URL, like %s %s", DefaultTelegramAPI, notShown)
	}
	if t.WebhookURL != "" {
		if !isURL(t.WebhookURL, true, "http", "https") {
			p.add("telegram.webhook_url", "must be empty (long polling) or the https:// URL Telegram delivers to %s", notShown)
		}
		if t.Token == "" {
			p.add("telegram.token", "must be set when telegram.webhook_url is")
		}
		if t.WebhookSecret == "" {
			p.add("telegram.webhook_secret", "must be set when telegram.webhook_url is, so that forged deliveries are refused")
		}
	}
	if t.UpgradeURL != "" && !isURL(t.UpgradeURL, true, "http", "https") {
		p.add("telegram.upgrade_url", "must be empty or an http:// or https:// URL, like https://example.com/pricing")
	}
	o := &t.Outbox
	if o.ChatMessages < 1 || o.ChatMessages > o.Messages {
		p.add("telegram.outbox.chat_messages", "must be from 1 to telegram.outbox.messages (%d), got %d", o.Messages, o.ChatMessages)
	}
	if o.Messages < 1 || o.Messages > 1_000_000 {
		p.add("telegram.outbox.messages", "must be from 1 to 1000000, got %d", o.Messages)
	}
	if o.ChatBytes < 64*KiB || o.ChatBytes > o.Bytes {
		p.add("telegram.outbox.chat_bytes", "must be from 64KiB (an image) to telegram.outbox.bytes (%d bytes), got %d bytes", int64(o.Bytes), int64(o.ChatBytes))
	}
	if o.Bytes < 64*KiB || o.Bytes > 16*GiB {
		p.add("telegram.outbox.bytes", "must be from 64KiB to 16GiB, got %d bytes", int64(o.Bytes))
	}
	if t.WebhookSecret != "" && !validWebhookSecret(t.WebhookSecret) {
		p.add("telegram.webhook_secret", "must be 1 to 256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule; the value is not shown)")
	}
}

func (c *Config) validateAlerts(p *problems) {
	a := &c.Alerts
	for i, x := range a.Thresholds {
		switch {
		case x < 1 || x > 100:
			p.add(fmt.Sprintf("alerts.thresholds[%d]", i), "must be a percent from 1 to 100, got %d", x)
		case i > 0 && x <= a.Thresholds[i-1]:
			p.add(fmt.Sprintf("alerts.thresholds[%d]", i), "must be greater than the one before (ascending, each once), got %d after %d", x, a.Thresholds[i-1])
		}
	}
	if a.WebhookURL != "" {
		if !isURL(a.WebhookURL, true, "http", "https") {
			p.add("alerts.webhook_url", "must be empty or an http:// or https:// URL %s", notShown)
		}
		if a.WebhookSecret == "" {
			p.add("alerts.webhook_secret", "must be set when alerts.webhook_url is, so that receivers can verify the webhooks")
		}
	}
}

func (c *Config) validateMail(p *problems) {
	m := &c.Mail
	if m.SMTPHost != "" {
		if m.SMTPPort < 1 || m.SMTPPort > 65535 {
			p.add("mail.smtp_port", "must be between 1 and 65535, got %d", m.SMTPPort)
		}
		if m.From == "" {
			p.add("mail.from", "must be set when mail.smtp_host is")
		}
	}
	if m.From != "" {
		if _, err := mail.ParseAddress(m.From); err != nil {
			p.add("mail.from", "must be an address like noreply@example.com or \"Sluice <noreply@example.com>\", got %q", m.From)
		}
	}
	if m.ResetURL != "" {
		if u, err := url.Parse(m.ResetURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Fragment != "" {
			p.add("mail.reset_url", "must be an http or https URL without a fragment, like https://app.example.com/reset-password, got %q", m.ResetURL)
		}
	}
}

// MaxIdempotencyMaxBody is the largest limits.idempotency_max_body: a kept
// answer is one value in the database, and PostgreSQL's bytea and SQLite's
// blobs stop near 1 GB.
const MaxIdempotencyMaxBody = 512 * MiB

func positive(p *problems, field string, d time.Duration) {
	if d <= 0 {
		p.add(field, "must be positive, got %q", formatDuration(d))
	}
}

func nonNegative(p *problems, field string, d time.Duration) {
	if d < 0 {
		p.add(field, "must not be negative (0 means none), got %q", formatDuration(d))
	}
}

func wholeSeconds(p *problems, field string, d time.Duration) {
	if !isWholeSeconds(d) {
		p.add(field, "must be a positive whole number of seconds, got %q", formatDuration(d))
	}
}

func isWholeSeconds(d time.Duration) bool { return d > 0 && d%time.Second == 0 }

// validPort reports whether port is a decimal port number, 0 to 65535.
func validPort(port string) bool {
	_, err := strconv.ParseUint(port, 10, 16)
	return err == nil
}

// isURL reports whether s is an absolute URL with one of the schemes and,
// if needHost, a host name. It never returns url.Parse's error, which would
// quote s.
func isURL(s string, needHost bool, schemes ...string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Opaque == "" && slices.Contains(schemes, u.Scheme) && (!needHost || u.Hostname() != "")
}

// validWebhookSecret applies Telegram's rule for secret_token.
func validWebhookSecret(s string) bool {
	if len(s) < 1 || len(s) > 256 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
