package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go"
	"github.com/openai/openai-go/option"
)

// clock is a settable time for the quota limiter, so that headers and
// retry_after can be checked exactly.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// gateway is a running Main on 127.0.0.1:0.
type gateway struct {
	t     *testing.T
	m     *Main
	url   string
	admin string
	clock *clock
	out   *bytes.Buffer
}

// startMain runs the real Main with a temporary data directory and the given
// environment (SLUICE_* overrides), on a settable clock at a whole second.
func startMain(t *testing.T, data string, env map[string]string) *gateway {
	t.Helper()
	if data == "" {
		data = t.TempDir()
	}
	env["SLUICE_ADMIN_TOKEN"] = "test-admin-token"
	var out, errb bytes.Buffer
	m := NewMain(&out, &errb)
	m.Getenv = func(k string) string { return env[k] }
	if err := m.ParseFlags([]string{"--addr", "127.0.0.1:0", "--data", data}); err != nil {
		t.Fatal(err)
	}
	m.Logger = nil
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Unix(1_900_000_000, 0)}
	m.Quota.Now = c.Now
	m.AuthQuota.Now = c.Now
	g := &gateway{t: t, m: m, url: m.Server.URL(), admin: env["SLUICE_ADMIN_TOKEN"], clock: c, out: &out}
	t.Cleanup(func() {
		if m.closers != nil {
			if err := m.Close(); err != nil {
				t.Error(err)
			}
		}
	})
	return g
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return v
}

