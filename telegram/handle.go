package telegram

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-telegram/bot/models"

	"github.com/sluicehq/sluice"
)

const (
	// maxImageBody bounds the generator's JSON answer that the bot reads.
	maxImageBody = 64 << 20
	// refundTimeout bounds a refund made after the work's context ended.
	refundTimeout = 5 * time.Second

	restartingText = "I'm restarting, so I didn't do that and nothing was charged. Please send it again in a minute."
	// imageEstimate is the size, in bytes, that a prompt's image is
	// expected to take in the outbox (a 512x512 PNG).
	imageEstimate = 512 << 10

	outboxFullText   = "I have too many replies waiting to be sent to you. Please wait a minute before sending more; nothing was charged for what I couldn't do."
	imageNotSentText = "I made your image but couldn't send it: too many replies are waiting to be sent to you. Nothing was charged; please send it again in a minute."

	restartingWaitingText = "I'm restarting, so I didn't get to your waiting messages, and nothing was charged for them. Please send them again in a minute."
)

// handle answers one message. It runs on the chat's worker, so the
// messages of a chat are handled one at a time, in order. The changes it
// makes (an account created by a first message, a /link) are made by
// Actor{telegram, the sender's Telegram user id}.
func (b *Bot) handle(ctx context.Context, j *job) {
	m := j.u.Message
	ctx = sluice.WithActor(ctx, sluice.Actor{Type: sluice.ActorTelegram, ID: strconv.FormatInt(m.From.ID, 10)})
	defer func() {
		if v := recover(); v != nil {
			b.logger().LogAttrs(ctx, slog.LevelError, "telegram: panic handling a message",
				slog.Int64("chat_id", m.Chat.ID), slog.Any("panic", v))
			b.reply(m, internalText)
		}
	}()
	text := strings.TrimSpace(m.Text)
	if text == "" {
		b.reply(m, notTextText)
		return
	}
	cmd, arg := parseCommand(text)
	if cmd == "link" || cmd == "start" && arg != "" {
		// Before any lookup: /link as a first message must not create an
		// account of its own. "/start CODE" is what Telegram sends for
		// the console's t.me/<bot>?start=CODE link.
		b.link(ctx, m, arg)
		return
	}
	a, err := b.account(ctx, m.From.ID)
	if err != nil {
		b.fail(ctx, m, "find or create account", err)
		return
	}
	p := b.plans[a.Plan]
	if p == nil {
		b.fail(ctx, m, "plan", fmt.Errorf("account %d: plan %q is not configured", a.ID, a.Plan))
		return
	}
	switch cmd {
	case "":
		b.prompt(ctx, j, a, p, text)
	case "start":
		hour, day := a.Limits(p)
		b.reply(m, fmt.Sprintf("Hi! I turn text into images. You're on the %s plan: %s, %s.\n\n%s",
			p.Name, limitText(hour, day), modelsWords(p), helpText))
	case "help":
		b.reply(m, helpText)
	case "usage":
		b.usage(ctx, m, a, p)
	case "models":
		var chosen string
		if md := b.modelFor(a, p); md != nil {
			chosen = md.ID
		}
		b.replyWith(m, modelsText(b.Models, p, chosen), modelsKeyboard(b.Models, p, chosen))
	case "model":
		b.chooseModel(ctx, m, a, p, arg)
	case "plan":
		b.reply(m, planText(b.Plans, p, a))
	default:
		b.reply(m, unknownCmdText)
	}
}

// parseCommand splits "/cmd@botname arg" into "cmd" and "arg"; cmd is empty
// for text that is not a command.
func parseCommand(text string) (cmd, arg string) {
	if !strings.HasPrefix(text, "/") {
		return "", ""
	}
	first, rest, _ := strings.Cut(text, " ")
	if i := strings.IndexAny(first, "\n\t"); i >= 0 {
		first, rest = first[:i], first[i+1:]+" "+rest
	}
	cmd, _, _ = strings.Cut(first[1:], "@")
	if cmd == "" {
		cmd = "/" // "/" alone: an unknown command, not a prompt
	}
	return strings.ToLower(cmd), strings.TrimSpace(rest)
}

