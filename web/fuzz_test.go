package web

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseLimitField: any text is a limit within bounds, or a problem in
// words; never both, never a panic.
func FuzzParseLimitField(f *testing.F) {
	for _, s := range []string{"", "0", "7", "1,000", " 10000000 ", "10000001", "-1", "unlimited", "UNLIMITED", "1e3", "0x10", "9223372036854775808", "٣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		l, problem := parseLimitField(v)
		if problem != "" {
			if l != 0 {
				t.Fatalf("%q: limit %d with problem %q", v, l, problem)
			}
			return
		}
		if !l.IsUnlimited() && (l < 0 || l > MaxOverride) {
			t.Fatalf("%q: limit %d out of bounds", v, l)
		}
	})
}

// FuzzParseAfter: a paging parameter is a non-negative ID or refused.
func FuzzParseAfter(f *testing.F) {
	for _, s := range []string{"", "0", "42", "-1", "abc", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, ok := parseAfter(v)
		if ok && n < 0 || !ok && n != 0 {
			t.Fatalf("%q: %d %v", v, n, ok)
		}
	})
}

// FuzzOnOff: only the six spellings are read.
func FuzzOnOff(f *testing.F) {
	for _, s := range []string{"on", "off", "true", "false", "1", "0", "", "On"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		on, ok := parseOnOff(v)
		if !ok && on {
			t.Fatalf("%q: on without ok", v)
		}
	})
}

// FuzzOpsCookie: no cookie value but the signed ones signs an operator in.
func FuzzOpsCookie(f *testing.F) {
	s := &Server{AdminToken: "fuzz-token", Now: func() time.Time { return time.Unix(1_800_000_000, 0) }}
	s.init()
	good := s.opsCookieValue(time.Unix(1_800_000_100, 0))
	f.Add(good)
	f.Add("1800000100.")
	f.Add("")
	f.Add("x.y.z")
	f.Fuzz(func(t *testing.T, v string) {
		req := httptest.NewRequest("GET", "/ops/", nil)
		req.Header.Set("Cookie", opsCookie+"="+v)
		if s.opsSignedIn(req) && v != good {
			t.Fatalf("%q signs an operator in", v)
		}
	})
}

// FuzzForms posts arbitrary form bodies, with a valid CSRF token, to every
// form of the console, as a user and as the operator: the answer is never
// a 500, and never a panic.
func FuzzForms(f *testing.F) {
	for _, s := range []string{
		"email=a%40example.com&password=correct+horse&password2=correct+horse",
		"name=laptop", "name=", "plan=vip", "plan=%00", "hour=1&day=", "hour=-5&day=x",
		"confirm=yes", "email=on", "token=slr_abc&password=x&password2=x", "%zz", "a=%",
		strings.Repeat("x", 70<<10),
	} {
		f.Add(s, uint8(0))
	}
	e := newEnv(f, nil)
	user, a := e.signIn("ann@example.com")
	e.db.SetPlan(f.Context(), a.ID, "vip")
	ops := e.opsClient()
	var cookies []*http.Cookie
	for _, c := range []*client{user, ops} {
		cookies = append(cookies, c.jar.Cookies(mustURL(e.ts.URL+"/ops/"))...)
	}
	csrf := map[string]string{}
	for _, c := range cookies {
		csrf[c.Name] = c.Value
	}
	token := e.console.mac("csrf", csrf[csrfCookie])
	var jar []*http.Cookie
	for name, value := range csrf {
		jar = append(jar, &http.Cookie{Name: name, Value: value})
	}
	h := e.api.Handler()
	f.Fuzz(func(t *testing.T, body string, route uint8) {
		routes := []string{"/signup", "/login", "/forgot-password", "/reset-password", "/account/keys",
			"/account/keys/abc/revoke", "/account/telegram", "/account/alerts", "/logout", "/ops/login",
			"/ops/accounts/1/plan", "/ops/accounts/1/limits", "/ops/accounts/1/limits/delete",
			"/ops/accounts/1/usage/reset", "/ops/accounts/1/keys/abc/revoke", "/ops/logout"}
		path := routes[int(route)%len(routes)]
		v, err := url.ParseQuery(body)
		if err != nil {
			v = url.Values{}
		}
		v.Set("csrf", token)
		req := httptest.NewRequest("POST", path, strings.NewReader(v.Encode()+"&"+body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, c := range jar {
			req.AddCookie(c)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("POST %s %q: %d %s", path, body, w.Code, w.Body)
		}
	})
}

// FuzzKeyName: a key name is trimmed, non-empty text of at most
// MaxKeyName characters, or refused in words.
func FuzzKeyName(f *testing.F) {
	for _, s := range []string{"laptop", "", "   ", "<script>", strings.Repeat("é", 101), "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		name, problem := keyName(v)
		if problem != "" {
			if name != "" {
				t.Fatalf("%q: name %q with problem %q", v, name, problem)
			}
			return
		}
		if name == "" || name != strings.TrimSpace(name) || !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxKeyName {
			t.Fatalf("%q: accepted as %q", v, name)
		}
	})
}
