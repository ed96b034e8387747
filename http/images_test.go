package http_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/imagegen"
	"github.com/sluicehq/sluice/quota"
)

// withWindows sets seconds-long windows.
func withWindows(hour, day time.Duration) harnessOpt {
	return func(h *harness, _ *quota.Limiter) {
		h.S.Limits.Hour, h.S.Limits.Day = hour, day
	}
}

// step is one request of a walk through the windows: after advancing the
// clock, ask for n images and expect the status, the §4 headers and, on a
// 429, the body.
type step struct {
	advance time.Duration
	n       int
	status  int
	headers map[string]string // nil: no rate-limit headers at all
	body    string            // exact body of an error answer; "" skips
}

// run sends the steps with key, failing with got/want messages.
func run(t *testing.T, h *harness, key string, steps []step) {
	t.Helper()
	for i, st := range steps {
		h.Clock.Add(st.advance)
		res := h.generate(key, st.n)
		at := h.Clock.Now().Sub(T0)
		if res.Status != st.status {
			t.Fatalf("step %d (T0+%v, n=%d): status = %d, want %d; body %s", i, at, st.n, res.Status, st.status, res.Body)
		}
		want := st.headers
		if want == nil {
			want = map[string]string{}
		}
		if diff := cmp.Diff(want, rateHeaders(res)); diff != "" {
			t.Errorf("step %d (T0+%v, n=%d): headers (-want +got):\n%s", i, at, st.n, diff)
		}
		if st.body != "" && strings.TrimSpace(string(res.Body)) != st.body {
			t.Errorf("step %d (T0+%v): body\ngot:  %s\nwant: %s", i, at, res.Body, st.body)
		}
		if st.status == http.StatusTooManyRequests {
			var b struct {
				RetryAfter int64 `json:"retry_after"`
			}
			json.Unmarshal(res.Body, &b)
			if got := res.Header.Get("Retry-After"); got != fmt.Sprint(b.RetryAfter) || b.RetryAfter < 1 {
				t.Errorf("step %d: Retry-After = %q, body retry_after = %d", i, got, b.RetryAfter)
			}
		}
	}
}

// TestHeadersStepByStep walks a 2/hour, 3/day plan through windows of 3 and
// 10 seconds, checking every figure of every answer.
func TestHeadersStepByStep(t *testing.T) {
	const hour, day = 3 * time.Second, 10 * time.Second
	h := newHarness(t, withWindows(hour, day))
	_, key := h.account("tiny")
	at := func(s int) time.Time { return T0.Add(time.Duration(s) * time.Second) }
	hd := func(now, hr int, hreset int, dr int, dreset int) map[string]string {
		return headers(at(now), hour, day, 2, int64(hr), at(hreset), 3, int64(dr), at(dreset))
	}
	run(t, h, key, []step{
		{n: 1, status: 200, headers: hd(0, 1, 3, 2, 10)},
		{n: 1, status: 200, headers: hd(0, 0, 3, 1, 10)},
		{advance: time.Second, n: 1, status: 429, headers: hd(1, 0, 3, 1, 10),
			body: `{"error":"rate_limit_exceeded","message":"Hourly limit reached: 2 requests/hour on Tiny plan","retry_after":2,"plan":"tiny","limit_hour":2,"limit_day":3}`},
		// Asking for more than a window can ever hold is a 400, not a 429.
		{n: 4, status: 400, headers: hd(1, 0, 3, 1, 10),
			body: `{"error":"invalid_request","message":"n is 4 but the limit is 2 images/hour on Tiny plan; ask for fewer images per request.","field":"n"}`},
		{advance: 2 * time.Second, n: 1, status: 200, headers: hd(3, 1, 6, 0, 10)},
		{n: 1, status: 429, headers: hd(3, 1, 6, 0, 10),
			body: `{"error":"rate_limit_exceeded","message":"Daily limit reached: 3 requests/day on Tiny plan","retry_after":7,"plan":"tiny","limit_hour":2,"limit_day":3}`},
		// Both windows short (hour until T0+6, day until T0+10): the
		// message names the longer wait.
		{n: 2, status: 429, headers: hd(3, 1, 6, 0, 10),
			body: `{"error":"rate_limit_exceeded","message":"Daily limit reached: 3 requests/day on Tiny plan","retry_after":7,"plan":"tiny","limit_hour":2,"limit_day":3}`},
		{advance: 6 * time.Second, n: 1, status: 429, headers: hd(9, 2, 9, 0, 10),
			body: `{"error":"rate_limit_exceeded","message":"Daily limit reached: 3 requests/day on Tiny plan","retry_after":1,"plan":"tiny","limit_hour":2,"limit_day":3}`},
		// The retry_after of the last 429 admits.
		{advance: time.Second, n: 2, status: 200, headers: hd(10, 0, 13, 0, 13)},
		// Both short with equal waits: the first window is named.
		{n: 1, status: 429, headers: hd(10, 0, 13, 0, 13),
			body: `{"error":"rate_limit_exceeded","message":"Hourly limit reached: 2 requests/hour on Tiny plan","retry_after":3,"plan":"tiny","limit_hour":2,"limit_day":3}`},
	})
}

