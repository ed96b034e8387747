package http_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/argon2"

	"github.com/sluicehq/sluice"
	sluicehttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/quota"
)

// withAudit gives the Server the account store as its audit log, as
// sluice serve does.
func withAudit(h *harness, _ *quota.Limiter) { h.S.Audit = h.DB }

// auditEvents is the body of GET /admin/audit and GET /v1/audit.
type auditEvents struct {
	Events []struct {
		ID    int64  `json:"id"`
		At    string `json:"at"`
		Actor struct {
			Type string  `json:"type"`
			ID   *string `json:"id"`
		} `json:"actor"`
		IP        *string         `json:"ip"`
		Action    string          `json:"action"`
		AccountID int64           `json:"account_id"`
		Details   json.RawMessage `json:"details"`
	} `json:"events"`
}

// audit gets the audit path and returns its events as lines of
// "action actor-type/actor-id ip details", newest first.
func (h *harness) audit(path, token string) []string {
	h.t.Helper()
	res := h.do("GET", path, token, "")
	wantStatus(h.t, res, http.StatusOK)
	var v auditEvents
	if err := json.Unmarshal(res.Body, &v); err != nil {
		h.t.Fatalf("GET %s: %v: %s", path, err, res.Body)
	}
	var out []string
	for _, e := range v.Events {
		actor, ip := e.Actor.Type, "-"
		if e.Actor.ID != nil {
			actor += "/" + *e.Actor.ID
		}
		if e.IP != nil {
			ip = *e.IP
		}
		out = append(out, fmt.Sprintf("%s %s %s %s", e.Action, actor, ip, e.Details))
	}
	return out
}

func wantLines(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", what, diff)
	}
}

// TestAuditAdmin: every change of the admin API is one event by the admin
// from the client's IP, with its details; a change that changes nothing is
// none. The body is golden: ids, the store's clock and the shape.
func TestAuditAdmin(t *testing.T) {
	h := newHarness(t, withAudit)
	res := h.do("POST", "/admin/accounts", adminToken, `{"email":"ada@example.com","plan":"vip","password":"correct horse battery"}`)
	wantStatus(t, res, http.StatusCreated)
	path := "/admin/accounts/1"
	for _, step := range []struct {
		method, path, body string
		status             int
	}{
		{"PUT", path + "/plan", `{"plan":"pro"}`, 200},
		{"PUT", path + "/plan", `{"plan":"pro"}`, 200}, // no change
		{"PUT", path + "/plan", `{"plan":"nope"}`, 400},
		{"PUT", path + "/limits", `{"hour":5,"day":null}`, 200},
		{"DELETE", path + "/limits", ``, 200},
		{"DELETE", path + "/limits", ``, 200}, // no change
		{"POST", path + "/keys", `{"name":"ci"}`, 201},
		{"DELETE", path + "/usage", ``, 204},
		{"PUT", "/admin/accounts/99/plan", `{"plan":"pro"}`, 404},
	} {
		wantStatus(t, h.do(step.method, step.path, adminToken, step.body), step.status)
	}
	keys := h.do("GET", path+"/keys", adminToken, "")
	var kl struct{ Keys []struct{ ID string } }
	json.Unmarshal(keys.Body, &kl)
	wantStatus(t, h.do("DELETE", path+"/keys/"+kl.Keys[0].ID, adminToken, ""), 204)

	res = h.do("GET", "/admin/audit?account=1", adminToken, "")
	wantStatus(t, res, http.StatusOK)
	golden(t, "audit_admin", []byte(strings.ReplaceAll(string(res.Body), kl.Keys[0].ID, "KEYID")))
	if strings.Contains(string(res.Body), "argon2") {
		t.Errorf("the audit log holds a password hash: %s", res.Body)
	}

	// Every account, paged.
	wantLines(t, "GET /admin/audit?limit=2", h.audit("/admin/audit?limit=2", adminToken),
		`key.revoked admin 127.0.0.1 {"key_id":"`+kl.Keys[0].ID+`","name":"ci"}`,
		`usage.reset admin 127.0.0.1 {}`)
	wantLines(t, "GET /admin/audit?limit=2&before=5", h.audit("/admin/audit?limit=2&before=5", adminToken),
		`limits.removed admin 127.0.0.1 {"from":{"day":null,"hour":5}}`,
		`limits.changed admin 127.0.0.1 {"from":null,"to":{"day":null,"hour":5}}`)
	wantLines(t, "GET /admin/audit?account=99", h.audit("/admin/audit?account=99", adminToken))
}