func (g *gateway) do(method, path, token, body string) response {
	g.t.Helper()
	req, err := http.NewRequest(method, g.url+path, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// account creates an account on the plan and returns its id and a new key.
func (g *gateway) account(email, plan string) (id int64, key string) {
	g.t.Helper()
	r := g.do("POST", "/admin/accounts", g.admin, fmt.Sprintf(`{"email":%q,"plan":%q}`, email, plan))
	if r.status != 201 {
		g.t.Fatalf("create account: %d %s", r.status, r.body)
	}
	id = int64(r.json(g.t)["user_id"].(float64))
	return id, g.key(id)
}

func (g *gateway) key(id int64) string {
	g.t.Helper()
	r := g.do("POST", fmt.Sprintf("/admin/accounts/%d/keys", id), g.admin, `{"name":"test"}`)
	if r.status != 201 {
		g.t.Fatalf("create key: %d %s", r.status, r.body)
	}
	return r.json(g.t)["key"].(string)
}

func (g *gateway) generate(key string, n int) response {
	g.t.Helper()
	return g.do("POST", "/v1/images/generations", key, fmt.Sprintf(`{"model":"sluice-sketch","prompt":"a lighthouse","n":%d}`, n))
}

// wantHeaders checks the X-RateLimit-* and RateLimit fields against the
// expected remaining units and reset offsets (seconds after now).
func wantHeaders(t *testing.T, h http.Header, now time.Time, limH, remH, resetH, limD, remD, resetD int64) {
	t.Helper()
	want := map[string]string{
		"X-Ratelimit-Limit-Hour":     strconv.FormatInt(limH, 10),
		"X-Ratelimit-Remaining-Hour": strconv.FormatInt(remH, 10),
		"X-Ratelimit-Reset-Hour":     strconv.FormatInt(now.Unix()+resetH, 10),
		"X-Ratelimit-Limit-Day":      strconv.FormatInt(limD, 10),
		"X-Ratelimit-Remaining-Day":  strconv.FormatInt(remD, 10),
		"X-Ratelimit-Reset-Day":      strconv.FormatInt(now.Unix()+resetD, 10),
		"Ratelimit":                  fmt.Sprintf(`"hour";r=%d;t=%d, "day";r=%d;t=%d`, remH, resetH, remD, resetD),
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

// TestMainVIP walks a VIP account through its hour: 100 images with exact
// headers, the 429 of the public page at the 101st, an exact retry_after,
// and the next window.
func TestMainVIP(t *testing.T) {
	g := startMain(t, "", map[string]string{"SLUICE_LIMITS_WINDOWS_HOUR": "60s", "SLUICE_LIMITS_WINDOWS_DAY": "300s"})
	_, key := g.account("vip@example.com", "vip")
	start := g.clock.Now()
	for i := int64(1); i <= 100; i++ {
		r := g.generate(key, 1)
		if r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		wantHeaders(t, r.header, start, 100, 100-i, 60, 1000, 1000-i, 300)
		if t.Failed() {
			t.Fatalf("request %d", i)
		}
	}
	g.clock.Add(13*time.Second + 400*time.Millisecond)
	r := g.generate(key, 1)
	if r.status != 429 {
		t.Fatalf("101st: %d %s", r.status, r.body)
	}
	const body = `{"error":"rate_limit_exceeded","message":"Hourly limit reached: 100 requests/hour on VIP plan","retry_after":47,"plan":"vip","limit_hour":100,"limit_day":1000}`
	if got := strings.TrimSpace(string(r.body)); got != body {
		t.Fatalf("429 body\n got %s\nwant %s", got, body)
	}
	if got := r.header.Get("Retry-After"); got != "47" {
		t.Fatalf("Retry-After = %q, want 47", got)
	}
	wantHeaders(t, r.header, start.Add(13*time.Second), 100, 0, 47, 1000, 900, 287)
	// A second early is still too early; on the second, the window admits.
	g.clock.Add(46 * time.Second)
	if r := g.generate(key, 1); r.status != 429 || r.header.Get("Retry-After") != "1" {
		t.Fatalf("a second before retry_after: %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	g.clock.Add(time.Second)
	if r := g.generate(key, 1); r.status != 200 || r.header.Get("X-Ratelimit-Remaining-Hour") != "99" {
		t.Fatalf("at retry_after: %d, remaining %q: %s", r.status, r.header.Get("X-Ratelimit-Remaining-Hour"), r.body)
	}
}

// TestMainPlans: plans without API access get 403 with their headers; Elite
// gets no limit headers and is never limited.
func TestMainPlans(t *testing.T) {
	g := startMain(t, "", map[string]string{})
	for _, tc := range []struct {
		plan      string
		hour, day int64
		name      string
	}{{"starter", 5, 20, "Starter"}, {"basic", 30, 200, "Basic"}, {"pro", 60, 500, "Pro"}} {
		_, key := g.account(tc.plan+"@example.com", tc.plan)
		r := g.generate(key, 1)
		if r.status != 403 || r.json(t)["error"] != "api_access_not_included" || r.json(t)["plan"] != tc.plan {
			t.Fatalf("%s: %d %s", tc.plan, r.status, r.body)
		}
		wantHeaders(t, r.header, g.clock.Now(), tc.hour, tc.hour, 0, tc.day, tc.day, 0)
	}
	_, key := g.account("elite@example.com", "elite")
	for i := range 100 { // 400 images: more than any limited plan's hour
		r := g.do("POST", "/v1/images/generations", key, `{"model":"sluice-ultra","prompt":"x","n":4,"size":"64x64"}`)
		if r.status != 200 {
			t.Fatalf("elite request %d: %d %s", i, r.status, r.body)
		}
		for k := range r.header {
			if strings.Contains(strings.ToLower(k), "ratelimit") {
				t.Fatalf("elite got %s", k)
			}
		}
	}
}

// TestMainSharedAndChanged: two keys of one account share counters; a plan
// change and an override apply on the next request.
func TestMainSharedAndChanged(t *testing.T) {
	g := startMain(t, "", map[string]string{})
	id, k1 := g.account("a@example.com", "vip")
	k2 := g.key(id)
	g.generate(k1, 3)
	if r := g.generate(k2, 2); r.header.Get("X-Ratelimit-Remaining-Hour") != "95" {
		t.Fatalf("second key: remaining %q, want 95", r.header.Get("X-Ratelimit-Remaining-Hour"))
	}
	if r := g.do("PUT", fmt.Sprintf("/admin/accounts/%d/limits", id), g.admin, `{"hour":6,"day":null}`); r.status != 200 {
		t.Fatalf("override: %d %s", r.status, r.body)
	}
	r := g.generate(k1, 2)
	if r.status != 429 || r.header.Get("X-Ratelimit-Remaining-Hour") != "1" || r.header.Get("X-Ratelimit-Limit-Day") != "" {
		t.Fatalf("override: %d %v %s", r.status, r.header, r.body)
	}
	if !strings.Contains(string(r.body), `"limit_hour":6,"limit_day":null`) {
		t.Fatalf("override 429 body: %s", r.body)
	}
	g.do("DELETE", fmt.Sprintf("/admin/accounts/%d/limits", id), g.admin, "")
	if r := g.do("PUT", fmt.Sprintf("/admin/accounts/%d/plan", id), g.admin, `{"plan":"pro"}`); r.status != 200 {
		t.Fatalf("plan change: %d %s", r.status, r.body)
	}
	if r := g.generate(k2, 1); r.status != 403 || r.header.Get("X-Ratelimit-Limit-Hour") != "60" {
		t.Fatalf("after the move to Pro: %d, limit %q", r.status, r.header.Get("X-Ratelimit-Limit-Hour"))
	}
}

// TestMainRestart: counters survive a stop and a start on the same data
// directory, and the admin token is kept with mode 0600.
func TestMainRestart(t *testing.T) {
	data := t.TempDir()
	env := map[string]string{}
	g := startMain(t, data, env)
	id, key := g.account("r@example.com", "vip")
	g.generate(key, 4)
	g.generate(key, 3)
	if err := g.m.Close(); err != nil {
		t.Fatal(err)
	}
	g = startMain(t, data, map[string]string{})
	r := g.do("GET", "/v1/usage", key, "")
	if v := r.json(t); r.status != 200 || v["hour"].(map[string]any)["used"] != 7.0 {
		t.Fatalf("after restart: %d %s", r.status, r.body)
	}
	if r := g.do("GET", fmt.Sprintf("/admin/accounts/%d", id), g.admin, ""); r.status != 200 {
		t.Fatalf("account after restart: %d", r.status)
	}

	// Without SLUICE_ADMIN_TOKEN the token is generated once, 0600.
	var out bytes.Buffer
	m := NewMain(&out, io.Discard)
	m.Getenv = func(string) string { return "" }
	dir := t.TempDir()
	if err := m.ParseFlags([]string{"--addr", "127.0.0.1:0", "--data", dir}); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	fi, err := os.Stat(filepath.Join(dir, "admin-token"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v", fi, err)
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "admin-token"))
	if !strings.Contains(out.String(), strings.TrimSpace(string(tok))) || !strings.Contains(out.String(), "curl") {
		t.Fatalf("the first start does not print the token and a quickstart:\n%s", out.String())
	}
}

// TestMainDataLocked: a second gateway on the embedded counters of a
// running one fails at once, naming it; one started while it stops waits
// for it, then serves on the counters it wrote.
func TestMainDataLocked(t *testing.T) {
	// An upstream that holds a generation while hold is set, as a slow
	// one would, so that the first gateway's drain takes a while.
	var hold atomic.Bool
	inFlight, release := make(chan struct{}), make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hold.Load() {
			close(inFlight)
			<-release
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"created":1,"data":[{"b64_json":"aGVsbG8="}]}`)
	}))
	defer upstream.Close()
	data := t.TempDir()
	g := startMain(t, data, map[string]string{"SLUICE_UPSTREAM_URL": upstream.URL})
	_, key := g.account("l@example.com", "vip")
	g.generate(key, 3)

	second := func() (*Main, *syncBuffer) {
		m := NewMain(io.Discard, io.Discard)
		env := map[string]string{"SLUICE_ADMIN_TOKEN": "test-admin-token", "SLUICE_UPSTREAM_URL": upstream.URL}
		m.Getenv = func(k string) string { return env[k] }
		if err := m.ParseFlags([]string{"--addr", "127.0.0.1:0", "--data", data}); err != nil {
			t.Fatal(err)
		}
		logs := &syncBuffer{}
		m.Logger = slog.New(slog.NewTextHandler(logs, nil))
		return m, logs
	}
	pid := strconv.Itoa(os.Getpid())
	m, _ := second()
	err := m.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "serves one at a time") || !strings.Contains(err.Error(), "(process "+pid+")") {
		t.Fatalf("a second gateway on running counters: %v", err)
	}
	m.Close()

	// Stopping: the first gateway drains a generation in flight.
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock() // a failure below must not leave the upstream's handler, and its Close, waiting
	hold.Store(true)
	slow := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", g.url+"/v1/images/generations", strings.NewReader(`{"model":"sluice-sketch","prompt":"a lighthouse"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			slow <- 0
			return
		}
		res.Body.Close()
		slow <- res.StatusCode
	}()
	<-inFlight
	closed := make(chan error, 1)
	go func() { closed <- g.m.Close() }()
	lockFile := filepath.Join(data, "quota.db.lock")
	for b, _ := os.ReadFile(lockFile); !strings.Contains(string(b), pid+" stopping"); b, _ = os.ReadFile(lockFile) {
		time.Sleep(10 * time.Millisecond)
	}
	m, logs := second()
	started := make(chan error, 1)
	go func() { started <- m.Run(context.Background()) }()
	defer m.Close()
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-started:
		t.Fatalf("a gateway started while the one before it drained: %v", err)
	default:
	}
	if !strings.Contains(logs.String(), "is stopping; waiting for it") || !strings.Contains(logs.String(), "pid="+pid) {
		t.Errorf("the waiting gateway logged %q", logs.String())
	}
	unblock()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if status := <-slow; status != http.StatusOK {
		t.Errorf("the generation in flight during the stop: %d, want 200", status)
	}
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second gateway did not start once the first stopped")
	}
	g2 := &gateway{t: t, m: m, url: m.Server.URL()}
	if r := g2.do("GET", "/v1/usage", key, ""); r.json(t)["hour"].(map[string]any)["used"] != 4.0 {
		t.Fatalf("the second gateway's usage: %s", r.body)
	}
}

// TestMainBadConfig: an invalid configuration stops the start with a
// message that names the field.
func TestMainBadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sluice.yaml")
	os.WriteFile(path, []byte("limits:\n  algorithm: leaky\n"), 0o600)
	var errb bytes.Buffer
	if code := run([]string{"serve", "--config", path, "--data", dir}, io.Discard, &errb); code != 2 || !strings.Contains(errb.String(), "limits.algorithm") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	t.Setenv("SLUICE_LIMITS_WINDOWS_HOUR", "soon")
	if code := run([]string{"serve", "--data", dir}, io.Discard, &errb); code != 2 || !strings.Contains(errb.String(), "SLUICE_LIMITS_WINDOWS_HOUR") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}

// TestOpenAIClient: the official OpenAI Go library, pointed at sluice,
// generates an image, and sees a 429 as an API error with the code.
func TestOpenAIClient(t *testing.T) {
	g := startMain(t, "", map[string]string{})
	id, key := g.account("sdk@example.com", "vip")
	client := openai.NewClient(option.WithBaseURL(g.url+"/openai/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
	resp, err := client.Images.Generate(context.Background(), openai.ImageGenerateParams{
		Model:          "sluice-studio",
		Prompt:         "a lighthouse at dusk",
		N:              openai.Int(2),
		Size:           openai.ImageGenerateParamsSize256x256,
		ResponseFormat: openai.ImageGenerateParamsResponseFormatB64JSON,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != 2 {
		t.Fatalf("%d images, want 2", len(resp.Data))
	}
	raw, err := base64.StdEncoding.DecodeString(resp.Data[0].B64JSON)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 256 || b.Dy() != 256 {
		t.Fatalf("image is %v, want 256x256", b)
	}
	g.do("PUT", fmt.Sprintf("/admin/accounts/%d/limits", id), g.admin, `{"hour":2,"day":10}`)
	_, err = client.Images.Generate(context.Background(), openai.ImageGenerateParams{Model: "sluice-studio", Prompt: "again"})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Code != "rate_limit_exceeded" {
		t.Fatalf("over the limit: %v", err)
	}
}

// TestMainAlgorithms: limits.algorithm and limits.mode from the environment
// reach the limiter.
func TestMainAlgorithms(t *testing.T) {
	for _, tc := range []struct {
		alg, mode string
		status    int
		retry     string
	}{
		{"calendar", "enforce", 429, "20"},     // the clock is 40 s into a 60 s window
		{"token_bucket", "enforce", 429, "30"}, // one unit back every 60/2 s
		{"sliding", "shadow", 200, ""},         // would reject, lets through
	} {
		t.Run(tc.alg+"/"+tc.mode, func(t *testing.T) {
			g := startMain(t, "", map[string]string{"SLUICE_LIMITS_ALGORITHM": tc.alg, "SLUICE_LIMITS_MODE": tc.mode,
				"SLUICE_LIMITS_WINDOWS_HOUR": "60s"})
			id, key := g.account("alg@example.com", "vip")
			g.do("PUT", fmt.Sprintf("/admin/accounts/%d/limits", id), g.admin, `{"hour":2,"day":100}`)
			g.generate(key, 1)
			g.generate(key, 1)
			r := g.generate(key, 1)
			if r.status != tc.status || r.header.Get("Retry-After") != tc.retry || r.header.Get("X-Ratelimit-Remaining-Hour") != "0" {
				t.Fatalf("third request: %d, Retry-After %q, remaining %q: %s", r.status, r.header.Get("Retry-After"),
					r.header.Get("X-Ratelimit-Remaining-Hour"), r.body)
			}
		})
	}
}
