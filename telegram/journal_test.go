package telegram_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/storetest"
	"github.com/sluicehq/sluice/telegram"
)

const (
	webhookSecret = "s3cret_token"
	journalLease  = 600 * time.Millisecond
)

// webhookBots returns n bots on e's stores, fake Bot API and journal, in
// webhook mode, with a short journal lease, and their webhook URLs. They
// are not started.
func (e *env) webhookBots(n int) ([]*telegram.Bot, []string) {
	e.bot.WebhookURL, e.bot.WebhookSecret = "https://bot.example.com/telegram", webhookSecret
	bots := e.peers(n, nil)
	var urls []string
	for _, b := range bots {
		b.JournalLease = journalLease
		e.bot = b
		urls = append(urls, e.webhook())
	}
	e.bot = bots[0]
	return bots, urls
}

// deadJournal is the journal of an instance that stops, as a process
// killed would: once dead, its renewals and claims do nothing, so that its
// updates' leases run out; it dies as soon as it records a charge.
type deadJournal struct {
	sluice.BotUpdateStore
	dead atomic.Bool
}

func (d *deadJournal) Charge(ctx context.Context, bot, id int64, holder string, units int64, at, until time.Time) error {
	if d.dead.Load() {
		return nil
	}
	err := d.BotUpdateStore.Charge(ctx, bot, id, holder, units, at, until)
	d.dead.Store(units > 0)
	return err
}

func (d *deadJournal) Renew(ctx context.Context, bot int64, holder string, until time.Time) error {
	if d.dead.Load() {
		return nil
	}
	return d.BotUpdateStore.Renew(ctx, bot, holder, until)
}

func (d *deadJournal) Claim(ctx context.Context, bot int64, holder string, until, now time.Time, n int) ([]*sluice.BotUpdate, error) {
	if d.dead.Load() {
		return nil, nil
	}
	return d.BotUpdateStore.Claim(ctx, bot, holder, until, now, n)
}

func (d *deadJournal) Finish(ctx context.Context, bot, id int64, holder string) error {
	if d.dead.Load() {
		return nil
	}
	return d.BotUpdateStore.Finish(ctx, bot, id, holder)
}