// TestAuditUser: a user's own changes (registration, keys, a password
// reset) are theirs, from their IP; a rehash at login is no event; GET
// /v1/audit shows the session's account only.
func TestAuditUser(t *testing.T) {
	h := newHarness(t, withAudit, noAuthLimits)
	id := h.register("ada@example.com", "correct horse battery")
	other := h.register("bob@example.com", "correct horse battery")
	session := h.login("ada@example.com", "correct horse battery")
	wantStatus(t, h.do("PUT", fmt.Sprintf("/admin/accounts/%d/plan", id), adminToken, `{"plan":"vip"}`), 200)
	res := h.do("POST", "/v1/keys", session, `{"name":"laptop"}`)
	wantStatus(t, res, http.StatusCreated)
	var k struct{ ID string }
	json.Unmarshal(res.Body, &k)
	wantStatus(t, h.do("DELETE", "/v1/keys/"+k.ID, session, ""), http.StatusNoContent)

	// A reset, with a token as the mail would bring it.
	tok := "slr_" + sluice.RandomString(40)
	if err := h.DB.CreateToken(context.Background(), sluice.TokenPasswordReset, sluice.HashToken(tok), id, T0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.do("POST", "/auth/reset-password", "", fmt.Sprintf(`{"token":%q,"password":"new staple horse"}`, tok)), 200)
	session = h.login("ada@example.com", "new staple horse")

	// A hash with weaker parameters is replaced at login, silently.
	salt := make([]byte, 16)
	rand.Read(salt)
	b64 := base64.RawStdEncoding
	old := fmt.Sprintf("$argon2id$v=19$m=8192,t=1,p=1$%s$%s", b64.EncodeToString(salt),
		b64.EncodeToString(argon2.IDKey([]byte("old password!"), salt, 1, 8*1024, 1, 32)))
	if err := h.DB.SetPassword(context.Background(), other, old); err != nil {
		t.Fatal(err)
	}
	h.login("bob@example.com", "old password!")

	u := fmt.Sprintf("user/%d 127.0.0.1", id)
	want := []string{
		`password.reset ` + u + ` {}`,
		`key.revoked ` + u + ` {"key_id":"` + k.ID + `","name":"laptop"}`,
		`key.created ` + u + ` {"key_id":"` + k.ID + `","name":"laptop"}`,
		`plan.changed admin 127.0.0.1 {"from":"starter","to":"vip"}`,
		`account.created ` + u + ` {"email":"ada@example.com","plan":"starter"}`,
	}
	wantLines(t, "GET /v1/audit", h.audit("/v1/audit", session), want...)
	// An account parameter is not /v1/audit's: it is ignored.
	wantLines(t, "GET /v1/audit?account=other", h.audit(fmt.Sprintf("/v1/audit?account=%d", other), session), want...)
	wantLines(t, "GET /v1/audit?limit=2&before=5", h.audit("/v1/audit?limit=2&before=5", session), want[2:4]...)
	bob := h.login("bob@example.com", "old password!")
	wantLines(t, "GET /v1/audit of the other account", h.audit("/v1/audit", bob),
		fmt.Sprintf(`account.created user/%d 127.0.0.1 {"email":"bob@example.com","plan":"starter"}`, other))

	res = h.do("GET", "/v1/audit", session, "")
	if res.Header.Get("X-RateLimit-Limit-Hour") != "100" {
		t.Errorf("GET /v1/audit without the account's X-RateLimit-* fields: %v", res.Header)
	}
}