// account returns the account bound to the Telegram user, creating a
// Starter account for a user the bot has not seen. Two first messages of one
// user (from two chats) may race to create it: the loser finds the
// winner's.
func (b *Bot) account(ctx context.Context, user int64) (*sluice.Account, error) {
	a, err := b.Accounts.FindAccountByTelegram(ctx, user)
	if err == nil {
		return a, nil
	}
	if sluice.ErrorCode(err) != sluice.ENOTFOUND {
		return nil, err
	}
	a = &sluice.Account{Plan: sluice.DefaultPlan, TelegramID: user}
	if err := b.Accounts.CreateAccount(ctx, a); err != nil {
		if found, ferr := b.Accounts.FindAccountByTelegram(ctx, user); ferr == nil {
			return found, nil
		}
		return nil, fmt.Errorf("create account for telegram user %d: %w", user, err)
	}
	b.logger().LogAttrs(ctx, slog.LevelInfo, "telegram: new account",
		slog.Int64("account_id", a.ID), slog.Int64("telegram_id", user))
	return a, nil
}

// policy is an account's policy, the same as the gateway's.
func (b *Bot) policy(a *sluice.Account, p *sluice.Plan) *sluice.Policy {
	hour, day := a.Limits(p)
	pol := b.Windows.AccountPolicy(hour, day)
	return &pol
}

// modelFor returns the user's chosen model if the plan may use it, and
// otherwise the first model the plan may use; nil if there is none.
func (b *Bot) modelFor(a *sluice.Account, p *sluice.Plan) *sluice.Model {
	if md := b.models[a.TelegramModel]; md != nil && p.AllowsModel(md) {
		return md
	}
	for i := range b.Models {
		if p.AllowsModel(&b.Models[i]) {
			return &b.Models[i]
		}
	}
	return nil
}

// chooseModel sets the account's model, kept with the account.
func (b *Bot) chooseModel(ctx context.Context, m *models.Message, a *sluice.Account, p *sluice.Plan, id string) {
	cur := "none"
	if md := b.modelFor(a, p); md != nil {
		cur = md.ID
	}
	md := b.models[id]
	switch {
	case id == "":
		b.reply(m, "Your model is "+cur+". /models lists the models; /model <id> chooses one.")
	case md == nil:
		b.reply(m, fmt.Sprintf("There is no model %s. /models lists the models.", strconv.Quote(shorten(id, 64))))
	case !p.AllowsModel(md):
		b.reply(m, fmt.Sprintf("Sorry, the %s plan can't use %s: it includes %s. Upgrade your plan to use it (/plan shows the plans). Your model is still %s.",
			p.Name, md.ID, modelsWords(p), cur))
	default:
		if err := b.Accounts.SetTelegramModel(ctx, a.ID, md.ID); err != nil {
			b.fail(ctx, m, "set model", err)
			return
		}
		b.reply(m, "Done: your prompts now use "+md.ID+".")
	}
}

func (b *Bot) usage(ctx context.Context, m *models.Message, a *sluice.Account, p *sluice.Plan) {
	d, err := b.Quota.Peek(ctx, sluice.AccountQuotaKey(a.ID), b.policy(a, p))
	if err != nil {
		b.fail(ctx, m, "peek", err)
		return
	}
	b.reply(m, usageText(p, a, &d))
}

// link binds the Telegram user to the account that made the code.
func (b *Bot) link(ctx context.Context, m *models.Message, code string) {
	if code == "" {
		b.reply(m, linkUsageText)
		return
	}
	id, err := b.Accounts.ConsumeToken(ctx, sluice.TokenTelegramLink, sluice.HashToken(code), b.now())
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		b.reply(m, linkBadText)
		return
	}
	if err != nil {
		b.fail(ctx, m, "consume link code", err)
		return
	}
	if err := b.Accounts.LinkTelegram(ctx, id, m.From.ID); err != nil {
		if sluice.ErrorCode(err) == sluice.ENOTFOUND {
			b.reply(m, linkBadText)
			return
		}
		b.fail(ctx, m, "link telegram", err)
		return
	}
	a, err := b.Accounts.FindAccountByID(ctx, id)
	if err != nil {
		b.fail(ctx, m, "find linked account", err)
		return
	}
	b.logger().LogAttrs(ctx, slog.LevelInfo, "telegram: linked",
		slog.Int64("account_id", id), slog.Int64("telegram_id", m.From.ID))
	name := "#" + strconv.FormatInt(a.ID, 10)
	if a.Email != "" {
		name = a.Email
	}
	plan := a.Plan
	if p := b.plans[a.Plan]; p != nil {
		hour, day := a.Limits(p)
		plan = fmt.Sprintf("%s plan: %s", p.Name, limitText(hour, day))
	}
	b.reply(m, fmt.Sprintf("Linked: this chat now uses your sluice account %s (%s). Images made here and through the API count toward the same limits.", name, plan))
}