// TestJournalTakeOver: an instance that received a prompt, charged it and
// stopped before answering: another instance claims the update once its
// lease runs out and answers it on the unit already charged.
func TestJournalTakeOver(t *testing.T) {
	e := newEnv(t, nil)
	bots, urls := e.webhookBots(2)
	dead := &deadJournal{BotUpdateStore: e.accounts.BotUpdates()}
	bots[0].Journal = dead
	stuck := make(chan struct{})
	defer close(stuck)
	var calls atomic.Int64
	e.gen.set(func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		if calls.Add(1) == 1 {
			// The first instance's generation: it never comes back.
			select {
			case <-stuck:
			case <-ctx.Done():
			}
			return nil, context.Canceled
		}
		return e.gen.demo.Generate(ctx, req)
	})
	startBot(t, bots[0])
	const user = 96
	update := e.api.Update(user, user, "a lighthouse")
	if got := e.api.Deliver(urls[0], webhookSecret, update); got != http.StatusOK {
		t.Fatalf("delivery: %d", got)
	}
	for deadline := time.Now().Add(10 * time.Second); !dead.dead.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first instance never recorded its charge")
		}
	}
	began := time.Now()
	reg := prometheus.NewRegistry()
	bots[1].Registry = reg
	startBot(t, bots[1])
	m := e.api.WaitSentTo(user, 1)[0]
	wantPhoto(t, m)
	t.Logf("answered by the second instance %v after the first stopped", time.Since(began).Round(time.Millisecond))
	a := e.accountOf(user)
	if h, d := e.used(a.ID); h != 1 || d != 1 {
		t.Fatalf("used %d this hour, %d today; want 1 and 1: the take-over charged again", h, d)
	}
	if c := calls.Load(); c != 2 {
		t.Fatalf("%d generations, want 2 (the stopped one and the take-over)", c)
	}
	// The caption carries the figures of a peek: one used.
	if !strings.Contains(m.Text, "4 of 5 left") {
		t.Fatalf("caption %q, want the figures after one unit", m.Text)
	}
	// The update delivered again, to either instance, is not handled
	// again.
	for _, u := range urls {
		e.api.Deliver(u, webhookSecret, update)
	}
	time.Sleep(300 * time.Millisecond)
	if got := len(e.api.SentTo(user)); got != 1 {
		t.Fatalf("%d messages, want 1", got)
	}
	for outcome, want := range map[string]float64{"taken_over": 1, "inherited": 1, "duplicate": 1, "journaled": 0, "given_up": 0} {
		if got := counterValue(t, reg, "sluice_telegram_updates_total", outcome); got != want {
			t.Errorf("sluice_telegram_updates_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}
}

// counterValue returns the value of the counter name{outcome} in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{outcome=%q}", name, outcome)
	return 0
}

// seed records a prompt of user in the journal as held by an instance that
// stopped, its lease over, with attempts and, if charged, one unit taken
// from the account now. It returns the account.
func (e *env) seed(user int64, text string, attempts int, charged bool) *sluice.Account {
	e.t.Helper()
	ctx := context.Background()
	a := &sluice.Account{Plan: sluice.DefaultPlan, TelegramID: user}
	if err := e.accounts.CreateAccount(ctx, a); err != nil {
		e.t.Fatal(err)
	}
	raw := e.api.Update(user, user, text)
	var u struct {
		ID int64 `json:"update_id"`
	}
	if err := json.Unmarshal(raw, &u); err != nil {
		e.t.Fatal(err)
	}
	now := time.Now()
	rec := &sluice.BotUpdate{Bot: 123456, ID: u.ID, Payload: raw, Holder: "stopped", LeaseUntil: now.Add(-time.Second),
		Attempts: attempts, ReceivedAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour)}
	j := e.accounts.BotUpdates()
	if added, err := j.Add(ctx, rec); err != nil || !added {
		e.t.Fatalf("seed: %v, %v", added, err)
	}
	holder := rec.Holder
	for i := range attempts - 1 {
		// Claimed by as many instances, that stopped too.
		holder = "stopped-" + strconv.Itoa(i)
		if got, err := j.Claim(ctx, rec.Bot, holder, now.Add(-time.Second), now, 100); err != nil || len(got) != 1 {
			e.t.Fatalf("seed claim: %v, %v", got, err)
		}
	}
	if charged {
		pol := e.policy(a)
		d, err := e.quota.Take(ctx, sluice.AccountQuotaKey(a.ID), &pol, 1)
		if err != nil || !d.Allowed {
			e.t.Fatalf("seed take: %+v, %v", d, err)
		}
		if err := j.Charge(ctx, rec.Bot, rec.ID, holder, 1, d.Time, d.Time.Add(time.Hour)); err != nil {
			e.t.Fatal(err)
		}
	}
	return a
}

// TestJournalInherited: a prompt whose instance charged it and stopped is
// answered by the next instance to start, on that charge.
func TestJournalInherited(t *testing.T) {
	e := newEnv(t, nil)
	const user = 97
	a := e.seed(user, "a heron", 1, true)
	e.start()
	wantPhoto(t, e.api.WaitSentTo(user, 1)[0])
	if h, _ := e.used(a.ID); h != 1 {
		t.Fatalf("used %d, want 1: one charge for one image", h)
	}
	if c := e.gen.calls.Load(); c != 1 {
		t.Fatalf("%d generations, want 1", c)
	}
}

// TestJournalInheritedRefunded: the take-over's generation fails, and the
// inherited unit is given back.
func TestJournalInheritedRefunded(t *testing.T) {
	e := newEnv(t, nil)
	const user = 98
	a := e.seed(user, "a heron", 1, true)
	e.gen.set(func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		return nil, errUpstream
	})
	e.start()
	wantText(t, e.api.WaitSentTo(user, 1)[0])
	if h, _ := e.used(a.ID); h != 0 {
		t.Fatalf("used %d, want 0: the inherited unit is refunded", h)
	}
}

// TestJournalGivesUp: an update that stopped every instance that held it
// maxUpdateAttempts times is given up: the user is told, and its charge
// refunded.
func TestJournalGivesUp(t *testing.T) {
	e := newEnv(t, nil)
	const user = 99
	a := e.seed(user, "a heron", 3, true)
	e.start()
	wantText(t, e.api.WaitSentTo(user, 1)[0], "gave up", "Nothing was charged")
	if h, _ := e.used(a.ID); h != 0 {
		t.Fatalf("used %d, want 0", h)
	}
	if c := e.gen.calls.Load(); c != 0 {
		t.Fatalf("%d generations of a given-up update", c)
	}
}

