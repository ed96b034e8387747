package telegram_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/telegram"
)

// TestPolling walks a new user through the bot by long polling: the first
// message creates a Starter account, prompts come back as photos with what
// is left, and the commands answer.
func TestPolling(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	const user = 4242

	m := e.say(user, "a lighthouse at dusk", 1)
	wantPhoto(t, m)
	if want := "a lighthouse at dusk\nsluice-sketch · 4 of 5 left this hour, 19 of 20 today"; m.Text != want {
		t.Errorf("caption %q, want %q", m.Text, want)
	}
	if m.ReplyTo == 0 {
		t.Errorf("the photo does not reply to the prompt")
	}
	a := e.accountOf(user)
	if a.Plan != "starter" || a.Email != "" {
		t.Errorf("new account: plan %q, email %q; want starter and none", a.Plan, a.Email)
	}
	if h, d := e.used(a.ID); h != 1 || d != 1 {
		t.Errorf("used %d/hour, %d/day; want 1, 1", h, d)
	}
	if got := e.api.Calls("deleteWebhook"); len(got) != 1 {
		t.Errorf("deleteWebhook called %d times before polling, want 1", len(got))
	}

	n := 1
	step := func(text string, parts ...string) {
		t.Helper()
		n++
		wantText(t, e.say(user, text, n), parts...)
	}
	step("/start", "Hi!", "Starter plan: 5/hour, 20/day images, starter-tier models only", "/link")
	step("/help", "/usage", "/models", "/model <id>", "/plan", "/link <code>")
	step("/usage", "Starter plan", "This hour: 1 of 5 images/hour used, 4 left; one more in 1 min, at 17:48 UTC.", "Today: 1 of 20 images/day used, 19 left; one more in 5 min, at 17:52 UTC.")
	step("/models", "- sluice-sketch (yours)", "- sluice-mosaic\n", "- sluice-studio (not on the Starter plan; upgrade to use it)", "- sluice-ultra (not on the Starter plan")
	step("/model sluice-studio", "the Starter plan can't use sluice-studio", "Upgrade", "still sluice-sketch")
	step("/model nope", `no model "nope"`)
	step("/model@sluice_bot sluice-mosaic", "now use sluice-mosaic")
	step("/plan", "You're on the Starter plan: 5/hour, 20/day images", "- Basic: 30/hour, 200/day images, all models", "- Elite: unlimited images, all models, API access", "upgrade")
	step("/frobnicate", "/help")

	n++
	m = e.say(user, "a second lighthouse", n)
	wantPhoto(t, m)
	if want := "sluice-mosaic · 3 of 5 left this hour, 18 of 20 today"; !strings.HasSuffix(m.Text, want) {
		t.Errorf("caption %q, want it to end in %q", m.Text, want)
	}
	if got := e.gen.calls.Load(); got != 2 {
		t.Errorf("%d generations, want 2", got)
	}
}

// TestOverQuota: the sixth prompt of a Starter hour is refused with the
// window, the limit, the plan, when to go on and how to get more, and
// nothing is generated; once the window has room again, prompts work.
func TestOverQuota(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	const user = 7
	for i := 1; i <= 5; i++ {
		wantPhoto(t, e.say(user, fmt.Sprintf("prompt %d", i), i))
		e.clock.Add(time.Second)
	}
	m := e.say(user, "prompt 6", 6)
	// The first unit leaves the 60 s "hour" at start+60s, 55 s from now.
	wantText(t, m, "Hourly limit reached: 5 images/hour on the Starter plan. You can go on in 55 s, at 17:47:40 UTC.", "upgrade your plan")
	if got := e.gen.calls.Load(); got != 5 {
		t.Errorf("%d generations, want 5", got)
	}
	if h, _ := e.used(e.accountOf(user).ID); h != 5 {
		t.Errorf("used %d this hour, want 5", h)
	}
	e.clock.Add(55 * time.Second)
	wantPhoto(t, e.say(user, "prompt 7", 7))
}

func TestDailyLimitMessage(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	const user = 8
	// 20 units a day, 5 an hour: four "hours" of five.
	n := 0
	for range 4 {
		for range 5 {
			n++
			wantPhoto(t, e.say(user, "p", n))
		}
		e.clock.Add(time.Minute)
	}
	n++
	wantText(t, e.say(user, "p", n), "Daily limit reached: 20 images/day on the Starter plan. You can go on in 1 min, at 17:52 UTC.")
}

