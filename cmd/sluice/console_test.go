package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sluicehq/sluice"
	shttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/internal/browsertest"
)

// The browser tests save a PNG of every page they visit to the directory in
// SLUICE_SCREENSHOTS (default: a temporary directory); the README's
// screenshots come from web's TestConsoleScreenshots.

// TestConsoleBrowser drives the web console in a real headless Chromium
// against the real Main: sign up, sign in, Starter limits, a move to VIP,
// a key made on the page and used over the API, live gauges, revocation,
// a hostile key name and email shown as text, a password reset through the
// outbox, the operator's console, and the layout at 375 px.
func TestConsoleBrowser(t *testing.T) {
	data := t.TempDir()
	g := startMain(t, data, map[string]string{})
	// The browser's session cookie and the usage history live in real
	// time: let the limiter use the real clock too.
	g.m.Quota.Now, g.m.AuthQuota.Now = nil, nil
	b := browsertest.New(t, g.url)

	// / sends a stranger to the sign-in page.
	b.Open("/")
	b.WaitPath("/login")
	b.Shot("login")

	// Sign up.
	b.Click(`a[href="/signup"]`)
	b.WaitPath("/signup")
	b.Shot("signup")
	b.Fill("#email", "ann@example.com", "#password", "correct horse", "#password2", "correct horses")
	b.Submit("main form button[type=submit]", "/signup")
	b.WantText("#password2-err", "The two passwords differ")
	b.Shot("signup-error")
	b.Fill("#password", "correct horse", "#password2", "correct horse")
	b.Submit("main form button[type=submit]", "/login?done=registered")
	b.WantText(".notice", "Your account is ready")

	// Sign in: Starter limits, no keys.
	b.Fill("#email", "ann@example.com", "#password", "wrong password")
	b.Submit("main form button[type=submit]", "/login")
	b.WantText(".error", "Wrong email or password.")
	b.Fill("#password", "correct horse")
	b.Submit("main form button[type=submit]", "/account")
	b.WantText("main", "Starter plan", "0 of 5 used", "0 of 20 used", "This plan has no API access")
	b.Shot("account-starter")

	// The operator moves the account to VIP over the admin API.
	a, err := g.m.Accounts.FindAccountByEmail(context.Background(), "ann@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if r := g.do("PUT", fmt.Sprintf("/admin/accounts/%d/plan", a.ID), g.admin, `{"plan":"vip"}`); r.status != 200 {
		t.Fatalf("move to VIP: %d %s", r.status, r.body)
	}
	b.Open("/account")
	b.WantText("main", "VIP plan", "0 of 100 used", "0 of 1,000 used")

	// A key made on the page, shown once, works over the API.
	b.Fill("#keyname", "laptop")
	b.Submit("#keys form button[type=submit]", "/account")
	b.WantText(".newkey", "Your new key “laptop”", "shown only once")
	b.Eventually("the copy button shows with JavaScript", `!document.querySelector('[data-copy="newkey"]').hidden`, 5*time.Second)
	key := strings.TrimSpace(b.Text("#newkey"))
	if _, _, ok := sluice.ParseAPIKey(key); !ok {
		t.Fatalf("the page shows %q, not a key", key)
	}
	b.Shot("account-new-key")
	for range 2 {
		if r := g.generate(key, 2); r.status != 200 {
			t.Fatalf("generate with the page's key: %d %s", r.status, r.body)
		}
	}
	// The gauges refresh without a reload.
	b.Eventually("the hour gauge shows 4 images", `document.querySelector('[data-window="hour"] [data-f="used"]').textContent === "4"`, 20*time.Second)
	b.Eventually("the day gauge shows 4 images", `document.querySelector('[data-window="day"] [data-f="used"]').textContent === "4"`, 5*time.Second)
	if g.m.Console.Usage != nil {
		// With the usage history wired, the chart moves once the history
		// is flushed.
		deadline := time.Now().Add(30 * time.Second)
		for {
			b.Open("/account")
			total, _ := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`(document.querySelector("[data-chart-total]")||{}).getAttribute ? document.querySelector("[data-chart-total]").getAttribute("data-chart-total") : ""`))
			if total == "4" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the chart shows %q images, want 4", total)
			}
			time.Sleep(time.Second)
		}
	} else {
		b.Open("/account")
		b.WantText("main", "The usage history is not available on this server.")
	}
	b.WantText("main", "4 of 100 used", "96 left")

	// A hostile key name is text, never markup.
	b.Fill("#keyname", `<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>`)
	b.Submit("#keys form button[type=submit]", "/account")
	b.Open("/account")
	b.WantText("table.keys", `<script>window.pwned=1</script>`)
	if pwned, _ := chromedp.Run(b.Ctx, chromedp.Evaluate[bool](`window.pwned === 1`)); pwned {
		t.Fatal("a key name ran as script")
	}
	// Revoke it again, through the confirmation page.
	b.Click(`table.keys tr:nth-child(2) a.danger-outline`)
	b.WaitPath("/account/keys/")
	b.Submit("main form button.danger", "/account?done=key-revoked")
	b.Shot("account")

	// Revoke the laptop key: the confirmation, then the key fails.
	b.Click(`table.keys a.danger-outline`)
	b.WaitPath("/account/keys/")
	b.WantText("main", "Revoke the key “laptop”?", "stops working at once")
	b.Shot("revoke-confirm")
	b.Submit("main form button.danger", "/account?done=key-revoked")
	b.WantText(".notice", "The key is revoked")
	if r := g.generate(key, 1); r.status != 401 {
		t.Fatalf("the revoked key: %d %s", r.status, r.body)
	}

	// 375 px wide: nothing sticks out sideways.
	b.Do("narrow", chromedp.EmulateViewport(375, 800))
	b.Open("/account")
	b.Eventually("no horizontal scrolling at 375 px", `document.documentElement.scrollWidth <= 375`, 5*time.Second)
	b.Shot("account-375")
	b.Do("wide", chromedp.EmulateViewport(1280, 900))

	// Telegram link code.
	b.Submit("#telegram button[type=submit]", "/account/telegram")
	b.WantText("#telegram", "/link ")

	// Forgot and reset the password through the outbox; the reset ends
	// the other sessions.
	other := g.session("ann@example.com", "correct horse")
	b.Open("/account")
	b.Submit(`header form button[type=submit]`, "/login?done=signed-out")
	if r := g.do("GET", "/v1/usage", other, ""); r.status != 200 {
		t.Fatalf("signing out of the browser ended another session: %d %s", r.status, r.body)
	}
	b.Click(`a[href="/forgot-password"]`)
	b.WaitPath("/forgot-password")
	b.Fill("#email", "ann@example.com")
	b.Submit("main form button[type=submit]", "/forgot-password")
	b.WantText(".notice", "If an account has this email")
	b.Shot("forgot-sent")
	_, text := outboxMail(t, filepath.Join(data, "outbox"), 1)
	tok := resetTokenRE.FindString(text)
	if tok == "" || !strings.Contains(text, "/reset-password?token="+tok) {
		t.Fatalf("the reset mail does not link to the console's reset page:\n%s", text)
	}
	b.Open("/reset-password?token=" + tok)
	b.Fill("#password", "battery staple", "#password2", "battery staple")
	b.Shot("reset")
	b.Submit("main form button[type=submit]", "/login?done=password-reset")
	if r := g.do("GET", "/v1/usage", other, ""); r.status != 401 {
		t.Fatalf("a session from before the reset: %d %s", r.status, r.body)
	}
	b.Open("/reset-password?token=" + tok)
	b.Fill("#password", "battery staple", "#password2", "battery staple")
	b.Submit("main form button[type=submit]", "/reset-password")
	b.WantText(".error", "invalid, expired or already used")
	b.Open("/login")
	b.Fill("#email", "ann@example.com", "#password", "battery staple")
	b.Submit("main form button[type=submit]", "/account")

	// A hostile email (only the store can hold one: the API refuses it)
	// is text on the operator's pages.
	hostile := &sluice.Account{Email: `<script>window.pwned=1</script>@example.com`}
	if h, err := shttp.HashPassword("whatever1"); err == nil {
		hostile.PasswordHash = h
	}
	if err := g.m.Accounts.CreateAccount(context.Background(), hostile); err != nil {
		t.Fatal(err)
	}

	// The operator signs in, finds the account, changes its plan.
	b.Open("/ops/")
	b.WaitPath("/ops/login")
	b.Shot("ops-login")
	b.Fill("#token", "not the token")
	b.Submit("main form button[type=submit]", "/ops/login")
	b.WantText("#token-err", "This is not the admin token.")
	b.Fill("#token", g.admin)
	b.Submit("main form button[type=submit]", "/ops/")
	b.Fill("#q", "example.com")
	b.Submit("main form button[type=submit]", "/ops/?q=")
	b.WantText("table.results", "ann@example.com", "<script>window.pwned=1</script>@example.com")
	if pwned, _ := chromedp.Run(b.Ctx, chromedp.Evaluate[bool](`window.pwned === 1`)); pwned {
		t.Fatal("an email ran as script")
	}
	b.Shot("ops-search")
	b.Click(fmt.Sprintf(`a[href="/ops/accounts/%d"]`, a.ID))
	b.WaitPath(fmt.Sprintf("/ops/accounts/%d", a.ID))
	b.WantText("main", "VIP", "4 of 100 used")
	b.Do("choose Pro", chromedp.SetValue(chromedp.CSS("#plan"), "pro"))
	b.Submit(fmt.Sprintf(`form[action="/ops/accounts/%d/plan"] button`, a.ID), fmt.Sprintf("/ops/accounts/%d?done=plan-changed", a.ID))
	b.WantText(".notice", "The plan is changed")
	b.WantText(".page-head", "Pro")
	if g.m.Console.Audit != nil {
		b.WantText("main", "Plan changed from vip to pro", "by the operator")
	}
	// An override, then a bad one with its error next to the field.
	b.Fill("#hour", "7", "#day", "")
	b.Submit(fmt.Sprintf(`form[action="/ops/accounts/%d/limits"] button`, a.ID), fmt.Sprintf("/ops/accounts/%d?done=limits-changed", a.ID))
	b.WantText(".page-head", "override: hour 7, day unlimited")
	b.Fill("#hour", "lots")
	b.Submit(fmt.Sprintf(`form[action="/ops/accounts/%d/limits"] button`, a.ID), fmt.Sprintf("/ops/accounts/%d/limits", a.ID))
	b.WantText("#hour-err", "Enter a whole number")
	b.Open(fmt.Sprintf("/ops/accounts/%d", a.ID))
	b.Shot("ops-account")
	b.Open("/ops/audit")
	b.Shot("ops-audit")

	// A POST without its CSRF token is refused.
	for _, accept := range []string{"application/json", "text/html"} {
		req, _ := http.NewRequest("POST", g.url+"/logout", strings.NewReader(""))
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Fatalf("POST /logout without a CSRF token (%s): %d", accept, resp.StatusCode)
		}
	}
}
