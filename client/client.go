// Package client is the Go SDK of sluice: a client of its HTTP API
// (CONTRACT.md §6) that follows the public page's best practices by itself,
// so that its users do not have to.
//
//   - It reads the quota headers of every answer (X-RateLimit-* and the IETF
//     RateLimit and RateLimit-Policy fields) into a quota view shared by
//     every goroutine using the Client.
//   - Proactive: a call that the view says would be refused is not sent; it
//     waits until the window that lacks room resets, or, if the caller does
//     not let it wait that long (WithMaxWait, the context's deadline),
//     returns at once an *Error with code rate_limit_exceeded and Status 0.
//     Ten goroutines and one unit left: one request goes out, not ten.
//   - On a 429 it waits the Retry-After (seconds or HTTP-date) plus a little
//     jitter, never less, and retries; on a 5xx or a connection error it
//     retries after an exponential backoff with full jitter (at least the
//     Retry-After, if the answer has one), up to WithMaxRetries retries.
//   - Retries replay the body and send the same Idempotency-Key as the
//     first attempt, so a request whose answer was lost on the way back is
//     answered again from the gateway's copy, not generated and charged
//     twice (CONTRACT.md §9). A 409 idempotency_in_progress (the first
//     attempt is still being served) is retried after its Retry-After, for
//     up to WithMaxInProgress in all and outside the WithMaxRetries
//     budget: if the gateway serving the first attempt died, a retry takes
//     its claim over (and its charge) once the claim's 15 s lease lapses.
//   - An account without limits (Elite) gets no quota headers, and the
//     client never throttles it. Once the client knows the account's
//     windows, a successful answer without quota headers leaves them
//     alone; only several in a row mean the plan became unlimited.
//
// A Client is safe for concurrent use, and meant to be shared: the quota
// view only knows about the requests of the Client it belongs to.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice"
)

// Defaults of the options.
const (
	DefaultMaxRetries  = 4
	DefaultBackoffBase = 500 * time.Millisecond
	DefaultBackoffMax  = 30 * time.Second
	// DefaultMaxInProgress is twice the gateway's claim lease (15 s): a
	// call whose first attempt died with its gateway is served, on that
	// attempt's charge, by a retry after the lease.
	DefaultMaxInProgress = 30 * time.Second
	// maxResponse bounds the body read from an answer: four 2048x2048
	// PNGs in base64 fit with room to spare.
	maxResponse = 256 << 20
)