// TestAuditClientIP: behind a trusted proxy, the IP of an event is the
// client's, as the per-IP limits see it.
func TestAuditClientIP(t *testing.T) {
	h := newHarness(t, withAudit, withServer(func(s *sluicehttp.Server) {
		s.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}))
	wantStatus(t, h.doHeader("POST", "/admin/accounts", adminToken, `{"email":"ada@example.com"}`,
		xff("2001:db8::1, 203.0.113.5")), http.StatusCreated)
	wantStatus(t, h.doHeader("POST", "/auth/register", "", `{"email":"bob@example.com","password":"correct horse battery"}`,
		xff("198.51.100.9")), http.StatusCreated)
	wantLines(t, "GET /admin/audit", h.audit("/admin/audit", adminToken),
		`account.created user/2 198.51.100.9 {"email":"bob@example.com","plan":"starter"}`,
		`account.created admin 203.0.113.5 {"email":"ada@example.com","plan":"starter"}`)
}

// TestAuditQuery: bad parameters are 400 invalid_request naming the
// parameter; empty ones are as if absent.
func TestAuditQuery(t *testing.T) {
	h := newHarness(t, withAudit)
	h.account("starter")
	for _, tc := range []struct {
		query string
		field string // "" : 200
	}{
		{"", ""},
		{"account=1&limit=500&before=9223372036854775807", ""},
		{"account=&limit=&before=", ""},
		{"unknown=x", ""},
		{"account=abc", "account"},
		{"account=0", "account"},
		{"account=-1", "account"},
		{"account=%2B1", "account"},
		{"account=99999999999999999999", "account"},
		{"account=1&account=2", "account"},
		{"limit=0", "limit"},
		{"limit=501", "limit"},
		{"limit=1.5", "limit"},
		{"limit=1e2", "limit"},
		{"limit=%201", "limit"},
		{"before=0", "before"},
		{"before=x", "before"},
		{"limit=10&before=1&before=2", "before"},
	} {
		res := h.do("GET", "/admin/audit?"+tc.query, adminToken, "")
		if tc.field == "" {
			wantStatus(t, res, http.StatusOK)
			continue
		}
		var e struct{ Error, Message, Field string }
		json.Unmarshal(res.Body, &e)
		if res.Status != 400 || e.Error != "invalid_request" || e.Field != tc.field || !strings.Contains(e.Message, tc.field) {
			t.Errorf("GET /admin/audit?%s: %d %s, want 400 invalid_request naming %q", tc.query, res.Status, res.Body, tc.field)
		}
	}
	res := h.do("GET", "/admin/audit?limit=%zz", adminToken, "")
	if res.Status != 400 || !strings.Contains(string(res.Body), `"error":"invalid_request"`) {
		t.Errorf("a query that is not URL encoding: %d %s", res.Status, res.Body)
	}
}

// TestAuditAccess: the audit endpoints need the admin token or a session
// (an API key is no session); without an audit log they are 404 once
// authenticated.
func TestAuditAccess(t *testing.T) {
	for _, tc := range []struct {
		name  string
		audit bool
	}{{"with a log", true}, {"without", false}} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []harnessOpt
			if tc.audit {
				opts = append(opts, withAudit)
			}
			h := newHarness(t, opts...)
			_, key := h.account("vip")
			h.register("ada@example.com", "correct horse battery")
			session := h.login("ada@example.com", "correct horse battery")
			ok := http.StatusOK
			if !tc.audit {
				ok = http.StatusNotFound
			}
			for _, step := range []struct {
				path, token string
				status      int
			}{
				{"/admin/audit", "", 401},
				{"/admin/audit", "wrong", 401},
				{"/admin/audit", session, 401},
				{"/admin/audit", adminToken, ok},
				{"/v1/audit", "", 401},
				{"/v1/audit", key, 401},
				{"/v1/audit", adminToken, 401},
				{"/v1/audit", session, ok},
			} {
				res := h.do("GET", step.path, step.token, "")
				if res.Status != step.status {
					t.Errorf("GET %s with %q: %d %s, want %d", step.path, step.token, res.Status, res.Body, step.status)
				}
				if res.Status == 200 && !strings.HasPrefix(string(res.Body), `{"events":[`) {
					t.Errorf("GET %s: %s", step.path, res.Body)
				}
			}
			if r := h.do("POST", "/admin/audit", adminToken, ""); r.Status != http.StatusMethodNotAllowed {
				t.Errorf("POST /admin/audit: %d", r.Status)
			}
		})
	}
}