// TestPageExample reproduces the figures of CONTRACT.md §4 and the public
// page on the VIP plan with the default windows.
func TestPageExample(t *testing.T) {
	h := newHarness(t)
	_, key := h.account("vip")
	h.Clock.Set(T0.Add(-6400 * time.Second)) // the day's oldest units
	for range 13 {
		wantStatus(t, h.generate(key, 4), 200)
	}
	wantStatus(t, h.generate(key, 1), 200) // 53 units
	h.Clock.Set(T0)
	for range 3 {
		wantStatus(t, h.generate(key, 4), 200) // 65 units; 12 this hour
	}
	h.Clock.Set(T0.Add(2753 * time.Second))
	res := h.generate(key, 1)
	wantStatus(t, res, 200)
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
	if diff := cmp.Diff(want, rateHeaders(res)); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
}

// rawHeaderNames sends an image request over a plain TCP connection and
// returns the answer's header names exactly as they are on the wire
// (net/http's client would canonicalise them).
func rawHeaderNames(t *testing.T, h *harness, key string) []string {
	t.Helper()
	body := `{"model":"sluice-sketch","prompt":"x"}`
	conn, err := net.Dial("tcp", h.S.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"Content-Length: %d\r\nConnection: close\r\n\r\n%s", key, len(body), body)
	raw, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(string(raw), "\r\n\r\n")
	var names []string
	for _, line := range strings.Split(head, "\r\n")[1:] {
		name, _, _ := strings.Cut(line, ":")
		names = append(names, name)
	}
	return names
}

// TestHeaderSpelling checks that the names go on the wire as the page
// spells them.
func TestHeaderSpelling(t *testing.T) {
	h := newHarness(t)
	_, key := h.account("vip")
	names := rawHeaderNames(t, h, key)
	for _, want := range rateHeaderNames {
		if !slices.Contains(names, want) {
			t.Errorf("header %q not on the wire as spelled; got names %q", want, names)
		}
	}
}

