package imagegen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/imagegen"
	"go.uber.org/goleak"
)

const testKey = "sk-test-0123456789abcdef"

var testReq = &sluice.ImageRequest{Model: "gpt-image-1", Prompt: "a red fox", N: 2, Size: "512x512", ResponseFormat: "b64_json"}

// newServer starts a fake upstream. Its cleanup, and the upstream's, run
// before a goleak check registered earlier in the test.
func newServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// newUpstream returns an Upstream with its own transport (a nil client).
func newUpstream(t *testing.T, baseURL string, timeout time.Duration) *imagegen.Upstream {
	t.Helper()
	u := imagegen.NewUpstream(baseURL, testKey, timeout, nil)
	t.Cleanup(u.CloseIdleConnections)
	return u
}

// verifyNoLeaks checks, once the test and its other cleanups are done,
// that no goroutine is left behind.
func verifyNoLeaks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// checkUpstreamError checks that err is a failure of the upstream as the
// gateway sees it: code EUPSTREAM, a message without the API key, and the
// cause available to logs.
func checkUpstreamError(t *testing.T, err error, status int, message string) *imagegen.UpstreamError {
	t.Helper()
	if code := sluice.ErrorCode(err); code != sluice.EUPSTREAM {
		t.Fatalf("ErrorCode(%v) = %q, want %q", err, code, sluice.EUPSTREAM)
	}
	if got := sluice.ErrorMessage(err); got != message {
		t.Errorf("ErrorMessage = %q, want %q", got, message)
	}
	var ue *imagegen.UpstreamError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %T, want an *imagegen.UpstreamError", err)
	}
	if ue.Status != status {
		t.Errorf("Status = %d, want %d", ue.Status, status)
	}
	if errors.Unwrap(err) == nil {
		t.Errorf("errors.Unwrap(%v) = nil, want the cause", err)
	}
	if strings.Contains(err.Error(), testKey) || strings.Contains(sluice.ErrorMessage(err), testKey) {
		t.Errorf("error shows the API key: %v", err)
	}
	return ue
}

func TestUpstreamRelay(t *testing.T) {
	verifyNoLeaks(t)
	answer := []byte(`{"created":1709900000,"data":[{"b64_json":"aGVsbG8="},{"b64_json":"d29ybGQ="}]}`)
	type seen struct {
		method, path, auth, contentType string
		body                            map[string]any
	}
	var got seen
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		got = seen{method: r.Method, path: r.URL.Path, auth: r.Header.Get("Authorization"), contentType: r.Header.Get("Content-Type")}
		if err := json.NewDecoder(r.Body).Decode(&got.body); err != nil {
			t.Errorf("request body: %v", err)
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write(answer)
	})
	// The base URL is taken as an OpenAI SDK takes it, with or without a
	// trailing slash.
	for _, base := range []string{srv.URL + "/v1", srv.URL + "/v1/"} {
		u := newUpstream(t, base, time.Second)
		res, err := u.Generate(context.Background(), testReq)
		if err != nil {
			t.Fatalf("Generate: %v", err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatalf("read body: %v", err)
		}
		if !bytes.Equal(body, answer) {
			t.Errorf("body = %s, want %s", body, answer)
		}
		if want := "application/json; charset=utf-8"; res.ContentType != want {
			t.Errorf("ContentType = %q, want %q", res.ContentType, want)
		}
		want := seen{
			method:      "POST",
			path:        "/v1/images/generations",
			auth:        "Bearer " + testKey,
			contentType: "application/json",
			body: map[string]any{
				"model":           "gpt-image-1",
				"prompt":          "a red fox",
				"n":               2.0,
				"size":            "512x512",
				"response_format": "b64_json",
			},
		}
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(seen{})); diff != "" {
			t.Errorf("base %q: request (-want +got):\n%s", base, diff)
		}
	}
}

