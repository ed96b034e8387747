package telegram

import (
	"testing"
	"time"
)

func TestWhen(t *testing.T) {
	now := time.Date(2030, 3, 17, 15, 27, 30, 0, time.UTC)
	for _, tc := range []struct {
		wait time.Duration
		want string
	}{
		{0, "in 1 s, at 15:27:31 UTC"},
		{400 * time.Millisecond, "in 1 s, at 15:27:31 UTC"},
		{42 * time.Second, "in 42 s, at 15:28:12 UTC"},
		{time.Minute, "in 1 min, at 15:29 UTC"},
		{14 * time.Minute, "in 14 min, at 15:42 UTC"},
		{13*time.Minute + 40*time.Second, "in 14 min, at 15:42 UTC"},
		{3*time.Hour + 5*time.Minute, "in 3 h 5 min, at 18:33 UTC"},
		{2 * time.Hour, "in 2 h, at 17:28 UTC"},
		{9 * time.Hour, "in 9 h, at 00:28 UTC tomorrow"},
		{50 * time.Hour, "in 50 h, at 17:28 UTC on Tue 19 Mar"},
	} {
		if got := when(now, tc.wait); got != tc.want {
			t.Errorf("when(%v) = %q, want %q", tc.wait, got, tc.want)
		}
	}
	// Shown in UTC whatever the decision's location.
	if got, want := when(now.In(time.FixedZone("X", 3600)), time.Minute), "in 1 min, at 15:29 UTC"; got != want {
		t.Errorf("when in another zone = %q, want %q", got, want)
	}
}

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct{ text, cmd, arg string }{
		{"a cat", "", ""},
		{"/start", "start", ""},
		{"/Model@sluice_bot  sluice-ultra ", "model", "sluice-ultra"},
		{"/link\nAbC", "link", "AbC"},
		{"/", "/", ""},
	} {
		cmd, arg := parseCommand(tc.text)
		if cmd != tc.cmd || arg != tc.arg {
			t.Errorf("parseCommand(%q) = %q, %q; want %q, %q", tc.text, cmd, arg, tc.cmd, tc.arg)
		}
	}
}
