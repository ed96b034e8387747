package telegram_test

import (
	"context"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/telegram"
)

// TestSendText: a text for a user goes to their private chat through the
// outbox, not as a reply; after Close it is refused.
func TestSendText(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	if err := e.bot.SendText(4242, "You have used 4 of 5 images this hour on the Starter plan."); err != nil {
		t.Fatal(err)
	}
	m := e.api.WaitSentTo(4242, 1)[0]
	wantText(t, m, "You have used 4 of 5 images")
	if m.ReplyTo != 0 {
		t.Errorf("ReplyTo = %d, want none", m.ReplyTo)
	}
	if err := e.bot.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.bot.SendText(4242, "late"); err == nil {
		t.Error("SendText after Close succeeded")
	}
}

// usageLog keeps the outcome of every event it is handed.
type usageLog struct {
	mu  sync.Mutex
	got []string
}

func (u *usageLog) Record(e *sluice.UsageEvent) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := e.Channel + " " + e.KeyID + " " + e.Plan + " " + e.Window
	switch e.Outcome {
	case sluice.UsageAdmitted:
		s += " admitted"
	case sluice.UsageRejected:
		s += " rejected"
	}
	if e.Decision == nil || e.Units != 1 || e.AccountID == 0 {
		s += " (bad event)"
	}
	u.got = append(u.got, s)
}

// TestUsageDecisions: every decision of the bot reaches Usage, with its plan
// and the refusing window.
func TestUsageDecisions(t *testing.T) {
	u := &usageLog{}
	e := newEnv(t, func(b *telegram.Bot) { b.Usage = u })
	e.start()
	for i := 1; i <= 6; i++ { // Starter: 5 per hour
		e.say(77, "a lighthouse", i)
	}
	u.mu.Lock()
	got := u.got
	u.mu.Unlock()
	want := []string{
		"telegram telegram starter  admitted", "telegram telegram starter  admitted", "telegram telegram starter  admitted",
		"telegram telegram starter  admitted", "telegram telegram starter  admitted", "telegram telegram starter hour rejected",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}
