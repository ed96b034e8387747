package http_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	sluicehttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/internal/storetest"
	"github.com/sluicehq/sluice/quota"
)

// withIdempotency keeps keyed answers in the harness's SQLite database.
func withIdempotency(maxBody int64) harnessOpt {
	return func(h *harness, _ *quota.Limiter) {
		h.S.Idempotency = sluicehttp.Idempotency{Store: h.DB.Idempotency(), MaxBody: maxBody}
	}
}

const idemBody = `{"model":"sluice-sketch","prompt":"a lighthouse","n":2}`

// keyed posts body to path with the Idempotency-Key.
func (h *harness) keyed(path, key, idem, body string) *response {
	h.t.Helper()
	return h.doHeader("POST", path, key, body, http.Header{"Idempotency-Key": {idem}})
}

// errorCode returns the §5 code of a flat error body.
func errorCode(res *response) string {
	var b struct {
		Error any `json:"error"`
	}
	json.Unmarshal(res.Body, &b)
	switch e := b.Error.(type) {
	case string:
		return e
	case map[string]any:
		c, _ := e["code"].(string)
		return c
	}
	return ""
}

func wantRemaining(t *testing.T, res *response, want string) {
	t.Helper()
	if got := res.Header.Get("X-RateLimit-Remaining-Hour"); got != want {
		t.Errorf("X-RateLimit-Remaining-Hour = %q, want %q", got, want)
	}
}

// blocked sends a keyed request of idemBody with the key idem, whose
// generation waits; it returns once the generator was called, with what
// lets the generation finish and returns the answer.
func (h *harness) blocked(key, idem string) (finish func() *response) {
	started, release := make(chan struct{}), make(chan struct{})
	h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		close(started)
		<-release
		return okImages(req.N), nil
	}
	done := make(chan *response)
	go func() { done <- h.keyed("/v1/images/generations", key, idem, idemBody) }()
	<-started
	return func() *response { close(release); return <-done }
}

// claimOf returns the claim in flight of account id's request of idemBody
// with the key idem, as a Begin of the same request through s sees it.
func (h *harness) claimOf(s sluice.IdempotencyStore, id int64, idem string) *sluice.IdempotencyRecord {
	h.t.Helper()
	sum := sha256.Sum256([]byte(idemBody))
	probe := &sluice.IdempotencyRecord{AccountID: id, Key: idem, Token: "probe",
		Fingerprint: sluice.NewFingerprint("POST", "/v1/images/generations", sum), ExpiresAt: h.Clock.Now().Add(time.Minute)}
	got, claimed, err := s.Begin(context.Background(), probe, h.Clock.Now())
	if err != nil || claimed {
		h.t.Fatalf("Begin of the same request while in flight = %v, %v", claimed, err)
	}
	return got
}

