package web

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
)

// Cookies of the console.
const (
	csrfCookie    = "sluice_csrf"    // random; the CSRF tokens are HMACs of it
	sessionCookie = "sluice_session" // the session token of the signed-in user
	opsCookie     = "sluice_ops"     // "<expiry>.<HMAC>" of the signed-in operator
	// csrfField is the form field of the CSRF token.
	csrfField = "csrf"
	// OpsSessionTTL is how long an operator stays signed in.
	OpsSessionTTL = 12 * time.Hour
	// maxCookie bounds a cookie value that the console reads.
	maxCookie = 256
)

// csrfToken returns the CSRF token of the browser that sent r, setting its
// csrf cookie first if it has none.
func (s *Server) csrfToken(w http.ResponseWriter, r *http.Request) string {
	v := cookieValue(r, csrfCookie)
	if v == "" {
		v = sluice.RandomString(32)
		http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: v, Path: "/", HttpOnly: true,
			SameSite: http.SameSiteLaxMode, Secure: s.secureCookies(r)})
		// Later code of this request (a form rendered after a POST) must
		// see the new value too.
		r.AddCookie(&http.Cookie{Name: csrfCookie, Value: v})
	}
	return s.mac("csrf", v)
}

// checkCSRF reports whether the POST r carries the CSRF token of its csrf
// cookie.
func (s *Server) checkCSRF(r *http.Request) bool {
	v := cookieValue(r, csrfCookie)
	tok := r.PostForm.Get(csrfField)
	if v == "" || tok == "" {
		return false
	}
	return hmac.Equal([]byte(tok), []byte(s.mac("csrf", v)))
}

// mac is the base64url HMAC-SHA256 of purpose and v under the CSRF key.
func (s *Server) mac(purpose, v string) string {
	return macWith(s.csrfKey, purpose, v)
}

func macWith(key []byte, purpose, v string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write([]byte(v))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// cookieValue returns the value of the named cookie, or "" if there is
// none or it is too long to be one of ours.
func cookieValue(r *http.Request, name string) string {
	c, err := r.Cookie(name)
	if err != nil || len(c.Value) > maxCookie {
		return ""
	}
	return c.Value
}

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, name, value, path string, expires time.Time) {
	c := &http.Cookie{Name: name, Value: value, Path: path, HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: s.secureCookies(r)}
	if value == "" {
		c.MaxAge = -1
	} else if !expires.IsZero() {
		c.Expires = expires.UTC()
		c.MaxAge = int(max(expires.Sub(s.now())/time.Second, 1))
	}
	http.SetCookie(w, c)
}

// session returns the signed-in user of r and their session.
func (s *Server) session(r *http.Request) (*sluice.Account, *sluice.Session, bool) {
	tok := cookieValue(r, sessionCookie)
	if tok == "" || !printable(tok) {
		return nil, nil, false
	}
	sess, err := s.Accounts.FindSession(r.Context(), sluice.HashToken(tok), s.now())
	if err != nil {
		if sluice.ErrorCode(err) != sluice.ENOTFOUND {
			s.logger().Warn("console: find session", "error", err.Error())
		}
		return nil, nil, false
	}
	a, err := s.Accounts.FindAccountByID(r.Context(), sess.AccountID)
	if err != nil {
		return nil, nil, false
	}
	return a, sess, true
}

func printable(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] >= 0x7f {
			return false
		}
	}
	return true
}

type accountKey struct{}

// user wraps a handler of a signed-in user: others are sent to /login (a
// JSON client gets 401). The handler's context carries the account and the
// user as the actor of its changes.
func (s *Server) user(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, _, ok := s.session(r)
		if !ok {
			if wantsJSON(r) {
				writeJSONError(w, http.StatusUnauthorized, sluice.EUNAUTHORIZED, "Sign in at /login first.")
				return
			}
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		ctx := context.WithValue(r.Context(), accountKey{}, a)
		ctx = sluice.WithActor(ctx, sluice.Actor{Type: sluice.ActorUser, ID: strconv.FormatInt(a.ID, 10), IP: s.ipString(r)})
		h(w, r.WithContext(ctx))
	}
}

func (s *Server) ipString(r *http.Request) string {
	if ip := s.clientIP(r); ip.IsValid() {
		return ip.String()
	}
	return ""
}

func accountOf(r *http.Request) *sluice.Account {
	a, _ := r.Context().Value(accountKey{}).(*sluice.Account)
	return a
}

// opsCookieValue is the operator's cookie for a session that ends at
// expires: the expiry and an HMAC of it under the operator key.
func (s *Server) opsCookieValue(expires time.Time) string {
	e := strconv.FormatInt(expires.Unix(), 10)
	return e + "." + macWith(s.opsKey, "ops", e)
}

// opsSignedIn reports whether r carries a valid, unexpired operator cookie.
func (s *Server) opsSignedIn(r *http.Request) bool {
	if s.opsKey == nil {
		return false
	}
	e, sig, ok := strings.Cut(cookieValue(r, opsCookie), ".")
	if !ok {
		return false
	}
	exp, err := strconv.ParseInt(e, 10, 64)
	if err != nil || !s.now().Before(time.Unix(exp, 0)) {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(macWith(s.opsKey, "ops", e)))
}

// ops wraps an operator handler: without a valid operator cookie the
// request is sent to /ops/login. The handler's context carries the admin
// as the actor of its changes.
func (s *Server) ops(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.opsSignedIn(r) {
			if wantsJSON(r) {
				writeJSONError(w, http.StatusUnauthorized, sluice.EUNAUTHORIZED, "Sign in at /ops/login first.")
				return
			}
			http.Redirect(w, r, "/ops/login", http.StatusSeeOther)
			return
		}
		ctx := sluice.WithActor(r.Context(), sluice.Actor{Type: sluice.ActorAdmin, IP: s.ipString(r)})
		h(w, r.WithContext(ctx))
	}
}

// adminTokenOK compares a token with the admin token in constant time,
// hashing both first so that not even the length leaks.
func (s *Server) adminTokenOK(tok string) bool {
	if s.AdminToken == "" || tok == "" {
		return false
	}
	got, want := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(s.AdminToken))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// wantsJSON reports whether the client asked for JSON rather than a page.
func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json") ||
		strings.HasPrefix(r.Header.Get("Content-Type"), "application/json")
}

// writeJSONError writes a §5 error body.
func writeJSONError(w http.ResponseWriter, status int, code, message string) {
	var b bytes.Buffer
	b.WriteString(`{"error":`)
	b.WriteString(strconv.Quote(code))
	b.WriteString(`,"message":`)
	b.WriteString(strconv.Quote(message))
	b.WriteString("}\n")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}
