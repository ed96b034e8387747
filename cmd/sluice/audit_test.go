package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/telegram/telegramtest"
)

// TestMainAudit goes through every action of CONTRACT.md §10's audit list
// on the embedded account store: by the admin API, a user's session, the
// bot and a password reset through the outbox.
func TestMainAudit(t *testing.T) {
	auditJourney(t, map[string]string{})
}

// TestMainAuditPostgres is TestMainAudit on PostgreSQL, in a schema of its
// own.
func TestMainAuditPostgres(t *testing.T) {
	url, _ := testenv.PostgresSchema(t)
	auditJourney(t, map[string]string{"SLUICE_DATABASE_URL": url})
}

// auditLines gets an audit endpoint and returns its events as lines of
// "account action actor-type[/actor-id] ip details", newest first.
func (g *gateway) auditLines(path, token string) []string {
	g.t.Helper()
	r := g.do("GET", path, token, "")
	if r.status != 200 {
		g.t.Fatalf("GET %s: %d %s", path, r.status, r.body)
	}
	var v struct {
		Events []struct {
			ID    int64 `json:"id"`
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
	if err := json.Unmarshal(r.body, &v); err != nil {
		g.t.Fatalf("GET %s: %v: %s", path, err, r.body)
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
		out = append(out, fmt.Sprintf("%d %s %s %s %s", e.AccountID, e.Action, actor, ip, e.Details))
	}
	return out
}

func auditJourney(t *testing.T, env map[string]string) {
	api := telegramtest.NewServer(t, botToken)
	env["SLUICE_TELEGRAM_TOKEN"] = botToken
	env["SLUICE_TELEGRAM_API_URL"] = api.URL
	g := startBotMain(t, telegramConfig, env)
	status := func(want int, r response) response {
		t.Helper()
		if r.status != want {
			t.Fatalf("%d %s, want %d", r.status, r.body, want)
		}
		return r
	}
	var secrets []string // what must never be in the log

	// The admin: an account, its plan, limits, a key, a usage reset.
	r := status(201, g.do("POST", "/admin/accounts", g.admin, `{"email":"ada@example.com","plan":"vip","password":"ada's password"}`))
	ada := int64(r.json(t)["user_id"].(float64))
	acct := fmt.Sprintf("/admin/accounts/%d", ada)
	status(200, g.do("PUT", acct+"/plan", g.admin, `{"plan":"starter"}`))
	status(200, g.do("PUT", acct+"/plan", g.admin, `{"plan":"starter"}`)) // no change, no event
	status(200, g.do("PUT", acct+"/limits", g.admin, `{"hour":5,"day":null}`))
	status(200, g.do("DELETE", acct+"/limits", g.admin, ""))
	r = status(201, g.do("POST", acct+"/keys", g.admin, `{"name":"ci"}`))
	adaKey, adaKeyID := r.json(t)["key"].(string), r.json(t)["id"].(string)
	status(204, g.do("DELETE", acct+"/usage", g.admin, ""))
	status(204, g.do("DELETE", acct+"/keys/"+adaKeyID, g.admin, ""))
	secrets = append(secrets, g.admin, "ada's password", adaKey, adaKey[len("slk_"):])

	// A user: registration, a key made and revoked with a session, and a
	// password reset with the token from the outbox.
	r = status(201, g.do("POST", "/auth/register", "", `{"email":"bob@example.com","password":"bob's password"}`))
	bob := int64(r.json(t)["user_id"].(float64))
	session := g.session("bob@example.com", "bob's password")
	r = status(201, g.do("POST", "/v1/keys", session, `{"name":"laptop"}`))
	bobKey, bobKeyID := r.json(t)["key"].(string), r.json(t)["id"].(string)
	status(204, g.do("DELETE", "/v1/keys/"+bobKeyID, session, ""))
	status(202, g.do("POST", "/auth/forgot-password", "", `{"email":"bob@example.com"}`))
	_, text := outboxMail(t, filepath.Join(g.m.Config.Server.Data, "outbox"), 1)
	token := resetTokenRE.FindString(text)
	status(200, g.do("POST", "/auth/reset-password", "", fmt.Sprintf(`{"token":%q,"password":"bob's new password"}`, token)))
	session2 := g.session("bob@example.com", "bob's new password") // a login is no event
	secrets = append(secrets, "bob's password", "bob's new password", session, session2, token, bobKey, bobKey[len("slk_"):])

	// The bot: a first message makes an account; /link with the code of
	// bob's session moves the Telegram user to bob's account.
	const tg = 501
	api.Say(tg, "/start")
	wantBotText(t, api.WaitSentTo(tg, 1)[0], "Hi!")
	own, err := g.m.Accounts.FindAccountByTelegram(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	r = status(201, g.do("POST", "/v1/telegram/link", session2, ""))
	code := r.json(t)["code"].(string)
	api.Say(tg, "/link "+code)
	wantBotText(t, api.WaitSentTo(tg, 2)[1], "Linked", "bob@example.com")
	secrets = append(secrets, code)

	admin := "admin 127.0.0.1"
	wantAda := []string{
		fmt.Sprintf(`%d key.revoked %s {"key_id":%q,"name":"ci"}`, ada, admin, adaKeyID),
		fmt.Sprintf(`%d usage.reset %s {}`, ada, admin),
		fmt.Sprintf(`%d key.created %s {"key_id":%q,"name":"ci"}`, ada, admin, adaKeyID),
		fmt.Sprintf(`%d limits.removed %s {"from":{"day":null,"hour":5}}`, ada, admin),
		fmt.Sprintf(`%d limits.changed %s {"from":null,"to":{"day":null,"hour":5}}`, ada, admin),
		fmt.Sprintf(`%d plan.changed %s {"from":"vip","to":"starter"}`, ada, admin),
		fmt.Sprintf(`%d account.created %s {"email":"ada@example.com","plan":"vip"}`, ada, admin),
	}
	user := fmt.Sprintf("user/%d 127.0.0.1", bob)
	wantBob := []string{
		fmt.Sprintf(`%d telegram.linked telegram/%d - {"from_account_id":%d,"telegram_id":%d}`, bob, tg, own.ID, tg),
		fmt.Sprintf(`%d password.reset %s {}`, bob, user),
		fmt.Sprintf(`%d key.revoked %s {"key_id":%q,"name":"laptop"}`, bob, user, bobKeyID),
		fmt.Sprintf(`%d key.created %s {"key_id":%q,"name":"laptop"}`, bob, user, bobKeyID),
		fmt.Sprintf(`%d account.created %s {"email":"bob@example.com","plan":"starter"}`, bob, user),
	}
	wantOwn := []string{
		fmt.Sprintf(`%d telegram.unlinked telegram/%d - {"telegram_id":%d,"to_account_id":%d}`, own.ID, tg, tg, bob),
		fmt.Sprintf(`%d account.created telegram/%d - {"plan":"starter","telegram_id":%d}`, own.ID, tg, tg),
	}
	for _, tc := range []struct {
		path, token string
		want        []string
	}{
		{fmt.Sprintf("/admin/audit?account=%d", ada), g.admin, wantAda},
		{fmt.Sprintf("/admin/audit?account=%d", bob), g.admin, wantBob},
		{fmt.Sprintf("/admin/audit?account=%d", own.ID), g.admin, wantOwn},
		{"/v1/audit", session2, wantBob},
		{"/v1/audit?limit=2", session2, wantBob[:2]},
	} {
		if diff := cmp.Diff(tc.want, g.auditLines(tc.path, tc.token)); diff != "" {
			t.Errorf("GET %s (-want +got):\n%s", tc.path, diff)
		}
	}
	all := g.auditLines("/admin/audit?limit=500", g.admin)
	if len(all) != len(wantAda)+len(wantBob)+len(wantOwn) {
		t.Errorf("GET /admin/audit: %d events, want %d:\n%s", len(all), len(wantAda)+len(wantBob)+len(wantOwn), strings.Join(all, "\n"))
	}
	// Paging from the second page on gives the rest.
	page := g.auditLines("/admin/audit?limit=3", g.admin)
	var last struct {
		Events []struct{ ID int64 } `json:"events"`
	}
	json.Unmarshal(g.do("GET", "/admin/audit?limit=3", g.admin, "").body, &last)
	rest := g.auditLines(fmt.Sprintf("/admin/audit?before=%d&limit=500", last.Events[2].ID), g.admin)
	if diff := cmp.Diff(all, append(page, rest...)); diff != "" {
		t.Errorf("pages (-whole +paged):\n%s", diff)
	}

	body := string(g.do("GET", "/admin/audit?limit=500", g.admin, "").body)
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Errorf("the audit log holds a secret %q", s)
		}
	}
	if strings.Contains(body, "argon2") {
		t.Errorf("the audit log holds a password hash")
	}
}
