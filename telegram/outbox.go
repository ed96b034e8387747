package telegram

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	tgbot "github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"
)

// Bounds of the outbox.
const (
	// DefaultChatInterval is the least time between two messages to one
	// chat: Telegram asks bots to send about one message per second to a
	// chat.
	DefaultChatInterval = time.Second
	// DefaultSendInterval is the least time between two messages overall:
	// Telegram allows about 30 messages per second to all chats.
	DefaultSendInterval = time.Second / 30
	// maxInFlight bounds concurrent Bot API calls of the outbox.
	maxInFlight = 8
	// maxTries bounds the attempts at a message that fails for a reason
	// other than Telegram's flood control (network errors, 5xx).
	maxTries = 3
	// max429 bounds the times one message is put back after a 429, so that
	// a Bot API that answers 429 forever cannot hold a message forever.
	max429 = 20

	// Defaults of the outbox's bounds (Bot.Outbox). An image of the bot is
	// 0.3-1 MB of PNG, so that a chat holds a few images waiting and the
	// whole outbox at most DefaultOutboxBytes of them.
	DefaultOutboxChatMessages = 20
	DefaultOutboxChatBytes    = 8 << 20
	DefaultOutboxMessages     = 2000
	DefaultOutboxBytes        = 64 << 20
)

// OutboxLimits bound the messages waiting to be sent (queued or in flight):
// per chat and overall, in number and in bytes (the text plus the photo).
// A zero field takes its default.
type OutboxLimits struct {
	ChatMessages, ChatBytes int
	Messages, Bytes         int
}

func (l OutboxLimits) withDefaults() OutboxLimits {
	return OutboxLimits{
		ChatMessages: orInt(l.ChatMessages, DefaultOutboxChatMessages),
		ChatBytes:    orInt(l.ChatBytes, DefaultOutboxChatBytes),
		Messages:     orInt(l.Messages, DefaultOutboxMessages),
		Bytes:        orInt(l.Bytes, DefaultOutboxBytes),
	}
}

// errFull is the error of a message refused because the outbox, or its
// chat's share, is at a limit.
var errFull = errors.New("telegram: outbox full; message not sent")

// maxNotice bounds the size of a notice, which may go over the limits.
const maxNotice = 1024

// outClock is the outbox's time: the real one, or a test's.
type outClock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// errClosed is the error of a message that was still queued when the
// outbox stopped.
var errClosed = errors.New("telegram: outbox closed before the message was sent")

// outMsg is a message to a chat: a text, or a photo with the text as its
// caption.
type outMsg struct {
	chatID  int64
	replyTo int    // message to reply to; 0: none
	text    string // the text, or the photo's caption
	photo   []byte // PNG; nil for a text message
	// done, if not nil, is called once with the outcome: nil when
	// delivered, otherwise the last error. It runs without the outbox's
	// lock and may enqueue.
	done func(error)
	// keyboard, if not nil, is an inline keyboard under the message.
	keyboard *models.InlineKeyboardMarkup
	// notice marks a short text telling the user that the outbox is full:
	// it goes over the limits, one at a time per chat.
	notice bool

	seq   uint64 // order of enqueueing, for fairness between chats
	tries int    // failed attempts other than 429s
	n429  int    // 429s received
	// started is when the loop started the latest attempt to send it, by
	// the outbox's clock: the pacing holds between these instants.
	started time.Time
}

// chatOut is the queue of one chat.
type chatOut struct {
	queue  []*outMsg
	busy   bool      // a message of the chat is in flight
	next   time.Time // earliest start of the chat's next send
	n      int       // messages not yet settled, notices left out
	bytes  int       // their sizes
	notice bool      // a notice is queued or in flight
}

func (m *outMsg) size() int { return len(m.text) + len(m.photo) }