// TestVIP429 spends the VIP hour at T0; 2753s later the 101st request gets
// the page's 429 byte for byte, and at T0+3600 the next window admits.
func TestVIP429(t *testing.T) {
	h := newHarness(t)
	_, key := h.account("vip")
	for i := range 100 {
		res := h.generate(key, 1)
		wantStatus(t, res, 200)
		if got, want := res.Header.Get("X-RateLimit-Remaining-Hour"), fmt.Sprint(99-i); got != want {
			t.Fatalf("request %d: Remaining-Hour = %s, want %s", i+1, got, want)
		}
	}
	h.Clock.Set(T0.Add(2753 * time.Second))
	res := h.generate(key, 1)
	wantStatus(t, res, 429)
	const page = `{"error":"rate_limit_exceeded","message":"Hourly limit reached: 100 requests/hour on VIP plan","retry_after":847,"plan":"vip","limit_hour":100,"limit_day":1000}`
	if got := strings.TrimSuffix(string(res.Body), "\n"); got != page {
		t.Errorf("429 body\ngot:  %s\nwant: %s", got, page)
	}
	golden(t, "rate_limit_hour", res.Body)
	if got := res.Header.Get("Retry-After"); got != "847" {
		t.Errorf("Retry-After = %q, want 847", got)
	}
	if got := res.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	want := headers(h.Clock.Now(), time.Hour, 24*time.Hour, 100, 0, T0.Add(time.Hour), 1000, 900, T0.Add(24*time.Hour))
	if diff := cmp.Diff(want, rateHeaders(res)); diff != "" {
		t.Errorf("429 headers (-want +got):\n%s", diff)
	}

	// One second early is still rejected; on time is admitted.
	h.Clock.Set(T0.Add(3599 * time.Second))
	wantStatus(t, h.generate(key, 1), 429)
	h.Clock.Set(T0.Add(3600 * time.Second))
	res = h.generate(key, 1)
	wantStatus(t, res, 200)
	if got := res.Header.Get("X-RateLimit-Remaining-Hour"); got != "99" {
		t.Errorf("new window: Remaining-Hour = %s, want 99", got)
	}
}

// TestDaily429 checks the daily message with its body in the golden file.
func TestDaily429(t *testing.T) {
	h := newHarness(t)
	_, key := h.account("vip")
	for hr := range 10 {
		h.Clock.Set(T0.Add(time.Duration(hr) * time.Hour))
		for range 25 {
			wantStatus(t, h.generate(key, 4), 200)
		}
	}
	h.Clock.Set(T0.Add(10 * time.Hour))
	res := h.generate(key, 1)
	wantStatus(t, res, 429)
	golden(t, "rate_limit_day", res.Body)
	if got, want := res.Header.Get("Retry-After"), "50400"; got != want {
		t.Errorf("Retry-After = %s, want %s", got, want)
	}
}

// TestPlans403 checks that plans without API access get 403 with their
// figures in the headers, untouched.
func TestPlans403(t *testing.T) {
	h := newHarness(t)
	for _, p := range sluice.DefaultPlans() {
		if p.API {
			continue
		}
		t.Run(p.ID, func(t *testing.T) {
			_, key := h.account(p.ID)
			res := h.generate(key, 1)
			wantStatus(t, res, 403)
			golden(t, "no_api_access_"+p.ID, res.Body)
			want := headers(T0, time.Hour, 24*time.Hour, int64(p.Hour), int64(p.Hour), T0, int64(p.Day), int64(p.Day), T0)
			if diff := cmp.Diff(want, rateHeaders(res)); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
		})
	}
}

// TestElite checks that unlimited windows send no headers and never limit,
// and that /v1/usage counts what they used (CONTRACT.md §6).
func TestElite(t *testing.T) {
	h := newHarness(t)
	_, key := h.account("elite")
	for range 300 {
		res := h.generate(key, 4)
		wantStatus(t, res, 200)
		if got := rateHeaders(res); len(got) != 0 {
			t.Fatalf("elite got rate-limit headers %v", got)
		}
	}
	res := h.do("GET", "/v1/usage", key, "")
	wantStatus(t, res, 200)
	if got, want := string(res.Body), `{"plan":"elite","hour":{"limit":null,"used":1200,"remaining":null,"reset":null},"day":{"limit":null,"used":1200,"remaining":null,"reset":null}}`+"\n"; got != want {
		t.Errorf("usage = %s, want %s", got, want)
	}
}

