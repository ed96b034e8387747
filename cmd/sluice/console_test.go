package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sluicehq/sluice"
	shttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/internal/testenv"
)

// The browser tests save a PNG of every page they visit to the directory in
// SLUICE_SCREENSHOTS (default: a temporary directory). With
// -update-screenshots they also refresh the two screenshots of the README in
// docs/.
var updateScreenshots = flag.Bool("update-screenshots", false, "write the README's console screenshots to docs/")

// browser is a headless Chromium driven by chromedp, on one tab.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	dir  string // where screenshots go
}

// newBrowser starts Chromium for t, or skips t (fails it under
// SLUICE_TEST_REQUIRE_SERVICES=1) when there is none.
func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	path := testenv.Chromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	ctx, cancelC := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelC(); cancelB(); cancelA() })
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		testenv.Missing(t, "Chromium at %s does not start: %v", path, err)
	}
	dir := os.Getenv("SLUICE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, ctx: ctx, base: base, dir: dir}
}

func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v (at %s)", what, err, b.location())
	}
}

func (b *browser) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	return loc
}

// open navigates to path and waits for the page's main element.
func (b *browser) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitReady(chromedp.CSS("main")))
}

// fill sets the value of the inputs by CSS selector, in order.
func (b *browser) fill(fields ...string) {
	b.t.Helper()
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i+1] == "" {
			b.do("clear "+fields[i], chromedp.Clear(chromedp.CSS(fields[i])))
			continue
		}
		b.do("fill "+fields[i], chromedp.SetValue(chromedp.CSS(fields[i]), fields[i+1]))
	}
}

// submit clicks the button and waits until the browser is at a path that
// starts with want.
func (b *browser) submit(button, want string) {
	b.t.Helper()
	b.click(button)
	b.waitPath(want)
}

// click clicks the element and waits until a new document has replaced
// the one it was on.
func (b *browser) click(sel string) {
	b.t.Helper()
	if _, err := b.eval(`(window.__oldPage = true)`); err != nil {
		b.t.Fatalf("mark the page: %v", err)
	}
	b.do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
	b.eventually("a new page after clicking "+sel, `window.__oldPage === undefined && document.readyState === "complete"`, 20*time.Second)
}

