package http_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicehq/sluice"
	sluicehttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/quota"
	"golang.org/x/crypto/argon2"
)

// TestAdminAuth checks that every admin route refuses a missing or wrong
// token, and that an empty AdminToken refuses everything.
func TestAdminAuth(t *testing.T) {
	routes := []struct{ method, path string }{
		{"POST", "/admin/accounts"},
		{"GET", "/admin/accounts/1"},
		{"PUT", "/admin/accounts/1/plan"},
		{"PUT", "/admin/accounts/1/limits"},
		{"DELETE", "/admin/accounts/1/limits"},
		{"POST", "/admin/accounts/1/keys"},
		{"DELETE", "/admin/accounts/1/usage"},
		{"GET", "/admin/plans"},
	}
	h := newHarness(t)
	for _, rt := range routes {
		for _, tok := range []string{"", "wrong", adminToken + "x", "slk_" + adminToken} {
			res := h.do(rt.method, rt.path, tok, `{}`)
			wantStatus(t, res, 401)
			golden(t, "admin_unauthorized", res.Body)
		}
	}
	res := h.doHeader("GET", "/admin/plans", "", "", http.Header{"Authorization": {"Basic " + adminToken}})
	wantStatus(t, res, 401)

	empty := newHarness(t, func(h *harness, _ *quota.Limiter) { h.S.AdminToken = "" })
	wantStatus(t, empty.do("GET", "/admin/plans", "", ""), 401)
	wantStatus(t, empty.doHeader("GET", "/admin/plans", "", "", http.Header{"Authorization": {"Bearer "}}), 401)
}

// TestAdminAccounts walks an account through the admin API.
func TestAdminAccounts(t *testing.T) {
	h := newHarness(t)
	admin := func(method, path, body string) *response { return h.do(method, path, adminToken, body) }

	res := admin("POST", "/admin/accounts", `{"email":"ada@example.com","password":"correct horse","plan":"vip"}`)
	wantStatus(t, res, 201)
	var created struct {
		UserID int64 `json:"user_id"`
		Email  string
		Plan   string
	}
	if err := json.Unmarshal(res.Body, &created); err != nil || created.UserID == 0 || created.Email != "ada@example.com" || created.Plan != "vip" {
		t.Fatalf("created = %s (%v)", res.Body, err)
	}
	a, err := h.DB.FindAccountByID(context.Background(), created.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if ok, rehash := sluicehttp.VerifyPassword(a.PasswordHash, "correct horse"); !ok || rehash {
		t.Errorf("stored password hash %q: verify = %v, needsRehash = %v", a.PasswordHash, ok, rehash)
	}
	id := created.UserID
	acct := fmt.Sprintf("/admin/accounts/%d", id)

	// Default plan, no password.
	res = admin("POST", "/admin/accounts", `{"email":"bob@example.com"}`)
	wantStatus(t, res, 201)
	if !strings.Contains(string(res.Body), `"plan":"starter"`) {
		t.Errorf("default plan: %s", res.Body)
	}

	// Creation errors.
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"email_taken", `{"email":"ADA@example.com"}`, 409},
		{"email_missing", `{"plan":"vip"}`, 400},
		{"email_invalid", `{"email":"Ada <ada@example.com>"}`, 400},
		{"password_short", `{"email":"c@example.com","password":"short"}`, 400},
		{"plan_unknown", `{"email":"c@example.com","plan":"gold"}`, 400},
		{"unknown_field", `{"email":"c@example.com","admin":true}`, 400},
	} {
		res := admin("POST", "/admin/accounts", tc.body)
		wantStatus(t, res, tc.status)
		golden(t, "admin_create_"+tc.name, res.Body)
	}

	// A key made by the admin works at once.
	res = admin("POST", acct+"/keys", `{"name":"ci"}`)
	wantStatus(t, res, 201)
	var key struct {
		ID, Name, Key string
		CreatedAt     string `json:"created_at"`
	}
	json.Unmarshal(res.Body, &key)
	if !strings.HasPrefix(key.Key, sluice.APIKeyPrefix+key.ID) || key.Name != "ci" || key.CreatedAt != T0.Format(time.RFC3339) {
		t.Errorf("key = %s", res.Body)
	}
	if res.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("key answer may be cached")
	}
	for range 3 {
		wantStatus(t, h.generate(key.Key, 1), 200)
	}
	wantStatus(t, admin("POST", acct+"/keys", `{"name":"  "}`), 400)

	res = admin("GET", acct, "")
	wantStatus(t, res, 200)
	want := fmt.Sprintf(`{"user_id":%d,"email":"ada@example.com","plan":"vip","override":null,"telegram_id":null,"created_at":"2024-03-08T12:13:20Z","usage":{"plan":"vip","hour":{"limit":100,"used":3,"remaining":97,"reset":%d},"day":{"limit":1000,"used":3,"remaining":997,"reset":%d}}}`+"\n",
		id, T0.Add(time.Hour).Unix(), T0.Add(24*time.Hour).Unix())
	if diff := cmp.Diff(want, string(res.Body)); diff != "" {
		t.Errorf("account (-want +got):\n%s", diff)
	}
	if got := rateHeaders(res); len(got) != 0 {
		t.Errorf("admin answer carries rate-limit headers %v", got)
	}

	// Limits: both required, null is unlimited, bounds.
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"limits_missing_day", `{"hour":5}`, 400},
		{"limits_negative", `{"hour":-1,"day":5}`, 400},
		{"limits_fraction", `{"hour":1.5,"day":5}`, 400},
		{"limits_string", `{"hour":"5","day":5}`, 400},
		{"limits_huge", `{"hour":5,"day":100000000000}`, 400},
	} {
		res := admin("PUT", acct+"/limits", tc.body)
		wantStatus(t, res, tc.status)
		golden(t, "admin_"+tc.name, res.Body)
	}
	res = admin("PUT", acct+"/limits", `{"hour":null,"day":7}`)
	wantStatus(t, res, 200)
	if !strings.Contains(string(res.Body), `"override":{"hour":null,"day":7}`) ||
		!strings.Contains(string(res.Body), `"hour":{"limit":null,"used":3,"remaining":null,"reset":null}`) { // the unlimited hour still counts
		t.Errorf("after override: %s", res.Body)
	}
	res = admin("DELETE", acct+"/limits", "")
	wantStatus(t, res, 200)
	if !strings.Contains(string(res.Body), `"override":null`) {
		t.Errorf("after removing the override: %s", res.Body)
	}

	// Plan.
	res = admin("PUT", acct+"/plan", `{"plan":"gold"}`)
	wantStatus(t, res, 400)
	golden(t, "admin_plan_unknown", res.Body)
	wantStatus(t, admin("PUT", acct+"/plan", `{}`), 400)
	res = admin("PUT", acct+"/plan", `{"plan":"elite"}`)
	wantStatus(t, res, 200)
	if !strings.Contains(string(res.Body), `"plan":"elite"`) {
		t.Errorf("after plan change: %s", res.Body)
	}

	// Usage reset.
	admin("PUT", acct+"/plan", `{"plan":"vip"}`)
	res = admin("DELETE", acct+"/usage", "")
	wantStatus(t, res, 204)
	if len(res.Body) != 0 {
		t.Errorf("204 with a body: %q", res.Body)
	}
	res = h.do("GET", "/v1/usage", key.Key, "")
	if got := res.Header.Get("X-RateLimit-Remaining-Hour"); got != "100" {
		t.Errorf("after reset Remaining-Hour = %s, want 100", got)
	}

	// Unknown accounts.
	for _, path := range []string{"/admin/accounts/999999", "/admin/accounts/abc", "/admin/accounts/-1", "/admin/accounts/0"} {
		res := admin("GET", path, "")
		wantStatus(t, res, 404)
		for _, sub := range []struct{ method, path, body string }{
			{"PUT", "/plan", `{"plan":"vip"}`},
			{"PUT", "/limits", `{"hour":1,"day":1}`},
			{"DELETE", "/limits", ""},
			{"POST", "/keys", `{"name":"x"}`},
			{"DELETE", "/usage", ""},
		} {
			wantStatus(t, admin(sub.method, path+sub.path, sub.body), 404)
		}
	}
	golden(t, "admin_not_found", admin("GET", "/admin/accounts/999999", "").Body)
}

