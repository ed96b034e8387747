package http_test

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/quota"
)

// TestBodyErrors checks every kind of bad image request: the status, the
// body (golden) and that the account's figures come along, unspent.
func TestBodyErrors(t *testing.T) {
	h := newHarness(t)
	_, key := h.account("vip")
	cases := []struct {
		name, body string
		status     int
	}{
		{"bad_json", `{"model":"sluice-sketch",`, 400},
		{"bad_json_syntax", `{"model" "sluice-sketch"}`, 400},
		{"empty_body", ``, 400},
		{"not_object", `["sluice-sketch"]`, 400},
		{"unknown_field", `{"model":"sluice-sketch","prompt":"x","colour":"red"}`, 400},
		{"wrong_type_n", `{"model":"sluice-sketch","prompt":"x","n":"2"}`, 400},
		{"fraction_n", `{"model":"sluice-sketch","prompt":"x","n":1.5}`, 400},
		{"wrong_type_prompt", `{"model":"sluice-sketch","prompt":7}`, 400},
		{"n_zero", `{"model":"sluice-sketch","prompt":"x","n":0}`, 400},
		{"n_too_many", `{"model":"sluice-sketch","prompt":"x","n":5}`, 400},
		{"size_bad", `{"model":"sluice-sketch","prompt":"x","size":"big"}`, 400},
		{"size_small", `{"model":"sluice-sketch","prompt":"x","size":"32x32"}`, 400},
		{"size_large", `{"model":"sluice-sketch","prompt":"x","size":"4096x4096"}`, 400},
		{"url_format", `{"model":"sluice-sketch","prompt":"x","response_format":"url"}`, 400},
		{"other_format", `{"model":"sluice-sketch","prompt":"x","response_format":"png"}`, 400},
		{"stream", `{"model":"sluice-sketch","prompt":"x","stream":true}`, 400},
		{"trailing_data", `{"model":"sluice-sketch","prompt":"x"} {}`, 400},
		{"trailing_garbage", `{"model":"sluice-sketch","prompt":"x"}]`, 400},
		{"missing_model", `{"prompt":"x"}`, 400},
		{"missing_prompt", `{"model":"sluice-sketch"}`, 400},
		{"blank_prompt", `{"model":"sluice-sketch","prompt":"  \n"}`, 400},
		{"long_prompt", `{"model":"sluice-sketch","prompt":"` + strings.Repeat("é", 4001) + `"}`, 400},
		{"too_large", `{"model":"sluice-sketch","prompt":"` + strings.Repeat("a", 70<<10) + `"}`, 413},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := h.do("POST", "/v1/images/generations", key, tc.body)
			wantStatus(t, res, tc.status)
			golden(t, "body_"+tc.name, res.Body)
			if got := res.Header.Get("X-RateLimit-Remaining-Hour"); got != "100" {
				t.Errorf("Remaining-Hour = %q, want 100", got)
			}
		})
	}
}

// TestOpenAIParameters checks that what an OpenAI SDK may send is accepted.
func TestOpenAIParameters(t *testing.T) {
	h := newHarness(t)
	var got *sluice.ImageRequest
	h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		got = req
		return okImages(req.N), nil
	}
	_, key := h.account("vip")
	body := `{"model":"sluice-sketch","prompt":"a fox","n":null,"size":"1024x1024","response_format":"b64_json",
		"quality":"hd","style":"vivid","user":"end-user-7","background":"auto","moderation":"low",
		"output_format":"png","output_compression":80,"stream":false}`
	wantStatus(t, h.do("POST", "/v1/images/generations", key, body), 200)
	want := sluice.ImageRequest{Model: "sluice-sketch", Prompt: "a fox", N: 1, Size: "1024x1024", ResponseFormat: "b64_json", User: "end-user-7"}
	if got == nil || *got != want {
		t.Errorf("generator got %+v, want %+v", got, want)
	}
	// Defaults.
	wantStatus(t, h.do("POST", "/v1/images/generations", key, `{"model":"sluice-sketch","prompt":"a fox"}`), 200)
	want = sluice.ImageRequest{Model: "sluice-sketch", Prompt: "a fox", N: 1, Size: "512x512", ResponseFormat: "b64_json"}
	if *got != want {
		t.Errorf("defaults: generator got %+v, want %+v", got, want)
	}
	for _, size := range []string{"256x256", "512x512", "1024x1024", "64x2048", "1792x1024"} {
		wantStatus(t, h.do("POST", "/v1/images/generations", key, `{"model":"sluice-sketch","prompt":"a","size":"`+size+`"}`), 200)
		if got.Size != size {
			t.Errorf("size %s reached the generator as %s", size, got.Size)
		}
	}
}