// TestIdempotentReplay checks that a retry with the key gets the first
// answer byte for byte, marked replayed, with the quota as it stands now and
// no second charge, under /v1/ and /openai/v1/ alike.
func TestIdempotentReplay(t *testing.T) {
	h := newHarness(t, withIdempotency(0))
	var calls atomic.Int64
	h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		// Each generation differs, so that a replay is told from a second
		// generation.
		c := calls.Add(1)
		body := `{"created":` + string(rune('0'+c)) + `,"data":[{"b64_json":"iVBORw0KGgo="},{"b64_json":"AAAA"}]}`
		return &sluice.ImageResult{Body: io.NopCloser(strings.NewReader(body)), ContentType: "application/json; charset=utf-8"}, nil
	}
	_, key := h.account("vip")

	first := h.keyed("/v1/images/generations", key, "req-1", idemBody)
	wantStatus(t, first, 200)
	wantRemaining(t, first, "98")
	if v := first.Header.Get("Idempotent-Replayed"); v != "" {
		t.Errorf("first answer has Idempotent-Replayed: %q", v)
	}

	// An unkeyed request in between moves the quota: the replay shows it.
	wantStatus(t, h.generate(key, 1), 200)

	for _, path := range []string{"/v1/images/generations", "/openai/v1/images/generations"} {
		again := h.keyed(path, key, "req-1", idemBody)
		wantStatus(t, again, 200)
		if !bytes.Equal(again.Body, first.Body) {
			t.Errorf("%s: replayed body\n%s\nwant\n%s", path, again.Body, first.Body)
		}
		if got, want := again.Header.Get("Content-Type"), first.Header.Get("Content-Type"); got != want {
			t.Errorf("%s: replayed Content-Type %q, want %q", path, got, want)
		}
		if v := again.Header.Get("Idempotent-Replayed"); v != "true" {
			t.Errorf("%s: Idempotent-Replayed = %q, want true", path, v)
		}
		wantRemaining(t, again, "97")
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("generator called %d times, want 2 (the keyed request once, the unkeyed one once)", n)
	}

	// The key belongs to the account: another account's request with it
	// is its own.
	_, other := h.account("vip")
	wantStatus(t, h.keyed("/v1/images/generations", other, "req-1", idemBody), 200)
	if n := calls.Load(); n != 3 {
		t.Errorf("generator called %d times, want 3", n)
	}

	// Kept for the TTL, and forgotten after it.
	h.Clock.Add(sluice.DefaultIdempotencyTTL - time.Second)
	if res := h.keyed("/v1/images/generations", key, "req-1", idemBody); res.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("one second before the TTL's end: not replayed (status %d)", res.Status)
	}
	h.Clock.Add(time.Second)
	if res := h.keyed("/v1/images/generations", key, "req-1", idemBody); res.Status != 200 || res.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("at the TTL's end: status %d, replayed %q; want a new 200", res.Status, res.Header.Get("Idempotent-Replayed"))
	}

	// Kept three times (key, other account, after the TTL); replayed three
	// times (two routes, one second before the TTL's end).
	metrics := string(h.do("GET", "/metrics", "", "").Body)
	for _, want := range []string{`sluice_idempotency_total{outcome="kept"} 3`, `sluice_idempotency_total{outcome="replayed"} 3`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestIdempotentKeyReused checks that the key with another request is a
// 422 that charges nothing: another body, or the same body with other
// spacing.
func TestIdempotentKeyReused(t *testing.T) {
	h := newHarness(t, withIdempotency(0))
	_, key := h.account("vip")
	wantStatus(t, h.keyed("/v1/images/generations", key, "k", idemBody), 200)
	for _, body := range []string{
		`{"model":"sluice-sketch","prompt":"another","n":2}`,
		`{"model": "sluice-sketch", "prompt": "a lighthouse", "n": 2}`,
	} {
		res := h.keyed("/v1/images/generations", key, "k", body)
		wantStatus(t, res, 422)
		if c := errorCode(res); c != sluice.EIDEMREUSED {
			t.Errorf("code %q, want %s; body %s", c, sluice.EIDEMREUSED, res.Body)
		}
		wantRemaining(t, res, "98")
	}
	res := h.keyed("/openai/v1/images/generations", key, "k", `{"model":"sluice-sketch","prompt":"x"}`)
	wantStatus(t, res, 422)
	golden(t, "idempotency_reused_openai", res.Body)
	golden(t, "idempotency_reused", h.keyed("/v1/images/generations", key, "k", `{"model":"sluice-sketch","prompt":"x"}`).Body)
}

// TestIdempotentInFlight checks the 409 while the first request is served,
// and the replay once it is done.
func TestIdempotentInFlight(t *testing.T) {
	h := newHarness(t, withIdempotency(0))
	_, key := h.account("vip")
	finish := h.blocked(key, "slow")

	res := h.keyed("/v1/images/generations", key, "slow", idemBody)
	wantStatus(t, res, 409)
	if c := errorCode(res); c != sluice.EIDEMINFLIGHT {
		t.Errorf("code %q, want %s", c, sluice.EIDEMINFLIGHT)
	}
	if ra := res.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want 1", ra)
	}
	wantRemaining(t, res, "98")
	golden(t, "idempotency_in_progress", res.Body)
	// Another body with the key in flight is a 422, not a 409.
	wantStatus(t, h.keyed("/v1/images/generations", key, "slow", `{"model":"sluice-sketch","prompt":"x"}`), 422)

	first := finish()
	wantStatus(t, first, 200)
	h.Gen.GenerateFn = nil
	again := h.keyed("/v1/images/generations", key, "slow", idemBody)
	if again.Status != 200 || again.Header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(again.Body, first.Body) {
		t.Errorf("after the first finished: status %d, replayed %q, body %s", again.Status, again.Header.Get("Idempotent-Replayed"), again.Body)
	}
}

