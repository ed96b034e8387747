package telegram

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-telegram/bot/models"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
)

// The journal of updates (CONTRACT.md §7 "Many instances"; Bot.Journal).
//
// An instance records every update it receives in the journal before
// Telegram learns it arrived: before the webhook delivery is answered, and
// before the next getUpdates confirms it. The record is held by the
// instance (Bot.holder) under a lease that one goroutine renews for all of
// its updates every JournalLease/3, and it is finished once handled: when
// the reply is queued, or for a prompt, once its photo was sent or refunded.
// An update delivered again (a webhook retried, a poller that restarts
// before confirming) finds its record and is dropped.
//
// An instance that stops stops renewing. Every instance claims, every
// JournalLease/3, the updates whose lease ended, and handles them as if
// received: an update received by an instance that stopped before answering
// is answered by another within about 1⅓ JournalLease, or by the same one
// when it starts again. Like a keyed API request (CONTRACT.md §9), a prompt
// records on its update the unit it took from the quota, and the instance
// that claims it inherits that charge: it generates without charging again.
// A refund clears the charge first, so that no claim inherits a unit given
// back.
//
// Stopping cleanly (Close) releases the updates still waiting in the chat
// queues and the prompts it interrupts, their charges recorded, so that
// another instance (or the next start) answers them at once and on those
// charges: a restart is invisible to the users.
//
// An instance paused (not stopped) past its lease finds, when it wakes,
// that others claimed its updates: it checks that it still holds an update
// before charging for it and again before sending a prompt's photo, and
// leaves those it lost to the claimer (giving back a charge it could not
// record, which the claimer does not see). An update that stopped every
// instance that held it maxUpdateAttempts times is given up.
//
// Windows left, as with keyed requests: an instance that stops between a
// take and the record of its charge makes the claimer charge again; one
// that stops between sending a reply and finishing its update has it
// answered again by the claimer (at least once, not exactly once), and so
// does one paused between its last check and the photo's sending.
const (
	DefaultJournalLease = 10 * time.Second
	journalCallTimeout  = 5 * time.Second
	journalClaimBatch   = 32
	maxUpdateAttempts   = 3
	givenUpText         = "Sorry, something went wrong with that message and I gave up on it. Nothing was charged; please send it again."
)

// journalOutcomes are the values of sluice_telegram_updates_total's label.
var journalOutcomes = []string{"journaled", "duplicate", "unjournaled", "taken_over", "inherited", "given_up"}

// newUpdatesMetric returns sluice_telegram_updates_total, registered with
// reg if not nil, every outcome's series at zero.
func newUpdatesMetric(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_telegram_updates_total",
		Help: "Telegram updates for the bot, by what the journal of updates did with them: journaled (received and recorded), duplicate (delivered again; dropped), unjournaled (the record failed; handled without it), taken_over (claimed from a gateway that stopped), inherited (of those, a prompt served on the unit that gateway charged), given_up (held by too many gateways that stopped).",
	}, []string{"outcome"})
	for _, o := range journalOutcomes {
		c.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(c)
	}
	return c
}

// count adds one to the journal's outcome o.
func (b *Bot) count(o string) { b.updates.WithLabelValues(o).Inc() }

// job is an update on its way through the bot: queued for its chat's
// worker, handled, and then finished in the journal.
type job struct {
	u         *models.Update
	journaled bool // recorded in b.Journal and held by this instance
	// inherited is the charge taken over with the update (its units; its
	// instant is chargedAt), to be served on instead of a new charge; 0
	// once a prompt serves on it or it is refunded. Only the goroutine
	// that has the job (its chat's worker, once queued) touches it.
	inherited int64
	deferred  bool // finished once its photo is sent, not by its worker

	mu        sync.Mutex
	charged   int64     // the units of this job's charge that the journal holds
	chargedAt time.Time // the instant of that charge
	finished  bool
}

func (b *Bot) journalLease() time.Duration {
	if b.JournalLease > 0 {
		return b.JournalLease
	}
	return DefaultJournalLease
}

// botID is the bot's Telegram user id, the part of its token before the
// colon (0 if that is not a number: a test's token).
func botID(token string) int64 {
	id, _, _ := strings.Cut(token, ":")
	n, _ := strconv.ParseInt(id, 10, 64)
	return n
}

