package web

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sluicehq/sluice"
	shttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/internal/browsertest"
	"github.com/sluicehq/sluice/quota"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "write the README's console screenshots to docs/")

// TestConsoleScreenshots renders the account page and the operator's
// account page in Chromium with a canned usage history and audit log (the
// stores that keep them are other packages'), checks what a reader sees,
// and with -update-screenshots writes the README's screenshots to docs/.
func TestConsoleScreenshots(t *testing.T) {
	now := time.Now().UTC()
	hour := now.Truncate(time.Hour)
	f := &fakeHistory{}
	for i := range 24 {
		start := hour.Add(-time.Duration(23-i) * time.Hour)
		api := int64((i*7)%13 + 2*(i%5))
		tg := int64((i * 3) % 5)
		if i < 6 {
			api, tg = 0, int64(i%2)
		}
		f.hourly = append(f.hourly,
			sluice.UsageBucket{Start: start, Group: sluice.ChannelAPI, Images: api},
			sluice.UsageBucket{Start: start, Group: sluice.ChannelTelegram, Images: tg})
	}
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	for i := range 30 {
		start := today.AddDate(0, 0, i-29)
		api := int64(180 + (i*37)%260)
		if i < 9 {
			api = 0
		}
		f.daily = append(f.daily,
			sluice.UsageBucket{Start: start, Group: sluice.ChannelAPI, Images: api},
			sluice.UsageBucket{Start: start, Group: sluice.ChannelTelegram, Images: int64(12 + (i*11)%30)})
	}
	// Today's bar holds what the hourly chart shows since midnight.
	for i := range 2 {
		last := &f.daily[len(f.daily)-2+i]
		last.Images = 0
		for _, h := range f.hourly {
			if h.Group == last.Group && !h.Start.Before(today) {
				last.Images += h.Images
			}
		}
	}
	at := func(d time.Duration) time.Time { return now.Add(-d).Truncate(time.Minute) }
	// The account's story, as the charts tell it: created 30 days ago,
	// Telegram from the next day, the VIP plan (API access) and a first
	// key 21 days ago, the day before the API bars begin.
	const day = 24 * time.Hour
	f.events = []*sluice.AuditEvent{
		{ID: 6, At: at(2 * time.Hour), Actor: sluice.Actor{Type: sluice.ActorUser, ID: "1", IP: "203.0.113.7"}, Action: sluice.AuditKeyCreated, AccountID: 1, Details: map[string]any{"name": "batch job"}},
		{ID: 5, At: at(12 * day), Actor: sluice.Actor{Type: sluice.ActorUser, ID: "1", IP: "203.0.113.7"}, Action: sluice.AuditPasswordReset, AccountID: 1},
		{ID: 4, At: at(21*day - time.Hour), Actor: sluice.Actor{Type: sluice.ActorUser, ID: "1", IP: "203.0.113.7"}, Action: sluice.AuditKeyCreated, AccountID: 1, Details: map[string]any{"name": "laptop"}},
		{ID: 3, At: at(21 * day), Actor: sluice.Actor{Type: sluice.ActorAdmin, IP: "198.51.100.4"}, Action: sluice.AuditPlanChanged, AccountID: 1, Details: map[string]any{"from": "starter", "to": "vip"}},
		{ID: 2, At: at(29*day + time.Hour), Actor: sluice.Actor{Type: sluice.ActorTelegram, ID: "48151623"}, Action: sluice.AuditTelegramLinked, AccountID: 1},
		{ID: 1, At: at(30 * day), Actor: sluice.Actor{Type: sluice.ActorUser, IP: "203.0.113.7"}, Action: sluice.AuditAccountCreated, AccountID: 1},
	}
	alerts := &alertSpy{}
	e := newEnv(t, func(c *Server, _ *shttp.Server) {
		c.Usage, c.Audit = f, f
		c.Alerts = alerts
		c.TelegramBot = "sluice_demo_bot"
	})
	ctx := t.Context()
	e.dbBehind.Store(int64(time.Since(at(30 * day))))
	a := e.register("ann@example.com", "correct horse")
	e.dbBehind.Store(int64(time.Since(at(9 * day))))
	e.register("bob@example.org", "correct horse")
	e.dbBehind.Store(0)
	e.db.SetPlan(ctx, a.ID, "vip")
	e.db.LinkTelegram(ctx, a.ID, 48151623)
	// The keys are created when the activity below says they were.
	for _, k := range []struct {
		name string
		ago  time.Duration
	}{{"laptop", 21*day - time.Hour}, {"batch job", 2 * time.Hour}} {
		_, id, hash := sluice.NewAPIKey()
		e.dbBehind.Store(int64(time.Since(at(k.ago))))
		err := e.db.CreateAPIKey(ctx, &sluice.APIKey{ID: id, AccountID: a.ID, Name: k.name, Hash: hash})
		e.dbBehind.Store(0)
		if err != nil {
			t.Fatal(err)
		}
		e.db.TouchAPIKey(ctx, id, now.Add(-14*time.Minute))
	}
	// The counters hold what the chart shows: each hour's images charged
	// at its start (the current hour's now), so the rolling hour counts
	// the last bar and the rolling day all 24.
	pol := sluice.WindowConfig{}.AccountPolicy(100, 1000)
	store := e.console.Quota.(*quota.Limiter).Store
	var hourUsed, dayUsed int64
	for i := 0; i < len(f.hourly); i += 2 {
		n := f.hourly[i].Images + f.hourly[i+1].Images
		at := f.hourly[i].Start
		if i == len(f.hourly)-2 {
			at, hourUsed = now, n
		}
		dayUsed += n
		if _, err := store.Take(ctx, sluice.AccountQuotaKey(a.ID), &pol, n, at); err != nil {
			t.Fatal(err)
		}
	}
	f.topHour = []sluice.UsageTotal{{AccountID: a.ID, Images: hourUsed}, {AccountID: a.ID + 1, Images: 3}}
	f.top = []sluice.UsageTotal{{AccountID: a.ID, Images: dayUsed}, {AccountID: a.ID + 1, Images: 17}}

	b := browsertest.New(t, e.ts.URL)
	b.Open("/login")
	b.Fill("#email", "ann@example.com", "#password", "correct horse")
	b.Submit("main form button[type=submit]", "/account")
	b.WantText("main", fmt.Sprintf("%d of 100 used", hourUsed), fmt.Sprintf("%d of 1,000 used", dayUsed),
		fmt.Sprintf("Last 24 hours %d images", dayUsed), "VIP plan", "Last 30 days", "batch job",
		"API key “laptop” created", "by you from 203.0.113.7", "Turn mail alerts off")
	b.Eventually("the chart has bars", `document.querySelectorAll(".chart-svg rect.seg-api").length > 20`, 5*time.Second)
	shot(t, b, "account-history", "console-account.png")
	b.Do("narrow", chromedp.EmulateViewport(375, 800))
	b.Open("/account")
	b.Eventually("no horizontal scrolling at 375 px", `document.documentElement.scrollWidth <= 375`, 5*time.Second)
	b.Shot("account-history-375")
	b.ShotOf("keys-375", "#keys")
	b.Do("wide", chromedp.EmulateViewport(1280, 900))

	b.Submit("#telegram button[type=submit]", "/account/telegram")
	b.WantText("#telegram", "Open the bot in Telegram")
	b.Eventually("a t.me deep link", `document.querySelector('#telegram a[href^="https://t.me/sluice_demo_bot?start="]') !== null`, 5*time.Second)
	b.Shot("account-telegram")

	b.Open("/ops/login")
	b.Fill("#token", "admin-token-for-tests")
	b.Submit("main form button[type=submit]", "/ops/")
	b.WantText("main", "Top accounts", "ann@example.com", fmt.Sprintf("vip %d", hourUsed), fmt.Sprintf("vip %d", dayUsed))
	b.Shot("ops-home")
	b.Open(fmt.Sprintf("/ops/accounts/%d", a.ID))
	b.WantText("main", "Plan changed from starter to vip", "by the operator from 198.51.100.4", "Telegram account linked",
		"API key “laptop” created by the user from 203.0.113.7")
	shot(t, b, "ops-account-history", "console-ops-account.png")
	b.Open("/ops/audit")
	b.WantText("main", "Audit log", "ann@example.com")
	b.Shot("ops-audit-history")
}

func shot(t *testing.T, b *browsertest.Browser, name, doc string) {
	t.Helper()
	png := b.Shot(name)
	if *updateScreenshots {
		if err := os.WriteFile(filepath.Join("..", "docs", doc), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