// Client is a client of one sluice gateway with one API key.
type Client struct {
	base       string // the API root, ending in "/v1"
	key        string
	hc         *http.Client
	maxRetries int
	maxInProg  time.Duration // the longest a call retries 409 idempotency_in_progress
	maxWait    time.Duration // negative: no limit
	backBase   time.Duration
	backMax    time.Duration
	logger     *slog.Logger
	userAgent  string
	now        func() time.Time

	view  *view
	stats struct {
		requests, retries, rateLimited, serverErrors, waits atomic.Int64
		waited                                              atomic.Int64 // ns
	}
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the *http.Client that sends the requests (default: a
// client of its own with no overall timeout; each call's context bounds it).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithMaxRetries sets how many times a call is retried after a 429, a 5xx or
// a connection error (default DefaultMaxRetries; 0 never retries).
// Proactive waits for quota are not retries: nothing is sent.
func WithMaxRetries(n int) Option { return func(c *Client) { c.maxRetries = max(n, 0) } }

// WithMaxInProgress sets how long, in all, a call retries answers 409
// idempotency_in_progress (default DefaultMaxInProgress; 0 never retries
// them). Those retries do not count against WithMaxRetries, but
// WithMaxRetries(0) retries nothing, them included.
func WithMaxInProgress(d time.Duration) Option { return func(c *Client) { c.maxInProg = max(d, 0) } }

// WithMaxWait caps how long a call waits for quota, before sending (the view
// shows a window without room) or after a 429 (its Retry-After). A call that
// would have to wait longer returns at once an *Error with code
// rate_limit_exceeded whose RetryAfter says how long the wait would be.
// WithMaxWait(0) never waits for quota. By default there is no cap but the
// context's deadline.
func WithMaxWait(d time.Duration) Option { return func(c *Client) { c.maxWait = max(d, 0) } }

// WithBackoff sets the exponential backoff after 5xx answers and connection
// errors: the n-th retry waits a random time in [0, min(max, base·2ⁿ)) (full
// jitter). Defaults DefaultBackoffBase and DefaultBackoffMax.
func WithBackoff(base, max time.Duration) Option {
	return func(c *Client) { c.backBase, c.backMax = base, max }
}

// WithLogger sets a logger for retries and waits (at Debug and Info level).
// The default discards.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.logger = l } }

// WithUserAgent sets the User-Agent of the requests.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// New returns a client of the gateway at baseURL ("http://localhost:8080";
// a URL ending in /v1, like ".../openai/v1", is taken as the API root) with
// an API key.
func New(baseURL, apiKey string, opts ...Option) *Client {
	base := strings.TrimRight(baseURL, "/")
	if !strings.HasSuffix(base, "/v1") {
		base += "/v1"
	}
	c := &Client{
		base:       base,
		key:        apiKey,
		hc:         &http.Client{},
		maxRetries: DefaultMaxRetries,
		maxInProg:  DefaultMaxInProgress,
		maxWait:    -1,
		backBase:   DefaultBackoffBase,
		backMax:    DefaultBackoffMax,
		logger:     slog.New(slog.DiscardHandler),
		userAgent:  "sluice-go-client",
		now:        time.Now,
		view:       newView(),
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Quota returns a snapshot of the client's quota view.
func (c *Client) Quota() Quota { return c.view.snapshot() }

// Stats are counters of what a Client has done since it was made.
type Stats struct {
	Requests     int64 // HTTP requests sent, retries included
	Retries      int64
	RateLimited  int64 // 429 answers received
	ServerErrors int64 // 5xx answers received
	// Waits is the number of times a call waited for quota before
	// sending, and Waited their total time.
	Waits  int64
	Waited time.Duration
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Requests:     c.stats.requests.Load(),
		Retries:      c.stats.retries.Load(),
		RateLimited:  c.stats.rateLimited.Load(),
		ServerErrors: c.stats.serverErrors.Load(),
		Waits:        c.stats.waits.Load(),
		Waited:       time.Duration(c.stats.waited.Load()),
	}
}

// ImageRequest asks for images (POST /v1/images/generations). N 0 means 1;
// Size "" means the gateway's default (512x512). The answer's images come
// as base64 (response_format b64_json).
type ImageRequest struct {
	Model  string `json:"model"`
	Prompt string `json:"prompt"`
	N      int    `json:"n,omitempty"`
	Size   string `json:"size,omitempty"`
	User   string `json:"user,omitempty"`
}

// Images is the answer to an ImageRequest.
type Images struct {
	Created int64   `json:"created"` // Unix seconds
	Data    []Image `json:"data"`
}

// Image is one generated image.
type Image struct {
	B64JSON string `json:"b64_json"`
}

// Bytes returns the image's bytes (a PNG from the demo generator).
func (im Image) Bytes() ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(im.B64JSON)
	if err != nil {
		return nil, fmt.Errorf("decode image: %w", err)
	}
	return b, nil
}

// GenerateImages generates req.N images, costing N units of every window of
// the account's quota. It waits for quota as the package documentation
// says, and retries; the error of a call that fails is an *Error (the
// gateway's answer), a context error, or a connection error.
func (c *Client) GenerateImages(ctx context.Context, req *ImageRequest) (*Images, error) {
	r := *req
	n := int64(max(r.N, 1))
	body, err := json.Marshal(struct {
		ImageRequest
		Format string `json:"response_format"`
	}{r, "b64_json"})
	if err != nil {
		return nil, err
	}
	var out Images
	if err := c.do(ctx, http.MethodPost, "/images/generations", body, n, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Model is one model of GET /v1/models.
type Model struct {
	ID        string `json:"id"`
	OwnedBy   string `json:"owned_by"`
	Tier      string `json:"tier"`
	Available bool   `json:"available"` // the account's plan may use it
}

// Models lists the gateway's models. It costs nothing.
func (c *Client) Models(ctx context.Context) ([]Model, error) {
	var out struct {
		Data []Model `json:"data"`
	}
	if err := c.do(ctx, http.MethodGet, "/models", nil, 0, &out); err != nil {
		return nil, err
	}
	return out.Data, nil
}

// Usage is where the account stands (GET /v1/usage).
type Usage struct {
	Plan string
	Hour UsageWindow
	Day  UsageWindow
}

// UsageWindow is one window of a Usage. An unlimited window has Limit and
// Remaining -1 and a zero Reset.
type UsageWindow struct {
	Limit     int64
	Used      int64
	Remaining int64
	Reset     time.Time // by the server's clock
}

// Unlimited reports whether the window has no limit.
func (w UsageWindow) Unlimited() bool { return w.Limit < 0 }

type usageWindowJSON struct {
	Limit     *int64 `json:"limit"`
	Used      int64  `json:"used"`
	Remaining *int64 `json:"remaining"`
	Reset     *int64 `json:"reset"`
}

func (w usageWindowJSON) window() UsageWindow {
	u := UsageWindow{Limit: -1, Used: w.Used, Remaining: -1}
	if w.Limit != nil {
		u.Limit = *w.Limit
	}
	if w.Remaining != nil {
		u.Remaining = *w.Remaining
	}
	if w.Reset != nil {
		u.Reset = time.Unix(*w.Reset, 0)
	}
	return u
}

// Usage returns where the account stands. It costs nothing, and refreshes
// the quota view.
func (c *Client) Usage(ctx context.Context) (*Usage, error) {
	var out struct {
		Plan string          `json:"plan"`
		Hour usageWindowJSON `json:"hour"`
		Day  usageWindowJSON `json:"day"`
	}
	if err := c.do(ctx, http.MethodGet, "/usage", nil, 0, &out); err != nil {
		return nil, err
	}
	return &Usage{Plan: out.Plan, Hour: out.Hour.window(), Day: out.Day.window()}, nil
}

// do sends a request costing n units and decodes a 2xx answer into out: it
// waits for quota, sends, and retries as the package documentation says.
func (c *Client) do(ctx context.Context, method, path string, body []byte, n int64, out any) error {
	idem := ""
	if method == http.MethodPost {
		if idem, _ = ctx.Value(idempotencyKeyCtx{}).(string); idem == "" {
			idem = newIdempotencyKey()
		}
	}
	var inProgress time.Time // the first 409 idempotency_in_progress
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		waited, err := c.view.reserve(ctx, n, c.maxWait, c.now)
		if waited > 0 {
			c.stats.waits.Add(1)
			c.stats.waited.Add(int64(waited))
			c.logger.Debug("waited for quota", "path", path, "waited", waited)
		}
		if err != nil {
			return err
		}
		resp, respBody, sent, arrived, err := c.send(ctx, method, path, body, idem)
		c.view.release(n, resp, sent, arrived)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s %s: %w", method, path, ctx.Err())
			}
			err = fmt.Errorf("%s %s: %w", method, path, err)
			if attempt >= c.maxRetries {
				return err
			}
			wait := c.backoff(attempt)
			c.logger.Info("request failed; retrying", "path", path, "error", err, "attempt", attempt+1, "wait", wait)
			if err := c.sleep(ctx, wait); err != nil {
				return err
			}
			c.stats.retries.Add(1)
			continue
		}
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(respBody, out); err != nil {
				return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
			}
			return nil
		}
		e := parseError(resp.StatusCode, respBody)
		if ra, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), serverNow(resp.Header, arrived)); ok {
			e.RetryAfter = ra
		}
		var wait time.Duration
		switch {
		case resp.StatusCode == http.StatusTooManyRequests:
			c.stats.rateLimited.Add(1)
			if e.RetryAfter > 0 {
				wait = e.RetryAfter + jitter(e.RetryAfter)
			} else {
				wait = c.backoff(attempt)
			}
		case resp.StatusCode == http.StatusConflict && e.Code == sluice.EIDEMINFLIGHT:
			wait = max(e.RetryAfter, time.Second)
			wait += jitter(wait)
			if inProgress.IsZero() {
				inProgress = arrived
			}
			if c.maxRetries == 0 || arrived.Add(wait).Sub(inProgress) > c.maxInProg {
				return e
			}
			attempt-- // outside the retry budget (the loop counts it back): bounded by maxInProg
		case resp.StatusCode >= 500:
			c.stats.serverErrors.Add(1)
			wait = c.backoff(attempt)
			if e.RetryAfter > 0 {
				wait = max(wait, e.RetryAfter+jitter(e.RetryAfter))
			}
		default:
			return e
		}
		if attempt >= c.maxRetries {
			return e
		}
		// Never earlier than told: if the wait the server asks for is
		// more than the caller allows, give up now rather than later.
		if resp.StatusCode == http.StatusTooManyRequests && c.maxWait >= 0 && e.RetryAfter > c.maxWait {
			return e
		}
		if d, ok := ctx.Deadline(); ok && c.now().Add(e.RetryAfter).After(d) {
			return e
		}
		c.logger.Info("retrying", "path", path, "status", resp.StatusCode, "code", e.Code, "attempt", attempt+1, "wait", wait)
		if err := c.sleep(ctx, wait); err != nil {
			return fmt.Errorf("%w (while waiting to retry: %w)", e, err)
		}
		c.stats.retries.Add(1)
	}
}

