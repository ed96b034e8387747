package alert

import (
	"testing"
	"time"
)

// TestSign checks the signature against the example of the Standard
// Webhooks specification.
func TestSign(t *testing.T) {
	key := SecretKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	got := Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}

func TestSecretKey(t *testing.T) {
	for _, tc := range []struct{ secret, want string }{
		{"whsec_aGVsbG8=", "hello"},
		{"plain secret", "plain secret"},
		{"whsec_not base64!", "whsec_not base64!"}, // not base64: its own bytes
		{"", ""},
	} {
		if got := string(SecretKey(tc.secret)); got != tc.want {
			t.Errorf("SecretKey(%q) = %q, want %q", tc.secret, got, tc.want)
		}
	}
}

func TestThreshold(t *testing.T) {
	for _, tc := range []struct {
		limit int64
		pct   int
		want  int64
	}{
		{100, 80, 80}, {100, 100, 100}, {5, 80, 4}, {3, 80, 3}, {1, 1, 1}, {1, 100, 1},
		{1000, 80, 800}, {7, 50, 4}, {20, 80, 16}, {1 << 62, 100, 1 << 62}, {1<<63 - 1, 100, 1<<63 - 1},
		{1<<63 - 1, 1, 92233720368547759},
	} {
		if got := threshold(tc.limit, tc.pct); got != tc.want {
			t.Errorf("threshold(%d, %d) = %d, want %d", tc.limit, tc.pct, got, tc.want)
		}
	}
}

func TestClock(t *testing.T) {
	now := time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{now.Add(42 * time.Minute), "15:42 UTC"},
		{now.Add(42*time.Minute + time.Second), "15:43 UTC"},
		{now.Add(9 * time.Hour), "00:00 UTC tomorrow"},
		{now.Add(50 * time.Hour), "17:00 UTC on Tue 3 Mar"},
	} {
		if got := clock(now, tc.at); got != tc.want {
			t.Errorf("clock(%s) = %q, want %q", tc.at, got, tc.want)
		}
	}
}