func (b *browser) waitPath(want string) {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		loc := b.location()
		if u, err := url.Parse(loc); err == nil && strings.HasPrefix(u.RequestURI(), want) {
			ready, err := b.eval(`document.readyState === "complete" && document.querySelector("footer") !== null`)
			if err == nil && ready {
				return
			}
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("at %s, want %s; page:\n%s", loc, want, b.text("main"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eval evaluates a JavaScript expression, within a few seconds.
func (b *browser) eval(expr string) (bool, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
}

// text returns the visible text of the first element the selector finds.
func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// wantText fails unless the element's text contains every want.
func (b *browser) wantText(sel string, want ...string) {
	b.t.Helper()
	got := b.text(sel)
	for _, w := range want {
		if !strings.Contains(got, w) {
			b.t.Fatalf("%s does not say %q; it says:\n%s", sel, w, got)
		}
	}
}

// eventually polls the JavaScript expression until it is true.
func (b *browser) eventually(what, expr string, within time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, err := b.eval(expr)
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: not within %s (%v); page:\n%s", what, within, err, b.text("main"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// shot saves a PNG of the whole page as <name>.png, and returns it.
func (b *browser) shot(name string) []byte {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return png
}

func (b *browser) docShot(name, doc string) {
	b.t.Helper()
	png := b.shot(name)
	if *updateScreenshots {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", doc), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
}

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
	b := newBrowser(t, g.url)

	// / sends a stranger to the sign-in page.
	b.open("/")
	b.waitPath("/login")
	b.shot("login")

	// Sign up.
	b.click(`a[href="/signup"]`)
	b.waitPath("/signup")
	b.fill("#email", "ann@example.com", "#password", "correct horse", "#password2", "correct horses")
	b.submit("main form button[type=submit]", "/signup")
	b.wantText("#password2-err", "The two passwords differ")
	b.shot("signup-error")
	b.fill("#password", "correct horse", "#password2", "correct horse")
	b.submit("main form button[type=submit]", "/login?done=registered")
	b.wantText(".notice", "Your account is ready")

	// Sign in: Starter limits, no keys.
	b.fill("#email", "ann@example.com", "#password", "wrong password")
	b.submit("main form button[type=submit]", "/login")
	b.wantText(".error", "Wrong email or password.")
	b.fill("#password", "correct horse")
	b.submit("main form button[type=submit]", "/account")
	b.wantText("main", "Starter plan", "0 of 5 used", "0 of 20 used", "This plan has no API access")
	b.shot("account-starter")

	// The operator moves the account to VIP over the admin API.
	a, err := g.m.Accounts.FindAccountByEmail(context.Background(), "ann@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if r := g.do("PUT", fmt.Sprintf("/admin/accounts/%d/plan", a.ID), g.admin, `{"plan":"vip"}`); r.status != 200 {
		t.Fatalf("move to VIP: %d %s", r.status, r.body)
	}
	b.open("/account")
	b.wantText("main", "VIP plan", "0 of 100 used", "0 of 1,000 used")

	// A key made on the page, shown once, works over the API.
	b.fill("#keyname", "laptop")
	b.submit("#keys form button[type=submit]", "/account")
	b.wantText(".newkey", "Your new key “laptop”", "shown only once")
	b.eventually("the copy button shows with JavaScript", `!document.querySelector('[data-copy="newkey"]').hidden`, 5*time.Second)
	key := strings.TrimSpace(b.text("#newkey"))
	if _, _, ok := sluice.ParseAPIKey(key); !ok {
		t.Fatalf("the page shows %q, not a key", key)
	}
	b.shot("account-new-key")
	for range 2 {
		if r := g.generate(key, 2); r.status != 200 {
			t.Fatalf("generate with the page's key: %d %s", r.status, r.body)
		}
	}
	// The gauges refresh without a reload.
	b.eventually("the hour gauge shows 4 images", `document.querySelector('[data-window="hour"] [data-f="used"]').textContent === "4"`, 20*time.Second)
	b.eventually("the day gauge shows 4 images", `document.querySelector('[data-window="day"] [data-f="used"]').textContent === "4"`, 5*time.Second)
	if g.m.Console.Usage != nil {
		// With the usage history wired, the chart moves once the history
		// is flushed.
		deadline := time.Now().Add(30 * time.Second)
		for {
			b.open("/account")
			total, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(document.querySelector("[data-chart-total]")||{}).getAttribute ? document.querySelector("[data-chart-total]").getAttribute("data-chart-total") : ""`))
			if total == "4" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the chart shows %q images, want 4", total)
			}
			time.Sleep(time.Second)
		}
	} else {
		b.open("/account")
		b.wantText("main", "The usage history is not available on this server.")
	}
	b.wantText("main", "4 of 100 used", "96 left")

	// A hostile key name is text, never markup.
	b.fill("#keyname", `<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>`)
	b.submit("#keys form button[type=submit]", "/account")
	b.open("/account")
	b.wantText("table.keys", `<script>window.pwned=1</script>`)
	if pwned, _ := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`window.pwned === 1`)); pwned {
		t.Fatal("a key name ran as script")
	}
	// Revoke it again, through the confirmation page.
	b.click(`table.keys tr:nth-child(2) a.danger-outline`)
	b.waitPath("/account/keys/")
	b.submit("main form button.danger", "/account?done=key-revoked")
	b.docShot("account", "console-account.png")

	// Revoke the laptop key: the confirmation, then the key fails.
	b.click(`table.keys a.danger-outline`)
	b.waitPath("/account/keys/")
	b.wantText("main", "Revoke the key “laptop”?", "stops working at once")
	b.shot("revoke-confirm")
	b.submit("main form button.danger", "/account?done=key-revoked")
	b.wantText(".notice", "The key is revoked")
	if r := g.generate(key, 1); r.status != 401 {
		t.Fatalf("the revoked key: %d %s", r.status, r.body)
	}

	// 375 px wide: nothing sticks out sideways.
	b.do("narrow", chromedp.EmulateViewport(375, 800))
	b.open("/account")
	b.eventually("no horizontal scrolling at 375 px", `document.documentElement.scrollWidth <= 375`, 5*time.Second)
	b.shot("account-375")
	b.do("wide", chromedp.EmulateViewport(1280, 900))

	// Telegram link code.
	b.submit("#telegram button[type=submit]", "/account/telegram")
	b.wantText("#telegram", "/link ")

	// Forgot and reset the password through the outbox; the reset ends
	// the other sessions.
	other := g.session("ann@example.com", "correct horse")
	b.open("/account")
	b.submit(`header form button[type=submit]`, "/login?done=signed-out")
	b.click(`a[href="/forgot-password"]`)
	b.waitPath("/forgot-password")
	b.fill("#email", "ann@example.com")
	b.submit("main form button[type=submit]", "/forgot-password")
	b.wantText(".notice", "If an account has this email")
	b.shot("forgot-sent")
	_, text := outboxMail(t, filepath.Join(data, "outbox"), 1)
	tok := resetTokenRE.FindString(text)
	if tok == "" || !strings.Contains(text, "/reset-password?token="+tok) {
		t.Fatalf("the reset mail does not link to the console's reset page:\n%s", text)
	}
	b.open("/reset-password?token=" + tok)
	b.fill("#password", "battery staple", "#password2", "battery staple")
	b.shot("reset")
	b.submit("main form button[type=submit]", "/login?done=password-reset")
	if r := g.do("GET", "/v1/usage", other, ""); r.status != 401 {
		t.Fatalf("a session from before the reset: %d %s", r.status, r.body)
	}
	b.open("/reset-password?token=" + tok)
	b.fill("#password", "battery staple", "#password2", "battery staple")
	b.submit("main form button[type=submit]", "/reset-password")
	b.wantText(".error", "invalid, expired or already used")
	b.open("/login")
	b.fill("#email", "ann@example.com", "#password", "battery staple")
	b.submit("main form button[type=submit]", "/account")

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
	b.open("/ops/")
	b.waitPath("/ops/login")
	b.fill("#token", "not the token")
	b.submit("main form button[type=submit]", "/ops/login")
	b.wantText("#token-err", "This is not the admin token.")
	b.fill("#token", g.admin)
	b.submit("main form button[type=submit]", "/ops/")
	b.fill("#q", "example.com")
	b.submit("main form button[type=submit]", "/ops/?q=")
	b.wantText("table.results", "ann@example.com", "<script>window.pwned=1</script>@example.com")
	if pwned, _ := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`window.pwned === 1`)); pwned {
		t.Fatal("an email ran as script")
	}
	b.shot("ops-search")
	b.click(fmt.Sprintf(`a[href="/ops/accounts/%d"]`, a.ID))
	b.waitPath(fmt.Sprintf("/ops/accounts/%d", a.ID))
	b.wantText("main", "VIP", "4 of 100 used")
	b.do("choose Pro", chromedp.SetValue(chromedp.CSS("#plan"), "pro"))
	b.submit(fmt.Sprintf(`form[action="/ops/accounts/%d/plan"] button`, a.ID), fmt.Sprintf("/ops/accounts/%d?done=plan-changed", a.ID))
	b.wantText(".notice", "The plan is changed")
	b.wantText(".page-head", "Pro")
	if g.m.Console.Audit != nil {
		b.wantText("main", "Plan changed from vip to pro", "by the operator")
	}
	// An override, then a bad one with its error next to the field.
	b.fill("#hour", "7", "#day", "")
	b.submit(fmt.Sprintf(`form[action="/ops/accounts/%d/limits"] button`, a.ID), fmt.Sprintf("/ops/accounts/%d?done=limits-changed", a.ID))
	b.wantText(".page-head", "override: hour 7, day unlimited")
	b.fill("#hour", "lots")
	b.submit(fmt.Sprintf(`form[action="/ops/accounts/%d/limits"] button`, a.ID), fmt.Sprintf("/ops/accounts/%d/limits", a.ID))
	b.wantText("#hour-err", "Enter a whole number")
	b.open(fmt.Sprintf("/ops/accounts/%d", a.ID))
	b.docShot("ops-account", "console-ops-account.png")
	b.open("/ops/audit")
	b.shot("ops-audit")

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