// TestUpstreamStreams checks that the body is relayed as it arrives: the
// test reads the first half before the upstream has written the second.
func TestUpstreamStreams(t *testing.T) {
	verifyNoLeaks(t)
	answer := []byte(`{"created":1709900000,"data":[{"b64_json":"` + strings.Repeat("QUJD", 4096) + `"}]}`)
	half := len(answer) / 2
	proceed := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(answer[:half])
		w.(http.Flusher).Flush()
		select {
		case <-proceed:
			w.Write(answer[half:])
		case <-r.Context().Done():
		}
	})
	u := newUpstream(t, srv.URL, 5*time.Second)
	res, err := u.Generate(context.Background(), testReq)
	if err != nil {
		close(proceed)
		t.Fatalf("Generate: %v", err)
	}
	defer res.Body.Close()
	first := make([]byte, half)
	_, err = io.ReadFull(res.Body, first)
	close(proceed)
	if err != nil {
		t.Fatalf("read first half: %v", err)
	}
	rest, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read second half: %v", err)
	}
	if got := append(first, rest...); !bytes.Equal(got, answer) {
		t.Errorf("body differs from the upstream's (%d bytes, want %d)", len(got), len(answer))
	}
}

func TestUpstreamStatus(t *testing.T) {
	verifyNoLeaks(t)
	var (
		mu    sync.Mutex
		conns int
	)
	srv := httptest.NewUnstartedServer(nil)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	u := newUpstream(t, srv.URL+"/v1", time.Second)

	for _, status := range []int{400, 401, 404, 429, 500, 502, 503} {
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			// Some upstreams echo the key; the log must not show it. The
			// padding makes the body longer than the snippet kept for
			// the log, so that draining matters for reuse.
			io.WriteString(w, `{"error":{"message":"Incorrect API key provided: `+testKey+`","pad":"`+strings.Repeat("x", 4096)+`"}}`)
		})
		res, err := u.Generate(context.Background(), testReq)
		if err == nil {
			res.Body.Close()
			t.Fatalf("status %d: Generate succeeded", status)
		}
		ue := checkUpstreamError(t, err, status, "The image generator failed: upstream returned "+strconv.Itoa(status)+".")
		if ue.Timeout() {
			t.Errorf("status %d: Timeout() = true", status)
		}
		if !strings.Contains(err.Error(), "Incorrect API key provided") {
			t.Errorf("status %d: error for the log lacks the upstream's message: %v", status, err)
		}
	}
	// Failed answers are drained, so every request used one connection.
	mu.Lock()
	defer mu.Unlock()
	if conns != 1 {
		t.Errorf("%d connections for sequential requests, want 1", conns)
	}
}

// TestUpstreamRedirect checks that a redirect is not followed: it fails
// as any answer other than 2xx does, and the prompt is not sent again.
func TestUpstreamRedirect(t *testing.T) {
	verifyNoLeaks(t)
	var (
		mu    sync.Mutex
		paths []string
	)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path)
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
		// The base URL's path is the status to answer: /307/images/generations.
		first, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		code, _ := strconv.Atoi(first)
		if code == 0 {
			w.Write([]byte(`{"created":0,"data":[]}`))
			return
		}
		http.Redirect(w, r, "/elsewhere", code)
	})
	for _, code := range []int{301, 302, 303, 307, 308} {
		mu.Lock()
		paths = nil
		mu.Unlock()
		u := newUpstream(t, srv.URL+"/"+strconv.Itoa(code), time.Second)
		res, err := u.Generate(context.Background(), testReq)
		if err == nil {
			res.Body.Close()
			t.Fatalf("%d: Generate succeeded", code)
		}
		checkUpstreamError(t, err, code, "The image generator failed: upstream returned "+strconv.Itoa(code)+".")
		mu.Lock()
		if want := []string{"POST /" + strconv.Itoa(code) + "/images/generations"}; !slices.Equal(paths, want) {
			t.Errorf("%d: requests %q, want %q", code, paths, want)
		}
		mu.Unlock()
	}
}