// TestAdminPlans checks GET /admin/plans.
func TestAdminPlans(t *testing.T) {
	h := newHarness(t)
	res := h.do("GET", "/admin/plans", adminToken, "")
	wantStatus(t, res, 200)
	golden(t, "admin_plans", res.Body)
}

// TestAdminKeyLastUsed checks that a key's use reaches the store by Close,
// not per request.
func TestAdminKeyLastUsed(t *testing.T) {
	h := newHarness(t)
	id, key := h.account("vip")
	kid, _, _ := sluice.ParseAPIKey(key)
	h.Clock.Add(42 * time.Second)
	for range 5 {
		wantStatus(t, h.generate(key, 1), 200)
	}
	k, err := h.DB.FindAPIKey(context.Background(), kid)
	if err != nil {
		t.Fatal(err)
	}
	if !k.LastUsedAt.IsZero() {
		t.Errorf("last use written on the request path: %v", k.LastUsedAt)
	}
	h.Client.CloseIdleConnections()
	if err := h.S.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	k, err = h.DB.FindAPIKey(context.Background(), kid)
	if err != nil {
		t.Fatal(err)
	}
	if !k.LastUsedAt.Equal(T0.Add(42 * time.Second)) {
		t.Errorf("LastUsedAt = %v, want %v (account %d)", k.LastUsedAt, T0.Add(42*time.Second), id)
	}
}

var phc = regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)

func TestPassword(t *testing.T) {
	h1, err := sluicehttp.HashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := sluicehttp.HashPassword("correct horse battery staple")
	if !phc.MatchString(h1) || h1 == h2 {
		t.Fatalf("hashes %q, %q: want PHC argon2id strings with distinct salts", h1, h2)
	}
	for _, tc := range []struct {
		encoded, pw    string
		ok, needRehash bool
	}{
		{h1, "correct horse battery staple", true, false},
		{h1, "correct horse battery stapl", false, false},
		{h1, "", false, false},
		// Same password, weaker parameters: verifies, asks for a rehash.
		{weakHash(t), "pw-12345678", true, true},
		{"", "x", false, false},
		{"$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "x", false, false},
		{"$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "x", false, false},
		{"$argon2id$v=19$m=19456,t=0,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "x", false, false},
		{"$argon2id$v=19$m=19456,t=2$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "x", false, false},
		{strings.Replace(h1, "$v=19$", "$v=16$", 1), "correct horse battery staple", false, false},
	} {
		ok, rehash := sluicehttp.VerifyPassword(tc.encoded, tc.pw)
		if ok != tc.ok || rehash != tc.needRehash {
			t.Errorf("VerifyPassword(%.40q, %q) = %v, %v; want %v, %v", tc.encoded, tc.pw, ok, rehash, tc.ok, tc.needRehash)
		}
	}
}

// weakHash is an argon2id hash of "pw-12345678" with older, weaker
// parameters than HashPassword's.
func weakHash(t *testing.T) string {
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte("pw-12345678"), salt, 1, 8*1024, 1, 32)
	b64 := base64.RawStdEncoding
	return "$argon2id$v=19$m=8192,t=1,p=1$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(key)
}