// receive records a received update in the journal and returns its job,
// or nil if the journal has it already (a delivery again). raw is the
// update's JSON as Telegram sent it. When the journal cannot be written the
// update is handled without it: a message answered without the journal's
// safety beats a message lost.
func (b *Bot) receive(u *models.Update, raw []byte) *job {
	j := &job{u: u}
	if b.Journal == nil {
		return j
	}
	now := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, journalCallTimeout)
	defer cancel()
	added, err := b.Journal.Add(ctx, &sluice.BotUpdate{
		Bot: b.botID, ID: u.ID, Payload: raw, Holder: b.holder,
		LeaseUntil: now.Add(b.journalLease()), Attempts: 1,
		ReceivedAt: now, ExpiresAt: now.Add(UpdateTTL),
	})
	switch {
	case err != nil:
		b.logger().Warn("telegram: journal an update; handling it without", slog.Int64("update_id", u.ID), slog.String("error", err.Error()))
		b.count("unjournaled")
		return j
	case !added:
		b.count("duplicate")
		return nil
	}
	b.count("journaled")
	j.journaled = true
	return j
}

// UpdateTTL is how long the journal keeps an update: as long as Telegram
// keeps one it could deliver again. An update not handled by then is not.
const UpdateTTL = 24 * time.Hour

// keepJournal renews this instance's leases and claims the updates of
// stopped instances until ctx ends.
func (b *Bot) keepJournal(ctx context.Context) {
	lease := b.journalLease()
	tick := time.NewTicker(lease / 3)
	defer tick.Stop()
	for {
		b.claim(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, journalCallTimeout)
		if err := b.Journal.Renew(cctx, b.botID, b.holder, time.Now().Add(lease)); err != nil && ctx.Err() == nil {
			b.logger().Warn("telegram: renew the journal's leases", slog.String("error", err.Error()))
		}
		cancel()
	}
}

// claim takes over the updates whose holder stopped, and queues them.
func (b *Bot) claim(ctx context.Context) {
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, journalCallTimeout)
		now := time.Now()
		got, err := b.Journal.Claim(cctx, b.botID, b.holder, now.Add(b.journalLease()), now, journalClaimBatch)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				b.logger().Warn("telegram: claim the updates of stopped instances", slog.String("error", err.Error()))
			}
			return
		}
		for _, r := range got {
			b.takeOver(r)
		}
		if len(got) < journalClaimBatch {
			return
		}
	}
}

// takeOver queues an update claimed from a stopped instance, or gives it up
// if it was held too often.
func (b *Bot) takeOver(r *sluice.BotUpdate) {
	j := &job{u: new(models.Update), journaled: true, inherited: r.Charged, charged: r.Charged, chargedAt: r.ChargedAt}
	err := json.Unmarshal(r.Payload, j.u)
	m := messageOf(j.u)
	log := b.logger().With(slog.Int64("update_id", r.ID), slog.Int("attempts", r.Attempts), slog.Int64("charged", r.Charged))
	if err != nil || m == nil || r.Attempts > maxUpdateAttempts {
		log.Error("telegram: gave up an update that stopped the instances that held it")
		b.count("given_up")
		if m != nil {
			b.refundInherited(j)
			b.reply(m, givenUpText)
		}
		b.finish(j)
		return
	}
	log.Info("telegram: took over an update whose instance stopped")
	b.count("taken_over")
	b.enqueue(j, m) // if the bot is closing, Close releases it again
}

// refundInherited gives back the charge that j inherited, if no prompt
// served on it (the update was given up, or could not run as a prompt).
// The account is the one bound to the sender now.
func (b *Bot) refundInherited(j *job) {
	m := j.u.Message
	if j.inherited == 0 || m == nil || m.From == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), refundTimeout)
	defer cancel()
	a, err := b.Accounts.FindAccountByTelegram(ctx, m.From.ID)
	if err != nil {
		b.logger().Warn("telegram: refund an inherited charge", slog.String("error", err.Error()))
		return
	}
	p := b.plans[a.Plan]
	if p == nil {
		return
	}
	pol := b.policy(a, p)
	d := inheritedDecision(j, pol)
	j.inherited = 0
	b.unrecord(j)
	b.refund(a, "", sluice.AccountQuotaKey(a.ID), pol, d, "not_served")
}

// inheritedDecision is the decision whose refund gives back j's inherited
// charge: its instant, in the windows of pol.
func inheritedDecision(j *job, pol *sluice.Policy) sluice.Decision {
	return sluice.Decision{Allowed: true, Time: j.chargedAt, Blocking: -1, N: len(pol.Windows)}
}

