package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var resetTokenRE = regexp.MustCompile(`slr_[0-9A-Za-z]{40}`)

// outboxMail waits for the n-th message (from 1) in the outbox directory
// and returns its recipient and decoded text.
func outboxMail(t *testing.T, dir string, n int) (to, text string) {
	t.Helper()
	var names []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		names, _ = filepath.Glob(filepath.Join(dir, "*.eml"))
		if len(names) >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the outbox %s holds %d messages, want %d", dir, len(names), n)
		}
	}
	slices.Sort(names)
	raw, err := os.ReadFile(names[n-1])
	if err != nil {
		t.Fatal(err)
	}
	return parseMail(t, raw)
}

func parseMail(t *testing.T, raw []byte) (to, text string) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("mail: %v\n%s", err, raw)
	}
	addrs, err := msg.Header.AddressList("To")
	if err != nil || len(addrs) != 1 {
		t.Fatalf("To: %v %v", addrs, err)
	}
	b, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	return addrs[0].Address, strings.ReplaceAll(string(b), "\r\n", "\n")
}

func (g *gateway) session(email, password string) string {
	g.t.Helper()
	r := g.do("POST", "/auth/login", "", fmt.Sprintf(`{"email":%q,"password":%q}`, email, password))
	if r.status != 200 {
		g.t.Fatalf("login %s: %d %s", email, r.status, r.body)
	}
	return r.json(g.t)["token"].(string)
}

