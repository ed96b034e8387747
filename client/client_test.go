package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice"
)

// fake is a scripted server: each request gets the next answer of the
// script (the last one again once the script is done), and is recorded.
type fake struct {
	t      *testing.T
	mu     sync.Mutex
	script []func(w http.ResponseWriter, r *http.Request)
	reqs   []recorded
	srv    *httptest.Server
}

type recorded struct {
	at   time.Time
	path string
	key  string // Idempotency-Key
	auth string
	body string
}

func newFake(t *testing.T, script ...func(w http.ResponseWriter, r *http.Request)) *fake {
	f := &fake{t: t, script: script}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		i := len(f.reqs)
		f.reqs = append(f.reqs, recorded{time.Now(), r.URL.Path, r.Header.Get("Idempotency-Key"), r.Header.Get("Authorization"), string(b)})
		answer := f.script[min(i, len(f.script)-1)]
		f.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

// answer writes a status, headers and a body.
func answer(status int, body string, kv ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < len(kv); i += 2 {
			w.Header().Set(kv[i], kv[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

const okImages = `{"created":1,"data":[{"b64_json":"aGVsbG8="}]}`

func ok() func(http.ResponseWriter, *http.Request) { return answer(200, okImages) }

var req = &ImageRequest{Model: "sluice-sketch", Prompt: "a lighthouse"}

func newClient(f *fake, opts ...Option) *Client {
	return New(f.srv.URL, "slk_test", append([]Option{WithBackoff(5*time.Millisecond, 20*time.Millisecond)}, opts...)...)
}

func TestGenerateImages(t *testing.T) {
	f := newFake(t, ok())
	c := newClient(f)
	res, err := c.GenerateImages(context.Background(), &ImageRequest{Model: "m", Prompt: "p", N: 1, Size: "64x64"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := res.Data[0].Bytes()
	if err != nil || string(b) != "hello" {
		t.Fatalf("image %q, %v", b, err)
	}
	r := f.requests()[0]
	if r.path != "/v1/images/generations" || r.auth != "Bearer slk_test" || len(r.key) != 32 {
		t.Fatalf("request %+v", r)
	}
	if want := `{"model":"m","prompt":"p","n":1,"size":"64x64","response_format":"b64_json"}`; r.body != want {
		t.Fatalf("body %s, want %s", r.body, want)
	}
	// A base URL ending in /v1 is the API root.
	f2 := newFake(t, answer(200, `{"object":"list","data":[{"id":"a","object":"model","owned_by":"sluice","tier":"starter","available":true}]}`))
	ms, err := New(f2.srv.URL+"/openai/v1/", "k").Models(context.Background())
	if err != nil || len(ms) != 1 || ms[0] != (Model{ID: "a", OwnedBy: "sluice", Tier: "starter", Available: true}) {
		t.Fatalf("models %+v, %v", ms, err)
	}
	if p := f2.requests()[0].path; p != "/openai/v1/models" {
		t.Fatalf("path %s", p)
	}
}

func TestUsage(t *testing.T) {
	f := newFake(t, answer(200, `{"plan":"vip","hour":{"limit":100,"used":13,"remaining":87,"reset":1709903600},"day":{"limit":null,"used":13,"remaining":null,"reset":null}}`,
		"X-RateLimit-Limit-Hour", "100", "X-RateLimit-Remaining-Hour", "87", "X-RateLimit-Reset-Hour", "1709903600"))
	c := newClient(f)
	u, err := c.Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := &Usage{Plan: "vip",
		Hour: UsageWindow{Limit: 100, Used: 13, Remaining: 87, Reset: time.Unix(1709903600, 0)},
		Day:  UsageWindow{Limit: -1, Used: 13, Remaining: -1}}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Fatalf("(-want +got)\n%s", diff)
	}
	if q := c.Quota(); !q.Known || len(q.Windows) != 1 || q.Windows[0].Remaining != 87 {
		t.Fatalf("the usage call did not update the view: %+v", q)
	}
}

// TestErrors: a 4xx other than 429 is not retried, and its typed error
// carries the §5 fields, in either shape.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		status     int
		want       Error
	}{
		{"flat", `{"error":"invalid_request","message":"n must be between 1 and 4.","field":"n"}`, 400,
			Error{Status: 400, Code: "invalid_request", Message: "n must be between 1 and 4.", Field: "n"}},
		{"openai", `{"error":{"message":"No.","type":"permission_error","code":"model_not_allowed","param":null,"plan":"starter","model":"x"}}`, 403,
			Error{Status: 403, Code: "model_not_allowed", Message: "No.", Plan: "starter", Model: "x"}},
		{"not json", `<html>bad gateway key</html>`, 401,
			Error{Status: 401, Code: "invalid_api_key", Message: "The server answered 401 without a sluice error body."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, answer(tc.status, tc.body))
			_, err := newClient(f).GenerateImages(context.Background(), req)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T)", err, err)
			}
			if diff := cmp.Diff(&tc.want, e); diff != "" {
				t.Fatalf("(-want +got)\n%s", diff)
			}
			if sluice.ErrorCode(err) != tc.want.Code {
				t.Fatalf("sluice.ErrorCode = %q", sluice.ErrorCode(err))
			}
			if n := len(f.requests()); n != 1 {
				t.Fatalf("%d requests, want 1", n)
			}
		})
	}
}

// Test429HTTPDate: a Retry-After given as an HTTP-date is waited out by the
// server's clock (its Date), never less, and the retry replays the body
// with the same Idempotency-Key.
func Test429HTTPDate(t *testing.T) {
	var retryAt time.Time
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().Truncate(time.Second)
		retryAt = now.Add(time.Second)
		w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
		w.Header().Set("Retry-After", retryAt.UTC().Format(http.TimeFormat))
		w.WriteHeader(429)
		io.WriteString(w, `{"error":"rate_limit_exceeded","message":"Hourly limit reached: 100 requests/hour on VIP plan","retry_after":1,"plan":"vip","limit_hour":100,"limit_day":1000}`)
	}, ok())
	c := newClient(f)
	if _, err := c.GenerateImages(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	rs := f.requests()
	if len(rs) != 2 {
		t.Fatalf("%d requests, want 2", len(rs))
	}
	if rs[1].at.Before(retryAt) {
		t.Fatalf("retried at %v, before the Retry-After %v", rs[1].at, retryAt)
	}
	if rs[0].key != rs[1].key || rs[0].body != rs[1].body || rs[0].body == "" {
		t.Fatalf("the retry is not the same request: %+v", rs)
	}
	if s := c.Stats(); s.RateLimited != 1 || s.Retries != 1 || s.Requests != 2 {
		t.Fatalf("stats %+v", s)
	}
	// Another call is another logical request: another key.
	c.GenerateImages(context.Background(), req)
	if rs := f.requests(); rs[2].key == rs[0].key {
		t.Fatal("two calls sent the same Idempotency-Key")
	}
}