// send sends one attempt and reads the whole answer. resp is nil if no
// answer came; err is set if no whole answer came.
func (c *Client) send(ctx context.Context, method, path string, body []byte, idem string) (resp *http.Response, respBody []byte, sent, arrived time.Time, err error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, nil, time.Time{}, time.Time{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	c.stats.requests.Add(1)
	sent = c.now()
	resp, err = c.hc.Do(req)
	arrived = c.now()
	if err != nil {
		return nil, nil, sent, arrived, err
	}
	defer resp.Body.Close()
	respBody, err = io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		// The headers came, so the quota view can use them; the body
		// did not, so the call failed.
		return resp, nil, sent, arrived, fmt.Errorf("read answer: %w", err)
	}
	return resp, respBody, sent, arrived, nil
}

// serverNow is the server's clock at an answer: its Date, else arrived.
func serverNow(h http.Header, arrived time.Time) time.Time {
	if t, err := http.ParseTime(h.Get("Date")); err == nil {
		return t
	}
	return arrived
}

// backoff is the wait before retry attempt+1 after a 5xx or a connection
// error: full jitter, uniform in [0, min(max, base·2^attempt)).
func (c *Client) backoff(attempt int) time.Duration {
	ceil := c.backMax
	if attempt < 30 && c.backBase<<attempt < ceil && c.backBase<<attempt > 0 {
		ceil = c.backBase << attempt
	}
	if ceil <= 0 {
		return 0
	}
	return mrand.N(ceil)
}

// jitter is the little random time added to a Retry-After: up to a tenth of
// it, at least up to 10ms, at most up to 1s.
func jitter(d time.Duration) time.Duration {
	return mrand.N(min(max(d/10, 10*time.Millisecond), time.Second))
}

// sleep waits d or until ctx is done.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type idempotencyKeyCtx struct{}

// WithIdempotencyKey returns a context under which a call that costs units
// (GenerateImages) sends key as its Idempotency-Key on every attempt,
// instead of a random key of its own. A caller whose logical request can
// outlive the call (a program that records the key, crashes, and tries
// again after a restart) gets the gateway's kept answer within
// limits.idempotency_ttl instead of a second charge. key must be 1 to 255
// printable ASCII characters (the gateway refuses others with a 400), and
// must not be reused for another request (a 422).
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idempotencyKeyCtx{}, key)
}

// newIdempotencyKey returns a random key for one logical request.
func newIdempotencyKey() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}
