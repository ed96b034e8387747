package telegram

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	tgbot "github.com/go-telegram/bot"
)

// stepClock is an outbox clock that a test moves by steps: After fires
// once the clock has reached its deadline.
type stepClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []stepWaiter
}

type stepWaiter struct {
	at time.Time
	ch chan time.Time
}

func (c *stepClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, stepWaiter{c.now.Add(d), ch})
	return ch
}

func (c *stepClock) step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

// sendLog records the clock's time of every send, failing as told.
type sendLog struct {
	mu    sync.Mutex
	clock *stepClock
	at    []time.Time
	chats []int64
	fail  func(m *outMsg) error
}

func (l *sendLog) send(_ context.Context, m *outMsg) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		if err := l.fail(m); err != nil {
			return err
		}
	}
	// The pacing is the loop's: the instants it started the sends (this
	// goroutine may run a step of the clock later).
	l.at = append(l.at, m.started)
	l.chats = append(l.chats, m.chatID)
	return nil
}

// run steps the clock by 1/300 s until n messages are settled, and fails
// after 20 seconds of the test's time.
func (c *stepClock) run(t *testing.T, settled func() int, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for settled() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages settled", settled(), n)
		}
		time.Sleep(200 * time.Microsecond)
		c.step(time.Second / 300)
	}
}

// TestOutboxPacing: with the default pacing, on a controlled clock, two
// messages to one chat are at least a second apart and any two messages
// at least 1/30 s apart; a chat with many messages does not hold back the
// others, nor they it.
func TestOutboxPacing(t *testing.T) {
	c := &stepClock{now: time.Unix(1_900_000_000, 0)}
	l := &sendLog{clock: c}
	o := newOutbox(l.send, DefaultChatInterval, DefaultSendInterval, OutboxLimits{}, c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { o.stop(context.Background()) })
	var mu sync.Mutex
	settled := 0
	done := func(err error) {
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		settled++
		mu.Unlock()
	}
	for i := range 4 {
		o.enqueue(&outMsg{chatID: 1, text: fmt.Sprint("busy ", i), done: done})
	}
	for chat := range int64(60) {
		o.enqueue(&outMsg{chatID: 100 + chat, text: "one", done: done})
	}
	c.run(t, func() int { mu.Lock(); defer mu.Unlock(); return settled }, 64)

	l.mu.Lock()
	defer l.mu.Unlock()
	var busy []time.Time
	for i, at := range l.at {
		if i > 0 && at.Sub(l.at[i-1]) < DefaultSendInterval {
			t.Errorf("sends %d and %d are %v apart, under %v", i-1, i, at.Sub(l.at[i-1]), DefaultSendInterval)
		}
		if l.chats[i] == 1 {
			busy = append(busy, at)
		}
	}
	for i := 1; i < len(busy); i++ {
		if d := busy[i].Sub(busy[i-1]); d < DefaultChatInterval {
			t.Errorf("messages %d and %d of one chat are %v apart, under %v", i-1, i, d, DefaultChatInterval)
		}
	}
	// 60 single messages take 2 s at 30/s: the busy chat's second message
	// (due at 1 s, older than the others) goes among them, not after.
	if last := l.at[len(l.at)-1]; busy[1].After(last) || busy[1] == last {
		t.Errorf("the busy chat's second message waited for all the others")
	}
	if total := l.at[len(l.at)-1].Sub(l.at[0]); total < 3*DefaultChatInterval {
		t.Errorf("64 messages, 4 to one chat, in %v: under the 3 s the busy chat needs", total)
	}
}

