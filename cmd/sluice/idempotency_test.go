package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/sqlite"
)

// loseFirstAnswer is a transport that loses the first 200 answer to an
// image request after it arrived whole (the gateway has generated, charged
// and relayed it; the client never sees it), and records every answer.
type loseFirstAnswer struct {
	base http.RoundTripper

	mu      sync.Mutex
	lost    []byte // the body of the answer that was lost
	answers []recordedAnswer
}

type recordedAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (l *loseFirstAnswer) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := l.base.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/images/generations") {
		return res, err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.answers = append(l.answers, recordedAnswer{res.StatusCode, res.Header, body})
	if res.StatusCode == 200 && l.lost == nil {
		l.lost = body
		return nil, errors.New("connection reset by peer (the test lost the answer)")
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	return res, nil
}

// TestIdempotentLostAnswer: the answer to an image request is lost on its
// way back after the image was generated; the client's retry, with the same
// Idempotency-Key, is answered from the gateway's copy, byte for byte, and
// the account is charged once.
func TestIdempotentLostAnswer(t *testing.T) {
	g := startMain(t, "", map[string]string{}).realClock()
	_, key := g.account("lost@example.com", "vip")
	tr := &loseFirstAnswer{base: http.DefaultTransport}
	c := g.client(key, client.WithHTTPClient(&http.Client{Transport: tr}))
	res, err := c.GenerateImages(context.Background(), &client.ImageRequest{Model: "sluice-sketch", Prompt: "a lighthouse", N: 2, Size: "64x64"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Data) != 2 {
		t.Fatalf("%d images, want 2", len(res.Data))
	}
	tr.mu.Lock()
	answers := tr.answers
	tr.mu.Unlock()
	last := answers[len(answers)-1]
	if last.status != 200 || last.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the retry's answer: %d, Idempotent-Replayed %q", last.status, last.header.Get("Idempotent-Replayed"))
	}
	if !bytes.Equal(last.body, tr.lost) {
		t.Errorf("the replay differs from the lost answer")
	}
	// One charge of 2: the replay's headers say where the account stands.
	if got := last.header.Get("X-Ratelimit-Remaining-Hour"); got != "98" {
		t.Errorf("X-RateLimit-Remaining-Hour of the replay = %q, want 98 (one charge)", got)
	}
	for i, a := range answers[1 : len(answers)-1] {
		if a.status != 409 {
			t.Errorf("answer %d: %d %s, want only 409s between the lost answer and the replay", i+2, a.status, a.body)
		}
	}
	if u := g.do("GET", "/v1/usage", key, "").json(t); u["hour"].(map[string]any)["used"].(float64) != 2 {
		t.Errorf("usage %v, want 2 images used", u)
	}
}