// Test429Caps: a Retry-After beyond WithMaxWait or beyond the context's
// deadline returns the 429 at once instead of retrying early or sleeping
// past the deadline.
func Test429Caps(t *testing.T) {
	body := `{"error":"rate_limit_exceeded","message":"Hourly limit reached: 100 requests/hour on VIP plan","retry_after":847,"plan":"vip","limit_hour":100,"limit_day":1000}`
	for _, tc := range []struct {
		name string
		opts []Option
		ctx  time.Duration
	}{
		{"max wait", []Option{WithMaxWait(time.Minute)}, 0},
		{"deadline", nil, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, answer(429, body, "Retry-After", "847"))
			ctx := context.Background()
			if tc.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctx)
				defer cancel()
			}
			start := time.Now()
			_, err := newClient(f, tc.opts...).GenerateImages(ctx, req)
			var e *Error
			if !errors.As(err, &e) || e.Status != 429 || e.RetryAfter != 847*time.Second || e.Plan != "vip" || *e.LimitHour != 100 {
				t.Fatalf("error %#v", err)
			}
			if !IsRateLimited(err) {
				t.Fatal("IsRateLimited is false")
			}
			if len(f.requests()) != 1 || time.Since(start) > 5*time.Second {
				t.Fatalf("%d requests in %v", len(f.requests()), time.Since(start))
			}
		})
	}
}

