package telegram_test

import (
	"bytes"
	"context"
	"image/png"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/imagegen"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/quota"
	"github.com/sluicehq/sluice/sqlite"
	"github.com/sluicehq/sluice/telegram"
	"github.com/sluicehq/sluice/telegram/telegramtest"
)

const token = "123456:TEST-token"

// TestMain checks that a closed bot leaves no goroutine behind: no
// poller, chat worker or outbox.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable time for the quota limiter.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// generator is an image generator whose behaviour a test chooses: by
// default the demo generator. It counts the generations it was asked for.
type generator struct {
	calls atomic.Int64
	fn    atomic.Pointer[func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error)]
	demo  imagegen.Demo
}

func (g *generator) Generate(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
	g.calls.Add(1)
	if fn := g.fn.Load(); fn != nil && *fn != nil {
		return (*fn)(ctx, req)
	}
	return g.demo.Generate(ctx, req)
}

func (g *generator) set(fn func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error)) {
	g.fn.Store(&fn)
}

// env is a bot on a real SQLite account store (and journal of updates)
// and in-memory quota store,
// talking to a fake Bot API, with minute-long "hours" and five-minute
// "days" on a settable clock.
type env struct {
	t        *testing.T
	bot      *telegram.Bot
	api      *telegramtest.Server
	accounts *sqlite.DB
	quota    *quota.Limiter
	clock    *clock
	gen      *generator
}

// 2030-03-17 17:46:40 UTC
var start = time.Unix(1_900_000_000, 0)

func newEnv(t *testing.T, configure func(b *telegram.Bot)) *env {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "sluice.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store := inmem.New(inmem.Options{})
	t.Cleanup(func() { store.Close() })
	c := &clock{t: start}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	e := &env{
		t:        t,
		api:      telegramtest.NewServer(t, token),
		accounts: db,
		quota:    &quota.Limiter{Store: store, Logger: logger, Now: c.Now},
		clock:    c,
		gen:      &generator{},
	}
	e.bot = &telegram.Bot{
		Accounts:     db,
		Quota:        e.quota,
		Images:       e.gen,
		Plans:        sluice.DefaultPlans(),
		Models:       sluice.DefaultModels(),
		Windows:      sluice.WindowConfig{Hour: time.Minute, Day: 5 * time.Minute},
		Token:        token,
		APIURL:       e.api.URL,
		PollTimeout:  3 * time.Second,
		ChatInterval: time.Millisecond,
		SendInterval: time.Millisecond / 10,
		Logger:       logger,
		Now:          c.Now,
		Journal:      db.BotUpdates(),
	}
	if configure != nil {
		configure(e.bot)
	}
	return e
}

// start starts the bot and stops it with the test.
func (e *env) start() {
	e.t.Helper()
	if err := e.bot.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.bot.Close(ctx); err != nil {
			e.t.Error(err)
		}
	})
}

// say sends text from the user in their private chat and waits for the
// chat's n-th message, which it returns.
func (e *env) say(user int64, text string, n int) telegramtest.Sent {
	e.t.Helper()
	e.api.Say(user, text)
	got := e.api.WaitSentTo(user, n)
	return got[n-1]
}

// used returns the units the account has used in its hour and day windows.
func (e *env) used(id int64) (hour, day int64) {
	e.t.Helper()
	a, err := e.accounts.FindAccountByID(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	pol := e.policy(a)
	d, err := e.quota.Peek(context.Background(), sluice.AccountQuotaKey(id), &pol)
	if err != nil {
		e.t.Fatal(err)
	}
	return d.Windows[0].Used(), d.Windows[1].Used()
}

// policy is the account's policy, as the bot's.
func (e *env) policy(a *sluice.Account) sluice.Policy {
	var p *sluice.Plan
	for i, q := range e.bot.Plans {
		if q.ID == a.Plan {
			p = &e.bot.Plans[i]
		}
	}
	return e.bot.Windows.AccountPolicy(a.Limits(p))
}

func (e *env) accountOf(user int64) *sluice.Account {
	e.t.Helper()
	a, err := e.accounts.FindAccountByTelegram(context.Background(), user)
	if err != nil {
		e.t.Fatalf("account of telegram user %d: %v", user, err)
	}
	return a
}

// linkCode makes a link code for the account, as POST /v1/telegram/link
// does.
func (e *env) linkCode(id int64) string {
	e.t.Helper()
	code := sluice.RandomString(10)
	if err := e.accounts.CreateToken(context.Background(), sluice.TokenTelegramLink, sluice.HashToken(code), id, e.clock.Now().Add(10*time.Minute)); err != nil {
		e.t.Fatal(err)
	}
	return code
}

// webhook serves the bot's webhook handler as the gateway would.
func (e *env) webhook() string {
	srv := httptest.NewServer(e.bot.WebhookHandler())
	e.t.Cleanup(srv.Close)
	return srv.URL + "/telegram"
}

func wantPhoto(t *testing.T, m telegramtest.Sent) {
	t.Helper()
	if m.Method != "sendPhoto" {
		t.Fatalf("got %s %q, want a photo", m.Method, m.Text)
	}
	if _, err := png.Decode(bytes.NewReader(m.Photo)); err != nil {
		t.Fatalf("photo is not a PNG: %v", err)
	}
}

func wantText(t *testing.T, m telegramtest.Sent, parts ...string) {
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

var errUpstream = &sluice.Error{Code: sluice.EUPSTREAM, Message: "The upstream image generator failed."}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
