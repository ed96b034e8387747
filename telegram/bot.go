// Package telegram is the Telegram bot of sluice, its second channel: a
// Telegram user sends a prompt and gets an image back, drawing from the
// same counters, under the same policy and the same gating and refund rules
// as the HTTP API (CONTRACT.md §7).
//
// It talks to the Bot API through github.com/go-telegram/bot: long polling
// by default, or webhook deliveries to WebhookHandler, mounted on the
// gateway's HTTP server. With several instances on one token (Leases set),
// exactly one polls at a time, elected by a lease (poll.go); the journal of
// updates (journal.go) makes an update delivered twice, to any instance,
// handled once, and one received by an instance that stops, handled by
// another.
//
// Identity: a Telegram user's first message creates a Starter account bound
// to the user, unless the message is /link CODE, which binds the user to the
// existing account that made the code (POST /v1/telegram/link). After a
// /link, the user draws from the linked account's counters and plan; an
// account the bot created earlier for the user is left without a Telegram
// user (its usage stays on it, unused).
//
// Flow: updates are dispatched at once to a queue per chat, whose worker
// goroutine handles them one after the other (so a user's prompts run in
// order) and exits when the queue is empty. A queue holds at most
// MaxPending messages; generations run at most MaxGenerations at a time
// across all chats, off the update loop. Replies go through an outbox that
// keeps under Telegram's flood limits and honours its 429 retry_after.
//
// Decisions the contract leaves open:
//
//   - The chosen model (/model) is kept with the account
//     (Account.TelegramModel): it survives restarts, is seen by every
//     instance, and after /link is the linked account's.
//   - Images are 512x512, one per prompt.
//   - A photo that Telegram finally refuses (not a 429) is refunded: only
//     delivered work counts.
//   - A 429 from Telegram pauses every send of the bot until its
//     retry_after: flood limits are per bot.
//   - The replies waiting to be sent are bounded (Outbox); at a bound a
//     prompt is refused with a notice before anything is charged, and an
//     image made meanwhile that cannot be queued is refunded.
package telegram

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	tgbot "github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
)

// Defaults of the Bot's fields.
const (
	DefaultAPIURL         = "https://api.telegram.org"
	DefaultMaxPending     = 32
	DefaultMaxGenerations = 8
	DefaultPollTimeout    = 50 * time.Second
	DefaultImageSize      = "512x512"
	// MaxPrompt is the longest prompt, in characters, as on the API.
	MaxPrompt = 4000
	// maxUpdate bounds the body of a webhook delivery.
	maxUpdate = 1 << 20
)

var _ sluice.TelegramSender = (*Bot)(nil)

// SecretHeader is the header in which Telegram sends a webhook's secret
// token.
const SecretHeader = "X-Telegram-Bot-Api-Secret-Token"