// TestOutbox429PausesAll: a 429 with retry_after for one chat pauses every
// send of the bot until then.
func TestOutbox429PausesAll(t *testing.T) {
	c := &stepClock{now: time.Unix(1_900_000_000, 0)}
	first := true
	l := &sendLog{clock: c}
	var floodAt time.Time
	l.fail = func(m *outMsg) error {
		if first {
			first = false
			floodAt = c.Now()
			return &tgbot.TooManyRequestsError{Message: "Too Many Requests", RetryAfter: 3}
		}
		return nil
	}
	o := newOutbox(l.send, DefaultChatInterval, DefaultSendInterval, OutboxLimits{}, c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { o.stop(context.Background()) })
	var mu sync.Mutex
	settled := 0
	done := func(err error) {
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		settled++
		mu.Unlock()
	}
	o.enqueue(&outMsg{chatID: 1, text: "flooded", done: done})
	// Once the 429 is in, the other chats' messages come.
	deadline := time.Now().Add(20 * time.Second)
	for {
		o.mu.Lock()
		paused := !o.paused.IsZero()
		o.mu.Unlock()
		if paused {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no 429")
		}
		time.Sleep(time.Millisecond)
	}
	for chat := range int64(5) {
		o.enqueue(&outMsg{chatID: 10 + chat, text: "other", done: done})
	}
	c.run(t, func() int { mu.Lock(); defer mu.Unlock(); return settled }, 6)
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, at := range l.at {
		if at.Sub(floodAt) < 3*time.Second {
			t.Errorf("send %d to chat %d %v after a 429 with retry_after 3", i, l.chats[i], at.Sub(floodAt))
		}
	}
	if len(l.at) != 6 || l.chats[0] != 1 {
		t.Errorf("sent to %v; want the flooded chat first, then the 5 others", l.chats)
	}
}

// TestOutboxLimits: at a limit, per chat or overall, in messages or bytes,
// a message is refused at once (done called with errFull); a notice goes
// over the limits, one at a time per chat; settled messages free their
// room.
func TestOutboxLimits(t *testing.T) {
	release := make(chan struct{})
	send := func(ctx context.Context, m *outMsg) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	o := newOutbox(send, time.Millisecond, time.Millisecond/10,
		OutboxLimits{ChatMessages: 3, ChatBytes: 1000, Messages: 5, Bytes: 1500}, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { o.stop(context.Background()) })
	var failed []string
	var mu sync.Mutex
	msg := func(chat int64, text string, photo int) *outMsg {
		return &outMsg{chatID: chat, text: text, photo: make([]byte, photo), done: func(err error) {
			if err != nil {
				mu.Lock()
				failed = append(failed, text)
				mu.Unlock()
			}
		}}
	}
	steps := []struct {
		m    *outMsg
		want error
	}{
		{msg(9, "big", 998), errFull}, // over a chat's 1000 bytes, though it has nothing queued
		{msg(1, "a1", 0), nil},
		{msg(1, "a2", 0), nil},
		{msg(1, "a3", 0), nil},
		{msg(1, "a4", 0), errFull}, // 3 messages per chat
		{&outMsg{chatID: 1, text: "full!", notice: true}, nil},
		{&outMsg{chatID: 1, text: "full again", notice: true}, errFull}, // one notice at a time
		{msg(2, "b1", 900), nil},
		{msg(2, "b2", 200), errFull}, // 1000 bytes per chat
		{msg(3, "c1", 600), errFull}, // 1500 bytes overall
		{msg(3, "c1", 400), nil},
		{msg(4, "d1", 0), errFull}, // 5 messages overall
	}
	for i, st := range steps {
		if got := o.enqueue(st.m); got != st.want {
			t.Fatalf("step %d (%s): %v, want %v", i, st.m.text, got, st.want)
		}
	}
	mu.Lock()
	want := []string{"big", "a4", "b2", "c1", "d1"}
	if fmt.Sprint(failed) != fmt.Sprint(want) {
		t.Errorf("failed %v, want %v", failed, want)
	}
	mu.Unlock()
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for o.pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("messages not sent")
		}
		time.Sleep(time.Millisecond)
	}
	o.mu.Lock()
	n, b := o.n, o.bytes
	o.mu.Unlock()
	if n != 0 || b != 0 {
		t.Fatalf("after sending: %d messages, %d bytes counted", n, b)
	}
	if err := o.enqueue(msg(1, "again", 995)); err != nil { // 1000 bytes: the chat's whole room
		t.Fatalf("after sending: %v", err)
	}
}