// TestIdempotentLeaseTakeover checks that a claim left by a crashed
// instance holds for the lease and is taken over at its end.
func TestIdempotentLeaseTakeover(t *testing.T) {
	h := newHarness(t, withIdempotency(0))
	id, key := h.account("vip")
	// What the crashed instance left: the request's claim, never settled.
	sum := sha256.Sum256([]byte(idemBody))
	rec := &sluice.IdempotencyRecord{AccountID: id, Key: "orphan", Token: "crashed",
		Fingerprint: sluice.NewFingerprint("POST", "/v1/images/generations", sum),
		ExpiresAt:   h.Clock.Now().Add(sluicehttp.DefaultIdempotencyLease)}
	if _, ok, err := h.DB.Idempotency().Begin(context.Background(), rec, h.Clock.Now()); err != nil || !ok {
		t.Fatalf("Begin = %v, %v", ok, err)
	}
	wantStatus(t, h.keyed("/v1/images/generations", key, "orphan", idemBody), 409)
	h.Clock.Add(sluicehttp.DefaultIdempotencyLease - time.Second)
	wantStatus(t, h.keyed("/v1/images/generations", key, "orphan", idemBody), 409)
	h.Clock.Add(time.Second)
	res := h.keyed("/v1/images/generations", key, "orphan", idemBody)
	wantStatus(t, res, 200)
	if res.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("a taken-over claim was replayed")
	}
}