// TestOneHourUnlimited checks an override with one unlimited window: only
// the limited window's fields are sent, and limit_hour is null.
func TestOneHourUnlimited(t *testing.T) {
	h := newHarness(t)
	id, key := h.account("vip")
	if err := h.DB.SetOverride(context.Background(), id, &sluice.LimitOverride{Hour: sluice.Unlimited, Day: 2}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.generate(key, 2), 200)
	res := h.generate(key, 1)
	wantStatus(t, res, 429)
	golden(t, "rate_limit_day_override", res.Body)
	want := map[string]string{
		"X-RateLimit-Limit-Day":     "2",
		"X-RateLimit-Remaining-Day": "0",
		"X-RateLimit-Reset-Day":     fmt.Sprint(T0.Add(24 * time.Hour).Unix()),
		"RateLimit-Policy":          `"day";q=2;w=86400`,
		"RateLimit":                 `"day";r=0;t=86400`,
	}
	if diff := cmp.Diff(want, rateHeaders(res)); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
}

// TestKeysShareCounters checks that two keys of one account draw from one
// set of counters.
func TestKeysShareCounters(t *testing.T) {
	h := newHarness(t)
	id, key1 := h.account("tiny")
	key2 := h.key(id)
	wantStatus(t, h.generate(key1, 1), 200)
	res := h.generate(key2, 1)
	wantStatus(t, res, 200)
	if got := res.Header.Get("X-RateLimit-Remaining-Hour"); got != "0" {
		t.Errorf("second key: Remaining-Hour = %s, want 0", got)
	}
	wantStatus(t, h.generate(key1, 1), 429)
}

// TestPlanChangeAndOverride checks that an admin's changes apply on the
// next request.
func TestPlanChangeAndOverride(t *testing.T) {
	h := newHarness(t)
	id, key := h.account("starter")
	wantStatus(t, h.generate(key, 1), 403)

	res := h.do("PUT", fmt.Sprintf("/admin/accounts/%d/plan", id), adminToken, `{"plan":"tiny"}`)
	wantStatus(t, res, 200)
	res = h.generate(key, 1)
	wantStatus(t, res, 200)
	if got := res.Header.Get("X-RateLimit-Limit-Hour"); got != "2" {
		t.Errorf("after plan change: Limit-Hour = %s, want 2", got)
	}

	res = h.do("PUT", fmt.Sprintf("/admin/accounts/%d/limits", id), adminToken, `{"hour":5,"day":null}`)
	wantStatus(t, res, 200)
	res = h.generate(key, 1)
	wantStatus(t, res, 200)
	want := map[string]string{
		"X-RateLimit-Limit-Hour":     "5",
		"X-RateLimit-Remaining-Hour": "3",
		"X-RateLimit-Reset-Hour":     fmt.Sprint(T0.Add(time.Hour).Unix()),
		"RateLimit-Policy":           `"hour";q=5;w=3600`,
		"RateLimit":                  `"hour";r=3;t=3600`,
	}
	if diff := cmp.Diff(want, rateHeaders(res)); diff != "" {
		t.Errorf("after override (-want +got):\n%s", diff)
	}

	res = h.do("DELETE", fmt.Sprintf("/admin/accounts/%d/limits", id), adminToken, "")
	wantStatus(t, res, 200)
	res = h.generate(key, 1)
	wantStatus(t, res, 429) // tiny again: 2/hour, 3 used
	golden(t, "rate_limit_after_override_removed", res.Body)
}

// TestModelNotAllowed checks the starter-tier gate on a plan with API
// access but starter models only.
func TestModelNotAllowed(t *testing.T) {
	h := newHarness(t, func(h *harness, _ *quota.Limiter) {
		h.S.Plans = append(h.S.Plans, sluice.Plan{ID: "apistarter", Name: "API Starter", Hour: 5, Day: 20,
			Models: sluice.ModelsStarter, API: true})
	})
	_, key := h.account("apistarter")
	res := h.do("POST", "/v1/images/generations", key, `{"model":"sluice-studio","prompt":"x"}`)
	wantStatus(t, res, 403)
	golden(t, "model_not_allowed", res.Body)
	if got := res.Header.Get("X-RateLimit-Remaining-Hour"); got != "5" {
		t.Errorf("Remaining-Hour = %q, want 5 (nothing charged)", got)
	}
	res = h.do("POST", "/v1/images/generations", key, `{"model":"no-such-model","prompt":"x"}`)
	wantStatus(t, res, 404)
	golden(t, "model_not_found", res.Body)
	wantStatus(t, h.do("POST", "/v1/images/generations", key, `{"model":"sluice-mosaic","prompt":"x"}`), 200)

	// The model list marks what the plan may use.
	res = h.do("GET", "/v1/models", key, "")
	wantStatus(t, res, 200)
	golden(t, "models_apistarter", res.Body)
}

