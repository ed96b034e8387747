package alert_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/alert"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/sqlite"
)

// verifySluiceWebhook is the verification snippet of the README, verbatim: it
// checks a Standard Webhooks signature with the secret of
// alerts.webhook_secret.
func verifySluiceWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	key := []byte(secret)
	if b64, ok := strings.CutPrefix(secret, "whsec_"); ok {
		if k, err := base64.StdEncoding.DecodeString(b64); err == nil {
			key = k
		}
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || now.Sub(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		return errors.New("webhook: bad or stale timestamp")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return errors.New("webhook: bad signature")
}

// hook is a webhook endpoint that checks every delivery's signature and
// records the good ones; fail decides, per attempt, a status to fail with
// (0: answer 204).
type hook struct {
	t      *testing.T
	secret string
	srv    *httptest.Server

	mu       sync.Mutex
	attempts int
	fail     func(attempt int) int
	got      []alert.Payload
	ids      []string
	changed  chan struct{}
}

func newHook(t *testing.T, secret string, fail func(int) int) *hook {
	h := &hook{t: t, secret: secret, fail: fail, changed: make(chan struct{}, 1)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := verifySluiceWebhook(h.secret, r.Header, body, time.Now()); err != nil {
			t.Errorf("webhook: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		h.mu.Lock()
		h.attempts++
		h.ids = append(h.ids, r.Header.Get("webhook-id"))
		status := 0
		if h.fail != nil {
			status = h.fail(h.attempts)
		}
		if status == 0 {
			var p alert.Payload
			if err := json.Unmarshal(body, &p); err != nil {
				t.Errorf("webhook body %s: %v", body, err)
			}
			h.got = append(h.got, p)
		}
		h.mu.Unlock()
		select {
		case h.changed <- struct{}{}:
		default:
		}
		if status != 0 {
			w.WriteHeader(status)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// wait waits until the endpoint has accepted n webhooks, and returns those
// it accepted in the order of their At, threshold and account (they are
// delivered concurrently).
func (h *hook) wait(n int) []alert.Payload {
	h.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		h.mu.Lock()
		got := append([]alert.Payload(nil), h.got...)
		h.mu.Unlock()
		if len(got) >= n {
			slices.SortFunc(got, func(a, b alert.Payload) int {
				if c := cmpInt(a.At, b.At); c != 0 {
					return c
				}
				if c := cmpInt(int64(a.Threshold), int64(b.Threshold)); c != 0 {
					return c
				}
				return cmpInt(a.AccountID, b.AccountID)
			})
			return got
		}
		select {
		case <-h.changed:
		case <-deadline:
			h.t.Fatalf("webhook: %d deliveries after 30s, want %d", len(got), n)
		}
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// mailer and telegram record what the Notifier hands them.
type mailer struct {
	mu   sync.Mutex
	sent []*sluice.Email
}

func (m *mailer) Send(e *sluice.Email) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent = append(m.sent, e)
	return nil
}

func (m *mailer) texts() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var s []string
	for _, e := range m.sent {
		s = append(s, e.To+": "+e.Subject+" | "+strings.TrimSpace(strings.SplitN(e.Text, "\n", 2)[0]))
	}
	return s
}

type telegram struct {
	mu   sync.Mutex
	sent []string
}

func (tg *telegram) SendText(user int64, text string) error {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	tg.sent = append(tg.sent, fmt.Sprintf("%d: %s", user, text))
	return nil
}

func (tg *telegram) texts() []string {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]string(nil), tg.sent...)
}

// env is a Notifier over a SQLite file, with recording channels, and the
// real in-memory quota store to make decisions with.
type env struct {
	t     *testing.T
	db    *sqlite.DB
	n     *alert.Notifier
	mail  *mailer
	tg    *telegram
	hook  *hook
	quota *inmem.Store
	reg   *prometheus.Registry
	wc    sluice.WindowConfig
}

func newEnv(t *testing.T, alg sluice.Algorithm, fail func(int) int, tune func(n *alert.Notifier)) *env {
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "sluice.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	e := &env{t: t, db: db, mail: &mailer{}, tg: &telegram{}, hook: newHook(t, secret, fail),
		quota: inmem.New(inmem.Options{}), reg: prometheus.NewRegistry(), wc: sluice.WindowConfig{Algorithm: alg}}
	t.Cleanup(func() { e.quota.Close() })
	e.n = &alert.Notifier{
		Accounts: db, Marks: db, Plans: sluice.DefaultPlans(), Algorithm: alg,
		Mailer: e.mail, Telegram: e.tg, WebhookURL: e.hook.srv.URL, WebhookSecret: secret,
		Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, Registry: e.reg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if tune != nil {
		tune(e.n)
	}
	if err := e.n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.n.Close(context.Background()) })
	return e
}

// take charges n units to the account at now under its plan's limits and
// records the decision.
func (e *env) take(a *sluice.Account, n int64, now time.Time) sluice.Decision {
	e.t.Helper()
	var plan *sluice.Plan
	for _, p := range sluice.DefaultPlans() {
		if p.ID == a.Plan {
			plan = &p
		}
	}
	hour, day := a.Limits(plan)
	pol := e.wc.AccountPolicy(hour, day)
	d, err := e.quota.Take(e.t.Context(), a.QuotaKey(), &pol, n, now)
	if err != nil {
		e.t.Fatal(err)
	}
	outcome := sluice.UsageAdmitted
	if !d.Allowed {
		outcome = sluice.UsageRejected
	}
	e.n.Record(&sluice.UsageEvent{AccountID: a.ID, Plan: a.Plan, KeyID: "k", Channel: sluice.ChannelAPI,
		Model: "m", Time: d.Time, Outcome: outcome, Units: n, Decision: &d})
	return d
}

// settle closes the Notifier, so that everything it was handed is out.
func (e *env) settle() {
	e.t.Helper()
	if err := e.n.Close(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) account(a sluice.Account) *sluice.Account {
	e.t.Helper()
	if err := e.db.CreateAccount(e.t.Context(), &a); err != nil {
		e.t.Fatal(err)
	}
	return &a
}

func TestAlertsOncePerThreshold(t *testing.T) {
	e := newEnv(t, sluice.Sliding, nil, nil)
	a := e.account(sluice.Account{Email: "vip@example.com", Plan: "vip", TelegramID: 4242})
	t0 := time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC)
	// 79 images, then one by one to 81: 80 % of the hour once.
	e.take(a, 79, t0)
	e.take(a, 1, t0.Add(time.Second))   // 80: crosses 80 %
	e.take(a, 1, t0.Add(2*time.Second)) // 81
	// A jump over 100 % of the hour is refused, so: 19 more, to 100.
	e.take(a, 4, t0.Add(3*time.Second))  // 85
	e.take(a, 15, t0.Add(4*time.Second)) // 100: crosses 100 %
	e.take(a, 1, t0.Add(5*time.Second))  // refused
	e.settle()

	want := []string{
		"vip@example.com: 80% of your hourly image quota is used | You have used 80 of 100 images this hour on the VIP plan; the hour resets at 16:00 UTC.",
		"vip@example.com: Your hourly image quota is used up | You have used 100 of 100 images this hour on the VIP plan; the hour resets at 16:00 UTC.",
	}
	if diff := cmp.Diff(want, e.mail.texts()); diff != "" {
		t.Errorf("mails (-want +got):\n%s", diff)
	}
	wantTG := []string{
		"4242: You have used 80 of 100 images this hour on the VIP plan; the hour resets at 16:00 UTC.",
		"4242: You have used 100 of 100 images this hour on the VIP plan; the hour resets at 16:00 UTC.",
	}
	if diff := cmp.Diff(wantTG, e.tg.texts()); diff != "" {
		t.Errorf("Telegram (-want +got):\n%s", diff)
	}
	got := e.hook.wait(2)
	wantHooks := []alert.Payload{
		{Type: "quota.threshold", AccountID: a.ID, Plan: "vip", Window: "hour", Threshold: 80, Used: 80, Limit: 100, Reset: t0.Add(time.Hour).Unix(), At: t0.Add(time.Second).Unix()},
		{Type: "quota.threshold", AccountID: a.ID, Plan: "vip", Window: "hour", Threshold: 100, Used: 100, Limit: 100, Reset: t0.Add(time.Hour).Unix(), At: t0.Add(4 * time.Second).Unix()},
	}
	if diff := cmp.Diff(wantHooks, got); diff != "" {
		t.Errorf("webhooks (-want +got):\n%s", diff)
	}
	if n := e.counter("sluice_alerts_sent_total", "webhook", "ok"); n != 2 {
		t.Errorf("webhooks ok = %v, want 2", n)
	}
}

// counter is the value of the series of the counter name with the label
// values, in order; 0 if there is none.
func (e *env) counter(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			var vals []string
			for _, l := range m.Label {
				vals = append(vals, l.GetValue())
			}
			if cmp.Equal(vals, labels, cmpopts.EquateEmpty()) {
				return m.Counter.GetValue()
			}
		}
	}
	return 0
}

