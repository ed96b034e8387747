package telegram_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/telegram"
)

// memLeases is a sluice.LeaseService in memory, as the instances of one
// test share it. Its acquires can be refused, and its renewals made to
// fail, to play a lease lost.
type memLeases struct {
	mu      sync.Mutex
	fence   int64
	holder  int64
	expires time.Time
	refuse  bool // acquire fails: the store is down
}

func (l *memLeases) AcquireLease(_ context.Context, _ string, ttl time.Duration) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refuse || l.holder != 0 && time.Now().Before(l.expires) {
		return 0, nil
	}
	l.fence++
	l.holder, l.expires = l.fence, time.Now().Add(ttl)
	return l.fence, nil
}

func (l *memLeases) RenewLease(_ context.Context, _ string, fence int64, ttl time.Duration) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holder != fence || !time.Now().Before(l.expires) {
		return false, nil
	}
	l.expires = time.Now().Add(ttl)
	return true, nil
}

func (l *memLeases) ReleaseLease(_ context.Context, _ string, fence int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holder == fence {
		l.holder = 0
	}
	return nil
}

// steal gives the lease to nobody's fence, as if it had expired and been
// taken by a process the test does not run, and refuses acquires.
func (l *memLeases) steal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fence++
	l.holder, l.expires, l.refuse = l.fence, time.Now().Add(time.Hour), true
}

// peers returns n bots on e's stores, journal and fake Bot API, sharing
// leases, as n gateway instances on a shared store. e.bot is the first.
func (e *env) peers(n int, leases sluice.LeaseService) []*telegram.Bot {
	bots := []*telegram.Bot{e.bot}
	for range n - 1 {
		bots = append(bots, &telegram.Bot{})
	}
	for _, b := range bots {
		*b = telegram.Bot{
			Accounts: e.bot.Accounts, Quota: e.bot.Quota, Images: e.bot.Images,
			Plans: e.bot.Plans, Models: e.bot.Models, Windows: e.bot.Windows,
			Token: e.bot.Token, APIURL: e.bot.APIURL,
			WebhookURL: e.bot.WebhookURL, WebhookSecret: e.bot.WebhookSecret,
			PollTimeout: e.bot.PollTimeout, ChatInterval: e.bot.ChatInterval, SendInterval: e.bot.SendInterval,
			Logger: e.bot.Logger, Now: e.bot.Now,
			Journal: e.bot.Journal, JournalLease: e.bot.JournalLease,
			Leases: leases, LeaseTTL: 3 * time.Second, LeaseRetry: 100 * time.Millisecond,
		}
	}
	return bots
}