// fakeUpstream is an OpenAI-compatible images endpoint that answers n
// distinct images, holding each request while its gate is closed.
type fakeUpstream struct {
	srv   *httptest.Server
	calls atomic.Int64
	mu    sync.Mutex
	gate  chan struct{} // nil: open
	in    chan struct{} // receives when a request arrives at a closed gate
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	u := &fakeUpstream{in: make(chan struct{}, 16)}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n := u.calls.Add(1)
		u.mu.Lock()
		gate := u.gate
		u.mu.Unlock()
		if gate != nil {
			u.in <- struct{}{}
			<-gate
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"created":%d,"data":[{"b64_json":"iVBORw0KGgo="}]}`, 1_900_000_000+n)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// close makes the next requests wait; the returned function lets them go.
func (u *fakeUpstream) close() (open func()) {
	gate := make(chan struct{})
	u.mu.Lock()
	u.gate = gate
	u.mu.Unlock()
	return func() {
		u.mu.Lock()
		u.gate = nil
		u.mu.Unlock()
		close(gate)
	}
}

// startOn starts an in-process gateway on the shared backend with extra
// configuration.
func startOn(t *testing.T, b *backend, extra map[string]string) *gateway {
	t.Helper()
	env := b.env()
	for k, v := range extra {
		env[k] = v
	}
	var out bytes.Buffer
	m := NewMain(&out, &syncBuffer{})
	m.Getenv = func(k string) string { return env[k] }
	if err := m.ParseFlags([]string{"--addr", "127.0.0.1:0", "--data", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return &gateway{t: t, m: m, url: m.Server.URL(), admin: env["SLUICE_ADMIN_TOKEN"], out: &out}
}

func (g *gateway) keyed(key, idem, body string) response {
	g.t.Helper()
	r := g.keyedNoFatal(key, idem, body)
	if r.status == 0 {
		g.t.Fatalf("POST with Idempotency-Key %q: %s", idem, r.body)
	}
	return r
}

// keyedNoFatal posts an image request with the Idempotency-Key; a request
// that gets no answer has status 0 and the error as its body. It may run
// on a goroutine other than the test's.
func (g *gateway) keyedNoFatal(key, idem, body string) response {
	req, err := http.NewRequest("POST", g.url+"/v1/images/generations", strings.NewReader(body))
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Idempotency-Key", idem)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	return response{resp.StatusCode, resp.Header, b}
}

// TestIdempotentTwoInstances: two gateways on one PostgreSQL (and Redis)
// share the claims and answers: a request in flight on A is a 409 on B, and
// its answer is replayed by B without a second charge.
func TestIdempotentTwoInstances(t *testing.T) {
	b := sharedBackend(t)
	up := newFakeUpstream(t)
	// A generous bound on Redis calls: this test is about the account
	// store, and a quota_unavailable on a loaded machine would hide it.
	extra := map[string]string{"SLUICE_UPSTREAM_URL": up.srv.URL, "SLUICE_QUOTA_TIMEOUT": "5s"}
	a, bb := startOn(t, b, extra), startOn(t, b, extra)
	_, key := a.account("two@example.com", "vip")
	const body = `{"model":"sluice-sketch","prompt":"a lighthouse"}`

	open, first := atUpstream(t, up, a, key, "shared-1", body)
	defer open()
	r := bb.keyed(key, "shared-1", body)
	if r.status != 409 || r.header.Get("Retry-After") != "1" {
		t.Errorf("on B while A serves: %d %s (Retry-After %q), want 409", r.status, r.body, r.header.Get("Retry-After"))
	}
	if r := bb.keyed(key, "shared-1", `{"model":"sluice-sketch","prompt":"another"}`); r.status != 422 {
		t.Errorf("another request on B: %d %s, want 422", r.status, r.body)
	}
	open()
	ra := <-first
	if ra.status != 200 {
		t.Fatalf("on A: %d %s", ra.status, ra.body)
	}
	rb := bb.keyed(key, "shared-1", body)
	if rb.status != 200 || rb.header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(rb.body, ra.body) {
		t.Fatalf("on B after A: %d, replayed %q, body %s; want A's %s", rb.status, rb.header.Get("Idempotent-Replayed"), rb.body, ra.body)
	}
	if got := rb.header.Get("X-Ratelimit-Remaining-Hour"); got != "99" {
		t.Errorf("B's replay: X-RateLimit-Remaining-Hour = %q, want 99 (one charge)", got)
	}
	if n := up.calls.Load(); n != 1 {
		t.Errorf("the upstream generated %d times, want 1", n)
	}
}

// countingStore counts the purges of an IdempotencyStore.
type countingStore struct {
	sluice.IdempotencyStore
	purged atomic.Int64
}

func (c *countingStore) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	n, err := c.IdempotencyStore.DeleteExpired(ctx, now)
	c.purged.Add(n)
	return n, err
}

// TestIdempotencyJanitor: the background job deletes expired records.
func TestIdempotencyJanitor(t *testing.T) {
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "sluice.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := &countingStore{IdempotencyStore: db.Idempotency()}
	now := time.Now()
	for _, exp := range []time.Duration{-time.Hour, -time.Second, time.Hour} {
		rec := &sluice.IdempotencyRecord{AccountID: 1, Key: exp.String(), Token: "t", ExpiresAt: now.Add(exp)}
		if _, _, err := s.Begin(context.Background(), rec, now.Add(-2*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	stop := janitor("idempotency records", 10*time.Millisecond, s.DeleteExpired, slog.New(slog.DiscardHandler))
	deadline := time.Now().Add(10 * time.Second)
	for s.purged.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if n := s.purged.Load(); n != 2 {
		t.Fatalf("purged %d records, want the 2 expired", n)
	}
}

// TestIdempotentCrash: CONTRACT.md §9's "a retry is never charged twice"
// across a crash. Gateway A (a process, on Redis and PostgreSQL) charges a
// keyed request and is killed (SIGKILL) while the image is generated; the
// client's retry on gateway B, once A's claim has lapsed, is served on A's
// charge: one charge in all. Another request with the key is refused while
// that charge holds.
func TestIdempotentCrash(t *testing.T) {
	b := sharedBackend(t)
	up := newFakeUpstream(t)
	extra := map[string]string{"SLUICE_UPSTREAM_URL": up.srv.URL, "SLUICE_QUOTA_TIMEOUT": "5s"}
	gb := startOn(t, b, extra)
	pa := startGateway(t, b, extra)
	ga := &gateway{t: t, url: pa.url}
	_, key := gb.account("crash@example.com", "vip")
	const body = `{"model":"sluice-sketch","prompt":"a lighthouse"}`

	open, _ := atUpstream(t, up, ga, key, "crash-1", body)
	defer open()
	// A records its charge on the claim as the generation starts.
	conn, err := pgx.Connect(context.Background(), b.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	waitCharged(t, 10*time.Second, func() (charged int64, err error) {
		err = conn.QueryRow(context.Background(), `SELECT charged FROM idempotency WHERE key = 'crash-1'`).Scan(&charged)
		return charged, err
	})
	pa.kill(t)
	killed := time.Now()
	open()

	// The retry on B: 409 while A's lease lasts, then served on A's charge.
	r := takeOver(t, gb, key, "crash-1", body, killed)
	if got := r.header.Get("X-Ratelimit-Remaining-Hour"); got != "99" {
		t.Errorf("the retry: X-RateLimit-Remaining-Hour = %q, want 99 (A's charge only)", got)
	}
	if u := gb.do("GET", "/v1/usage", key, "").json(t); u["hour"].(map[string]any)["used"].(float64) != 1 {
		t.Errorf("usage %v, want 1 image used", u)
	}
	if r := gb.keyed(key, "crash-1", `{"model":"sluice-sketch","prompt":"another"}`); r.status != 422 {
		t.Errorf("another request with the key: %d %s, want 422", r.status, r.body)
	}
	if again := gb.keyed(key, "crash-1", body); again.header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(again.body, r.body) {
		t.Errorf("after the retry: %d, replayed %q", again.status, again.header.Get("Idempotent-Replayed"))
	}
	if n := up.calls.Load(); n != 2 {
		t.Errorf("the upstream was called %d times, want 2 (A's, lost with it, and B's)", n)
	}
}

// TestIdempotentCrashEmbedded: the same as TestIdempotentCrash for one
// gateway on the embedded stores, killed and started again on its data
// directory. Its counters flush only every hour, so the charge survives the
// kill only because the claim syncs the account's counters before it
// records the charge, and the retry after the restart is served on it.
func TestIdempotentCrashEmbedded(t *testing.T) {
	up := newFakeUpstream(t)
	data := t.TempDir()
	env := map[string]string{"SLUICE_ADMIN_TOKEN": "test-admin-token", "SLUICE_UPSTREAM_URL": up.srv.URL,
		"SLUICE_QUOTA_FLUSH_INTERVAL": "1h"}
	p := startProcess(t, env, data)
	g := &gateway{t: t, url: p.url, admin: env["SLUICE_ADMIN_TOKEN"]}
	id, key := g.account("embedded@example.com", "vip")
	const body = `{"model":"sluice-sketch","prompt":"a lighthouse"}`

	open, _ := atUpstream(t, up, g, key, "crash-1", body)
	defer open()
	entered := time.Now()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(data, "sluice.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitCharged(t, 20*time.Second, func() (charged int64, err error) {
		err = db.QueryRow(`SELECT charged FROM idempotency WHERE key = 'crash-1'`).Scan(&charged)
		return charged, err
	})
	t.Logf("the charge was recorded %v after the generation began", time.Since(entered).Round(time.Millisecond))
	wantQuotaRow(t, data, sluice.AccountQuotaKey(id))
	p.kill(t)
	killed := time.Now()
	open()

	p = startProcess(t, env, data)
	g = &gateway{t: t, url: p.url, admin: env["SLUICE_ADMIN_TOKEN"]}
	r := takeOver(t, g, key, "crash-1", body, killed)
	if got := r.header.Get("X-Ratelimit-Remaining-Hour"); got != "99" {
		t.Errorf("the retry: X-RateLimit-Remaining-Hour = %q, want 99 (the first charge only)", got)
	}
	if u := g.do("GET", "/v1/usage", key, "").json(t); u["hour"].(map[string]any)["used"].(float64) != 1 {
		t.Errorf("usage %v, want 1 image used", u)
	}
}

// atUpstream closes up's gate and sends to g the request body with the
// key idem, and returns once it reached the upstream: open lets it (and
// those after it) go, and may be called more than once; first receives
// its answer.
func atUpstream(t *testing.T, up *fakeUpstream, g *gateway, key, idem, body string) (open func(), first <-chan response) {
	t.Helper()
	open = sync.OnceFunc(up.close())
	answered := make(chan response, 1)
	go func() { answered <- g.keyedNoFatal(key, idem, body) }()
	select {
	case <-up.in:
	case r := <-answered:
		open()
		t.Fatalf("the request was answered before it reached the upstream: %d %s", r.status, r.body)
	case <-time.After(30 * time.Second):
		open()
		t.Fatal("the request never reached the upstream")
	}
	return open, answered
}

// waitCharged waits, at most timeout, until charged reports the claim's
// charge of 1 unit recorded.
func waitCharged(t *testing.T, timeout time.Duration, charged func() (int64, error)) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		n, err := charged()
		if err == nil && n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the claim never recorded its charge: charged %d, %v", n, err)
		}
	}
}

// takeOver sends the request body with the key idem to g while it is
// answered 409 (the claim of the gateway killed at killed holds), for at
// most 30 s after the kill, and returns the answer that took the claim
// over: a new 200.
func takeOver(t *testing.T, g *gateway, key, idem, body string, killed time.Time) response {
	t.Helper()
	for {
		r := g.keyed(key, idem, body)
		if r.status != 409 {
			t.Logf("the retry was served %v after the kill", time.Since(killed).Round(time.Millisecond))
			if r.status != 200 || r.header.Get("Idempotent-Replayed") != "" {
				t.Fatalf("the retry: %d (replayed %q) %s, want a new 200", r.status, r.header.Get("Idempotent-Replayed"), r.body)
			}
			return r
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("still 409 %v after the kill", time.Since(killed))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// wantQuotaRow checks that the embedded counters in data hold a state of
// key on disk.
func wantQuotaRow(t *testing.T, data, key string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(data, "quota.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM quota_state WHERE key = ?`, key).Scan(&n); err != nil || n != 1 {
		t.Fatalf("quota.db: %d rows of %s, %v; want the charge's counters on disk", n, key, err)
	}
}
