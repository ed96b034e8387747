package telegram_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice/telegram"
	"github.com/sluicehq/sluice/telegram/telegramtest"
)

// TestNativeFeel: the command menu is set at start; /models answers with a
// keyboard of the models the plan may use, whose buttons choose the model
// (callback query answered, choice kept with the account); /usage draws
// bars; the over-quota reply has an Upgrade button.
func TestNativeFeel(t *testing.T) {
	e := newEnv(t, func(b *telegram.Bot) { b.UpgradeURL = "https://example.com/pricing" })
	e.start()
	const user = 96

	var cmds []struct{ Command, Description string }
	if err := json.Unmarshal([]byte(e.api.Commands()), &cmds); err != nil {
		t.Fatalf("setMyCommands: %q: %v", e.api.Commands(), err)
	}
	var names []string
	for _, c := range cmds {
		names = append(names, c.Command)
	}
	if diff := cmp.Diff([]string{"usage", "models", "plan", "link", "help"}, names); diff != "" {
		t.Errorf("commands menu (-want +got):\n%s", diff)
	}

	n := 1
	models := e.say(user, "/models", n)
	want := [][]telegramtest.Button{
		{{Text: "✓ sluice-sketch", CallbackData: "model:sluice-sketch"}},
		{{Text: "sluice-mosaic", CallbackData: "model:sluice-mosaic"}},
	}
	if diff := cmp.Diff(want, models.Buttons()); diff != "" {
		t.Fatalf("/models keyboard (-want +got):\n%s", diff)
	}
	steps := []struct {
		data   string
		answer string // of answerCallbackQuery
		chat   string // the message in the chat; "" for none
		model  string // the account's model after
	}{
		{"model:sluice-mosaic", "Now using sluice-mosaic", "now use sluice-mosaic", "sluice-mosaic"},
		{"model:sluice-studio", "The Starter plan can't use sluice-studio.", "", "sluice-mosaic"},
		{"model:nope", "That model is gone. /models lists them.", "", "sluice-mosaic"},
		{"junk", "", "", "sluice-mosaic"},
	}
	for i, st := range steps {
		e.api.Push(e.api.Callback(user, models, 1, st.data))
		deadline := time.Now().Add(10 * time.Second)
		for len(e.api.Answers()) < i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("step %d: callback query not answered", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if got := e.api.Answers()[i].Text; got != st.answer {
			t.Errorf("step %d: answered %q, want %q", i, got, st.answer)
		}
		if st.chat != "" {
			n++
			wantText(t, e.api.WaitSentTo(user, n)[n-1], st.chat)
		}
		if got := e.accountOf(user).TelegramModel; got != st.model {
			t.Errorf("step %d: model %q, want %q", i, got, st.model)
		}
	}
	n++
	if got := e.say(user, "/models", n).Buttons()[1][0].Text; got != "✓ sluice-mosaic" {
		t.Errorf("after choosing: button %q", got)
	}

	n++
	wantPhoto(t, e.say(user, "a kite", n))
	n++
	wantText(t, e.say(user, "/usage", n), "▰▰▱▱▱▱▱▱▱▱ 1/5", "▱ 1/20")
	for range 4 {
		n++
		wantPhoto(t, e.say(user, "a kite", n))
	}
	n++
	over := e.say(user, "one too many", n)
	wantText(t, over, "Hourly limit reached")
	if diff := cmp.Diff([][]telegramtest.Button{{{Text: "Upgrade", URL: "https://example.com/pricing"}}}, over.Buttons()); diff != "" {
		t.Errorf("over-quota keyboard (-want +got):\n%s", diff)
	}
	if !strings.Contains(e.api.SentTo(user)[n-2].Text, "0 of 5 left this hour") {
		t.Errorf("the last caption does not say what is left: %q", e.api.SentTo(user)[n-2].Text)
	}
}
