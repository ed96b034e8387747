package http_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	sluicehttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/quota"
)

// TestRouting checks that unknown routes and wrong methods answer JSON.
func TestRouting(t *testing.T) {
	h := newHarness(t)
	res := h.do("GET", "/nope", "", "")
	wantStatus(t, res, 404)
	golden(t, "not_found", res.Body)
	for _, p := range []string{"/v1/models/", "/v1//models", "/v1/../admin/plans", "/admin/accounts/1/nope"} {
		res := h.do("GET", p, adminToken, "")
		wantStatus(t, res, 404)
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("GET %s: Content-Type %q, body %s", p, ct, res.Body)
		}
	}

	res = h.do("GET", "/v1/images/generations", "", "")
	wantStatus(t, res, 405)
	golden(t, "method_not_allowed", res.Body)
	if got := res.Header.Get("Allow"); got != "POST" {
		t.Errorf("Allow = %q, want POST", got)
	}
	res = h.do("PATCH", "/admin/accounts/7/limits", adminToken, "")
	wantStatus(t, res, 405)
	if got := res.Header.Get("Allow"); got != "PUT, DELETE" {
		t.Errorf("Allow = %q, want PUT, DELETE", got)
	}
	res = h.do("POST", "/openai/v1/models", "", "")
	wantStatus(t, res, 405)
	golden(t, "openai_method_not_allowed", res.Body)
}

// TestRequestID checks that a sane X-Request-Id is echoed and anything else
// replaced.
func TestRequestID(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		in   string
		echo bool
	}{
		{"abc-123_XYZ", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"has space", false},
		{"semi;colon", false},
		{"", false},
	} {
		hdr := http.Header{}
		if tc.in != "" {
			hdr.Set("X-Request-Id", tc.in)
		}
		res := h.doHeader("GET", "/healthz", "", "", hdr)
		got := res.Header.Get("X-Request-Id")
		if tc.echo && got != tc.in || !tc.echo && (got == "" || got == tc.in) {
			t.Errorf("X-Request-Id %q → %q", tc.in, got)
		}
	}
	a := h.do("GET", "/healthz", "", "").Header.Get("X-Request-Id")
	b := h.do("GET", "/healthz", "", "").Header.Get("X-Request-Id")
	if a == b {
		t.Errorf("two requests got the id %q", a)
	}
}

// TestAccessLog checks the access log line, and that no secret reaches
// the log.
func TestAccessLog(t *testing.T) {
	h := newHarness(t)
	id, key := h.account("vip")
	res := h.doHeader("POST", "/v1/images/generations", key, `{"model":"sluice-sketch","prompt":"x"}`,
		http.Header{"X-Request-Id": {"trace-1"}})
	wantStatus(t, res, 200)
	wantStatus(t, h.do("GET", "/admin/plans", adminToken, ""), 200)
	logs := h.Logs.String()
	for _, secret := range []string{key, adminToken, "Bearer"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
	var found bool
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var line map[string]any
		json.Unmarshal(sc.Bytes(), &line)
		if line["msg"] == "request" && line["request_id"] == "trace-1" {
			found = true
			if line["route"] != "POST /v1/images/generations" || line["status"] != 200.0 ||
				line["account_id"] != float64(id) || line["method"] != "POST" || line["duration"] == nil {
				t.Errorf("access log line %s", sc.Text())
			}
		}
	}
	if !found {
		t.Errorf("no access log line for the request in\n%s", logs)
	}
}