// outbox sends messages under Telegram's flood limits: per chat in order,
// at most one message per chatEvery to a chat and one per every overall,
// and after a 429 no message at all before its retry_after has passed
// (Telegram's flood limits are per bot). Of the chats that may send, the
// one whose first message is oldest goes first, so that a busy chat cannot
// starve the others.
//
// The messages not yet settled are bounded by limits, per chat and overall,
// in number and bytes: so its memory is at most limits.Bytes plus one
// notice of maxNotice per chat. A message over a limit is refused at once
// (errFull); a notice (a short text saying so) goes over the limits, one at
// a time per chat.
//
// Messages are never dropped for pacing; a message fails only when it does
// not fit, when the Bot API refuses it (4xx other than 429), after maxTries
// transient errors, or at close.
//
// Its methods are safe for concurrent use.
type outbox struct {
	send      func(ctx context.Context, m *outMsg) error
	chatEvery time.Duration
	every     time.Duration
	limits    OutboxLimits
	backoff   time.Duration // pause after a transient error, doubled per try
	logger    *slog.Logger
	clock     outClock

	mu       sync.Mutex // guards everything below
	chats    map[int64]*chatOut
	seq      uint64
	queued   int // messages in queues, not in flight
	inflight int
	n, bytes int           // messages not yet settled and their sizes, notices left out
	paused   time.Time     // no send starts before: a 429's retry_after
	wake     chan struct{} // capacity 1: the loop has something to look at
	stopped  bool

	cancel context.CancelFunc
	done   chan struct{} // closed when the loop has returned
	sends  sync.WaitGroup
}