// TestAlertPeriods: a threshold fires once per period. Calendar: once per
// calendar hour. Sliding: not again until a whole window after it fired,
// though the use dropped below it and rose again.
func TestAlertPeriods(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 15, 30, 0, 0, time.UTC)
	type step struct {
		at time.Duration
		n  int64
	}
	for _, tc := range []struct {
		name  string
		alg   sluice.Algorithm
		steps []step
		want  []int64 // the At of each 80 % webhook, as offsets in seconds from t0
	}{
		{"calendar", sluice.Calendar, []step{
			{0, 4},                  // 4 of 5 (starter): 80 % in the hour 15:00
			{30 * time.Minute, 4},   // 16:00, a new hour: 80 % again
			{30*time.Minute + 1, 0}, // nothing
			{89 * time.Minute, 0},   // nothing
			{90 * time.Minute, 4},   // 17:00
		}, []int64{0, 1800, 5400}},
		{"sliding", sluice.Sliding, []step{
			{0, 4},                           // 4 of 5: 80 %
			{time.Hour, 4},                   // the first 4 slid out: 80 % again, exactly a window later
			{2*time.Hour + time.Minute, 2},   // 2 of 5
			{2*time.Hour + 2*time.Minute, 2}, // 4 of 5: 80 %, a window after the last
		}, []int64{0, 3600, 7320}},
		{"sliding within a window", sluice.Sliding, []step{ // on the VIP plan: 100/hour
			{0, 70},
			{50 * time.Minute, 10},  // 80: 80 %, marked until +110m
			{61 * time.Minute, 70},  // the 70 slid out at +60m: 10 + 70 = 80 again, within the mark
			{111 * time.Minute, 10}, // the 10 of +50m slid out at +110m: 70 + 10 = 80, the mark has ended
		}, []int64{3000, 6660}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.alg, nil, func(n *alert.Notifier) { n.Mailer, n.Telegram = nil, nil })
			plan := "starter"
			if tc.name == "sliding within a window" {
				plan = "vip"
			}
			a := e.account(sluice.Account{Plan: plan})
			for _, s := range tc.steps {
				if s.n > 0 {
					if d := e.take(a, s.n, t0.Add(s.at)); !d.Allowed {
						t.Fatalf("take %d at +%s refused: %+v", s.n, s.at, d)
					}
				}
			}
			e.settle()
			var got []int64
			for _, p := range e.hook.wait(0) {
				if p.Window == "hour" && p.Threshold == 80 {
					got = append(got, p.At-t0.Unix())
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("80 %% alerts of the hour at (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMailOff: an account that turned mail alerts off gets none, but its
// Telegram alert and the webhook still go out.
func TestMailOff(t *testing.T) {
	e := newEnv(t, sluice.Sliding, nil, nil)
	a := e.account(sluice.Account{Email: "quiet@example.com", Plan: "starter", TelegramID: 77})
	if err := e.db.SetMailAlerts(t.Context(), a.ID, false); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC)
	e.take(a, 4, t0)
	e.settle()
	if got := e.mail.texts(); len(got) != 0 {
		t.Errorf("mails: %q, want none", got)
	}
	want := []string{"77: You have used 4 of 5 images this hour on the Starter plan; the hour resets at 16:00 UTC."}
	if diff := cmp.Diff(want, e.tg.texts()); diff != "" {
		t.Errorf("Telegram (-want +got):\n%s", diff)
	}
	if got := e.hook.wait(1); len(got) != 1 || got[0].Threshold != 80 {
		t.Errorf("webhooks: %+v, want the 80 %% alert", got)
	}
}

// TestWebhookRetry: a failing endpoint is retried with backoff, under the
// same webhook-id, until it answers 2xx; one that always fails is given up
// after Attempts.
func TestWebhookRetry(t *testing.T) {
	t.Run("recovers", func(t *testing.T) {
		e := newEnv(t, sluice.Sliding, func(attempt int) int {
			if attempt <= 2 {
				return http.StatusServiceUnavailable
			}
			return 0
		}, nil)
		a := e.account(sluice.Account{Plan: "starter"})
		e.take(a, 4, time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC))
		e.settle()
		e.hook.wait(1)
		e.hook.mu.Lock()
		ids := e.hook.ids
		e.hook.mu.Unlock()
		if len(ids) != 3 || ids[0] != ids[1] || ids[1] != ids[2] || !strings.HasPrefix(ids[0], "msg_") {
			t.Errorf("webhook ids of the attempts: %q, want 3 equal msg_ ids", ids)
		}
		if n := e.counter("sluice_alert_webhook_retries_total"); n != 2 {
			t.Errorf("retries = %v, want 2", n)
		}
		if n := e.counter("sluice_alerts_sent_total", "webhook", "ok"); n != 1 {
			t.Errorf("webhooks ok = %v, want 1", n)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		e := newEnv(t, sluice.Sliding, func(int) int { return http.StatusInternalServerError },
			func(n *alert.Notifier) { n.Attempts = 4 })
		a := e.account(sluice.Account{Plan: "starter"})
		e.take(a, 4, time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC))
		e.settle()
		e.hook.mu.Lock()
		attempts := e.hook.attempts
		e.hook.mu.Unlock()
		if attempts != 4 {
			t.Errorf("attempts = %d, want 4", attempts)
		}
		if n := e.counter("sluice_alerts_sent_total", "webhook", "failed"); n != 1 {
			t.Errorf("webhooks failed = %v, want 1", n)
		}
	})
}

// TestNeverBlocks: Record returns at once whatever the channels do. With
// the worker stuck behind an endpoint that never answers and every queue
// full, alerts are dropped and counted; Close gives up on the stuck
// webhook when its context ends.
func TestNeverBlocks(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(hang); srv.Close() })
	e := newEnv(t, sluice.Sliding, nil, func(n *alert.Notifier) {
		n.WebhookURL = srv.URL
		n.WebhookPending = 1
		n.QueueSize = 1
	})
	t0 := time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC)
	for i := range 50 {
		a := e.account(sluice.Account{Plan: "starter"})
		e.take(a, 4, t0.Add(time.Duration(i)*time.Second))
	}
	// Every alert was either handled (one webhook pending, the others
	// dropped) or dropped from the full queue: Record never waited.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := e.n.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want the deadline (a webhook was stuck)", err)
	}
	queued := e.counter("sluice_alerts_dropped_total", "alerts")
	hooks := e.counter("sluice_alerts_dropped_total", "webhook")
	handled := e.counter("sluice_alerts_total", "new")
	late := e.counter("sluice_alerts_total", "mark_error") // left in the queue when Close gave up
	if queued+handled+late != 50 || hooks < handled-1-late {
		t.Errorf("dropped from the queue %v, handled %v (and %v at shutdown), webhooks dropped %v; want 50 in all and all webhooks but one dropped",
			queued, handled, late, hooks)
	}
	if n := e.counter("sluice_alerts_sent_total", "webhook", "canceled"); n < 1 {
		t.Errorf("webhooks canceled = %v, want the stuck one", n)
	}
}

// TestSmallLimit: with a limit of 1, 80 % and 100 % are the same use: one
// alert, the 100 % one.
func TestSmallLimit(t *testing.T) {
	e := newEnv(t, sluice.Sliding, nil, nil)
	a := e.account(sluice.Account{Email: "one@example.com", Plan: "starter", Override: &sluice.LimitOverride{Hour: 1, Day: 50}})
	e.take(a, 1, time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC))
	e.settle()
	want := []string{"one@example.com: Your hourly image quota is used up | You have used 1 of 1 images this hour on the Starter plan; the hour resets at 16:00 UTC."}
	if diff := cmp.Diff(want, e.mail.texts()); diff != "" {
		t.Errorf("mails (-want +got):\n%s", diff)
	}
}
