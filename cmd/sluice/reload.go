package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync/atomic"

	"github.com/sluicehq/sluice"
	shttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/imagegen"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/otel"
	"github.com/sluicehq/sluice/quota"
)

// What a reload changes (README "Reloading the configuration"):
//
//   - live: plans, models, limits.windows, limits.max_n, limits.mode,
//     limits.auth (rates and mode), alerts.thresholds (while alerts are on),
//     upstream (url, api_key, timeout). A request sees either the old or the
//     new values, never a mix (http.Server.Reload swaps one snapshot, loaded
//     once per request).
//   - restart: everything else. The listener and its timeouts, the stores
//     and the data directory are open resources; limits.algorithm and
//     limits.timezone change how the stored counters are read (a sliding
//     window's state read as a calendar day's would be wrong), so the
//     running values stay until a restart; the Telegram bot keeps the plans
//     and models it started with.

// swapImages is the image generator that a reload replaces: the gateway and
// the bot hold it, and each call goes to the generator current when it
// starts.
type swapImages struct {
	cur atomic.Pointer[generator]
}

type generator struct {
	sluice.ImageGenerator
	close func() // releases its idle connections; nil for the demo
}

var _ sluice.ImageGenerator = (*swapImages)(nil)

func (s *swapImages) Generate(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
	return s.cur.Load().Generate(ctx, req)
}

// set makes g current and releases the idle connections of the one before
// (calls in flight keep theirs).
func (s *swapImages) set(g *generator) {
	if old := s.cur.Swap(g); old != nil && old.close != nil {
		old.close()
	}
}

// close releases the current generator's idle connections.
func (s *swapImages) close() error {
	if g := s.cur.Load(); g != nil && g.close != nil {
		g.close()
	}
	return nil
}

// newGenerator is the generator of u: the upstream, or the demo without a
// URL.
// With traced, the upstream's requests carry the trace context (W3C
// traceparent).
func newGenerator(u config.Upstream, traced bool) *generator {
	if u.URL == "" {
		return &generator{ImageGenerator: &imagegen.Demo{}}
	}
	var rt http.RoundTripper
	if traced {
		rt = otel.Transport(imagegen.NewTransport())
	}
	up := imagegen.NewUpstream(u.URL, u.APIKey, u.Timeout, rt)
	return &generator{ImageGenerator: up, close: up.CloseIdleConnections}
}

// live returns the http.Server's reloadable settings of c, with the
// algorithm and timezone of running (which only a restart changes).
func liveOf(c, running *config.Config) shttp.Live {
	return shttp.Live{
		Plans:  c.Plans,
		Models: c.Models,
		Limits: shttp.Limits{
			Algorithm: running.Limits.Algorithm,
			Hour:      c.Limits.Windows.Hour,
			Day:       c.Limits.Windows.Day,
			Location:  running.Limits.Timezone,
			MaxN:      c.Limits.MaxN,
		},
		AuthLimits: authLimitsOf(c),
	}
}

func authLimitsOf(c *config.Config) shttp.AuthLimits {
	return shttp.AuthLimits{
		Login:               shttp.Rate(c.Limits.Auth.Login),
		Register:            shttp.Rate(c.Limits.Auth.Register),
		ForgotPassword:      shttp.Rate(c.Limits.Auth.ForgotPassword),
		ForgotPasswordEmail: shttp.Rate(c.Limits.Auth.ForgotPasswordEmail),
	}
}