// Bot is the Telegram bot. Set its fields, then call Start; they must not
// change after that. Close stops it. A Bot is safe for concurrent use.
type Bot struct {
	Accounts sluice.AccountService
	Quota    sluice.QuotaService
	Images   sluice.ImageGenerator
	Plans    []sluice.Plan
	Models   []sluice.Model
	// Windows is the deployment's window configuration: the same as the
	// gateway's, so that both channels count under the same policy.
	Windows sluice.WindowConfig

	// Token is the bot's token from @BotFather.
	Token string
	// APIURL is the Bot API base URL; empty means DefaultAPIURL.
	APIURL string
	// WebhookURL, if set, is registered with Telegram (setWebhook) and
	// updates arrive at WebhookHandler; empty means long polling.
	WebhookURL string
	// WebhookSecret is the secret token Telegram sends with every webhook
	// delivery; required with WebhookURL.
	WebhookSecret string

	// MaxPending bounds the messages waiting in one chat's queue; 0 means
	// DefaultMaxPending.
	MaxPending int
	// MaxGenerations bounds the generations running at once; 0 means
	// DefaultMaxGenerations.
	MaxGenerations int
	// ChatInterval and SendInterval are the least times between two
	// messages to one chat and between any two messages; 0 means
	// DefaultChatInterval and DefaultSendInterval.
	ChatInterval, SendInterval time.Duration
	// UpgradeURL, if set, is the link of an "Upgrade" button under the
	// over-quota reply.
	UpgradeURL string
	// Outbox bounds the replies waiting to be sent; zero fields take the
	// defaults (DefaultOutboxChatMessages...).
	Outbox OutboxLimits
	// PollTimeout is the long-polling timeout; 0 means DefaultPollTimeout.
	PollTimeout time.Duration
	// HTTPClient makes the Bot API calls; nil means a client of its own
	// whose timeout outlasts PollTimeout.
	HTTPClient *http.Client

	// Leases, if set, elects the one instance that long-polls among those
	// that share it (see LeaseName); nil means this instance polls alone
	// (one instance, embedded storage). Unused in webhook mode.
	Leases sluice.LeaseService
	// LeaseTTL and LeaseRetry are the poller lease's TTL and how often an
	// instance that does not hold it tries to take it; 0 means
	// DefaultLeaseTTL and DefaultLeaseRetry.
	LeaseTTL, LeaseRetry time.Duration
	// Journal, if set, keeps every update from its receipt until it is
	// handled, shared by the instances that share it (see journal.go): an
	// update delivered twice, to any instance, is handled once, and one
	// whose instance stops before answering is answered by another (or by
	// it, restarted), on the unit it was charged. nil means this
	// instance's memory only: a stop loses what it had not answered.
	Journal sluice.BotUpdateStore
	// JournalLease is how long an instance holds an update it received
	// unless it renews the lease; 0 means DefaultJournalLease.
	JournalLease time.Duration

	// Usage receives every quota decision of a prompt and every refund,
	// with channel and key ID "telegram"; nil means none is recorded.
	Usage sluice.UsageRecorder

	// Registry receives the bot's metrics (sluice_telegram_updates_total);
	// nil means none are exported.
	Registry prometheus.Registerer

	// Logger receives errors; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock of link codes; nil means time.Now. Quota decisions
	// use the QuotaService's clock.
	Now func() time.Time

	once    sync.Once
	initErr error
	api     *tgbot.Bot
	client  *http.Client
	offset  int64       // next update to ask for; the poller's own
	leading atomic.Bool // this instance holds the poller lease
	out     *outbox
	plans   map[string]*sluice.Plan
	models  map[string]*sluice.Model
	gen     chan struct{} // semaphore of generations
	ctx     context.Context
	cancel  context.CancelFunc

	mu      sync.Mutex // guards chats, recent, started and closed
	chats   map[int64]*chatQueue
	recent  recentIDs // updates already dispatched
	started bool
	closed  bool

	workers sync.WaitGroup // per-chat workers
	poller  sync.WaitGroup // the long-polling loop and the journal's keeper

	botID   int64  // the bot's user id, from the token
	holder  string // this instance's name in the journal
	updates *prometheus.CounterVec

	username atomic.Pointer[string] // learnt by Start (getMe)
}

// chatQueue is the updates of one chat waiting for its worker: messages
// and callback queries (a button pressed under one of the bot's messages).
type chatQueue struct {
	msgs []*job
}

func (b *Bot) init() error {
	b.once.Do(func() {
		b.plans = make(map[string]*sluice.Plan, len(b.Plans))
		for i := range b.Plans {
			b.plans[b.Plans[i].ID] = &b.Plans[i]
		}
		b.models = make(map[string]*sluice.Model, len(b.Models))
		for i := range b.Models {
			b.models[b.Models[i].ID] = &b.Models[i]
		}
		b.gen = make(chan struct{}, orInt(b.MaxGenerations, DefaultMaxGenerations))
		b.chats = make(map[int64]*chatQueue)
		b.ctx, b.cancel = context.WithCancel(context.Background())
		b.botID, b.holder = botID(b.Token), sluice.RandomString(16)
		b.updates = newUpdatesMetric(b.Registry)

		poll := b.PollTimeout
		if poll <= 0 {
			poll = DefaultPollTimeout
		}
		client := b.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: poll + 15*time.Second}
		}
		b.client = client
		url := b.APIURL
		if url == "" {
			url = DefaultAPIURL
		}
		b.api, b.initErr = tgbot.New(b.Token,
			tgbot.WithServerURL(strings.TrimRight(url, "/")),
			tgbot.WithSkipGetMe(),
			tgbot.WithHTTPClient(poll, client),
			tgbot.WithErrorsHandler(func(err error) {
				b.logger().Warn("telegram: bot api", slog.String("error", err.Error()))
			}),
		)
		if b.initErr != nil {
			b.initErr = fmt.Errorf("telegram: %w", b.initErr)
		}
		chatEvery := b.ChatInterval
		if chatEvery <= 0 {
			chatEvery = DefaultChatInterval
		}
		every := b.SendInterval
		if every <= 0 {
			every = DefaultSendInterval
		}
		b.out = newOutbox(b.send, chatEvery, every, b.Outbox, nil, b.logger())
	})
	return b.initErr
}