// TestIdempotentNotKept checks that answers other than 200 are not kept:
// the retry is a new attempt.
func TestIdempotentNotKept(t *testing.T) {
	t.Run("429", func(t *testing.T) {
		h := newHarness(t, withIdempotency(0))
		_, key := h.account("tiny") // 2 per hour
		wantStatus(t, h.generate(key, 2), 200)
		body := `{"model":"sluice-sketch","prompt":"x"}`
		wantStatus(t, h.keyed("/v1/images/generations", key, "k429", body), 429)
		h.Clock.Add(time.Hour)
		res := h.keyed("/v1/images/generations", key, "k429", body)
		wantStatus(t, res, 200)
		wantRemaining(t, res, "1")
	})
	t.Run("502", func(t *testing.T) {
		h := newHarness(t, withIdempotency(0))
		var fail atomic.Bool
		fail.Store(true)
		h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
			if fail.Swap(false) {
				return nil, &sluice.Error{Code: sluice.EUPSTREAM, Message: "The image generator failed; nothing was charged."}
			}
			return okImages(req.N), nil
		}
		_, key := h.account("vip")
		wantStatus(t, h.keyed("/v1/images/generations", key, "k502", idemBody), 502)
		res := h.keyed("/v1/images/generations", key, "k502", idemBody)
		wantStatus(t, res, 200)
		if res.Header.Get("Idempotent-Replayed") != "" {
			t.Errorf("the retry of a 502 was replayed")
		}
		wantRemaining(t, res, "98")
	})
	t.Run("relay failure", func(t *testing.T) {
		h := newHarness(t, withIdempotency(0))
		h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
			return &sluice.ImageResult{Body: io.NopCloser(&errReader{n: 100 << 10}), ContentType: "application/json"}, nil
		}
		_, key := h.account("vip")
		req, _ := http.NewRequest("POST", h.S.URL()+"/v1/images/generations", strings.NewReader(idemBody))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Idempotency-Key", "krelay")
		if res, err := h.Client.Do(req); err == nil {
			io.ReadAll(res.Body)
			res.Body.Close()
		}
		h.Gen.GenerateFn = nil
		// The claim is abandoned once the handler has unwound; poll.
		deadline := time.Now().Add(10 * time.Second)
		for {
			res := h.keyed("/v1/images/generations", key, "krelay", idemBody)
			if res.Status == 200 {
				wantRemaining(t, res, "98")
				break
			}
			if res.Status != 409 || time.Now().After(deadline) {
				t.Fatalf("retry after a broken relay: status %d, body %s", res.Status, res.Body)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestIdempotentOversize checks that an answer over the bound is delivered
// whole, kept without its body, and that a retry is told so, uncharged.
func TestIdempotentOversize(t *testing.T) {
	h := newHarness(t, withIdempotency(70))
	_, key := h.account("vip")
	first := h.keyed("/v1/images/generations", key, "big", idemBody)
	wantStatus(t, first, 200)
	if len(first.Body) <= 70 {
		t.Fatalf("answer of %d bytes is not over the bound of 70", len(first.Body))
	}
	var v struct{ Data []json.RawMessage }
	if err := json.Unmarshal(first.Body, &v); err != nil || len(v.Data) != 2 {
		t.Fatalf("the first answer was not delivered whole: %s", first.Body)
	}
	res := h.keyed("/v1/images/generations", key, "big", idemBody)
	wantStatus(t, res, 422)
	if c := errorCode(res); c != sluice.EIDEMREUSED || !strings.Contains(string(res.Body), "too large to keep") {
		t.Errorf("retry of an oversize answer: %s", res.Body)
	}
	wantRemaining(t, res, "98")
	// Under the bound (one image) the answer is kept.
	small := h.keyed("/v1/images/generations", key, "small", `{"model":"sluice-sketch","prompt":"x"}`)
	wantStatus(t, small, 200)
	if len(small.Body) > 70 {
		t.Fatalf("one image is %d bytes, over the test's bound", len(small.Body))
	}
	again := h.keyed("/v1/images/generations", key, "small", `{"model":"sluice-sketch","prompt":"x"}`)
	if again.Status != 200 || !bytes.Equal(again.Body, small.Body) || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("an answer under the bound was not replayed: status %d, body %s", again.Status, again.Body)
	}
}

// TestIdempotencyKeyInvalid checks that a malformed key is a 400 naming the
// header, charging nothing, and that the longest valid key works.
func TestIdempotencyKeyInvalid(t *testing.T) {
	h := newHarness(t, withIdempotency(0))
	_, key := h.account("vip")
	for _, tc := range []struct {
		name string
		vals []string
		want int
	}{
		{"empty", []string{""}, 400},
		{"too long", []string{strings.Repeat("k", 256)}, 400},
		{"not ASCII", []string{"clé"}, 400},
		{"tab", []string{"a\tb"}, 400},
		{"two", []string{"a", "b"}, 400},
		{"longest", []string{strings.Repeat("k", 255)}, 200},
		{"spaces and symbols", []string{"a b:c/d=e~"}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := h.doHeader("POST", "/v1/images/generations", key, idemBody, http.Header{"Idempotency-Key": tc.vals})
			wantStatus(t, res, tc.want)
			if tc.want == 400 {
				var b struct{ Error, Field string }
				json.Unmarshal(res.Body, &b)
				if b.Error != sluice.EINVALID || b.Field != "Idempotency-Key" {
					t.Errorf("body %s, want invalid_request naming Idempotency-Key", res.Body)
				}
				if res.Header.Get("X-RateLimit-Remaining-Hour") == "" {
					t.Errorf("400 without the account's quota headers")
				}
			}
		})
	}
	res := h.do("GET", "/v1/usage", key, "")
	var u struct{ Hour struct{ Used int } }
	json.Unmarshal(res.Body, &u)
	if u.Hour.Used != 4 {
		t.Errorf("used %d images, want 4 (the two valid keys' requests)", u.Hour.Used)
	}
}

// TestIdempotencyOff checks that without a store the header is ignored.
func TestIdempotencyOff(t *testing.T) {
	h := newHarness(t)
	_, key := h.account("vip")
	wantStatus(t, h.keyed("/v1/images/generations", key, "k", idemBody), 200)
	res := h.keyed("/v1/images/generations", key, "k", idemBody)
	wantStatus(t, res, 200)
	wantRemaining(t, res, "96")
}

// countingExtends counts the renewals of a store's leases.
type countingExtends struct {
	sluice.IdempotencyStore
	n atomic.Int64
}

func (c *countingExtends) Extend(ctx context.Context, accountID int64, key, token string, expires time.Time) error {
	err := c.IdempotencyStore.Extend(ctx, accountID, key, token, expires)
	if err == nil {
		c.n.Add(1)
	}
	return err
}

// TestIdempotentLeaseRenewed checks that a request served for longer than
// its lease renews its claim, so that a retry is a 409, not a takeover.
func TestIdempotentLeaseRenewed(t *testing.T) {
	const lease = 900 * time.Millisecond // renewed every 300 ms of the wall clock
	store := &countingExtends{}
	h := newHarness(t, func(h *harness, _ *quota.Limiter) {
		store.IdempotencyStore = h.DB.Idempotency()
		h.S.Idempotency = sluicehttp.Idempotency{Store: store, Lease: lease}
	})
	_, key := h.account("vip")
	finish := h.blocked(key, "long")
	// Three leases pass on the request's clock; after each step, wait for
	// a renewal made at the new time.
	for i := range 3 {
		h.Clock.Add(lease - 100*time.Millisecond)
		want := store.n.Load() + 1
		deadline := time.Now().Add(10 * time.Second)
		for store.n.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("step %d: no renewal of the lease", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
		res := h.keyed("/v1/images/generations", key, "long", idemBody)
		if res.Status != 409 {
			t.Fatalf("step %d, %v after the claim: %d %s, want 409", i, h.Clock.Now().Sub(T0), res.Status, res.Body)
		}
	}
	first := finish()
	wantStatus(t, first, 200)
	again := h.keyed("/v1/images/generations", key, "long", idemBody)
	if again.Header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(again.Body, first.Body) {
		t.Errorf("after the long request: status %d, replayed %q", again.Status, again.Header.Get("Idempotent-Replayed"))
	}
	wantRemaining(t, again, "98")
}

// deadAttempt is an idempotency store through which the attempt whose token
// is set acts as if its instance had died: its renewals, charges,
// completions and abandons are lost.
type deadAttempt struct {
	sluice.IdempotencyStore
	token atomic.Value // string
}

func (d *deadAttempt) dead(token string) bool { t, _ := d.token.Load().(string); return t == token }

func (d *deadAttempt) Extend(ctx context.Context, accountID int64, key, token string, expires time.Time) error {
	if d.dead(token) {
		return nil
	}
	return d.IdempotencyStore.Extend(ctx, accountID, key, token, expires)
}

func (d *deadAttempt) Charge(ctx context.Context, accountID int64, key, token string, units int64, at, until time.Time) error {
	if d.dead(token) {
		return nil
	}
	return d.IdempotencyStore.Charge(ctx, accountID, key, token, units, at, until)
}

func (d *deadAttempt) Complete(ctx context.Context, rec *sluice.IdempotencyRecord) error {
	if d.dead(rec.Token) {
		return nil
	}
	return d.IdempotencyStore.Complete(ctx, rec)
}

func (d *deadAttempt) Abandon(ctx context.Context, accountID int64, key, token string) error {
	if d.dead(token) {
		return nil
	}
	return d.IdempotencyStore.Abandon(ctx, accountID, key, token)
}

// TestIdempotentChargeInherited checks CONTRACT.md §9's "a retry is never
// charged twice" across a crash: a keyed request charged by an instance that
// then stops serving it is, once its lease ends, served to the retry on that
// charge; a retry with another body is refused while the charge holds; and a
// retry whose generation fails refunds the inherited charge.
func TestIdempotentChargeInherited(t *testing.T) {
	store := &deadAttempt{}
	h := newHarness(t, func(h *harness, _ *quota.Limiter) {
		store.IdempotencyStore = h.DB.Idempotency()
		h.S.Idempotency = sluicehttp.Idempotency{Store: store}
	})
	var (
		calls   atomic.Int64
		fail    atomic.Bool
		blocked = make(chan chan struct{}, 1) // the next call blocks until the channel sent is closed
		entered = make(chan struct{}, 1)      // a call blocked
	)
	h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		calls.Add(1)
		select {
		case release := <-blocked:
			entered <- struct{}{}
			<-release // the instance that dies while generating
		default:
		}
		if fail.Load() {
			return nil, &sluice.Error{Code: sluice.EUPSTREAM, Message: "down"}
		}
		return okImages(req.N), nil
	}
	id, key := h.account("vip")

	// crash serves a request with the Idempotency-Key idem until the
	// generator is called, waits for its claim to record its charge, and
	// then has its instance die: nothing it does reaches the store any
	// more. It returns what unblocks the dead request.
	crash := func(idem string) (unblock func()) {
		t.Helper()
		release := make(chan struct{})
		blocked <- release
		answered := make(chan *response, 1)
		go func() { answered <- h.keyed("/v1/images/generations", key, idem, idemBody) }()
		<-entered
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			got := h.claimOf(store, id, idem)
			if got.Charged > 0 {
				if got.Charged != 2 || !got.ChargedAt.Equal(h.Clock.Now()) {
					t.Errorf("the claim's charge: %d at %v, want 2 at %v", got.Charged, got.ChargedAt, h.Clock.Now())
				}
				store.token.Store(got.Token)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the claim in flight never recorded its charge: %+v", got)
			}
		}
		return func() { close(release); <-answered }
	}

	unblock := crash("crash")
	wantStatus(t, h.keyed("/v1/images/generations", key, "crash", idemBody), 409)
	h.Clock.Add(sluicehttp.DefaultIdempotencyLease)
	// After the lease: another request with the key is refused (the charge
	// holds it), the same request is served on the dead instance's charge.
	other := h.keyed("/v1/images/generations", key, "crash", `{"model":"sluice-sketch","prompt":"else","n":1}`)
	wantStatus(t, other, 422)
	wantRemaining(t, other, "98")
	retry := h.keyed("/v1/images/generations", key, "crash", idemBody)
	wantStatus(t, retry, 200)
	wantRemaining(t, retry, "98") // charged once, by the dead instance
	if retry.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("the inherited retry is marked replayed")
	}
	again := h.keyed("/v1/images/generations", key, "crash", idemBody)
	if again.Header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(again.Body, retry.Body) {
		t.Errorf("after the inherited retry: status %d, replayed %q", again.Status, again.Header.Get("Idempotent-Replayed"))
	}
	wantRemaining(t, again, "98")
	unblock() // its answer goes nowhere: its instance is dead
	if n := calls.Load(); n != 2 {
		t.Errorf("generator called %d times, want 2", n)
	}

	// A retry that inherits a charge and fails refunds it and gives the
	// key up: the next retry is a new attempt, charged.
	unblock = crash("crash-2")
	wantRemaining(t, h.do("GET", "/v1/usage", key, ""), "96")
	h.Clock.Add(sluicehttp.DefaultIdempotencyLease)
	fail.Store(true)
	failed := h.keyed("/v1/images/generations", key, "crash-2", idemBody)
	wantStatus(t, failed, 502)
	wantRemaining(t, h.do("GET", "/v1/usage", key, ""), "98")
	fail.Store(false)
	fresh := h.keyed("/v1/images/generations", key, "crash-2", idemBody)
	wantStatus(t, fresh, 200)
	wantRemaining(t, fresh, "96")
	unblock()

	metrics := string(h.do("GET", "/metrics", "", "").Body)
	if want := `sluice_idempotency_total{outcome="inherited"} 2`; !strings.Contains(metrics, want) {
		t.Errorf("/metrics lacks %q", want)
	}
}