func startBot(t *testing.T, b *telegram.Bot) (stop func()) {
	t.Helper()
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := b.Close(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestOnePoller: three instances on one token: one polls at a time (the
// fake Bot API answers 409 to a second poller), each prompt is answered
// once, and when the poller stops another takes over.
func TestOnePoller(t *testing.T) {
	e := newEnv(t, nil)
	bots := e.peers(3, &memLeases{})
	stops := make([]func(), len(bots))
	for i, b := range bots {
		stops[i] = startBot(t, b)
	}
	const user = 91
	sent := 0
	say := func(text string) {
		t.Helper()
		sent++
		wantPhoto(t, e.say(user, text, sent))
	}
	for _, p := range []string{"a kite", "a fox", "a heron"} {
		say(p)
	}
	// Stop the leaders one after the other; the last one standing polls.
	for range 2 {
		leader := -1
		for i, b := range bots {
			if b.Leading() {
				leader = i
			}
		}
		if leader < 0 || stops[leader] == nil {
			t.Fatalf("no leader among the running bots")
		}
		stops[leader]()
		stops[leader] = nil
		say("after a leader stopped")
	}
	time.Sleep(500 * time.Millisecond) // a few more polls
	if c := e.api.Conflicts(); c != 0 {
		t.Fatalf("%d getUpdates answered 409: two instances polled at once", c)
	}
	if got := len(e.api.SentTo(user)); got != sent {
		t.Fatalf("%d messages for %d prompts", got, sent)
	}
	if c := e.gen.calls.Load(); c != int64(sent) {
		t.Fatalf("%d generations for %d prompts", c, sent)
	}
}

// TestLostLeaseStopsPolling: a poller whose lease was taken (it was paused
// past its TTL and another instance acquired it) polls no more once it
// fails to renew.
func TestLostLeaseStopsPolling(t *testing.T) {
	e := newEnv(t, nil)
	leases := &memLeases{}
	b := e.peers(1, leases)[0]
	startBot(t, b)
	wantPhoto(t, e.say(92, "a kite", 1))
	leases.steal()
	deadline := time.Now().Add(10 * time.Second)
	for b.Leading() {
		if time.Now().After(deadline) {
			t.Fatal("the bot still polls 10s after its lease was taken")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // a poll in flight ends at the lease's end
	n := len(e.api.Calls("getUpdates"))
	time.Sleep(4 * time.Second) // over a TTL
	if got := len(e.api.Calls("getUpdates")); got != n {
		t.Fatalf("%d getUpdates after the lease was lost", got-n)
	}
}

// TestWebhookSpread: deliveries spread over three instances, one of them
// delivered to every instance, each handled once.
func TestWebhookSpread(t *testing.T) {
	e := newEnv(t, func(b *telegram.Bot) {
		b.WebhookURL = "https://bot.example.com/telegram"
		b.WebhookSecret = "s3cret_token"
	})
	bots := e.peers(3, nil)
	var urls []string
	for _, b := range bots {
		e.bot = b
		urls = append(urls, e.webhook())
		startBot(t, b)
	}
	const user = 93
	dup := e.api.Update(user, user, "a lighthouse")
	for _, u := range urls {
		if got := e.api.Deliver(u, "s3cret_token", dup); got != http.StatusOK {
			t.Fatalf("delivery: %d", got)
		}
	}
	for i, p := range []string{"a fox", "a kite", "a heron"} {
		if got := e.api.Deliver(urls[i], "s3cret_token", e.api.Update(user, user, p)); got != http.StatusOK {
			t.Fatalf("delivery: %d", got)
		}
		e.api.WaitSentTo(user, i+2) // in order, as Telegram waits for the answer
	}
	time.Sleep(300 * time.Millisecond)
	if got := len(e.api.SentTo(user)); got != 4 {
		t.Fatalf("%d answers for 4 distinct updates", got)
	}
	if c := e.gen.calls.Load(); c != 4 {
		t.Fatalf("%d generations, want 4", c)
	}
}

// TestModelSurvivesRestart: the /model choice is kept with the account, so
// a new bot (a restart, or another instance) uses it.
func TestModelSurvivesRestart(t *testing.T) {
	e := newEnv(t, nil)
	bots := e.peers(2, nil)
	stop := startBot(t, bots[0])
	const user = 94
	wantText(t, e.say(user, "/model sluice-mosaic", 1), "now use sluice-mosaic")
	stop()
	if got := e.accountOf(user).TelegramModel; got != "sluice-mosaic" {
		t.Fatalf("account's model %q", got)
	}
	startBot(t, bots[1])
	m := e.say(user, "a lighthouse", 2)
	wantPhoto(t, m)
	if !strings.Contains(m.Text, "sluice-mosaic") {
		t.Fatalf("caption %q after a restart, want sluice-mosaic", m.Text)
	}
	wantText(t, e.say(user, "/model", 3), "Your model is sluice-mosaic")
}

// TestOutboxFullRefunds: when the chat's share of the outbox is full, a
// prompt is not charged (and not generated), and an image made meanwhile
// that cannot be queued is refunded; the user is told, once.
func TestOutboxFullRefunds(t *testing.T) {
	e := newEnv(t, func(b *telegram.Bot) {
		b.Outbox = telegram.OutboxLimits{ChatMessages: 1}
		b.ChatInterval = 4 * time.Second // the alert below holds the chat's room
	})
	e.start()
	const user = 95
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	e.gen.set(func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		started <- struct{}{}
		<-release
		return e.gen.demo.Generate(ctx, req)
	})
	wantText(t, e.say(user, "/help", 1), "/usage") // the chat's next message waits a second
	// The fake has the reply before the outbox has settled it: wait for
	// its place to be free, or the prompt is refused as the outbox is full.
	for deadline := time.Now().Add(10 * time.Second); e.bot.Pending() > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the reply to /help never settled")
		}
	}
	e.api.Say(user, "a kite")
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatalf("the prompt was not generated; sent: %v", e.api.SentTo(user))
	}
	if err := e.bot.SendText(user, "an alert"); err != nil { // takes the chat's one place
		t.Fatal(err)
	}
	close(release)
	got := e.api.WaitSentTo(user, 3)[1:]
	wantText(t, got[0], "an alert")
	wantText(t, got[1], "couldn't send it", "Nothing was charged")
	if h, _ := e.used(e.accountOf(user).ID); h != 0 {
		t.Fatalf("%d used after an image that could not be sent, want 0 (refunded)", h)
	}
}