// TestJournalCloseReleases: a bot that stops cleanly hands its waiting
// messages and the prompt it was generating back to the journal, the
// latter with its charge recorded, and the next instance
// answers them at once, the interrupted one on its charge: the restart is
// invisible to the user.
func TestJournalCloseReleases(t *testing.T) {
	e := newEnv(t, nil)
	bots, urls := e.webhookBots(2)
	for _, b := range bots {
		b.JournalLease = time.Hour // only a release lets the second take them
		b.MaxGenerations = 1
	}
	started := make(chan struct{}, 1)
	var interrupted atomic.Bool
	e.gen.set(func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		if req.Prompt == "first" && !interrupted.Load() {
			started <- struct{}{}
			<-ctx.Done()
			interrupted.Store(true)
			return nil, ctx.Err()
		}
		return e.gen.demo.Generate(ctx, req)
	})
	stop := startBot(t, bots[0])
	const user = 100
	e.api.Deliver(urls[0], webhookSecret, e.api.Update(user, user, "first"))
	<-started
	e.api.Deliver(urls[0], webhookSecret, e.api.Update(user, user, "second"))
	time.Sleep(100 * time.Millisecond) // queued behind the first
	stop()
	if n := len(e.api.SentTo(user)); n != 0 {
		t.Fatalf("the stopping bot sent %d messages: %v", n, e.api.SentTo(user))
	}
	startBot(t, bots[1])
	got := e.api.WaitSentTo(user, 2)
	for i, want := range []string{"first", "second"} {
		wantPhoto(t, got[i])
		if !strings.HasPrefix(got[i].Text, want) {
			t.Fatalf("photo %d captioned %q, want the %s prompt", i+1, got[i].Text, want)
		}
	}
	if h, _ := e.used(e.accountOf(user).ID); h != 2 {
		t.Fatalf("used %d, want 2: one unit per prompt", h)
	}
}

// syncCheckJournal is a journal that notes, for every update given a
// charge, whether the quota's counters of the account had been synced
// first.
type syncCheckJournal struct {
	sluice.BotUpdateStore
	q     *storetest.SyncingQuota
	key   atomic.Pointer[string] // the account's quota key
	mu    sync.Mutex
	ids   map[int64]bool // the updates given a charge
	early int            // of which before the sync of key
}

func (j *syncCheckJournal) Charge(ctx context.Context, bot, id int64, holder string, units int64, at, until time.Time) error {
	if units > 0 {
		j.mu.Lock()
		if !j.ids[id] {
			j.ids[id] = true
			if k := j.key.Load(); k == nil || !j.q.Synced(*k) {
				j.early++
			}
		}
		j.mu.Unlock()
	}
	return j.BotUpdateStore.Charge(ctx, bot, id, holder, units, at, until)
}

// recorded returns the number of updates given a charge, and of those
// given it before the counters' sync.
func (j *syncCheckJournal) recorded() (n, early int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.ids), j.early
}

// TestJournalChargeSynced: a prompt's charge is recorded on its update only
// once the counters hold it (sluice.QuotaSyncer, the embedded store between
// flushes), so that no claimer inherits a unit that a crash took from them;
// a failed sync leaves it unrecorded (a claimer would charge again) and the
// prompt is answered all the same.
func TestJournalChargeSynced(t *testing.T) {
	e := newEnv(t, nil)
	q := &storetest.SyncingQuota{QuotaStore: e.quota.Store}
	e.quota.Store = q
	j := &syncCheckJournal{BotUpdateStore: e.bot.Journal, q: q, ids: map[int64]bool{}}
	e.bot.Journal = j
	const user = 102
	e.start()
	e.api.Say(user, "/start")
	e.api.WaitSentTo(user, 1)
	key := sluice.AccountQuotaKey(e.accountOf(user).ID)
	j.key.Store(&key)
	e.api.Say(user, "first")
	wantPhoto(t, e.api.WaitSentTo(user, 2)[1])
	if r, early := j.recorded(); r != 1 || early != 0 {
		t.Fatalf("charges recorded %d, %d of them before the counters' sync; want 1, 0", r, early)
	}
	q.Fail.Store(true)
	e.api.Say(user, "second")
	wantPhoto(t, e.api.WaitSentTo(user, 3)[2])
	if r, _ := j.recorded(); r != 1 {
		t.Fatalf("%d charges recorded; a charge whose sync failed was recorded", r)
	}
	if h, _ := e.used(e.accountOf(user).ID); h != 2 {
		t.Fatalf("used %d, want 2", h)
	}
}

