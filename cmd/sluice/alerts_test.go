package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice/telegram/telegramtest"
)

const alertsConfig = `
plans:
  - {id: starter, name: Starter, hour: 5, day: 20, models: starter, api: true}
  - {id: vip, name: VIP, hour: 100, day: 1000, models: all, api: true}
`

// alertHook is an alerts.webhook_url that verifies each delivery as the
// README tells receivers to, and keeps "account window threshold used".
type alertHook struct {
	t      *testing.T
	secret string
	url    string
	mu     sync.Mutex
	got    []string
}

func newAlertHook(t *testing.T, secret string) *alertHook {
	h := &alertHook{t: t, secret: secret}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := verifySluiceWebhook(h.secret, r.Header, body, time.Now()); err != nil {
			t.Errorf("webhook: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var p struct {
			Type      string
			AccountID int64 `json:"account_id"`
			Plan      string
			Window    string
			Threshold int
			Used      int64
			Limit     int64
			Reset, At int64
		}
		if err := json.Unmarshal(body, &p); err != nil || p.Type != "quota.threshold" || p.Reset <= p.At || p.At == 0 {
			t.Errorf("webhook body %s: %v", body, err)
		}
		h.mu.Lock()
		h.got = append(h.got, fmt.Sprintf("%d %s %s %d %d/%d", p.AccountID, p.Plan, p.Window, p.Threshold, p.Used, p.Limit))
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL + "/hooks/sluice"
	return h
}

func (h *alertHook) deliveries() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := slices.Clone(h.got)
	slices.Sort(s)
	return s
}

// verifySluiceWebhook is the README's snippet.
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

// startAlertsMain runs the real Main on the data directory with
// alertsConfig, on the gateway's settable clock (see startMain).
func startAlertsMain(t *testing.T, data string, env map[string]string) *gateway {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, []byte(alertsConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	env["SLUICE_ADMIN_TOKEN"] = "test-admin-token"
	var out, errb bytes.Buffer
	m := NewMain(&out, &errb)
	m.Getenv = func(k string) string { return env[k] }
	if err := m.ParseFlags([]string{"--config", path, "--addr", "127.0.0.1:0", "--data", data}); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Unix(1_900_000_000, 0)} // 17:46:40 UTC
	m.Quota.Now = c.Now
	g := &gateway{t: t, m: m, url: m.Server.URL(), admin: env["SLUICE_ADMIN_TOKEN"], clock: c, out: &out}
	t.Cleanup(func() {
		if m.closers != nil {
			if err := m.Close(); err != nil {
				t.Error(err)
			}
		}
	})
	return g
}

// outboxMails returns "to | subject | first line" of every mail in the
// data directory's outbox, sorted.
func outboxMails(t *testing.T, data string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(data, "outbox", "*.eml"))
	var got []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := mail.ReadMessage(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		subject, _ := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
		body, _ := io.ReadAll(msg.Body)
		first, _, _ := strings.Cut(strings.ReplaceAll(string(body), "=\r\n", ""), "\r\n")
		got = append(got, msg.Header.Get("To")+" | "+subject+" | "+first)
	}
	slices.Sort(got)
	return got
}

func telegramTexts(api *telegramtest.Server, chat int64) []string {
	var s []string
	for _, m := range api.SentTo(chat) {
		s = append(s, m.Text)
	}
	return s
}