// TestManyPromptsInOrder: twenty prompts sent at once are all answered, in
// order, within the quota.
func TestManyPromptsInOrder(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	const user = 20
	// The account exists on Basic (30 an hour) before the burst.
	wantText(t, e.say(user, "/start", 1), "Hi!")
	if err := e.accounts.SetPlan(context.Background(), e.accountOf(user).ID, "basic"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		e.api.Say(user, fmt.Sprintf("prompt %d", i))
	}
	got := e.api.WaitSentTo(user, 21)[1:]
	for i, m := range got {
		wantPhoto(t, m)
		if want := fmt.Sprintf("prompt %d\n", i+1); !strings.HasPrefix(m.Text, want) {
			t.Fatalf("message %d: caption %q, want prompt %d", i+1, m.Text, i+1)
		}
		if want := fmt.Sprintf("%d of 30 left this hour", 30-i-1); !strings.Contains(m.Text, want) {
			t.Fatalf("message %d: caption %q, want %q", i+1, m.Text, want)
		}
		if i > 0 && m.ReplyTo <= got[i-1].ReplyTo {
			t.Fatalf("message %d replies to %d, after %d", i+1, m.ReplyTo, got[i-1].ReplyTo)
		}
	}
}

// TestManyPromptsOverQuota: twenty prompts on Starter give five images, then
// fifteen refusals, in order; nothing is dropped.
func TestManyPromptsOverQuota(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	const user = 21
	for i := 1; i <= 20; i++ {
		e.api.Say(user, fmt.Sprintf("prompt %d", i))
	}
	got := e.api.WaitSentTo(user, 20)
	for i, m := range got {
		if i < 5 {
			wantPhoto(t, m)
		} else {
			wantText(t, m, "Hourly limit reached: 5 images/hour on the Starter plan.")
		}
	}
	if c := e.gen.calls.Load(); c != 5 {
		t.Errorf("%d generations, want 5", c)
	}
}

// TestUpstreamFailure: a failed generation is refunded and apologised for.
func TestUpstreamFailure(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	const user = 9
	e.gen.set(func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		return nil, errUpstream
	})
	wantText(t, e.say(user, "a storm", 1), "Sorry, the image generator failed, so nothing was charged.")
	if h, d := e.used(e.accountOf(user).ID); h != 0 || d != 0 {
		t.Errorf("used %d/hour, %d/day after a failure; want 0, 0", h, d)
	}
	// An answer without an image is a failure too.
	e.gen.set(func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		return &sluice.ImageResult{Body: io.NopCloser(strings.NewReader(`{"created":1,"data":[]}`))}, nil
	})
	wantText(t, e.say(user, "a storm", 2), "nothing was charged")
	if h, _ := e.used(e.accountOf(user).ID); h != 0 {
		t.Errorf("used %d/hour after an empty answer; want 0", h)
	}
	e.gen.set(nil)
	m := e.say(user, "a storm", 3)
	wantPhoto(t, m)
	if !strings.Contains(m.Text, "4 of 5 left this hour") {
		t.Errorf("caption %q, want 4 of 5 left", m.Text)
	}
}

// TestSlowGeneratorDoesNotStall: a user whose generation hangs does not
// hold up another user.
func TestSlowGeneratorDoesNotStall(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	release := make(chan struct{})
	e.gen.set(func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		if req.Prompt == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return e.gen.demo.Generate(ctx, req)
	})
	e.api.Say(1, "slow")
	for i := 1; i <= 3; i++ {
		wantPhoto(t, e.say(2, fmt.Sprintf("fast %d", i), i))
	}
	if got := e.api.SentTo(1); len(got) != 0 {
		t.Fatalf("the slow user got %d messages before the release", len(got))
	}
	close(release)
	wantPhoto(t, e.api.WaitSentTo(1, 1)[0])
}

// TestPendingBound: a user with too many messages waiting is told so, and
// the messages already queued are still answered.
func TestPendingBound(t *testing.T) {
	e := newEnv(t, func(b *telegram.Bot) { b.MaxPending = 2 })
	e.start()
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	e.gen.set(func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		started <- struct{}{}
		<-release
		return e.gen.demo.Generate(ctx, req)
	})
	const user = 5
	e.api.Say(user, "p1")
	<-started // p1 is in hand; p2, p3 wait; p4 is one too many
	for _, p := range []string{"p2", "p3", "p4"} {
		e.api.Say(user, p)
	}
	wantText(t, e.api.WaitSentTo(user, 1)[0], "You have 2 messages waiting already")
	close(release)
	got := e.api.WaitSentTo(user, 4)[1:]
	for i, m := range got {
		wantPhoto(t, m)
		if want := fmt.Sprintf("p%d\n", i+1); !strings.HasPrefix(m.Text, want) {
			t.Errorf("photo %d: caption %q, want %q", i+1, m.Text, want)
		}
	}
}

