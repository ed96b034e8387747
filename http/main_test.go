package http_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	sluicehttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/quota"
	"github.com/sluicehq/sluice/sqlite"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// T0 is the tests' starting time. With the default windows, 100 requests at
// T0 and one at T0+2753s reproduce the public page's example: Reset-Hour
// 1709903600, retry_after 847.
var T0 = time.Unix(1709900000, 0).UTC()

// clock is a clock that moves only when told to.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// fakeGen is an image generator whose behaviour a test sets. By default it
// returns a small fixed body of n images.
type fakeGen struct {
	GenerateFn func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error)
}

func (g *fakeGen) Generate(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
	if g.GenerateFn != nil {
		return g.GenerateFn(ctx, req)
	}
	return okImages(req.N), nil
}

func okImages(n int) *sluice.ImageResult {
	var b strings.Builder
	b.WriteString(`{"created":1709900000,"data":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"b64_json":"iVBORw0KGgo="}`)
	}
	b.WriteString("]}")
	return &sluice.ImageResult{Body: io.NopCloser(strings.NewReader(b.String())), ContentType: "application/json"}
}

// testPlans are the default plans plus "tiny", a small API plan for
// stepping through windows by hand.
func testPlans() []sluice.Plan {
	return append(sluice.DefaultPlans(),
		sluice.Plan{ID: "tiny", Name: "Tiny", Hour: 2, Day: 3, Models: sluice.ModelsAll, API: true})
}

const adminToken = "admin-secret-token"

// harness is a gateway on a real listener over a real SQLite account store
// and the real in-memory quota store, all on one fake clock.
type harness struct {
	t     testing.TB
	S     *sluicehttp.Server
	DB    *sqlite.DB
	Clock *clock
	Gen   *fakeGen
	Store *inmem.Store
	Logs  *lockedBuffer // the server's log, JSON lines
	// Client is the harness's own client, so that its idle connections
	// can be closed before the server is: Shutdown waits for connections
	// that were dialled but never used.
	Client *http.Client
}

type harnessOpt func(*harness, *quota.Limiter)

func newHarness(t testing.TB, opts ...harnessOpt) *harness {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "sluice.db"))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: T0}
	db.Now = c.Now
	// Sweeping runs on the wall clock; the tests' clock is years behind.
	store := inmem.New(inmem.Options{SweepInterval: 24 * time.Hour})
	logs := &lockedBuffer{}
	h := &harness{t: t, DB: db, Clock: c, Gen: &fakeGen{}, Store: store, Logs: logs,
		Client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	lim := &quota.Limiter{Store: store, Now: c.Now, Logger: slog.New(slog.NewJSONHandler(logs, nil))}
	h.S = &sluicehttp.Server{
		Accounts:   db,
		Quota:      lim,
		Images:     h.Gen,
		Plans:      testPlans(),
		Models:     sluice.DefaultModels(),
		AdminToken: adminToken,
		Logger:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:        c.Now,
	}
	for _, o := range opts {
		o(h, lim)
	}
	if err := h.S.Open("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.S.Close(ctx); err != nil {
			t.Errorf("close server: %v", err)
		}
		store.Close()
		db.Close()
	})
	return h
}

// lockedBuffer is a bytes.Buffer safe for the server's concurrent logging.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// account creates an account on the plan with one API key.
func (h *harness) account(plan string) (id int64, key string) {
	h.t.Helper()
	ctx := context.Background()
	a := &sluice.Account{Email: fmt.Sprintf("user%d@example.com", time.Now().UnixNano()), Plan: plan}
	if err := h.DB.CreateAccount(ctx, a); err != nil {
		h.t.Fatal(err)
	}
	return a.ID, h.key(a.ID)
}

// key creates another API key of the account.
func (h *harness) key(accountID int64) string {
	h.t.Helper()
	key, id, hash := sluice.NewAPIKey()
	if err := h.DB.CreateAPIKey(context.Background(), &sluice.APIKey{ID: id, AccountID: accountID, Name: "test", Hash: hash}); err != nil {
		h.t.Fatal(err)
	}
	return key
}

// response is an answer read whole.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends a request with the bearer token (none if empty) and body (none
// if empty) and reads the answer.
func (h *harness) do(method, path, token, body string) *response {
	h.t.Helper()
	return h.doHeader(method, path, token, body, nil)
}

func (h *harness) doHeader(method, path, token, body string, hdr http.Header) *response {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.S.URL()+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := h.Client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return &response{Status: res.StatusCode, Header: res.Header, Body: b}
}

// generate posts an image request for n images of a starter-tier model.
func (h *harness) generate(key string, n int) *response {
	h.t.Helper()
	return h.do("POST", "/v1/images/generations", key,
		fmt.Sprintf(`{"model":"sluice-sketch","prompt":"a lighthouse","n":%d}`, n))
}

// golden compares got with testdata/name.golden, or rewrites the file with
// -update.
func golden(t testing.TB, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./http -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: body differs from the golden file\ngot:  %s\nwant: %s", name, got, want)
	}
}

// wantStatus fails unless res has the status.
func wantStatus(t testing.TB, res *response, status int) {
	t.Helper()
	if res.Status != status {
		t.Fatalf("status = %d, want %d; body: %s", res.Status, status, res.Body)
	}
}

// rateHeaderNames are every header of CONTRACT.md §4.
var rateHeaderNames = []string{
	"X-RateLimit-Limit-Hour", "X-RateLimit-Remaining-Hour", "X-RateLimit-Reset-Hour",
	"X-RateLimit-Limit-Day", "X-RateLimit-Remaining-Day", "X-RateLimit-Reset-Day",
	"RateLimit-Policy", "RateLimit",
}

// rateHeaders returns the §4 headers of res, by name; absent ones are left
// out.
func rateHeaders(res *response) map[string]string {
	m := map[string]string{}
	for _, k := range rateHeaderNames {
		if v, ok := res.Header[http.CanonicalHeaderKey(k)]; ok {
			m[k] = strings.Join(v, "|")
		}
	}
	return m
}

// headers builds the expected §4 headers: limit, remaining and reset (Unix
// seconds) of the hour and day windows, windows seconds long, at now.
func headers(now time.Time, hourLen, dayLen time.Duration, hl, hr int64, hreset time.Time, dl, dr int64, dreset time.Time) map[string]string {
	t := func(reset time.Time) int64 { return max(reset.Unix()-now.Unix(), 0) }
	return map[string]string{
		"X-RateLimit-Limit-Hour":     fmt.Sprint(hl),
		"X-RateLimit-Remaining-Hour": fmt.Sprint(hr),
		"X-RateLimit-Reset-Hour":     fmt.Sprint(hreset.Unix()),
		"X-RateLimit-Limit-Day":      fmt.Sprint(dl),
		"X-RateLimit-Remaining-Day":  fmt.Sprint(dr),
		"X-RateLimit-Reset-Day":      fmt.Sprint(dreset.Unix()),
		"RateLimit-Policy": fmt.Sprintf(`"hour";q=%d;w=%d, "day";q=%d;w=%d`,
			hl, int64(hourLen/time.Second), dl, int64(dayLen/time.Second)),
		"RateLimit": fmt.Sprintf(`"hour";r=%d;t=%d, "day";r=%d;t=%d`, hr, t(hreset), dr, t(dreset)),
	}
}