// prompt generates an image for the text, under the same gating as the
// API: the model's tier, then one unit of the account's quota, refunded if
// nothing is delivered. A prompt taken over from a stopped instance with its
// charge (j.inherited) is served on that unit instead of a new one.
func (b *Bot) prompt(ctx context.Context, j *job, a *sluice.Account, p *sluice.Plan, text string) {
	m := j.u.Message
	if utf8.RuneCountInString(text) > MaxPrompt {
		b.reply(m, fmt.Sprintf("That prompt is too long: at most %d characters, please.", MaxPrompt))
		return
	}
	md := b.modelFor(a, p)
	if md == nil {
		b.reply(m, fmt.Sprintf("Sorry, no model is available on the %s plan.", p.Name))
		return
	}
	if !b.out.fits(m.Chat.ID, imageEstimate) {
		// Generating an image that cannot be sent would be wasted.
		b.notice(m, outboxFullText)
		return
	}
	key := sluice.AccountQuotaKey(a.ID)
	pol := b.policy(a, p)
	// d is the decision the caption shows (nil: none at hand); paid, the
	// one whose charge a refund gives back.
	var d *sluice.Decision
	var paid sluice.Decision
	if j.inherited > 0 {
		b.count("inherited")
		paid = inheritedDecision(j, pol)
		if peek, err := b.Quota.Peek(ctx, key, pol); err == nil {
			d = &peek
		}
	} else {
		if !b.held(j) {
			return // claimed by another instance while this one was paused: the other answers it
		}
		taken, err := b.Quota.Take(ctx, key, pol, 1)
		if err != nil {
			b.fail(ctx, m, "take", err)
			return
		}
		b.recordTake(a, md.ID, &taken)
		if !taken.Allowed {
			b.replyWith(m, overQuotaText(p, &taken), b.upgradeKeyboard())
			return
		}
		d, paid = &taken, taken
		if taken.Charged() {
			b.charged(j, key, taken.Time)
		}
	}

	// From here the unit is charged; every way out that delivers nothing
	// refunds it, a panic included, after clearing it from the journal.
	j.inherited = 0 // now this prompt's to refund
	settled := false
	refund := func(reason string) {
		settled = true
		b.unrecord(j)
		b.refund(a, md.ID, key, pol, paid, reason)
	}
	defer func() {
		if !settled {
			refund("panic")
		}
	}()

	select {
	case b.gen <- struct{}{}:
	case <-ctx.Done():
		if b.handBack(j, key, &paid) {
			settled = true
			return
		}
		refund("canceled")
		b.reply(m, restartingText)
		return
	}
	img, err := b.generate(ctx, &sluice.ImageRequest{
		Model:          md.ID,
		Prompt:         text,
		N:              1,
		Size:           DefaultImageSize,
		ResponseFormat: "b64_json",
		User:           "telegram:" + strconv.FormatInt(m.From.ID, 10),
	})
	<-b.gen
	if err != nil && ctx.Err() != nil && b.handBack(j, key, &paid) {
		settled = true
		return
	}
	if err != nil {
		refund("upstream_error")
		b.logger().LogAttrs(ctx, slog.LevelWarn, "telegram: image generator failed; refunded",
			slog.Int64("account_id", a.ID), slog.String("error", err.Error()))
		switch {
		case ctx.Err() != nil:
			b.reply(m, restartingText)
		case sluice.ErrorCode(err) == sluice.EINVALID:
			b.reply(m, "Sorry, the image generator refused that prompt: "+sluice.ErrorMessage(err)+" Nothing was charged.")
		default:
			b.reply(m, upstreamText)
		}
		return
	}
	if !b.held(j) {
		// Claimed by another instance while this one generated (it was
		// paused past its lease): the claimer answers, on the charge
		// recorded on the update, or on one of its own if none was.
		settled = true
		if j.charged == 0 {
			b.refund(a, md.ID, key, pol, paid, "claimed")
		}
		return
	}
	settled = true // now up to the delivery, which finishes the update
	j.deferred = true
	err = b.out.enqueue(&outMsg{
		chatID:  m.Chat.ID,
		replyTo: m.ID,
		text:    captionText(text, md.ID, d),
		photo:   img,
		done: func(err error) {
			if err != nil {
				b.unrecord(j)
				b.refund(a, md.ID, key, pol, paid, "delivery_failed")
			}
			b.finish(j)
		},
	})
	if err == errFull {
		b.notice(m, imageNotSentText)
	}
}