// TestMainAccountJourney: register → login → a key once an admin moved the
// account to VIP → generate → forgot-password → reset with the token from
// the outbox → the old session is refused and the new password works; a
// revoked key fails on its very next use, through the real key cache.
func TestMainAccountJourney(t *testing.T) {
	data := t.TempDir()
	g := startMain(t, data, map[string]string{})

	r := g.do("POST", "/auth/register", "", `{"email":"ada@example.com","password":"correct horse battery"}`)
	if r.status != 201 || r.json(t)["plan"] != "starter" || r.json(t)["email"] != "ada@example.com" {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	id := int64(r.json(t)["user_id"].(float64))
	session := g.session("ada@example.com", "correct horse battery")

	if r := g.do("POST", "/v1/keys", session, `{"name":"laptop"}`); r.status != 403 || r.json(t)["error"] != "api_access_not_included" {
		t.Fatalf("key on Starter: %d %s", r.status, r.body)
	}
	if r := g.do("PUT", fmt.Sprintf("/admin/accounts/%d/plan", id), g.admin, `{"plan":"vip"}`); r.status != 200 {
		t.Fatalf("move to VIP: %d %s", r.status, r.body)
	}
	r = g.do("POST", "/v1/keys", session, `{"name":"laptop"}`)
	if r.status != 201 {
		t.Fatalf("create key: %d %s", r.status, r.body)
	}
	key, keyID := r.json(t)["key"].(string), r.json(t)["id"].(string)
	if r.header.Get("X-Ratelimit-Limit-Hour") != "100" {
		t.Errorf("POST /v1/keys without the account's headers: %v", r.header)
	}
	r = g.generate(key, 2)
	if r.status != 200 {
		t.Fatalf("generate: %d %s", r.status, r.body)
	}
	wantHeaders(t, r.header, g.clock.Now(), 100, 98, 3600, 1000, 998, 86400)
	r = g.do("GET", "/v1/keys", session, "")
	keys := r.json(t)["keys"].([]any)
	if r.status != 200 || len(keys) != 1 || keys[0].(map[string]any)["prefix"] != "slk_"+keyID || keys[0].(map[string]any)["last_used_at"] == nil {
		t.Fatalf("list keys: %d %s", r.status, r.body)
	}

	// Forgot password: the token arrives in <data>/outbox.
	if r := g.do("POST", "/auth/forgot-password", "", `{"email":"ADA@example.com"}`); r.status != 202 || strings.TrimSpace(string(r.body)) != `{"status":"sent"}` {
		t.Fatalf("forgot-password: %d %s", r.status, r.body)
	}
	to, text := outboxMail(t, filepath.Join(data, "outbox"), 1)
	token := resetTokenRE.FindString(text)
	if to != "ada@example.com" || token == "" {
		t.Fatalf("mail to %s:\n%s", to, text)
	}
	if r := g.do("POST", "/auth/reset-password", "", fmt.Sprintf(`{"token":%q,"password":"new staple horse"}`, token)); r.status != 200 {
		t.Fatalf("reset: %d %s", r.status, r.body)
	}
	if r := g.do("GET", "/v1/keys", session, ""); r.status != 401 || r.json(t)["error"] != "unauthorized" {
		t.Fatalf("old session after the reset: %d %s", r.status, r.body)
	}
	if r := g.do("POST", "/auth/login", "", `{"email":"ada@example.com","password":"correct horse battery"}`); r.status != 401 || r.json(t)["error"] != "invalid_credentials" {
		t.Fatalf("old password: %d %s", r.status, r.body)
	}
	session = g.session("ada@example.com", "new staple horse")
	if r := g.do("POST", "/auth/reset-password", "", fmt.Sprintf(`{"token":%q,"password":"third password"}`, token)); r.status != 400 {
		t.Fatalf("token used twice: %d %s", r.status, r.body)
	}

	// The key is cached by its last use; revoking empties the cache.
	if r := g.generate(key, 1); r.status != 200 {
		t.Fatalf("generate before revoke: %d %s", r.status, r.body)
	}
	if r := g.do("DELETE", "/v1/keys/"+keyID, session, ""); r.status != 204 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := g.generate(key, 1); r.status != 401 || r.json(t)["error"] != "invalid_api_key" {
		t.Fatalf("revoked key: %d %s", r.status, r.body)
	}

	r = g.do("POST", "/v1/telegram/link", session, "")
	if r.status != 201 || len(r.json(t)["code"].(string)) != 10 {
		t.Fatalf("telegram link: %d %s", r.status, r.body)
	}
	if r := g.do("GET", "/v1/usage", session, ""); r.status != 200 || r.json(t)["hour"].(map[string]any)["used"] != 3.0 {
		t.Fatalf("usage by session: %d %s", r.status, r.body)
	}
}

// TestMainAuthLimits: limits.auth.* and server.trusted_proxies reach the
// gateway: the per-IP login limit, a spoofed X-Forwarded-For ignored, the
// client behind a trusted proxy limited on its own.
func TestMainAuthLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted string
	}{{"direct", ""}, {"behind a proxy", "127.0.0.1/32"}} {
		t.Run(tc.name, func(t *testing.T) {
			g := startMain(t, "", map[string]string{
				"SLUICE_LIMITS_AUTH_LOGIN":      "2/1m",
				"SLUICE_SERVER_TRUSTED_PROXIES": tc.trusted,
			})
			login := func(forwarded string) response {
				t.Helper()
				req, _ := http.NewRequest("POST", g.url+"/auth/login", strings.NewReader(`{"email":"a@example.com","password":"x"}`))
				if forwarded != "" {
					req.Header.Set("X-Forwarded-For", forwarded)
				}
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				b, _ := io.ReadAll(res.Body)
				return response{res.StatusCode, res.Header, b}
			}
			for range 2 {
				if r := login("203.0.113.1"); r.status != 401 {
					t.Fatalf("login: %d %s", r.status, r.body)
				}
			}
			r := login("203.0.113.1")
			want := `{"error":"rate_limit_exceeded","message":"Rate limit reached: 2 requests/minute per IP on POST /auth/login","retry_after":60}`
			if r.status != 429 || strings.TrimSpace(string(r.body)) != want || r.header.Get("Retry-After") != "60" {
				t.Fatalf("third login: %d %s", r.status, r.body)
			}
			other := login("203.0.113.2").status
			if tc.trusted == "" && other != 429 {
				t.Fatalf("a spoofed X-Forwarded-For dodged the limit: %d", other)
			}
			if tc.trusted != "" && other != 401 {
				t.Fatalf("another client behind the proxy: %d", other)
			}
		})
	}
}

// TestMainAuthMode: limits.auth.mode decides the auth limits alone;
// limits.mode: shadow (trying plan quotas) leaves them enforced.
func TestMainAuthMode(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env       map[string]string
		wantThird int
	}{
		{"plan quotas in shadow", map[string]string{"SLUICE_LIMITS_MODE": "shadow"}, 429},
		{"auth limits in shadow", map[string]string{"SLUICE_LIMITS_AUTH_MODE": "shadow"}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.env["SLUICE_LIMITS_AUTH_LOGIN"] = "2/1m"
			g := startMain(t, "", tc.env)
			body := `{"email":"a@example.com","password":"wrong password"}`
			for range 2 {
				if r := g.do("POST", "/auth/login", "", body); r.status != 401 {
					t.Fatalf("login: %d %s", r.status, r.body)
				}
			}
			if r := g.do("POST", "/auth/login", "", body); r.status != tc.wantThird {
				t.Fatalf("third login: %d %s, want %d", r.status, r.body, tc.wantThird)
			}
		})
	}
}