// failFirstCharge is an idempotency store whose first Charge fails.
type failFirstCharge struct {
	sluice.IdempotencyStore
	calls atomic.Int64
}

func (f *failFirstCharge) Charge(ctx context.Context, accountID int64, key, token string, units int64, at, until time.Time) error {
	if f.calls.Add(1) == 1 {
		return errors.New("the account store is unreachable")
	}
	return f.IdempotencyStore.Charge(ctx, accountID, key, token, units, at, until)
}

// TestIdempotentChargeRetried checks that a charge the store failed to
// record is recorded at the claim's next renewal.
func TestIdempotentChargeRetried(t *testing.T) {
	const lease = 900 * time.Millisecond // renewed every 300 ms of the wall clock
	store := &failFirstCharge{}
	h := newHarness(t, func(h *harness, _ *quota.Limiter) {
		store.IdempotencyStore = h.DB.Idempotency()
		h.S.Idempotency = sluicehttp.Idempotency{Store: store, Lease: lease}
	})
	id, key := h.account("vip")
	finish := h.blocked(key, "retried")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if h.claimOf(store, id, "retried").Charged == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the charge was never recorded after the first failure (%d calls of Charge)", store.calls.Load())
		}
	}
	if n := store.calls.Load(); n != 2 {
		t.Errorf("Charge called %d times, want 2 (a failure, then the record)", n)
	}
	if !strings.Contains(h.Logs.String(), "recording the charge of the claim of an idempotent request failed") {
		t.Errorf("the failure was not logged")
	}
	wantStatus(t, finish(), 200)
}