// TestProactive: once an answer says a window is spent, the next call is
// not sent before the window's reset; with WithMaxWait(0) it is not sent
// at all.
func TestProactive(t *testing.T) {
	var reset time.Time
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		reset = now.Truncate(time.Second).Add(time.Second)
		h := gw(now.Truncate(time.Second), "hour", 3, 0, 1)
		for k, v := range h {
			w.Header()[k] = v
		}
		ok()(w, r)
	}, ok())
	c := newClient(f)
	if _, err := c.GenerateImages(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	_, err := New(f.srv.URL, "k", WithMaxWait(0)).GenerateImages(context.Background(), req)
	if err != nil {
		t.Fatal("a new client knows nothing yet, so it sends:", err)
	}
	nowait := New(f.srv.URL, "k", WithMaxWait(0))
	nowait.view = c.view // the same view, without waiting
	_, err = nowait.GenerateImages(context.Background(), req)
	var e *Error
	if !errors.As(err, &e) || e.Status != 0 || e.Code != sluice.ERATELIMIT || e.Window != "hour" || e.RetryAfter <= 0 || e.RetryAfter > time.Second {
		t.Fatalf("not waiting: %#v", err)
	}
	if len(f.requests()) != 2 {
		t.Fatalf("%d requests, want 2", len(f.requests()))
	}
	if _, err := c.GenerateImages(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	rs := f.requests()
	if at := rs[len(rs)-1].at; at.Before(reset) {
		t.Fatalf("sent at %v, before the reset %v", at, reset)
	}
	if s := c.Stats(); s.Waits != 1 || s.RateLimited != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestMissingAndMalformedHeaders: answers without usable quota headers do
// not throttle, and do not break the client.
func TestMissingAndMalformedHeaders(t *testing.T) {
	f := newFake(t, answer(200, okImages,
		"X-RateLimit-Remaining-Hour", "-1",
		"X-RateLimit-Reset-Hour", "soon",
		"RateLimit", `"hour;r=0`,
		"RateLimit-Policy", `;;;`,
	), ok())
	c := newClient(f)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := c.GenerateImages(context.Background(), req); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if q := c.Quota(); !q.Unlimited {
		t.Fatalf("view %+v", q)
	}
	if n := len(f.requests()); n != 20 {
		t.Fatalf("%d requests", n)
	}
}

// Test5xx: 502 upstream_error and 503 quota_unavailable are retried (the
// 503 not before its Retry-After: 1); a 5xx that persists is returned
// after the configured retries.
func Test5xx(t *testing.T) {
	t.Run("502 then 503 then ok", func(t *testing.T) {
		var at503 time.Time
		f := newFake(t,
			answer(502, `{"error":"upstream_error","message":"The image generator failed; nothing was charged."}`),
			func(w http.ResponseWriter, r *http.Request) {
				at503 = time.Now()
				answer(503, `{"error":"quota_unavailable","message":"The quota service is unavailable; please retry shortly."}`, "Retry-After", "1")(w, r)
			},
			ok())
		c := newClient(f)
		if _, err := c.GenerateImages(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		rs := f.requests()
		if len(rs) != 3 || rs[2].at.Sub(at503) < time.Second {
			t.Fatalf("%d requests; the retry after the 503 came %v after it", len(rs), rs[len(rs)-1].at.Sub(at503))
		}
		if rs[0].key != rs[2].key || rs[0].body != rs[2].body {
			t.Fatal("retries are not the same request")
		}
		if s := c.Stats(); s.ServerErrors != 2 || s.Retries != 2 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("persistent 502", func(t *testing.T) {
		f := newFake(t, answer(502, `{"error":"upstream_error","message":"The image generator failed; nothing was charged."}`))
		_, err := newClient(f, WithMaxRetries(2)).GenerateImages(context.Background(), req)
		var e *Error
		if !errors.As(err, &e) || e.Status != 502 || e.Code != sluice.EUPSTREAM {
			t.Fatalf("error %v", err)
		}
		if n := len(f.requests()); n != 3 {
			t.Fatalf("%d requests, want 3", n)
		}
	})
}

// TestConnectionError: a connection that breaks before the answer is
// retried with backoff.
func TestConnectionError(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		conn.Close()
	}, ok())
	c := newClient(f)
	if _, err := c.GenerateImages(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if rs := f.requests(); len(rs) != 2 || rs[0].key != rs[1].key {
		t.Fatalf("requests %+v", rs)
	}
}

// TestNeverAnswers: a server that never answers is given up on at the
// context's deadline.
func TestNeverAnswers(t *testing.T) {
	done := make(chan struct{})
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-done:
		}
	})
	defer close(done)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	c := newClient(f)
	_, err := c.GenerateImages(ctx, req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("returned after %v", d)
	}
	// The view of the client that made the call is not left with units
	// in flight, nor with a request that would make the next one wait.
	if q := c.Quota(); q.InFlight != 0 || q.Known {
		t.Fatalf("view after the deadline %+v, want nothing in flight and nothing known", q)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.GenerateImages(ctx, req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second call: error %v", err)
	}
	if n := len(f.requests()); n < 2 {
		t.Fatalf("%d requests sent, want the second call to send its own", n)
	}
}

// TestConcurrentOneLeft: ten goroutines, one unit left: one request goes
// out; the nine others are told without sending (WithMaxWait(0)).
func TestConcurrentOneLeft(t *testing.T) {
	var mu sync.Mutex
	left := 1
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now().Truncate(time.Second)
		if r.URL.Path == "/v1/usage" {
			copyHeader(w, gw(now, "hour", 5, left, 3600))
			answer(200, `{"plan":"vip"}`)(w, r)
			return
		}
		time.Sleep(10 * time.Millisecond)
		if left == 0 {
			copyHeader(w, gw(now, "hour", 5, 0, 3600))
			answer(429, `{"error":"rate_limit_exceeded","message":"Hourly limit reached","retry_after":3600}`, "Retry-After", "3600")(w, r)
			return
		}
		left--
		copyHeader(w, gw(now, "hour", 5, left, 3600))
		ok()(w, r)
	})
	c := newClient(f, WithMaxWait(0))
	if _, err := c.Usage(context.Background()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu2 sync.Mutex
	var oks, refused int
	for range 10 {
		wg.Go(func() {
			_, err := c.GenerateImages(context.Background(), req)
			mu2.Lock()
			defer mu2.Unlock()
			var e *Error
			switch {
			case err == nil:
				oks++
			case errors.As(err, &e) && e.Status == 0 && e.Code == sluice.ERATELIMIT:
				refused++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if oks != 1 || refused != 9 || c.Stats().RateLimited != 0 || len(f.requests()) != 2 {
		t.Fatalf("%d ok, %d refused, %d 429s, %d requests", oks, refused, c.Stats().RateLimited, len(f.requests()))
	}
}

func copyHeader(w http.ResponseWriter, h http.Header) {
	for k, v := range h {
		w.Header()[k] = v
	}
}

func ExampleClient_GenerateImages() {
	c := New("http://localhost:8080", "slk_...", WithMaxRetries(3))
	res, err := c.GenerateImages(context.Background(), &ImageRequest{Model: "sluice-sketch", Prompt: "a lighthouse at dusk"})
	if err != nil {
		fmt.Println(err)
		return
	}
	png, _ := res.Data[0].Bytes()
	_ = png
	for _, w := range c.Quota().Windows {
		fmt.Printf("%d left this %s, next unit at %s\n", w.Remaining, w.Name, w.Reset.Format(time.TimeOnly))
	}
}