// countingAccounts counts the lookups of API keys.
type countingAccounts struct {
	sluice.AccountService
	finds atomic.Int64
}

func (c *countingAccounts) FindAPIKey(ctx context.Context, id string) (*sluice.APIKey, error) {
	c.finds.Add(1)
	return c.AccountService.FindAPIKey(ctx, id)
}

// TestBadKeys checks the 401s, and that a malformed key is refused without
// a database lookup.
func TestBadKeys(t *testing.T) {
	var counter *countingAccounts
	h := newHarness(t, func(h *harness, _ *quota.Limiter) {
		counter = &countingAccounts{AccountService: h.DB}
		h.S.Accounts = counter
	})
	id, good := h.account("vip")
	revoked := h.key(id)
	kid, _, _ := sluice.ParseAPIKey(revoked)
	if err := h.DB.RevokeAPIKey(context.Background(), id, kid, T0); err != nil {
		t.Fatal(err)
	}
	unknown, _, _ := sluice.NewAPIKey()
	forged := forgeKey(good)
	if _, _, ok := sluice.ParseAPIKey(forged); !ok {
		t.Fatalf("forged key %s does not parse", forged)
	}
	cases := []struct {
		name, header string
		lookups      int64
	}{
		{"missing", "", 0},
		{"not_bearer", "Basic dXNlcjpwYXNz", 0},
		{"malformed", "Bearer slk_nope", 0},
		{"bad_checksum", "Bearer " + good[:len(good)-1] + flip(good[len(good)-1]), 0},
		{"session_shaped", "Bearer " + strings.Repeat("a", 43), 0},
		{"unknown", "Bearer " + unknown, 1},
		{"wrong_secret", "Bearer " + forged, 1},
		{"revoked", "Bearer " + revoked, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := counter.finds.Load()
			hdr := http.Header{}
			if tc.header != "" {
				hdr.Set("Authorization", tc.header)
			}
			res := h.doHeader("POST", "/v1/images/generations", "", `{"model":"sluice-sketch","prompt":"x"}`, hdr)
			wantStatus(t, res, 401)
			golden(t, "key_"+tc.name, res.Body)
			if got := rateHeaders(res); len(got) != 0 {
				t.Errorf("401 carries rate-limit headers %v", got)
			}
			if got := counter.finds.Load() - before; got != tc.lookups {
				t.Errorf("key lookups = %d, want %d", got, tc.lookups)
			}
		})
	}
	wantStatus(t, h.generate(good, 1), 200)
}

// forgeKey returns a well-formed key with the lookup ID of key and another
// secret: it passes the checksum and finds the stored key, whose hash then
// differs.
func forgeKey(key string) string {
	const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	body := key[:len(sluice.APIKeyPrefix)+12] + strings.Repeat("Z", 30)
	var sum [6]byte
	v := uint64(crc32.ChecksumIEEE([]byte(body)))
	for i := len(sum) - 1; i >= 0; i-- {
		sum[i] = base62[v%62]
		v /= 62
	}
	return body + string(sum[:])
}

func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