// Reload re-reads the configuration as ParseFlags read it (the file, the
// SLUICE_* variables, the --addr and --data flags), validates it and
// applies what can change while serving; SIGHUP and POST /admin/reload
// call it. A configuration that fails validation changes nothing: the
// error names the field, and a log line says so. Changed keys that need a
// restart are reported (and logged) but not applied. Reloads are
// serialized.
func (m *Main) Reload(ctx context.Context) (*shttp.ReloadReport, error) {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	log := m.Logger
	next, err := m.load()
	if err == nil {
		err = checkModes(&next)
	}
	if err != nil {
		m.reloads.WithLabelValues("error").Inc()
		log.Error("configuration reload refused; the running configuration stays", "error", err.Error())
		return nil, reloadError(err)
	}
	cur := &m.running
	rep := &shttp.ReloadReport{Status: "reloaded"}
	changed := func(key string, a, b any) bool {
		if reflect.DeepEqual(a, b) {
			return false
		}
		rep.Changed = append(rep.Changed, key)
		return true
	}
	restart := func(key string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			rep.RestartRequired = append(rep.RestartRequired, key)
		}
	}

	// Restart-only keys: reported, not applied.
	restart("server", cur.Server, next.Server)
	restart("limits.algorithm", cur.Limits.Algorithm, next.Limits.Algorithm)
	restart("limits.timezone", cur.Limits.Timezone.String(), next.Limits.Timezone.String())
	restart("limits.idempotency_ttl", cur.Limits.IdempotencyTTL, next.Limits.IdempotencyTTL)
	restart("limits.idempotency_max_body", cur.Limits.IdempotencyMaxBody, next.Limits.IdempotencyMaxBody)
	restart("quota", cur.Quota, next.Quota)
	restart("redis", cur.Redis, next.Redis)
	restart("database", cur.Database, next.Database)
	restart("usage", cur.Usage, next.Usage)
	restart("telegram", cur.Telegram, next.Telegram)
	restart("mail", cur.Mail, next.Mail)
	restart("log", cur.Log, next.Log)
	restart("alerts.webhook_url", cur.Alerts.WebhookURL, next.Alerts.WebhookURL)
	restart("alerts.webhook_secret", cur.Alerts.WebhookSecret, next.Alerts.WebhookSecret)
	if m.Alerts == nil && len(next.Alerts.Thresholds) > 0 {
		restart("alerts.thresholds (alerts were off at start)", nil, next.Alerts.Thresholds)
	}
	if m.Bot != nil {
		restart("plans (the Telegram bot's)", cur.Plans, next.Plans)
		restart("models (the Telegram bot's)", cur.Models, next.Models)
		restart("limits.windows (the Telegram bot's)", cur.Limits.Windows, next.Limits.Windows)
	}

	// Live keys.
	plans := changed("plans", cur.Plans, next.Plans)
	models := changed("models", cur.Models, next.Models)
	windows := changed("limits.windows", cur.Limits.Windows, next.Limits.Windows)
	maxN := changed("limits.max_n", cur.Limits.MaxN, next.Limits.MaxN)
	auth := changed("limits.auth", authLimitsOf(cur), authLimitsOf(&next))
	if plans || models || windows || maxN || auth {
		m.Server.Reload(liveOf(&next, cur))
	}
	if m.Console != nil && (plans || windows) {
		m.Console.SetPlans(next.Plans, windowConfig(&next))
	}
	if changed("limits.mode", cur.Limits.Mode, next.Limits.Mode) {
		mode, _ := quota.ParseMode(next.Limits.Mode)
		m.Quota.SetMode(mode)
	}
	if changed("limits.auth.mode", cur.Limits.Auth.Mode, next.Limits.Auth.Mode) {
		mode, _ := quota.ParseMode(next.Limits.Auth.Mode)
		m.AuthQuota.SetMode(mode)
	}
	thresholds := m.Alerts != nil && changed("alerts.thresholds", cur.Alerts.Thresholds, next.Alerts.Thresholds)
	if m.Alerts != nil && (thresholds || plans) {
		if err := m.Alerts.Reload(next.Alerts.Thresholds, next.Plans); err != nil {
			// Validate checked the thresholds: not expected.
			log.Error("alerts not reloaded", "error", err.Error())
		}
	}
	if changed("upstream", cur.Upstream, next.Upstream) {
		m.images.set(newGenerator(next.Upstream, m.Server.Tracer != nil))
	}

	// The running configuration: the live keys of next, the rest as they
	// were.
	applied := *cur
	applied.Plans, applied.Models = next.Plans, next.Models
	applied.Limits.Windows, applied.Limits.MaxN = next.Limits.Windows, next.Limits.MaxN
	applied.Limits.Mode, applied.Limits.Auth = next.Limits.Mode, next.Limits.Auth
	if m.Alerts != nil {
		applied.Alerts.Thresholds = next.Alerts.Thresholds
	}
	applied.Upstream = next.Upstream
	m.running = applied

	m.reloads.WithLabelValues("ok").Inc()
	log.Info("configuration reloaded", "changed", strings.Join(rep.Changed, ","))
	if len(rep.RestartRequired) > 0 {
		log.Warn("configuration keys changed that take effect only after a restart; they keep their running values",
			"keys", strings.Join(rep.RestartRequired, ","))
	}
	return rep, nil
}

// load reads the configuration as ParseFlags did.
func (m *Main) load() (config.Config, error) {
	c, err := config.Load(m.configPath, m.Getenv)
	if err != nil {
		return c, err
	}
	if m.flagAddr != "" {
		c.Server.Addr = m.flagAddr
	}
	if m.flagData != "" {
		c.Server.Data = m.flagData
	}
	return c, c.Validate()
}

func checkModes(c *config.Config) error {
	if _, err := quota.ParseMode(c.Limits.Mode); err != nil {
		return &config.Error{Field: "limits.mode", Msg: err.Error()}
	}
	if _, err := quota.ParseMode(c.Limits.Auth.Mode); err != nil {
		return &config.Error{Field: "limits.auth.mode", Msg: err.Error()}
	}
	return nil
}

// reloadError is the answer of POST /admin/reload to a configuration that
// failed validation: an invalid_request naming the first field at fault,
// with every problem in the message.
func reloadError(err error) error {
	var field string
	var ce *config.Error
	if errors.As(err, &ce) {
		field = ce.Field
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	return &sluice.Error{Code: sluice.EINVALID, Field: field,
		Message: fmt.Sprintf("The configuration was not reloaded (the running one stays): %s", msg)}
}

// reloadOnHUP reloads the configuration on every SIGHUP in hup until ctx
// ends.
func (m *Main) reloadOnHUP(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			m.Logger.Info("SIGHUP: reloading the configuration")
			m.Reload(context.WithoutCancel(ctx))
		}
	}
}
