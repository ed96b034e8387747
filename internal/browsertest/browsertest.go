// Package browsertest drives a headless Chromium for the web console's
// browser tests, with chromedp. A test that needs it skips, saying why,
// when Chromium is not installed, and fails under
// SLUICE_TEST_REQUIRE_SERVICES=1 (see internal/testenv).
//
// Screenshots go to the directory in SLUICE_SCREENSHOTS (default: a
// temporary directory of the test).
package browsertest

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sluicehq/sluice/internal/testenv"
)

// Browser is a headless Chromium driven by chromedp, on one tab.
type Browser struct {
	t    *testing.T
	Ctx  context.Context
	base string
	dir  string // where screenshots go
}

// New starts Chromium for t, or skips t (fails it under
// SLUICE_TEST_REQUIRE_SERVICES=1) when there is none.
func New(t *testing.T, base string) *Browser {
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
	return &Browser{t: t, Ctx: ctx, base: base, dir: dir}
}

// Do runs the actions, failing the test with what on an error.
func (b *Browser) Do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.Ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v (at %s)", what, err, b.Location())
	}
}

// Location is the URL the browser is at.
func (b *Browser) Location() string {
	ctx, cancel := context.WithTimeout(b.Ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	return loc
}

// Open navigates to path and waits for the page's main element.
func (b *Browser) Open(path string) {
	b.t.Helper()
	b.Do("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitReady(chromedp.CSS("main")))
}

// Fill sets the value of the inputs by CSS selector, in order.
func (b *Browser) Fill(fields ...string) {
	b.t.Helper()
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i+1] == "" {
			b.Do("clear "+fields[i], chromedp.Clear(chromedp.CSS(fields[i])))
			continue
		}
		b.Do("fill "+fields[i], chromedp.SetValue(chromedp.CSS(fields[i]), fields[i+1]))
	}
}

// Submit clicks the button and waits until the browser is at a path that
// starts with want.
func (b *Browser) Submit(button, want string) {
	b.t.Helper()
	b.Click(button)
	b.WaitPath(want)
}

// Click clicks the element and waits until a new document has replaced
// the one it was on.
func (b *Browser) Click(sel string) {
	b.t.Helper()
	if _, err := b.Eval(`(window.__oldPage = true)`); err != nil {
		b.t.Fatalf("mark the page: %v", err)
	}
	b.Do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
	b.Eventually("a new page after clicking "+sel, `window.__oldPage === undefined && document.readyState === "complete"`, 20*time.Second)
}

// WaitPath waits until the browser is at a path that starts with want
// and the page has loaded.
func (b *Browser) WaitPath(want string) {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		loc := b.Location()
		if u, err := url.Parse(loc); err == nil && strings.HasPrefix(u.RequestURI(), want) {
			ready, err := b.Eval(`document.readyState === "complete" && document.querySelector("footer") !== null`)
			if err == nil && ready {
				return
			}
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("at %s, want %s; page:\n%s", loc, want, b.Text("main"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Eval evaluates a JavaScript expression, within a few seconds.
func (b *Browser) Eval(expr string) (bool, error) {
	ctx, cancel := context.WithTimeout(b.Ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
}

// Text returns the visible text of the first element the selector finds.
func (b *Browser) Text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// WantText fails unless the element's text contains every want.
func (b *Browser) WantText(sel string, want ...string) {
	b.t.Helper()
	got := b.Text(sel)
	for _, w := range want {
		if !strings.Contains(got, w) {
			b.t.Fatalf("%s does not say %q; it says:\n%s", sel, w, got)
		}
	}
}

// Eventually polls the JavaScript expression until it is true.
func (b *Browser) Eventually(what, expr string, within time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, err := b.Eval(expr)
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: not within %s (%v); page:\n%s", what, within, err, b.Text("main"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Shot saves a PNG of the whole page as <name>.png, and returns it.
func (b *Browser) Shot(name string) []byte {
	b.t.Helper()
	png, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return png
}

// ShotOf saves a PNG of the first element the CSS selector finds, as
// <name>.png.
func (b *Browser) ShotOf(name, sel string) {
	b.t.Helper()
	png, err := chromedp.Run(b.Ctx, chromedp.Screenshot(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("screenshot of %s: %v", sel, err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}