// upstream starts an OpenAI-compatible endpoint with the handler and
// returns a generator for it with a short timeout.
func upstream(t *testing.T, f http.HandlerFunc) sluice.ImageGenerator {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	u := imagegen.NewUpstream(srv.URL, "upstream-secret", 200*time.Millisecond, nil)
	t.Cleanup(u.CloseIdleConnections)
	return u
}

// TestRefunds checks that failures of the generator charge nothing.
func TestRefunds(t *testing.T) {
	var block = make(chan struct{})
	t.Cleanup(func() { close(block) })
	cases := []struct {
		name string
		gen  func(t *testing.T) sluice.ImageGenerator
	}{
		{"upstream500", func(t *testing.T) sluice.ImageGenerator {
			return upstream(t, func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, `{"error":{"message":"boom"}}`, 500)
			})
		}},
		{"upstreamTimeout", func(t *testing.T) sluice.ImageGenerator {
			return upstream(t, func(w http.ResponseWriter, r *http.Request) {
				// Read the body first: net/http notices a client that
				// went away only once the body is consumed.
				io.Copy(io.Discard, r.Body)
				select {
				case <-block:
				case <-r.Context().Done():
				}
			})
		}},
		{"plainError", func(t *testing.T) sluice.ImageGenerator {
			return &fakeGen{GenerateFn: func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
				return nil, errors.New("secret internal detail")
			}}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.S.Images = tc.gen(t)
			_, key := h.account("vip")
			wantStatus(t, h.generate(key, 1), 502)
			res := h.generate(key, 3)
			wantStatus(t, res, 502)
			golden(t, "upstream_"+tc.name, res.Body)
			if strings.Contains(string(res.Body), "secret") || strings.Contains(string(res.Body), "boom") {
				t.Errorf("body leaks the cause: %s", res.Body)
			}
			want := headers(T0, time.Hour, 24*time.Hour, 100, 100, T0, 1000, 1000, T0)
			if diff := cmp.Diff(want, rateHeaders(res)); diff != "" {
				t.Errorf("headers after refund (-want +got):\n%s", diff)
			}
		})
	}
}

// errReader fails after some bytes, like an upstream that dies mid-answer.
type errReader struct{ n int }

func (r *errReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("connection reset")
	}
	n := min(len(p), r.n)
	for i := range n {
		p[i] = ' '
	}
	r.n -= n
	return n, nil
}