// generate asks the generator for one image and returns its PNG.
func (b *Bot) generate(ctx context.Context, req *sluice.ImageRequest) ([]byte, error) {
	res, err := b.Images.Generate(ctx, req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var body struct {
		Data []struct {
			B64JSON string `json:"b64_json"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, maxImageBody)).Decode(&body); err != nil {
		return nil, fmt.Errorf("read generated image: %w", err)
	}
	if len(body.Data) == 0 || body.Data[0].B64JSON == "" {
		return nil, errors.New("read generated image: no b64_json in the answer")
	}
	img, err := base64.StdEncoding.DecodeString(body.Data[0].B64JSON)
	if err != nil {
		return nil, fmt.Errorf("read generated image: %w", err)
	}
	return img, nil
}

// refund gives back the unit that d charged. It runs even after the bot's
// context ended, and only logs a failure.
func (b *Bot) refund(a *sluice.Account, model, key string, pol *sluice.Policy, d sluice.Decision, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), refundTimeout)
	defer cancel()
	if err := b.Quota.Refund(ctx, key, pol, 1, d); err != nil {
		b.logger().LogAttrs(ctx, slog.LevelWarn, "telegram: refund failed",
			slog.Int64("account_id", a.ID), slog.String("reason", reason), slog.String("error", err.Error()))
		return
	}
	if b.Usage != nil {
		b.Usage.Record(&sluice.UsageEvent{AccountID: a.ID, Plan: a.Plan, KeyID: sluice.UsageKeyTelegram,
			Channel: sluice.ChannelTelegram, Model: model, Time: d.Time, Outcome: sluice.UsageRefunded, Units: 1})
	}
}

// recordTake records the decision d on a prompt's unit with b.Usage. A
// request that can never fit (a limit of 0) is not a decision on quota and
// is left out, as on the API.
func (b *Bot) recordTake(a *sluice.Account, model string, d *sluice.Decision) {
	if b.Usage == nil || !d.Allowed && d.RetryAfter == sluice.InfDuration {
		return
	}
	e := &sluice.UsageEvent{AccountID: a.ID, Plan: a.Plan, KeyID: sluice.UsageKeyTelegram, Channel: sluice.ChannelTelegram,
		Model: model, Time: d.Time, Outcome: sluice.UsageAdmitted, Units: 1, Decision: d}
	switch {
	case !d.Allowed:
		e.Outcome = sluice.UsageRejected
	case d.Shadow:
		e.Outcome = sluice.UsageShadow
	}
	if !d.Allowed || d.Shadow {
		e.Window = d.Windows[max(d.Blocking, 0)].Name
	}
	b.Usage.Record(e)
}

// fail answers a message whose handling failed: the quota store being
// unreachable is said as such; anything else is logged and apologised for.
func (b *Bot) fail(ctx context.Context, m *models.Message, op string, err error) {
	switch {
	case ctx.Err() != nil:
		b.reply(m, restartingText)
	case sluice.ErrorCode(err) == sluice.EUNAVAILABLE:
		b.reply(m, unavailText)
	default:
		b.logger().LogAttrs(ctx, slog.LevelError, "telegram: "+op,
			slog.Int64("chat_id", m.Chat.ID), slog.String("error", err.Error()))
		b.reply(m, internalText)
	}
}
