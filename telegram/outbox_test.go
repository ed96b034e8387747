package telegram

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	tgbot "github.com/go-telegram/bot"
)

// recorder is the Bot API behind an outbox: it records what arrives and
// fails as told.
type recorder struct {
	mu   sync.Mutex
	got  map[int64][]string
	fail func(m *outMsg, try int) error
	try  map[string]int
}

func (r *recorder) send(ctx context.Context, m *outMsg) error {
	time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.try[m.text]++
	if r.fail != nil {
		if err := r.fail(m, r.try[m.text]); err != nil {
			return err
		}
	}
	r.got[m.chatID] = append(r.got[m.chatID], m.text)
	return nil
}

func newTestOutbox(t *testing.T, r *recorder) *outbox {
	r.got, r.try = map[int64][]string{}, map[string]int{}
	o := newOutbox(r.send, time.Millisecond, time.Millisecond/10, OutboxLimits{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	o.backoff = time.Millisecond
	t.Cleanup(func() { o.stop(context.Background()) })
	return o
}

// TestOutboxOrder: messages to many chats, sent concurrently, arrive in
// each chat's order, all of them.
func TestOutboxOrder(t *testing.T) {
	r := &recorder{}
	o := newTestOutbox(t, r)
	var wg sync.WaitGroup
	const chats, per = 5, 20
	for c := range int64(chats) {
		for i := range per {
			wg.Add(1)
			o.enqueue(&outMsg{chatID: c, text: fmt.Sprintf("%d/%d", c, i), done: func(err error) {
				if err != nil {
					t.Errorf("chat %d message %d: %v", c, i, err)
				}
				wg.Done()
			}})
		}
	}
	wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range int64(chats) {
		if len(r.got[c]) != per {
			t.Fatalf("chat %d: %d messages, want %d", c, len(r.got[c]), per)
		}
		for i, text := range r.got[c] {
			if want := fmt.Sprintf("%d/%d", c, i); text != want {
				t.Fatalf("chat %d message %d is %q, want %q", c, i, text, want)
			}
		}
	}
}

// TestOutboxErrors: a refused message fails at once; a transient failure is
// retried, keeping the chat's order; one that keeps failing gives up after
// maxTries.
func TestOutboxErrors(t *testing.T) {
	r := &recorder{fail: func(m *outMsg, try int) error {
		switch {
		case m.text == "blocked":
			return fmt.Errorf("%w, Forbidden: bot was blocked by the user", tgbot.ErrorForbidden)
		case m.text == "flaky" && try == 1:
			return errors.New("connection reset by peer")
		case m.text == "down":
			return errors.New("connection refused")
		}
		return nil
	}}
	o := newTestOutbox(t, r)
	results := make(chan string, 10)
	for _, text := range []string{"blocked", "flaky", "after", "down"} {
		o.enqueue(&outMsg{chatID: 1, text: text, done: func(err error) {
			results <- fmt.Sprintf("%s: %v", text, err != nil)
		}})
	}
	want := map[string]bool{"blocked: true": true, "flaky: false": true, "after: false": true, "down: true": true}
	for range want {
		select {
		case got := <-results:
			if !want[got] {
				t.Errorf("unexpected outcome %q", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("outcomes missing")
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if got := r.got[1]; len(got) != 2 || got[0] != "flaky" || got[1] != "after" {
		t.Errorf("delivered %q, want flaky then after", got)
	}
	if r.try["blocked"] != 1 || r.try["down"] != maxTries {
		t.Errorf("tries: blocked %d, down %d; want 1, %d", r.try["blocked"], r.try["down"], maxTries)
	}
}