// TestUsage checks GET /v1/usage with an API key and with a session token,
// and that it consumes nothing.
func TestUsage(t *testing.T) {
	h := newHarness(t)
	id, key := h.account("vip")
	for range 13 {
		wantStatus(t, h.generate(key, 1), 200)
	}
	h.Clock.Add(100 * time.Second)
	for range 2 {
		res := h.do("GET", "/v1/usage", key, "")
		wantStatus(t, res, 200)
		want := fmt.Sprintf(`{"plan":"vip","hour":{"limit":100,"used":13,"remaining":87,"reset":%d},"day":{"limit":1000,"used":13,"remaining":987,"reset":%d}}`+"\n",
			T0.Add(time.Hour).Unix(), T0.Add(24*time.Hour).Unix())
		if string(res.Body) != want {
			t.Errorf("usage\ngot:  %s\nwant: %s", res.Body, want)
		}
		if got := res.Header.Get("RateLimit"); got != `"hour";r=87;t=3500, "day";r=987;t=86300` {
			t.Errorf("RateLimit = %s", got)
		}
	}

	// A session token works on any plan, API access or not.
	starterID, _ := h.account("starter")
	for _, acct := range []int64{id, starterID} {
		tok := sluice.RandomString(43)
		if err := h.DB.CreateSession(context.Background(), &sluice.Session{TokenHash: sluice.HashToken(tok),
			AccountID: acct, CreatedAt: T0, ExpiresAt: T0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		res := h.do("GET", "/v1/usage", tok, "")
		wantStatus(t, res, 200)
		if res.Header.Get("X-RateLimit-Limit-Hour") == "" {
			t.Errorf("session usage lacks headers")
		}
		h.Clock.Add(2 * time.Hour) // expired
		res = h.do("GET", "/v1/usage", tok, "")
		wantStatus(t, res, 401)
		golden(t, "session_expired", res.Body)
		h.Clock.Add(-2 * time.Hour)
	}
	res := h.do("GET", "/v1/usage", "", "")
	wantStatus(t, res, 401)
	golden(t, "usage_missing_credentials", res.Body)

	// An API key of a plan without API access is refused.
	_, starterKey := h.account("starter")
	wantStatus(t, h.do("GET", "/v1/usage", starterKey, ""), 403)
}

// TestOpenAIShape checks the /openai/v1 routes: the same behaviour and
// headers, errors in OpenAI's shape.
func TestOpenAIShape(t *testing.T) {
	h := newHarness(t)
	_, key := h.account("tiny")
	post := func(body string) *response {
		return h.do("POST", "/openai/v1/images/generations", key, body)
	}
	ok := `{"model":"sluice-sketch","prompt":"x"}`
	res := post(ok)
	wantStatus(t, res, 200)
	if got := res.Header.Get("X-RateLimit-Remaining-Hour"); got != "1" {
		t.Errorf("Remaining-Hour = %s, want 1", got)
	}
	wantStatus(t, h.generate(key, 1), 200) // /v1 draws from the same counters
	res = post(ok)
	wantStatus(t, res, 429)
	golden(t, "openai_rate_limit", res.Body)
	if res.Header.Get("Retry-After") != "3600" || res.Header.Get("X-RateLimit-Remaining-Hour") != "0" {
		t.Errorf("429 headers: %v", res.Header)
	}
	var e struct {
		Error struct {
			Message, Type, Code string
			Param               *string
			RetryAfter          int64 `json:"retry_after"`
		}
	}
	if err := json.Unmarshal(res.Body, &e); err != nil || e.Error.Type != "rate_limit_error" || e.Error.Code != "rate_limit_exceeded" || e.Error.RetryAfter != 3600 {
		t.Errorf("OpenAI 429 = %s (%v)", res.Body, err)
	}

	res = post(`{"model":"sluice-sketch","prompt":"x","n":9}`)
	wantStatus(t, res, 400)
	golden(t, "openai_invalid_n", res.Body)
	res = h.do("POST", "/openai/v1/images/generations", "slk_bad", ok)
	wantStatus(t, res, 401)
	golden(t, "openai_invalid_key", res.Body)
	_, starter := h.account("starter")
	res = h.do("GET", "/openai/v1/models", starter, "")
	wantStatus(t, res, 403)
	golden(t, "openai_no_api_access", res.Body)
	res = h.do("GET", "/openai/v1/usage", key, "")
	wantStatus(t, res, 200)
	res = h.do("GET", "/openai/v1/nope", key, "")
	wantStatus(t, res, 404)
	golden(t, "openai_not_found", res.Body)
}