func newOutbox(send func(context.Context, *outMsg) error, chatEvery, every time.Duration, limits OutboxLimits, clock outClock, logger *slog.Logger) *outbox {
	if clock == nil {
		clock = realClock{}
	}
	o := &outbox{
		send: send, chatEvery: chatEvery, every: every, limits: limits.withDefaults(), clock: clock,
		backoff: time.Second, logger: logger,
		chats: make(map[int64]*chatOut),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	o.cancel = cancel
	go o.loop(ctx)
	return o
}

// enqueue queues m behind the chat's earlier messages, and returns nil. A
// message that does not fit fails at once with errFull, after stop with
// errClosed: its done is called, and the error returned.
func (o *outbox) enqueue(m *outMsg) error {
	o.mu.Lock()
	c := o.chats[m.chatID]
	var err error
	switch {
	case o.stopped:
		err = errClosed
	case m.notice:
		if c != nil && c.notice || m.size() > maxNotice {
			err = errFull // the user is being told already
		}
	case !o.fitsLocked(c, m.size()):
		err = errFull
	}
	if err != nil {
		o.mu.Unlock()
		if m.done != nil {
			m.done(err)
		}
		return err
	}
	o.seq++
	m.seq = o.seq
	if c == nil {
		c = &chatOut{}
		o.chats[m.chatID] = c
	}
	if m.notice {
		c.notice = true
	} else {
		c.n++
		c.bytes += m.size()
		o.n++
		o.bytes += m.size()
	}
	c.queue = append(c.queue, m)
	o.queued++
	o.mu.Unlock()
	o.poke()
	return nil
}

// fits reports whether a message of size bytes to the chat would be
// taken now.
func (o *outbox) fits(chat int64, size int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.fitsLocked(o.chats[chat], size)
}

func (o *outbox) fitsLocked(c *chatOut, size int) bool {
	l := &o.limits
	if o.n+1 > l.Messages || o.bytes+size > l.Bytes {
		return false
	}
	var n, bytes int // of the chat: none if it has nothing queued
	if c != nil {
		n, bytes = c.n, c.bytes
	}
	return n+1 <= l.ChatMessages && bytes+size <= l.ChatBytes
}

// settleLocked forgets m, done with (delivered or failed), from the
// bounds.
func (o *outbox) settleLocked(c *chatOut, m *outMsg) {
	if m.notice {
		c.notice = false
		return
	}
	c.n--
	c.bytes -= m.size()
	o.n--
	o.bytes -= m.size()
}

func (o *outbox) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// loop starts each send when its chat and the overall pace allow it: of the
// chats that may send now, the one whose first message is oldest.
func (o *outbox) loop(ctx context.Context) {
	defer close(o.done)
	var nextAny time.Time // earliest start of any send
	for {
		o.mu.Lock()
		now := o.clock.Now()
		var (
			best   *chatOut
			bestAt time.Time
		)
		for id, c := range o.chats {
			if c.busy {
				continue
			}
			if len(c.queue) == 0 {
				if !now.Before(c.next) {
					delete(o.chats, id) // idle and owes no pause
				}
				continue
			}
			at := c.next
			if at.Before(now) {
				at = now
			}
			if best == nil || at.Before(bestAt) || at.Equal(bestAt) && c.queue[0].seq < best.queue[0].seq {
				best, bestAt = c, at
			}
		}
		var wait time.Duration = -1 // -1: until poked
		if best != nil && o.inflight < maxInFlight {
			if bestAt.Before(nextAny) {
				bestAt = nextAny
			}
			if bestAt.Before(o.paused) {
				bestAt = o.paused
			}
			if wait = bestAt.Sub(now); wait <= 0 {
				m := best.queue[0]
				best.queue[0] = nil
				best.queue = best.queue[1:]
				best.busy = true
				m.started = now
				best.next = now.Add(o.chatEvery)
				nextAny = now.Add(o.every)
				o.queued--
				o.inflight++
				o.sends.Add(1)
				o.mu.Unlock()
				go o.deliver(ctx, best, m)
				continue
			}
		}
		o.mu.Unlock()

		var tc <-chan time.Time
		if wait > 0 {
			tc = o.clock.After(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		case <-tc:
		}
	}
}

// deliver sends m, then settles it: done, or back at the head of its
// chat's queue after a 429 (not before retry_after) or a transient error
// (with a growing pause).
func (o *outbox) deliver(ctx context.Context, c *chatOut, m *outMsg) {
	defer o.sends.Done()
	err := o.send(ctx, m)

	var tooMany *tgbot.TooManyRequestsError
	retry := time.Duration(0)
	flood := false
	switch {
	case err == nil, ctx.Err() != nil:
	case errors.As(err, &tooMany) && m.n429 < max429:
		m.n429++
		flood = true
		retry = time.Duration(max(tooMany.RetryAfter, 1)) * time.Second
		o.logger.LogAttrs(ctx, slog.LevelWarn, "telegram: flood control; pausing every send",
			slog.Int64("chat_id", m.chatID), slog.Int("retry_after", tooMany.RetryAfter))
	case transient(err) && m.tries+1 < maxTries:
		m.tries++
		retry = o.backoff << m.tries
		o.logger.LogAttrs(ctx, slog.LevelWarn, "telegram: send failed; will retry",
			slog.Int64("chat_id", m.chatID), slog.Int("try", m.tries), slog.String("error", err.Error()))
	default:
		o.logger.LogAttrs(ctx, slog.LevelWarn, "telegram: send failed",
			slog.Int64("chat_id", m.chatID), slog.String("error", err.Error()))
	}

	o.mu.Lock()
	c.busy = false
	o.inflight--
	if retry > 0 {
		c.queue = append([]*outMsg{m}, c.queue...)
		c.next = o.clock.Now().Add(retry)
		if flood && c.next.After(o.paused) {
			// Flood limits are per bot: every chat waits.
			o.paused = c.next
		}
		o.queued++
	} else {
		o.settleLocked(c, m)
	}
	o.mu.Unlock()
	o.poke()
	if retry == 0 && m.done != nil {
		m.done(err)
	}
}

// transient reports whether a failed send may succeed if tried again: not
// when the Bot API refused it (bad request, blocked by the user, bad
// token, unknown chat).
func transient(err error) bool {
	for _, e := range []error{tgbot.ErrorBadRequest, tgbot.ErrorForbidden, tgbot.ErrorUnauthorized, tgbot.ErrorNotFound, tgbot.ErrorConflict} {
		if errors.Is(err, e) {
			return false
		}
	}
	var migrate *tgbot.MigrateError
	return !errors.As(err, &migrate)
}

// pending returns the number of messages not yet settled.
func (o *outbox) pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.queued + o.inflight
}

// stop sends what is queued until ctx ends, then stops: sends in flight
// are canceled, and every message not delivered fails with errClosed (or
// the send's error). Messages enqueued after stop fail at once.
func (o *outbox) stop(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for o.pending() > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	o.mu.Lock()
	o.stopped = true
	o.mu.Unlock()
	o.cancel()
	<-o.done
	o.sends.Wait()

	o.mu.Lock()
	var left []*outMsg
	for id, c := range o.chats {
		left = append(left, c.queue...)
		delete(o.chats, id)
	}
	o.queued, o.n, o.bytes = 0, 0, 0
	o.mu.Unlock()
	for _, m := range left {
		if m.done != nil {
			m.done(errClosed)
		}
	}
}