// TestRelayFailureRefunds checks that a body that fails mid-relay refunds
// and breaks the connection rather than ending the answer cleanly.
func TestRelayFailureRefunds(t *testing.T) {
	h := newHarness(t)
	h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		return &sluice.ImageResult{Body: io.NopCloser(&errReader{n: 100 << 10}), ContentType: "application/json"}, nil
	}
	_, key := h.account("vip")
	req, _ := http.NewRequest("POST", h.S.URL()+"/v1/images/generations",
		strings.NewReader(`{"model":"sluice-sketch","prompt":"x"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := h.Client.Do(req)
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if err == nil {
		t.Fatal("a broken relay read as a whole answer")
	}
	h.Gen.GenerateFn = nil
	res2 := h.do("GET", "/v1/usage", key, "")
	if got := res2.Header.Get("X-RateLimit-Remaining-Hour"); got != "100" {
		t.Errorf("after a broken relay Remaining-Hour = %s, want 100", got)
	}
}

// TestPanicRefunds checks that a panic becomes a 500 JSON body and refunds.
func TestPanicRefunds(t *testing.T) {
	h := newHarness(t)
	h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		panic("generator exploded")
	}
	_, key := h.account("vip")
	res := h.generate(key, 2)
	wantStatus(t, res, 500)
	golden(t, "internal_error", res.Body)
	if strings.Contains(string(res.Body), "exploded") {
		t.Errorf("body leaks the panic: %s", res.Body)
	}
	if !strings.Contains(h.Logs.String(), "generator exploded") {
		t.Errorf("panic not logged")
	}
	h.Gen.GenerateFn = nil
	res = h.do("GET", "/v1/usage", key, "")
	if got := res.Header.Get("X-RateLimit-Remaining-Hour"); got != "100" {
		t.Errorf("after a panic Remaining-Hour = %s, want 100", got)
	}
}

// TestParallel sends 200 requests at once on one VIP account: exactly 100
// are admitted.
func TestParallel(t *testing.T) {
	h := newHarness(t)
	_, key := h.account("vip")
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		counts = map[int]int{}
	)
	for range 200 {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", h.S.URL()+"/v1/images/generations",
				strings.NewReader(`{"model":"sluice-sketch","prompt":"x"}`))
			req.Header.Set("Authorization", "Bearer "+key)
			res, err := h.Client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			mu.Lock()
			counts[res.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if diff := cmp.Diff(map[int]int{200: 100, 429: 100}, counts); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
}

// TestDemoGenerator runs a request through the built-in generator.
func TestDemoGenerator(t *testing.T) {
	h := newHarness(t)
	h.S.Images = &imagegen.Demo{}
	_, key := h.account("vip")
	res := h.do("POST", "/v1/images/generations", key, `{"model":"sluice-sketch","prompt":"a lighthouse","n":2,"size":"64x64"}`)
	wantStatus(t, res, 200)
	var out struct {
		Created int64
		Data    []struct {
			B64JSON string `json:"b64_json"`
		}
	}
	if err := json.Unmarshal(res.Body, &out); err != nil || len(out.Data) != 2 || out.Data[0].B64JSON == "" {
		t.Errorf("demo answer %.200s: %v", res.Body, err)
	}
}

// TestShadow checks shadow mode: over the limit is admitted, with headers.
func TestShadow(t *testing.T) {
	h := newHarness(t, func(h *harness, l *quota.Limiter) { l.Mode = quota.Shadow })
	_, key := h.account("tiny")
	for range 4 {
		wantStatus(t, h.generate(key, 1), 200)
	}
	res := h.do("GET", "/metrics", "", "")
	if !strings.Contains(string(res.Body), `sluice_quota_decisions_total{outcome="shadow",plan="tiny"} 2`) {
		t.Errorf("metrics lack the shadow decisions:\n%s", grep(string(res.Body), "sluice_quota_decisions_total"))
	}
}

// failingStore is a quota store that cannot be reached.
type failingStore struct{ sluice.QuotaStore }

func (failingStore) Take(context.Context, string, *sluice.Policy, int64, time.Time) (sluice.Decision, error) {
	return sluice.Decision{}, errors.New("dial tcp: connection refused")
}

func (failingStore) Peek(context.Context, string, *sluice.Policy, time.Time) (sluice.Decision, error) {
	return sluice.Decision{}, errors.New("dial tcp: connection refused")
}

func (failingStore) Ping(context.Context) error { return errors.New("dial tcp: connection refused") }

// TestQuotaUnavailable checks the fail-closed answer: 503 with Retry-After 1.
func TestQuotaUnavailable(t *testing.T) {
	h := newHarness(t, func(h *harness, l *quota.Limiter) { l.Store = failingStore{} })
	_, key := h.account("vip")
	res := h.generate(key, 1)
	wantStatus(t, res, 503)
	golden(t, "quota_unavailable", res.Body)
	if got := res.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1", got)
	}
	res = h.do("GET", "/readyz", "", "")
	wantStatus(t, res, 503)
	if got, want := string(res.Body), `{"checks":{"accounts":"ok","quota":"failed"},"status":"unavailable"}`+"\n"; got != want {
		t.Errorf("readyz = %s, want %s", got, want)
	}
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