// TestIdempotentChargeSynced checks that a claim records its charge only
// once the quota's counters hold it (sluice.QuotaSyncer, the embedded store
// between flushes), so that no retry inherits a charge that a crash took
// from them, and that a failed sync is tried again at the next renewal.
func TestIdempotentChargeSynced(t *testing.T) {
	const lease = 900 * time.Millisecond // renewed every 300 ms of the wall clock
	q := &storetest.SyncingQuota{}
	q.Fail.Store(true)
	h := newHarness(t, func(h *harness, lim *quota.Limiter) {
		q.QuotaStore = lim.Store
		lim.Store = q
		h.S.Idempotency = sluicehttp.Idempotency{Store: h.DB.Idempotency(), Lease: lease}
	})
	id, key := h.account("vip")
	finish := h.blocked(key, "synced")
	charged := func() int64 { return h.claimOf(h.DB.Idempotency(), id, "synced").Charged }
	for deadline := time.Now().Add(10 * time.Second); q.Calls() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Sync called %d times in 10 s, want a call and a retry", q.Calls())
		}
	}
	if n := charged(); n != 0 {
		t.Fatalf("charge recorded while the counters could not be synced: %d", n)
	}
	if !strings.Contains(h.Logs.String(), "syncing the counters for the claim of an idempotent request failed") {
		t.Errorf("the failed sync was not logged")
	}
	q.Fail.Store(false)
	for deadline := time.Now().Add(10 * time.Second); charged() != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the charge was never recorded once the sync succeeded")
		}
	}
	if k := sluice.AccountQuotaKey(id); !q.Synced(k) {
		t.Errorf("the counters of %q were never synced", k)
	}
	wantStatus(t, finish(), 200)
}