// charged records on j's update that one unit of the quota key key was
// taken at the instant at, once the counters hold it whatever happens
// (sluice.SyncQuota), so that no claim inherits a unit that a crash took
// from them (and serves it free). A failure leaves the charge unrecorded:
// a claimer would charge again.
func (b *Bot) charged(j *job, key string, at time.Time) {
	if !j.journaled {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.finished {
		return
	}
	if err := b.recordCharge(j, key, at); err != nil {
		b.logger().Warn("telegram: record a charge in the journal", slog.Int64("update_id", j.u.ID), slog.String("error", err.Error()))
	}
}

// recordCharge syncs the counters of key and records on j's update the
// unit taken at the instant at. j.mu is held.
func (b *Bot) recordCharge(j *job, key string, at time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), journalCallTimeout)
	defer cancel()
	if err := sluice.SyncQuota(ctx, b.Quota, key); err != nil {
		return err
	}
	was, wasAt := j.charged, j.chargedAt
	j.charged, j.chargedAt = 1, at
	if err := b.writeCharge(ctx, j); err != nil {
		j.charged, j.chargedAt = was, wasAt
		return err
	}
	return nil
}

// writeCharge writes on j's update the charge j holds: none, or j.charged
// units at j.chargedAt, to be inherited as long as the update is kept.
// j.mu is held.
func (b *Bot) writeCharge(ctx context.Context, j *job) error {
	var until time.Time
	if j.charged > 0 {
		until = j.chargedAt.Add(UpdateTTL)
	}
	return b.Journal.Charge(ctx, b.botID, j.u.ID, b.holder, j.charged, j.chargedAt, until)
}

// unrecord clears j's charge from the journal before it is refunded, so
// that no claim inherits a unit given back.
func (b *Bot) unrecord(j *job) {
	if !j.journaled {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.charged == 0 {
		return
	}
	j.charged, j.chargedAt = 0, time.Time{}
	ctx, cancel := context.WithTimeout(context.Background(), journalCallTimeout)
	defer cancel()
	if err := b.writeCharge(ctx, j); err != nil {
		b.logger().Warn("telegram: clear a refunded charge in the journal", slog.Int64("update_id", j.u.ID), slog.String("error", err.Error()))
	}
}

// handBack leaves a prompt that Close interrupted to the instance that
// claims it next (another, or this one started again), instead of refunding
// it and asking the user to send it again: its charge (of the quota key
// key) is recorded on its update, so that the claimer serves it on that
// unit, and it is not finished, so that Close releases it. It reports false
// if that cannot be done (the bot is not closing, the update is not
// journaled, or the record fails): the caller refunds and tells the chat
// instead.
func (b *Bot) handBack(j *job, key string, paid *sluice.Decision) bool {
	if !j.journaled || b.ctx.Err() == nil {
		return false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if paid.Charged() && j.charged == 0 {
		if err := b.recordCharge(j, key, paid.Time); err != nil {
			b.logger().Warn("telegram: record the charge of a prompt handed back", slog.Int64("update_id", j.u.ID), slog.String("error", err.Error()))
			return false
		}
	}
	j.deferred = true
	return true
}

// held reports whether this instance still holds j's update. It checks
// before charging for a prompt, and again before sending its photo: an
// instance paused past its lease (SIGSTOP, a frozen VM) finds on waking
// that another claimed what it had queued or was generating, and leaves it
// to that one, which serves it on the charge recorded on the update, if
// any. It asks by writing again the charge the journal holds for j (none,
// or the one recorded); when the journal cannot answer, the update is
// handled.
func (b *Bot) held(j *job) bool {
	if !j.journaled {
		return true
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), journalCallTimeout)
	defer cancel()
	err := b.writeCharge(ctx, j)
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		b.logger().Warn("telegram: an update this instance held was claimed by another; left to it", slog.Int64("update_id", j.u.ID))
		j.journaled = false // not ours to finish
		return false
	}
	return true
}

// finish marks j's update handled in the journal.
func (b *Bot) finish(j *job) {
	if !j.journaled {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.finished {
		return
	}
	j.finished = true
	ctx, cancel := context.WithTimeout(context.Background(), journalCallTimeout)
	defer cancel()
	if err := b.Journal.Finish(ctx, b.botID, j.u.ID, b.holder); err != nil {
		b.logger().Warn("telegram: finish an update in the journal", slog.Int64("update_id", j.u.ID), slog.String("error", err.Error()))
	}
}

// release lets another instance claim this one's unfinished updates at
// once: it is stopping.
func (b *Bot) release() {
	ctx, cancel := context.WithTimeout(context.Background(), journalCallTimeout)
	defer cancel()
	if err := b.Journal.Release(ctx, b.botID, b.holder, time.Now()); err != nil {
		b.logger().Warn("telegram: release the journal's updates", slog.String("error", err.Error()))
	}
}

// messageOf returns the message an update is about, for the bot: a message
// from a user, or the bot's message whose button was pressed; nil for
// anything else (edits, channel posts, other bots).
func messageOf(u *models.Update) *models.Message {
	if cb := u.CallbackQuery; cb != nil {
		return cb.Message.Message
	}
	if m := u.Message; m != nil && m.From != nil && !m.From.IsBot {
		return m
	}
	return nil
}
