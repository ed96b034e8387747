package telegram_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/telegram"
)

// events is a UsageRecorder that keeps a copy of every event.
type events struct {
	mu  sync.Mutex
	got []sluice.UsageEvent
}

func (r *events) Record(e *sluice.UsageEvent) {
	c := *e
	c.Decision = nil
	r.mu.Lock()
	r.got = append(r.got, c)
	r.mu.Unlock()
}

func (r *events) list() []sluice.UsageEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sluice.UsageEvent(nil), r.got...)
}

// TestUsageRecorded: the bot records its decisions and refunds with channel
// and key "telegram", the model used and the quota store's time.
func TestUsageRecorded(t *testing.T) {
	rec := &events{}
	e := newEnv(t, func(b *telegram.Bot) { b.Usage = rec })
	e.start()
	const user = 11
	e.gen.set(func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		return nil, errUpstream
	})
	wantText(t, e.say(user, "a storm", 1), "nothing was charged")
	e.gen.set(nil)
	for i := 2; i <= 6; i++ {
		wantPhoto(t, e.say(user, fmt.Sprintf("prompt %d", i), i))
	}
	wantText(t, e.say(user, "one too many", 7), "Hourly limit reached")
	acct := e.accountOf(user).ID
	ev := func(o sluice.UsageOutcome, window string) sluice.UsageEvent {
		return sluice.UsageEvent{AccountID: acct, Plan: "starter", KeyID: "telegram", Channel: "telegram", Model: "sluice-sketch",
			Time: start, Outcome: o, Units: 1, Window: window}
	}
	want := []sluice.UsageEvent{ev(sluice.UsageAdmitted, ""), ev(sluice.UsageRefunded, "")}
	for range 5 {
		want = append(want, ev(sluice.UsageAdmitted, ""))
	}
	want = append(want, ev(sluice.UsageRejected, "hour"))
	if diff := cmp.Diff(want, rec.list(), cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}