// fakeSMTP is a minimal SMTP server on 127.0.0.1 (no TLS, which sluice
// allows for a loopback relay) that answers greeting with greet and takes
// every message.
type fakeSMTP struct {
	ln    net.Listener
	mu    sync.Mutex
	msgs  [][]byte
	greet string
}

func newFakeSMTP(t *testing.T, greet string) *fakeSMTP {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSMTP{ln: ln, greet: greet}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { f.serve(c) })
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return f
}

func (f *fakeSMTP) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(c)
	fmt.Fprintf(c, "%s\r\n", f.greet)
	if !strings.HasPrefix(f.greet, "220") {
		return
	}
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return
		}
		switch verb := strings.ToUpper(strings.Fields(line + " x")[0]); verb {
		case "EHLO", "HELO", "MAIL", "RCPT", "RSET", "NOOP":
			fmt.Fprint(c, "250 ok\r\n")
		case "DATA":
			fmt.Fprint(c, "354 go ahead\r\n")
			var msg bytes.Buffer
			for {
				l, err := rd.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				msg.WriteString(strings.TrimPrefix(l, "."))
			}
			f.mu.Lock()
			f.msgs = append(f.msgs, msg.Bytes())
			f.mu.Unlock()
			fmt.Fprint(c, "250 queued\r\n")
		case "QUIT":
			fmt.Fprint(c, "221 bye\r\n")
			return
		default:
			fmt.Fprint(c, "502 unknown\r\n")
		}
	}
}

func (f *fakeSMTP) port() string { return strconv.Itoa(f.ln.Addr().(*net.TCPAddr).Port) }

func (f *fakeSMTP) messages() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.msgs)
}

// TestMainSMTP: with mail.smtp_host set, the reset mail goes to the mail
// server, with mail.from and a link to mail.reset_url, and nothing to the
// outbox. A mail server that refuses changes nothing for the client.
func TestMainSMTP(t *testing.T) {
	f := newFakeSMTP(t, "220 fake ESMTP")
	data := t.TempDir()
	g := startMain(t, data, map[string]string{
		"SLUICE_MAIL_SMTP_HOST": "127.0.0.1",
		"SLUICE_MAIL_SMTP_PORT": f.port(),
		"SLUICE_MAIL_FROM":      "Sluice <noreply@example.com>",
		"SLUICE_MAIL_RESET_URL": "https://app.example.com/reset-password",
	})
	g.do("POST", "/auth/register", "", `{"email":"ada@example.com","password":"correct horse battery"}`)
	if r := g.do("POST", "/auth/forgot-password", "", `{"email":"ada@example.com"}`); r.status != 202 {
		t.Fatalf("forgot-password: %d %s", r.status, r.body)
	}
	for deadline := time.Now().Add(10 * time.Second); len(f.messages()) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no mail reached the SMTP server")
		}
	}
	raw := f.messages()[0]
	to, text := parseMail(t, raw)
	token := resetTokenRE.FindString(text)
	if to != "ada@example.com" || !bytes.Contains(raw, []byte(`From: "Sluice" <noreply@example.com>`)) ||
		!strings.Contains(text, "https://app.example.com/reset-password?token="+token) {
		t.Fatalf("mail:\n%s", raw)
	}
	if _, err := os.Stat(filepath.Join(data, "outbox")); !os.IsNotExist(err) {
		t.Fatalf("outbox with SMTP configured: %v", err)
	}

	// A mail server that refuses everything: the answer is the same.
	bad := newFakeSMTP(t, "554 5.3.2 no service")
	g2 := startMain(t, "", map[string]string{
		"SLUICE_MAIL_SMTP_HOST": "127.0.0.1",
		"SLUICE_MAIL_SMTP_PORT": bad.port(),
		"SLUICE_MAIL_FROM":      "noreply@example.com",
	})
	g2.do("POST", "/auth/register", "", `{"email":"ada@example.com","password":"correct horse battery"}`)
	if r := g2.do("POST", "/auth/forgot-password", "", `{"email":"ada@example.com"}`); r.status != 202 || strings.TrimSpace(string(r.body)) != `{"status":"sent"}` {
		t.Fatalf("forgot-password with a refusing mail server: %d %s", r.status, r.body)
	}
}