// TestMainAlerts: an account that crosses 80 % and 100 % of its hour is
// told once each, by mail (the outbox), Telegram and the webhook; not again
// after a restart on the same data directory, though its use crosses 80 %
// again in the same period; again once the period is over. An account
// that turned mail alerts off gets Telegram and the webhook only.
func TestMainAlerts(t *testing.T) {
	data := t.TempDir()
	api := telegramtest.NewServer(t, botToken)
	hook := newAlertHook(t, "whsec_"+base64.StdEncoding.EncodeToString([]byte("a webhook secret")))
	env := func() map[string]string {
		return map[string]string{
			"SLUICE_TELEGRAM_TOKEN":        botToken,
			"SLUICE_TELEGRAM_API_URL":      api.URL,
			"SLUICE_ALERTS_WEBHOOK_URL":    hook.url,
			"SLUICE_ALERTS_WEBHOOK_SECRET": hook.secret,
		}
	}
	ctx := context.Background()
	g := startAlertsMain(t, data, env())
	if g.m.Alerts == nil {
		t.Fatal("alerts are off by default")
	}
	ada, adaKey := g.account("ada@example.com", "starter")
	if err := g.m.Accounts.LinkTelegram(ctx, ada, 701); err != nil {
		t.Fatal(err)
	}
	// Bo registers and turns mail alerts off.
	if r := g.do("POST", "/auth/register", "", `{"email":"bo@example.com","password":"correct horse"}`); r.status != 201 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	r := g.do("POST", "/auth/login", "", `{"email":"bo@example.com","password":"correct horse"}`)
	session, _ := r.json(t)["token"].(string)
	if r := g.do("PUT", "/v1/alerts", session, `{"email":false}`); r.status != 200 || string(bytes.TrimSpace(r.body)) != `{"email":false}` {
		t.Fatalf("PUT /v1/alerts: %d %s", r.status, r.body)
	}
	bo, err := g.m.Accounts.FindAccountByEmail(ctx, "bo@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.m.Accounts.LinkTelegram(ctx, bo.ID, 702); err != nil {
		t.Fatal(err)
	}
	boKey := g.key(bo.ID)

	for _, st := range []struct {
		key string
		n   int
	}{{adaKey, 3}, {adaKey, 1}, {adaKey, 1}, {boKey, 4}} { // Ada: 3, 4 (80 %), 5 (100 %); Bo: 4 (80 %)
		if r := g.generate(st.key, st.n); r.status != 200 {
			t.Fatalf("generate %d: %d %s", st.n, r.status, r.body)
		}
	}
	if err := g.m.Close(); err != nil { // delivers everything queued
		t.Fatal(err)
	}
	adaSays := []string{
		"You have used 4 of 5 images this hour on the Starter plan; the hour resets at 18:47 UTC.",
		"You have used 5 of 5 images this hour on the Starter plan; the hour resets at 18:47 UTC.",
	}
	wantMails := []string{
		"<ada@example.com> | 80% of your hourly image quota is used | " + adaSays[0],
		"<ada@example.com> | Your hourly image quota is used up | " + adaSays[1],
	}
	wantHooks := []string{
		fmt.Sprintf("%d starter hour 100 5/5", ada),
		fmt.Sprintf("%d starter hour 80 4/5", ada),
		fmt.Sprintf("%d starter hour 80 4/5", bo.ID),
	}
	check := func(when string) {
		t.Helper()
		if diff := cmp.Diff(wantMails, outboxMails(t, data)); diff != "" {
			t.Errorf("%s: mails (-want +got):\n%s", when, diff)
		}
		if diff := cmp.Diff(adaSays, telegramTexts(api, 701)); diff != "" {
			t.Errorf("%s: Ada's Telegram (-want +got):\n%s", when, diff)
		}
		if diff := cmp.Diff([]string{"You have used 4 of 5 images this hour on the Starter plan; the hour resets at 18:47 UTC."}, telegramTexts(api, 702)); diff != "" {
			t.Errorf("%s: Bo's Telegram (-want +got):\n%s", when, diff)
		}
		if diff := cmp.Diff(wantHooks, hook.deliveries()); diff != "" {
			t.Errorf("%s: webhooks (-want +got):\n%s", when, diff)
		}
	}
	check("first run")

	// A restart on the same data directory: Ada's usage is reset and she
	// crosses 80 % again within the hour of the first alert: no alert.
	g = startAlertsMain(t, data, env())
	if r := g.do("DELETE", fmt.Sprintf("/admin/accounts/%d/usage", ada), g.admin, ""); r.status/100 != 2 {
		t.Fatalf("reset usage: %d %s", r.status, r.body)
	}
	g.clock.Add(30 * time.Minute)
	if r := g.generate(adaKey, 4); r.status != 200 {
		t.Fatalf("generate after restart: %d %s", r.status, r.body)
	}
	if err := g.m.Close(); err != nil {
		t.Fatal(err)
	}
	check("after a restart")

	// A whole window after the first alert, the period is over.
	g = startAlertsMain(t, data, env())
	g.clock.Add(time.Hour)
	if r := g.generate(adaKey, 1); r.status != 200 { // 4 charged at +30m + 1
		t.Fatalf("generate an hour later: %d %s", r.status, r.body)
	}
	if err := g.m.Close(); err != nil {
		t.Fatal(err)
	}
	wantHooks = append(wantHooks, fmt.Sprintf("%d starter hour 100 5/5", ada))
	wantMails = append(wantMails, "<ada@example.com> | Your hourly image quota is used up | You have used 5 of 5 images this hour on the Starter plan; the hour resets at 19:17 UTC.")
	adaSays = append(adaSays, "You have used 5 of 5 images this hour on the Starter plan; the hour resets at 19:17 UTC.")
	slices.Sort(wantHooks)
	slices.Sort(wantMails)
	check("a window later")
}

// TestMainAlertsHangingWebhook: a webhook endpoint that never answers
// delays no request; at shutdown its delivery is given up after
// alertsDrainTimeout.
func TestMainAlertsHangingWebhook(t *testing.T) {
	release := make(chan struct{})
	var calls sync.WaitGroup
	calls.Add(1)
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(calls.Done)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	g := startAlertsMain(t, t.TempDir(), map[string]string{
		"SLUICE_ALERTS_WEBHOOK_URL":    srv.URL,
		"SLUICE_ALERTS_WEBHOOK_SECRET": "s",
	})
	_, key := g.account("ada@example.com", "starter")
	for i := range 5 { // 80 % at the 4th, 100 % at the 5th
		if r := g.generate(key, 1); r.status != 200 {
			t.Fatalf("request %d: %d %s", i+1, r.status, r.body)
		}
	}
	calls.Wait() // the first webhook is hanging
	for i := range 3 {
		if r := g.do("GET", "/v1/usage", key, ""); r.status != 200 {
			t.Fatalf("usage %d while the webhook hangs: %d %s", i, r.status, r.body)
		}
	}
	if err := g.m.Close(); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want the alerts' drain deadline", err)
	}
}
