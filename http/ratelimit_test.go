package http

import (
	"net/http"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

func testDecision() sluice.Decision {
	now := time.Unix(1709902753, 400_000_000)
	d := sluice.Decision{Allowed: true, Time: now, Blocking: -1, N: 2}
	d.Windows[0] = sluice.WindowStatus{Name: "hour", Length: time.Hour, Limit: 100, Remaining: 87, Reset: time.Unix(1709903600, 0)}
	d.Windows[1] = sluice.WindowStatus{Name: "day", Length: 24 * time.Hour, Limit: 1000, Remaining: 934, Reset: time.Unix(1709980000, 0)}
	return d
}

// TestSetRateHeaders checks the header values against CONTRACT.md §4, and
// that a window without a limit sends none of its fields.
func TestSetRateHeaders(t *testing.T) {
	d := testDecision()
	h := http.Header{}
	setRateHeaders(h, &d)
	want := map[string]string{
		"X-RateLimit-Limit-Hour":     "100",
		"X-RateLimit-Remaining-Hour": "87",
		"X-RateLimit-Reset-Hour":     "1709903600",
		"X-RateLimit-Limit-Day":      "1000",
		"X-RateLimit-Remaining-Day":  "934",
		"X-RateLimit-Reset-Day":      "1709980000",
		"RateLimit-Policy":           `"hour";q=100;w=3600, "day";q=1000;w=86400`,
		"RateLimit":                  `"hour";r=87;t=847, "day";r=934;t=77247`,
	}
	if len(h) != len(want) {
		t.Errorf("got %d headers, want %d: %v", len(h), len(want), h)
	}
	for k, v := range want {
		if got := h[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}

	d.Windows[0].Limit = sluice.Unlimited
	h = http.Header{}
	setRateHeaders(h, &d)
	if len(h) != 5 || h["X-RateLimit-Limit-Hour"] != nil || h["RateLimit"][0] != `"day";r=934;t=77247` {
		t.Errorf("hour unlimited: %v", h)
	}
	d.Windows[1].Limit = sluice.Unlimited
	h = http.Header{}
	setRateHeaders(h, &d)
	if len(h) != 0 {
		t.Errorf("all unlimited: %v", h)
	}
}

func BenchmarkSetRateHeaders(b *testing.B) {
	d := testDecision()
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		clear(h)
		setRateHeaders(h, &d)
	}
}