// TestMetrics checks the metric names and their route labels.
func TestMetrics(t *testing.T) {
	h := newHarness(t)
	_, key := h.account("tiny")
	for range 3 {
		h.generate(key, 1)
	}
	h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		return nil, &sluice.Error{Code: sluice.EUPSTREAM, Message: "down"}
	}
	h.Clock.Add(time.Hour)
	h.generate(key, 1)
	h.do("GET", "/admin/accounts/12345", adminToken, "")
	h.do("GET", "/no/such/path", "", "")
	body := string(h.do("GET", "/metrics", "", "").Body)
	for _, want := range []string{
		`sluice_http_requests_total{code="200",route="POST /v1/images/generations"} 2`,
		`sluice_http_requests_total{code="429",route="POST /v1/images/generations"} 1`,
		`sluice_http_requests_total{code="502",route="POST /v1/images/generations"} 1`,
		`sluice_http_requests_total{code="404",route="GET /admin/accounts/{id}"} 1`,
		`sluice_http_requests_total{code="404",route="/"} 1`,
		`sluice_http_request_duration_seconds_count{route="POST /v1/images/generations"} 4`,
		`sluice_quota_decisions_total{outcome="admitted",plan="tiny"} 3`,
		`sluice_quota_decisions_total{outcome="rejected",plan="tiny"} 1`,
		`sluice_upstream_duration_seconds_count{outcome="ok"} 2`,
		`sluice_upstream_duration_seconds_count{outcome="error"} 1`,
		`sluice_quota_store_duration_seconds_count{op="take"} 4`,
		`sluice_quota_store_duration_seconds_count{op="refund"} 1`,
		`sluice_refunds_total{reason="upstream_error"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(body, "/no/such/path") || strings.Contains(body, "12345") {
		t.Errorf("a raw path is a label")
	}
}

// TestHealth checks /healthz and /readyz.
func TestHealth(t *testing.T) {
	h := newHarness(t)
	res := h.do("GET", "/healthz", "", "")
	wantStatus(t, res, 200)
	if string(res.Body) != `{"status":"ok"}`+"\n" {
		t.Errorf("healthz = %s", res.Body)
	}
	res = h.do("GET", "/readyz", "", "")
	wantStatus(t, res, 200)
	if string(res.Body) != `{"checks":{"accounts":"ok","quota":"ok"},"status":"ready"}`+"\n" {
		t.Errorf("readyz = %s", res.Body)
	}

	slow := newHarness(t, func(h *harness, _ *quota.Limiter) {
		h.S.Ready = []sluicehttp.ReadyCheck{
			{Name: "db", Ping: func(ctx context.Context) error { return nil }},
			{Name: "redis", Ping: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
			{Name: "stuck", Ping: func(ctx context.Context) error { time.Sleep(3 * time.Second); return nil }},
		}
	})
	start := time.Now()
	res = slow.do("GET", "/readyz", "", "")
	wantStatus(t, res, 503)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("readyz took %v", d)
	}
	if string(res.Body) != `{"checks":{"db":"ok","redis":"failed","stuck":"failed"},"status":"unavailable"}`+"\n" {
		t.Errorf("readyz = %s", res.Body)
	}
}

// TestGracefulClose checks that Close lets an in-flight request finish and
// then refuses new connections.
func TestGracefulClose(t *testing.T) {
	h := newHarness(t)
	started := make(chan struct{})
	h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		return okImages(req.N), nil
	}
	_, key := h.account("vip")
	done := make(chan *response)
	go func() { done <- h.generate(key, 1) }()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.S.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	res := <-done
	wantStatus(t, res, 200)
	if _, err := http.Get(h.S.URL() + "/healthz"); err == nil {
		t.Errorf("the server still answers after Close")
	}
}

// TestCloseDeadline checks that Close gives up on requests when its context
// ends.
func TestCloseDeadline(t *testing.T) {
	h := newHarness(t)
	started := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		close(started)
		<-release
		return nil, errors.New("released")
	}
	_, key := h.account("vip")
	go func() {
		req, _ := http.NewRequest("POST", h.S.URL()+"/v1/images/generations", strings.NewReader(`{"model":"sluice-sketch","prompt":"x"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		if res, err := h.Client.Do(req); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := h.S.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("close = %v, want the deadline", err)
	}
}