// pausedJournal is the journal of an instance that does not renew its
// leases, as one paused (SIGSTOP, a frozen VM) would not.
type pausedJournal struct{ sluice.BotUpdateStore }

func (pausedJournal) Renew(context.Context, int64, string, time.Time) error { return nil }

// TestJournalPausedLeaves: an instance that lost the lease of its updates
// (it was paused, and another instance claimed them) neither charges nor
// answers a prompt that was queued, nor sends the photo of the one it was
// generating, whose charge the claimer inherits; had that charge not been
// recorded, it gives it back, the claimer charging its own.
func TestJournalPausedLeaves(t *testing.T) {
	for _, recorded := range []bool{true, false} {
		t.Run(fmt.Sprintf("recorded=%v", recorded), func(t *testing.T) {
			e := newEnv(t, nil)
			q := &storetest.SyncingQuota{QuotaStore: e.quota.Store}
			q.Fail.Store(!recorded) // a failed sync: the charge goes unrecorded
			e.quota.Store = q
			e.bot.Journal, e.bot.JournalLease = pausedJournal{e.accounts.BotUpdates()}, journalLease
			generating, release := make(chan struct{}), make(chan struct{})
			e.gen.set(func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
				if req.Prompt == "first" {
					close(generating)
					<-release
				}
				return e.gen.demo.Generate(ctx, req)
			})
			e.start()
			const user = 101
			e.api.Say(user, "first")
			e.api.Say(user, "second") // waits in the chat's queue behind the first
			<-generating
			// Another instance claims both once their leases have run out.
			time.Sleep(journalLease + 100*time.Millisecond)
			got, err := e.accounts.BotUpdates().Claim(context.Background(), 123456, "another", time.Now().Add(time.Hour), time.Now(), 10)
			if err != nil || len(got) != 2 {
				t.Fatalf("claimed %d, %v; want both updates", len(got), err)
			}
			if want := map[bool]int64{true: 1, false: 0}[recorded]; got[0].Charged != want || got[1].Charged != 0 {
				t.Fatalf("claimed with charges %d and %d, want %d and 0", got[0].Charged, got[1].Charged, want)
			}
			close(release)
			time.Sleep(500 * time.Millisecond)
			if sent := e.api.SentTo(user); len(sent) != 0 {
				t.Fatalf("%d answers, want none: both are the other instance's (%v)", len(sent), sent)
			}
			want := map[bool]int64{true: 1, false: 0}[recorded] // the charge the claimer inherits, or none
			if h, _ := e.used(e.accountOf(user).ID); h != want {
				t.Fatalf("used %d, want %d", h, want)
			}
		})
	}
}

// TestCloseWithoutJournal: without a journal, a bot that stops refunds the
// prompt it was generating and drops the waiting one, telling the chat
// both.
func TestCloseWithoutJournal(t *testing.T) {
	e := newEnv(t, func(b *telegram.Bot) { b.Journal = nil })
	started := make(chan struct{}, 1)
	e.gen.set(func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	bots, urls := e.webhookBots(1)
	stop := startBot(t, bots[0])
	const user = 102
	e.api.Deliver(urls[0], webhookSecret, e.api.Update(user, user, "first"))
	<-started
	e.api.Deliver(urls[0], webhookSecret, e.api.Update(user, user, "second")) // queued behind the first
	stop()
	got := e.api.WaitSentTo(user, 2)
	wantText(t, got[0], "I'm restarting, so I didn't do that and nothing was charged")
	wantText(t, got[1], "I didn't get to your waiting messages")
	if h, _ := e.used(e.accountOf(user).ID); h != 0 {
		t.Fatalf("used %d, want 0", h)
	}
}

// TestPollSkipsBadUpdate: an update that does not decode is skipped (and
// confirmed), and the updates after it in the same answer are handled.
func TestPollSkipsBadUpdate(t *testing.T) {
	e := newEnv(t, nil)
	const user = 103
	e.api.Push([]byte(`{"update_id":1,"message":{"message_id":"not a number","text":5}}`))
	e.api.Say(user, "/help")
	e.start()
	wantText(t, e.api.WaitSentTo(user, 1)[0], "/usage")
	time.Sleep(200 * time.Millisecond)
	if n := len(e.api.Sent()); n != 1 {
		t.Fatalf("%d messages sent, want 1", n)
	}
}