// Start begins receiving updates. With a WebhookURL it registers it with
// Telegram (setWebhook, with the secret token) and the updates arrive at
// WebhookHandler, which must be served at the URL's path; otherwise it
// removes any webhook and long-polls (getUpdates) in a goroutine until
// Close.
func (b *Bot) Start(ctx context.Context) error {
	if err := b.init(); err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed || b.started {
		b.mu.Unlock()
		return errors.New("telegram: bot already started or closed")
	}
	b.started = true
	b.mu.Unlock()
	if b.Journal != nil {
		b.poller.Add(1)
		go func() {
			defer b.poller.Done()
			b.keepJournal(b.ctx)
		}()
	}

	if b.WebhookURL != "" {
		if b.WebhookSecret == "" {
			return errors.New("telegram: a webhook needs a secret token")
		}
		if _, err := b.api.SetWebhook(ctx, &tgbot.SetWebhookParams{
			URL:            b.WebhookURL,
			SecretToken:    b.WebhookSecret,
			AllowedUpdates: updateTypes,
		}); err != nil {
			return fmt.Errorf("telegram: set webhook: %w", err)
		}
		b.setCommands(ctx)
		return nil
	}
	// getUpdates fails while a webhook is set.
	if _, err := b.api.DeleteWebhook(ctx, &tgbot.DeleteWebhookParams{}); err != nil {
		if errors.Is(err, tgbot.ErrorUnauthorized) {
			return fmt.Errorf("telegram: the bot token was refused: %w", err)
		}
		b.logger().Warn("telegram: delete webhook before polling", slog.String("error", err.Error()))
	}
	b.setCommands(ctx)
	b.poller.Add(1)
	go func() {
		defer b.poller.Done()
		b.poll(b.ctx)
	}()
	return nil
}