// stall is a handler that answers only when the request ends or the test
// server closes, but no later than a few seconds, so that a broken timeout
// makes the test fail instead of hang.
func stall(w http.ResponseWriter, r *http.Request) {
	// The server notices a closed connection, and ends r's context, only
	// once the body has been read.
	io.Copy(io.Discard, r.Body)
	select {
	case <-r.Context().Done():
	case <-time.After(5 * time.Second):
		w.Write([]byte(`{"created":0,"data":[]}`))
	}
}

func TestUpstreamTimeout(t *testing.T) {
	verifyNoLeaks(t)
	srv := newServer(t, stall)
	u := newUpstream(t, srv.URL, 100*time.Millisecond)
	res, err := u.Generate(context.Background(), testReq)
	if err == nil {
		res.Body.Close()
		t.Fatal("Generate succeeded, want a timeout")
	}
	ue := checkUpstreamError(t, err, 0, "The image generator failed: upstream timed out.")
	if !ue.Timeout() || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want a timeout", err)
	}
}

// TestUpstreamBodyTimeout checks that the timeout bounds reading the body
// too: an upstream that stops halfway fails the read.
func TestUpstreamBodyTimeout(t *testing.T) {
	verifyNoLeaks(t)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"created":1709900000,"data":[{"b64_json":"`)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	u := newUpstream(t, srv.URL, 200*time.Millisecond)
	res, err := u.Generate(context.Background(), testReq)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	defer res.Body.Close()
	_, err = io.ReadAll(res.Body)
	ue := checkUpstreamError(t, err, 0, "The image generator failed: upstream timed out.")
	if !ue.Timeout() {
		t.Errorf("err = %v, want a timeout", err)
	}
}

func TestUpstreamConnectionRefused(t *testing.T) {
	verifyNoLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	u := newUpstream(t, "http://"+addr+"/v1", time.Second)
	res, err := u.Generate(context.Background(), testReq)
	if err == nil {
		res.Body.Close()
		t.Fatal("Generate succeeded against a closed port")
	}
	ue := checkUpstreamError(t, err, 0, "The image generator failed: no answer from upstream.")
	if ue.Timeout() {
		t.Errorf("Timeout() = true for a refused connection")
	}
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Errorf("err = %v, want the *net.OpError as its cause", err)
	}
}

// TestUpstreamCanceled checks that a caller that gives up gets its own
// error, not an upstream failure.
func TestUpstreamCanceled(t *testing.T) {
	verifyNoLeaks(t)
	srv := newServer(t, stall)
	u := newUpstream(t, srv.URL, 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	res, err := u.Generate(ctx, testReq)
	if err == nil {
		res.Body.Close()
		t.Fatal("Generate succeeded, want the caller's cancellation")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if code := sluice.ErrorCode(err); code == sluice.EUPSTREAM {
		t.Errorf("ErrorCode = %q for the caller's cancellation", code)
	}
}

// TestUpstreamCloseEarly checks that closing a body before its end ends the
// request at once, well before the timeout.
func TestUpstreamCloseEarly(t *testing.T) {
	verifyNoLeaks(t)
	done := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"created":1709900000,"data":[`)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	u := newUpstream(t, srv.URL, time.Minute)
	res, err := u.Generate(context.Background(), testReq)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	res.Body.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request still runs after Close")
	}
}

// BenchmarkUpstream measures one generation through Upstream against a
// trivial upstream in the same process (whose own work is in the figures
// too): the request's encoding and headers, the round trip on a kept-alive
// connection, and the relay of a small answer.
func BenchmarkUpstream(b *testing.B) {
	answer := []byte(`{"created":1709900000,"data":[{"b64_json":"aGVsbG8="}]}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header()["Content-Type"] = []string{"application/json"}
		w.Write(answer)
	}))
	defer srv.Close()
	u := imagegen.NewUpstream(srv.URL, testKey, time.Minute, nil)
	defer u.CloseIdleConnections()
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := u.Generate(ctx, testReq)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}
