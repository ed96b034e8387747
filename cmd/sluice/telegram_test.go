package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/telegram/telegramtest"
)

const botToken = "123456:TEST-token"

// telegramConfig gives Starter API access so that one Starter account can
// be driven through both channels, and uses minute-long hours and
// five-minute days.
const telegramConfig = `
limits:
  windows: {hour: 60s, day: 300s}
plans:
  - {id: starter, name: Starter, hour: 5, day: 20, models: starter, api: true}
  - {id: vip, name: VIP, hour: 100, day: 1000, models: all, api: true}
# Off: an alert arrives in a chat at no fixed place among the replies
# (TestMainAlerts tests them).
alerts: {thresholds: []}
`

// startBotMain runs the real Main with the configuration file and the
// environment, on the gateway's settable clock (see startMain).
func startBotMain(t *testing.T, yaml string, env map[string]string) *gateway {
	t.Helper()
	data := t.TempDir()
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
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

func wantBotText(t *testing.T, m telegramtest.Sent, parts ...string) {
	t.Helper()
	if m.Method != "sendMessage" {
		t.Fatalf("got %s with caption %q, want a text message", m.Method, m.Text)
	}
	for _, p := range parts {
		if !strings.Contains(m.Text, p) {
			t.Fatalf("message %q does not contain %q", m.Text, p)
		}
	}
}

func wantBotPhoto(t *testing.T, m telegramtest.Sent, caption string) {
	t.Helper()
	if m.Method != "sendPhoto" || len(m.Photo) == 0 {
		t.Fatalf("got %s %q, want a photo", m.Method, m.Text)
	}
	if !strings.Contains(m.Text, caption) {
		t.Fatalf("caption %q does not contain %q", m.Text, caption)
	}
}

// TestMainTelegramSharedQuota: the bot and the API draw from one set of
// counters. A Telegram user's Starter account makes 2 images in the bot and
// 3 through the API, then the 6th is refused on both channels; after /link
// the same holds for the linked account.
func TestMainTelegramSharedQuota(t *testing.T) {
	api := telegramtest.NewServer(t, botToken)
	g := startBotMain(t, telegramConfig, map[string]string{
		"SLUICE_TELEGRAM_TOKEN":   botToken,
		"SLUICE_TELEGRAM_API_URL": api.URL,
	})
	ctx := context.Background()
	if g.m.Bot == nil {
		t.Fatal("no bot with telegram.token set")
	}
	// The console links to the bot by the name getMe gave.
	if got := g.m.Bot.Username(); got != "sluice_bot" {
		t.Errorf("bot username %q, want sluice_bot (getMe)", got)
	}
	const hourly = `"message":"Hourly limit reached: 5 requests/hour on Starter plan"`
	const botHourly = "Hourly limit reached: 5 images/hour on the Starter plan. You can go on in 1 min, at 17:48 UTC."

	// The first message creates a Starter account.
	const alice = 501
	api.Say(alice, "a red kite")
	wantBotPhoto(t, api.WaitSentTo(alice, 1)[0], "4 of 5 left this hour")
	acct, err := g.m.Accounts.FindAccountByTelegram(ctx, alice)
	if err != nil || acct.Plan != "starter" {
		t.Fatalf("account of the telegram user: %+v, %v", acct, err)
	}
	key := g.key(acct.ID)
	for i := 1; i <= 3; i++ {
		r := g.generate(key, 1)
		if r.status != 200 {
			t.Fatalf("API request %d: %d %s", i, r.status, r.body)
		}
		if got, want := r.header.Get("X-Ratelimit-Remaining-Hour"), fmt.Sprint(4-i); got != want {
			t.Fatalf("API request %d: remaining %s, want %s", i, got, want)
		}
	}
	api.Say(alice, "a blue kite")
	wantBotPhoto(t, api.WaitSentTo(alice, 2)[1], "0 of 5 left this hour")
	if r := g.generate(key, 1); r.status != 429 || !strings.Contains(string(r.body), hourly) {
		t.Fatalf("6th through the API: %d %s", r.status, r.body)
	}
	api.Say(alice, "a green kite")
	wantBotText(t, api.WaitSentTo(alice, 3)[2], botHourly)

	// A second user first makes a Starter account of its own, then links
	// to an existing VIP account whose limits are 5/hour and 20/day.
	const bob = 502
	api.Say(bob, "a first fox")
	wantBotPhoto(t, api.WaitSentTo(bob, 1)[0], "4 of 5 left this hour")
	own, err := g.m.Accounts.FindAccountByTelegram(ctx, bob)
	if err != nil {
		t.Fatal(err)
	}
	vip, vipKey := g.account("bob@example.com", "vip")
	if r := g.do("PUT", fmt.Sprintf("/admin/accounts/%d/limits", vip), g.admin, `{"hour":5,"day":20}`); r.status != 200 {
		t.Fatalf("set limits: %d %s", r.status, r.body)
	}
	code := sluice.RandomString(10) // as POST /v1/telegram/link makes it
	if err := g.m.Accounts.CreateToken(ctx, sluice.TokenTelegramLink, sluice.HashToken(code), vip, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	api.Say(bob, "/link "+code)
	wantBotText(t, api.WaitSentTo(bob, 2)[1], "Linked", "bob@example.com", "VIP plan: 5/hour, 20/day images")
	if a, err := g.m.Accounts.FindAccountByTelegram(ctx, bob); err != nil || a.ID != vip {
		t.Fatalf("after /link the telegram user is on %+v, %v; want account %d", a, err, vip)
	}
	if a, err := g.m.Accounts.FindAccountByID(ctx, own.ID); err != nil || a.TelegramID != 0 {
		t.Fatalf("the bot's own account after /link: %+v, %v; want it unbound", a, err)
	}
	api.Say(bob, "a second fox")
	wantBotPhoto(t, api.WaitSentTo(bob, 3)[2], "4 of 5 left this hour")
	for i := 1; i <= 3; i++ {
		if r := g.generate(vipKey, 1); r.status != 200 {
			t.Fatalf("API request %d: %d %s", i, r.status, r.body)
		}
	}
	api.Say(bob, "a third fox")
	wantBotPhoto(t, api.WaitSentTo(bob, 4)[3], "0 of 5 left this hour")
	api.Say(bob, "a fourth fox")
	wantBotText(t, api.WaitSentTo(bob, 5)[4], "Hourly limit reached: 5 images/hour on the VIP plan. You can go on in 1 min, at 17:48 UTC.")
	if r := g.generate(vipKey, 1); r.status != 429 || !strings.Contains(string(r.body), `"message":"Hourly limit reached: 5 requests/hour on VIP plan"`) {
		t.Fatalf("6th through the API after /link: %d %s", r.status, r.body)
	}

	// A minute later both channels go on.
	g.clock.Add(time.Minute)
	api.Say(alice, "a kite at last")
	wantBotPhoto(t, api.WaitSentTo(alice, 4)[3], "4 of 5 left this hour")
	if r := g.generate(key, 1); r.status != 200 {
		t.Fatalf("API after the window: %d %s", r.status, r.body)
	}
}

// TestMainTelegramWebhook: with telegram.webhook_url the gateway registers
// the webhook and serves it at the URL's path; a delivery without the right
// secret is 403 and does nothing.
func TestMainTelegramWebhook(t *testing.T) {
	api := telegramtest.NewServer(t, botToken)
	g := startBotMain(t, telegramConfig, map[string]string{
		"SLUICE_TELEGRAM_TOKEN":          botToken,
		"SLUICE_TELEGRAM_API_URL":        api.URL,
		"SLUICE_TELEGRAM_WEBHOOK_URL":    "https://bot.example.com/telegram/hook",
		"SLUICE_TELEGRAM_WEBHOOK_SECRET": "hook-secret_1",
	})
	if u, s := api.Webhook(); u != "https://bot.example.com/telegram/hook" || s != "hook-secret_1" {
		t.Fatalf("setWebhook(%q, %q)", u, s)
	}
	hook := g.url + "/telegram/hook"
	const user = 601
	if got := api.Deliver(hook, "wrong", api.Update(user, user, "a heron")); got != 403 {
		t.Fatalf("wrong secret: %d, want 403", got)
	}
	if got := api.Deliver(hook, "", api.Update(user, user, "a heron")); got != 403 {
		t.Fatalf("no secret: %d, want 403", got)
	}
	if _, err := g.m.Accounts.FindAccountByTelegram(context.Background(), user); sluice.ErrorCode(err) != sluice.ENOTFOUND {
		t.Fatalf("a refused delivery made an account: %v", err)
	}
	if got := api.Deliver(hook, "hook-secret_1", api.Update(user, user, "a heron")); got != 200 {
		t.Fatalf("right secret: %d, want 200", got)
	}
	wantBotPhoto(t, api.WaitSentTo(user, 1)[0], "4 of 5 left this hour")
	if r := g.do("GET", "/telegram/hook", "", ""); r.status != 405 {
		t.Fatalf("GET on the webhook: %d, want 405", r.status)
	}
	if n := len(api.Calls("getUpdates")); n != 0 {
		t.Fatalf("getUpdates called %d times in webhook mode", n)
	}
}

// TestMainTelegramOff: without telegram.token there is no bot.
func TestMainTelegramOff(t *testing.T) {
	g := startBotMain(t, telegramConfig, map[string]string{})
	if g.m.Bot != nil {
		t.Fatal("a bot without a token")
	}
}
