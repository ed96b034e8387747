package client

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestParseRateLimitHeaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.Header
		want []WindowHeader
	}{
		{"the contract's example", header(
			"X-RateLimit-Limit-Hour", "100",
			"X-RateLimit-Remaining-Hour", "87",
			"X-RateLimit-Reset-Hour", "1709903600",
			"X-RateLimit-Limit-Day", "1000",
			"X-RateLimit-Remaining-Day", "934",
			"X-RateLimit-Reset-Day", "1709980000",
			"RateLimit-Policy", `"hour";q=100;w=3600, "day";q=1000;w=86400`,
			"RateLimit", `"hour";r=87;t=847, "day";r=934;t=77247`,
		), []WindowHeader{
			{Name: "hour", Limit: 100, Remaining: 87, Reset: 1709903600, ResetIn: 847, Length: time.Hour},
			{Name: "day", Limit: 1000, Remaining: 934, Reset: 1709980000, ResetIn: 77247, Length: 24 * time.Hour},
		}},
		{"the public page's example (no day reset, no IETF fields)", header(
			"X-RateLimit-Limit-Hour", "100",
			"X-RateLimit-Remaining-Hour", "87",
			"X-RateLimit-Limit-Day", "1000",
			"X-RateLimit-Remaining-Day", "934",
			"X-RateLimit-Reset-Hour", "1709903600",
		), []WindowHeader{
			{Name: "hour", Limit: 100, Remaining: 87, Reset: 1709903600, ResetIn: -1},
			{Name: "day", Limit: 1000, Remaining: 934, ResetIn: -1},
		}},
		{"IETF fields only, tokens for names", header(
			"RateLimit-Policy", `hour;q=5;w=10`,
			"RateLimit", `hour;r=0;t=7`,
		), []WindowHeader{{Name: "hour", Limit: 5, Remaining: 0, ResetIn: 7, Length: 10 * time.Second}}},
		{"X-RateLimit wins over RateLimit", header(
			"X-RateLimit-Remaining-Hour", "3",
			"RateLimit", `"hour";r=9;t=1`,
		), []WindowHeader{{Name: "hour", Limit: -1, Remaining: 3, ResetIn: 1}}},
		{"other windows, sorted after hour and day", header(
			"X-RateLimit-Remaining-Week", "1",
			"X-RateLimit-Remaining-Minute", "2",
			"X-RateLimit-Remaining-Day", "3",
		), []WindowHeader{
			{Name: "day", Limit: -1, Remaining: 3, ResetIn: -1},
			{Name: "minute", Limit: -1, Remaining: 2, ResetIn: -1},
			{Name: "week", Limit: -1, Remaining: 1, ResetIn: -1},
		}},
		{"no headers (Elite)", header("Content-Type", "application/json"), []WindowHeader{}},
		{"a window without Remaining is left out", header(
			"X-RateLimit-Limit-Hour", "100",
			"X-RateLimit-Reset-Hour", "1709903600",
		), []WindowHeader{}},
		{"malformed values are skipped", header(
			"X-RateLimit-Limit-Hour", "lots",
			"X-RateLimit-Remaining-Hour", "-4",
			"X-RateLimit-Remaining-Day", " 12 ",
			"X-RateLimit-Reset-Day", "1e9",
			"X-RateLimit-Remaining-", "5",
			"X-RateLimit-Remaining-Dé", "5",
			"X-RateLimit-Bogus-Hour", "5",
			"X-RateLimit-Remaining-Month", "99999999999999999999",
		), []WindowHeader{{Name: "day", Limit: -1, Remaining: 12, ResetIn: -1}}},
		{"malformed list members are skipped", header(
			"RateLimit", `"day";r=x;t=5, ;r=3, "min";r=2;t=-1;junk, "a,b";r=1, "hour;r=1`,
		), []WindowHeader{{Name: "min", Limit: -1, Remaining: 2, ResetIn: -1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseRateLimitHeaders(tc.h)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2024, 3, 8, 15, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"47", 47 * time.Second, true},
		{" 1 ", time.Second, true},
		{"0", 0, true},
		{"Fri, 08 Mar 2024 15:00:30 GMT", 30 * time.Second, true},
		{"Friday, 08-Mar-24 15:01:00 GMT", time.Minute, true}, // RFC 850
		{"Fri Mar  8 15:00:05 2024", 5 * time.Second, true},   // asctime
		{"Fri, 08 Mar 2024 14:00:00 GMT", 0, true},            // in the past
		{"99999999999999999999999", maxSeconds * time.Second, true},
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"5s", 0, false},
		{"soon", 0, false},
		{"Fri, 08 Mar 2024 15:00:30", 0, false},
	} {
		got, ok := ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzParseRateLimitHeaders: whatever the headers, parsing does not panic,
// and every window it returns is well formed.
func FuzzParseRateLimitHeaders(f *testing.F) {
	f.Add("X-RateLimit-Remaining-Hour", "87", `"hour";q=100;w=3600, "day";q=1000;w=86400`, `"hour";r=87;t=847, "day";r=934;t=77247`)
	f.Add("X-RateLimit-Reset-Day", "1709980000", `hour;q=5`, `hour;r=0;t=7`)
	f.Add("X-RateLimit-Limit-", "", `"a\"b";q=1`, `"",,;;==`)
	f.Add("x-ratelimit-remaining-min", "00000000000000001", `"min";w=99999999999999999999`, `"min";r=1;r=2`)
	f.Fuzz(func(t *testing.T, key, val, policy, limit string) {
		h := http.Header{}
		h[key] = []string{val}
		h["Ratelimit-Policy"] = []string{policy}
		h["Ratelimit"] = []string{limit}
		ws := ParseRateLimitHeaders(h)
		seen := map[string]bool{}
		for _, w := range ws {
			if !validName(w.Name) || strings.ToLower(w.Name) != w.Name {
				t.Fatalf("window name %q", w.Name)
			}
			if seen[w.Name] {
				t.Fatalf("window %q twice", w.Name)
			}
			seen[w.Name] = true
			if w.Remaining < 0 || w.Limit < -1 || w.Reset < 0 || w.ResetIn < -1 || w.Length < 0 {
				t.Fatalf("window %+v", w)
			}
		}
		// The view must take any of it without panicking.
		v := newView()
		now := time.Unix(1_700_000_000, 0)
		v.update(200, h, now, now)
		v.decide(1, now)
	})
}

// FuzzParseRetryAfter: no panic; a wait is never negative nor above the cap;
// delay-seconds round-trip.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"47", "0", "Fri, 08 Mar 2024 15:00:30 GMT", "Friday, 08-Mar-24 15:01:00 GMT", "-1", "1e3", "", "99999999999999999999"} {
		f.Add(s, int64(1709910000))
	}
	f.Fuzz(func(t *testing.T, v string, now int64) {
		d, ok := ParseRetryAfter(v, time.Unix(now%(1<<40), 0))
		if !ok {
			if d != 0 {
				t.Fatalf("not ok but %v", d)
			}
			return
		}
		if d < 0 || d > maxSeconds*time.Second {
			t.Fatalf("ParseRetryAfter(%q) = %v", v, d)
		}
	})
}