// Close stops the bot: it stops receiving updates, cancels the work in
// progress, and sends the replies already queued until ctx ends. The
// messages still waiting and the prompts it interrupts are released to the
// journal, for another instance or the next start (an interrupted prompt
// with its charge: handBack). Without the journal, an interrupted prompt is
// refunded and the waiting messages dropped, and each chat is told so. It
// does not remove the webhook, so that Telegram keeps the updates that
// arrive meanwhile for the next start.
func (b *Bot) Close(ctx context.Context) error {
	if err := b.init(); err != nil {
		return nil // nothing was started
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	var dropped []*models.Message // of each chat, the last waiting message the journal does not hold
	for _, q := range b.chats {
		for i := len(q.msgs) - 1; i >= 0; i-- {
			if m := q.msgs[i].u.Message; m != nil && !q.msgs[i].journaled {
				dropped = append(dropped, m)
				break
			}
		}
		q.msgs = nil // their workers exit after the message in hand
	}
	b.mu.Unlock()
	b.cancel()
	b.poller.Wait()
	b.workers.Wait()
	for _, m := range dropped {
		b.reply(m, restartingWaitingText)
	}
	b.out.stop(ctx)
	if b.Journal != nil {
		// After the photos in the outbox were sent or refunded: the
		// updates left are those that waited, for another instance.
		b.release()
	}
	return nil
}

// WebhookHandler returns the handler of webhook deliveries: a POST of an
// Update whose secret token header matches WebhookSecret. A wrong or missing
// token is 403 and nothing happens. An update is answered 200 as soon as it
// is queued, whatever becomes of it (over quota included), so that
// Telegram does not deliver it again; after Close it is 503, so that
// Telegram keeps it.
func (b *Bot) WebhookHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := b.init(); err != nil {
			http.Error(w, "bot unavailable", http.StatusServiceUnavailable)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		got := r.Header.Get(SecretHeader)
		if b.WebhookSecret == "" || subtle.ConstantTimeCompare([]byte(got), []byte(b.WebhookSecret)) != 1 {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxUpdate))
		if err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var u models.Update
		if err := json.Unmarshal(body, &u); err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if !b.dispatch(&u, body) {
			http.Error(w, "closed", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

// dispatch records an update in the journal and queues it for its chat's
// worker. raw is its JSON as Telegram sent it. It never blocks
// on the work itself. It reports false if the bot is closed, so that the
// update is left to Telegram.
func (b *Bot) dispatch(u *models.Update, raw []byte) bool {
	m := messageOf(u)
	b.mu.Lock()
	closed := b.closed
	fresh := !closed && m != nil && b.recent.add(u.ID)
	b.mu.Unlock()
	switch {
	case closed:
		return false
	case !fresh:
		// Not for us (edits, channel posts, other bots), or a redelivery
		// (Telegram retries a webhook it thinks failed): done once already.
		return true
	}
	j := b.receive(u, raw)
	if j == nil {
		return true // in the journal already: handled, or held, by an instance
	}
	if !b.enqueue(j, m) {
		// Closed meanwhile: the journal has it for another instance; left
		// to Telegram if not journaled.
		return j.journaled
	}
	return true
}

// enqueue queues j, an update about the message m, for its chat's worker,
// starting the worker if the chat has none. A chat with MaxPending messages
// waiting is told to wait, and the update is finished. It reports false if
// the bot is closed.
func (b *Bot) enqueue(j *job, m *models.Message) bool {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return false
	}
	chat := m.Chat.ID
	q := b.chats[chat]
	if q == nil {
		q = &chatQueue{}
		b.chats[chat] = q
		b.workers.Add(1)
		go b.work(chat, q)
	}
	if n := len(q.msgs); n >= orInt(b.MaxPending, DefaultMaxPending) {
		b.mu.Unlock()
		if j.u.CallbackQuery == nil {
			b.reply(m, fmt.Sprintf("You have %d messages waiting already; I'll take new ones once I've worked through those.", n))
		}
		b.refundInherited(j)
		b.finish(j)
		return true
	}
	q.msgs = append(q.msgs, j)
	b.mu.Unlock()
	return true
}

// work handles the messages of one chat in order, and exits when there are
// none left.
func (b *Bot) work(chat int64, q *chatQueue) {
	defer b.workers.Done()
	for {
		b.mu.Lock()
		if len(q.msgs) == 0 {
			delete(b.chats, chat)
			b.mu.Unlock()
			return
		}
		j := q.msgs[0]
		q.msgs[0] = nil
		q.msgs = q.msgs[1:]
		b.mu.Unlock()
		if j.u.CallbackQuery != nil {
			b.callback(b.ctx, j.u.CallbackQuery)
		} else {
			b.handle(b.ctx, j)
		}
		// A charge inherited and not served on (the prompt could not
		// run) goes back.
		b.refundInherited(j)
		if !j.deferred {
			b.finish(j)
		}
	}
}

// reply queues a text answer to m; if the outbox is full, a notice says
// so instead.
func (b *Bot) reply(m *models.Message, text string) {
	if b.out.enqueue(&outMsg{chatID: m.Chat.ID, replyTo: m.ID, text: text}) == errFull {
		b.notice(m, outboxFullText)
	}
}

// notice queues a short text to m's chat that goes over the outbox's
// limits, one at a time per chat (see outbox).
func (b *Bot) notice(m *models.Message, text string) {
	b.out.enqueue(&outMsg{chatID: m.Chat.ID, replyTo: m.ID, text: text, notice: true})
}

// SendText queues a text message to the Telegram user (their private chat
// with the bot, whose chat ID is the user's ID) in the outbox, behind the
// chat's earlier messages and under the same flood limits. It returns at
// once; an error means the bot is closed.
func (b *Bot) SendText(telegramID int64, text string) error {
	if err := b.init(); err != nil {
		return err
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return errors.New("telegram: bot closed; message not sent")
	}
	return b.out.enqueue(&outMsg{chatID: telegramID, text: text})
}

// send makes one Bot API call for the outbox.
func (b *Bot) send(ctx context.Context, m *outMsg) error {
	var rp *models.ReplyParameters
	if m.replyTo != 0 {
		rp = &models.ReplyParameters{MessageID: m.replyTo, AllowSendingWithoutReply: true}
	}
	var markup models.ReplyMarkup
	if m.keyboard != nil {
		markup = m.keyboard
	}
	if m.photo != nil {
		_, err := b.api.SendPhoto(ctx, &tgbot.SendPhotoParams{
			ChatID:          m.chatID,
			Photo:           &models.InputFileUpload{Filename: "image.png", Data: bytes.NewReader(m.photo)},
			Caption:         m.text,
			ReplyParameters: rp,
			ReplyMarkup:     markup,
		})
		return err
	}
	_, err := b.api.SendMessage(ctx, &tgbot.SendMessageParams{
		ChatID:          m.chatID,
		Text:            m.text,
		ReplyParameters: rp,
		ReplyMarkup:     markup,
	})
	return err
}

func (b *Bot) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

func (b *Bot) logger() *slog.Logger {
	if b.Logger != nil {
		return b.Logger
	}
	return slog.Default()
}

func orInt(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// recentIDs remembers the last recentSize update IDs, so that an update
// delivered twice (a webhook retried after a lost answer) is processed once:
// a second generation would charge the user's quota a second time. The zero
// value is ready; the caller guards it.
type recentIDs struct {
	set  map[int64]struct{}
	ring [recentSize]int64
	next int
}

const recentSize = 4096

// add records id and reports whether it was new.
func (r *recentIDs) add(id int64) bool {
	if r.set == nil {
		r.set = make(map[int64]struct{}, recentSize)
	}
	if _, dup := r.set[id]; dup {
		return false
	}
	if len(r.set) == recentSize {
		delete(r.set, r.ring[r.next])
	}
	r.set[id] = struct{}{}
	r.ring[r.next] = id
	r.next = (r.next + 1) % recentSize
	return true
}