// TestLink: /link as a first message joins the existing account without
// creating one; after it the user draws from that account's counters and
// plan. A user with an account of the bot's own moves to the linked one,
// and the old account is left without a Telegram user.
// TestStartLink: "/start CODE", what a t.me/<bot>?start=CODE link sends,
// links like "/link CODE" and creates no account of its own.
func TestStartLink(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	owner := &sluice.Account{Email: "ada@example.com", Plan: "basic"}
	if err := e.accounts.CreateAccount(context.Background(), owner); err != nil {
		t.Fatal(err)
	}
	const user = 300
	wantText(t, e.say(user, "/start "+e.linkCode(owner.ID), 1), "Linked", "ada@example.com")
	if a := e.accountOf(user); a.ID != owner.ID {
		t.Fatalf("telegram user bound to account %d, want %d", a.ID, owner.ID)
	}
	wantText(t, e.say(user, "/start", 2), "Hi!") // a plain /start greets
}

func TestLink(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	ctx := context.Background()
	owner := &sluice.Account{Email: "ada@example.com", Plan: "basic"}
	if err := e.accounts.CreateAccount(ctx, owner); err != nil {
		t.Fatal(err)
	}

	const fresh = 100
	wantText(t, e.say(fresh, "/link", 1), "Send /link followed by the code")
	wantText(t, e.say(fresh, "/link nonsense", 2), "That link code is unknown or has expired.")
	if _, err := e.accounts.FindAccountByTelegram(ctx, fresh); sluice.ErrorCode(err) != sluice.ENOTFOUND {
		t.Fatalf("a failed /link created an account: %v", err)
	}
	code := e.linkCode(owner.ID)
	wantText(t, e.say(fresh, "/link "+code, 3), "Linked", "ada@example.com", "Basic plan: 30/hour, 200/day images")
	if a := e.accountOf(fresh); a.ID != owner.ID {
		t.Fatalf("telegram user bound to account %d, want %d", a.ID, owner.ID)
	}
	wantText(t, e.say(fresh, "/link "+code, 4), "unknown or has expired") // single use
	m := e.say(fresh, "a fox", 5)
	wantPhoto(t, m)
	if !strings.Contains(m.Text, "29 of 30 left this hour") {
		t.Errorf("caption %q, want the Basic account's counters", m.Text)
	}

	// A user whose first message made a Starter account.
	const old = 200
	wantPhoto(t, e.say(old, "a cat", 1))
	starter := e.accountOf(old)
	other := &sluice.Account{Email: "bob@example.com", Plan: "pro"}
	if err := e.accounts.CreateAccount(ctx, other); err != nil {
		t.Fatal(err)
	}
	expired := sluice.RandomString(10) // an expired code is refused
	if err := e.accounts.CreateToken(ctx, sluice.TokenTelegramLink, sluice.HashToken(expired), other.ID, e.clock.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	wantText(t, e.say(old, "/link "+expired, 2), "unknown or has expired")
	wantText(t, e.say(old, "/link "+e.linkCode(other.ID), 3), "Linked", "Pro plan")
	if a := e.accountOf(old); a.ID != other.ID {
		t.Fatalf("telegram user bound to account %d, want %d", a.ID, other.ID)
	}
	left, err := e.accounts.FindAccountByID(ctx, starter.ID)
	if err != nil || left.TelegramID != 0 {
		t.Fatalf("old account: %+v, %v; want it unbound", left, err)
	}
	m = e.say(old, "a dog", 4)
	wantPhoto(t, m)
	if !strings.Contains(m.Text, "59 of 60 left this hour") {
		t.Errorf("caption %q, want the Pro account's counters", m.Text)
	}
	if h, _ := e.used(starter.ID); h != 1 {
		t.Errorf("old account used %d, want its 1 unit kept", h)
	}
}

// TestFirstMessagesRace: two first messages of one user, from two chats at
// once, make one account.
func TestFirstMessagesRace(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	const user = 300
	for i := range 5 {
		e.api.Push(e.api.Update(user, -1000-int64(i), "/usage"))
	}
	e.api.Say(user, "/usage")
	for i := range 5 {
		wantText(t, e.api.WaitSentTo(-1000-int64(i), 1)[0], "Starter plan")
	}
	wantText(t, e.api.WaitSentTo(user, 1)[0], "Starter plan")
	e.accountOf(user) // exactly one bound account: the store's unique index
}

// TestWebhook: deliveries with the wrong secret are refused with 403 and
// change nothing; the right secret is answered 200, over quota included.
func TestWebhook(t *testing.T) {
	e := newEnv(t, func(b *telegram.Bot) {
		b.WebhookURL = "https://bot.example.com/telegram"
		b.WebhookSecret = "s3cret_token"
	})
	url := e.webhook()
	e.start()
	if u, s := e.api.Webhook(); u != "https://bot.example.com/telegram" || s != "s3cret_token" {
		t.Fatalf("setWebhook(%q, %q)", u, s)
	}
	if got := e.api.Calls("getUpdates"); len(got) != 0 {
		t.Fatalf("getUpdates called %d times in webhook mode", len(got))
	}
	const user = 77
	for _, secret := range []string{"", "wrong", "S3cret_token", "s3cret_token_"} {
		if got := e.api.Deliver(url, secret, e.api.Update(user, user, "hello")); got != http.StatusForbidden {
			t.Errorf("secret %q: %d, want 403", secret, got)
		}
	}
	if _, err := e.accounts.FindAccountByTelegram(context.Background(), user); sluice.ErrorCode(err) != sluice.ENOTFOUND {
		t.Fatalf("a refused delivery made an account: %v", err)
	}
	for i := 1; i <= 6; i++ {
		if got := e.api.Deliver(url, "s3cret_token", e.api.Update(user, user, fmt.Sprintf("prompt %d", i))); got != http.StatusOK {
			t.Fatalf("delivery %d: %d, want 200", i, got)
		}
	}
	got := e.api.WaitSentTo(user, 6)
	for _, m := range got[:5] {
		wantPhoto(t, m)
	}
	wantText(t, got[5], "Hourly limit reached: 5 images/hour on the Starter plan.")
	if c := e.gen.calls.Load(); c != 5 {
		t.Errorf("%d generations, want 5", c)
	}

	if got := e.api.Deliver(url, "s3cret_token", []byte("{not json")); got != http.StatusBadRequest {
		t.Errorf("bad JSON: %d, want 400", got)
	}
}

// TestFloodControl: a 429 from Telegram pauses the chat for retry_after,
// and then every message is delivered, in order.
func TestFloodControl(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	const user = 11
	wantText(t, e.say(user, "/help", 1), "/usage")
	e.api.TooManyRequests(1)
	for range 3 {
		e.api.Say(user, "/usage")
	}
	e.api.Say(user, "/plan")
	got := e.api.WaitSentTo(user, 5)[1:]
	for _, m := range got[:3] {
		wantText(t, m, "This hour")
	}
	wantText(t, got[3], "Plans:")
	var refused time.Time
	for _, c := range e.api.Calls("sendMessage") {
		if c.Status == http.StatusTooManyRequests {
			refused = c.At
		}
	}
	if refused.IsZero() {
		t.Fatal("no 429 was answered")
	}
	if wait := got[0].At.Sub(refused); wait < time.Second {
		t.Errorf("resent %v after a 429 with retry_after 1", wait)
	}
}

// TestCloseRefundsQueued: photos still queued when the bot stops are
// refunded.
func TestCloseRefundsQueued(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	const user = 12
	wantText(t, e.say(user, "/start", 1), "Hi!")
	id := e.accountOf(user).ID
	// Telegram says wait 30 s: the photo stays queued until Close.
	e.api.TooManyRequests(30)
	e.api.Say(user, "a photo that will not arrive")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if len(e.api.Calls("sendPhoto")) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no sendPhoto")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if h, _ := e.used(id); h != 1 {
		t.Fatalf("used %d before close, want 1", h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	e.bot.Close(ctx)
	if h, _ := e.used(id); h != 0 {
		t.Errorf("used %d after close, want the undelivered photo refunded", h)
	}
}

// A webhook delivery that Telegram retries (its answer was lost) is
// processed once: a second generation would charge the user twice.
func TestWebhookRedelivery(t *testing.T) {
	e := newEnv(t, func(b *telegram.Bot) {
		b.WebhookURL = "https://bot.example.com/telegram"
		b.WebhookSecret = "s3cret_token"
	})
	url := e.webhook()
	e.start()
	const user = 78
	first := e.api.Update(user, user, "a lighthouse")
	for range 3 {
		if got := e.api.Deliver(url, "s3cret_token", first); got != http.StatusOK {
			t.Fatalf("delivery: %d, want 200", got)
		}
	}
	if got := e.api.Deliver(url, "s3cret_token", e.api.Update(user, user, "a red fox")); got != http.StatusOK {
		t.Fatalf("delivery: %d, want 200", got)
	}
	// The chat's worker runs in order: once the second prompt is answered,
	// any duplicate of the first would have been too.
	for _, m := range e.api.WaitSentTo(user, 2) {
		wantPhoto(t, m)
	}
	if c := e.gen.calls.Load(); c != 2 {
		t.Errorf("%d generations, want 2", c)
	}
}
