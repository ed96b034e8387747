package web

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sluicehq/sluice"
)

// Bounds of the account's own actions, as the API has them.
const (
	// MaxKeyName is the longest key name, in characters.
	MaxKeyName = 100
	// MaxKeysPerAccount bounds the live keys an account creates itself.
	MaxKeysPerAccount = 100
	// TelegramLinkTTL is how long a link code can be used.
	TelegramLinkTTL = 10 * time.Minute
	// telegramCodeLen is the length of a link code (base62).
	telegramCodeLen = 10
)

// Notices shown after a redirect, by the "done" query parameter: fixed
// texts, so that a link cannot make the page say anything else.
var notices = map[string]string{
	"registered":     "Your account is ready. Sign in with your email and password.",
	"signed-out":     "You are signed out.",
	"password-reset": "Your password is changed and every session was signed out. Sign in with the new password.",
	"key-revoked":    "The key is revoked: it stops working at once.",
	"alerts-on":      "Mail alerts are on.",
	"alerts-off":     "Mail alerts are off.",
	"plan-changed":   "The plan is changed; it applies from the next request.",
	"limits-changed": "The limit override is set; it applies from the next request.",
	"limits-removed": "The override is removed: the plan's limits apply again.",
	"usage-reset":    "The usage counters are reset.",
}

func notice(r *http.Request) string { return notices[r.URL.Query().Get("done")] }

// formError turns an error of sluice.AuthService into what the form shows:
// a message for one field, or for the whole form, and the status. ok is
// false for an internal error, which the caller answers as such.
func formError(err error, now time.Time) (field, msg string, status int, ok bool) {
	var e *sluice.Error
	if !errors.As(err, &e) {
		return "", "", 0, false
	}
	switch e.Code {
	case sluice.EINVALID:
		return e.Field, sentence(e.Message), http.StatusBadRequest, true
	case sluice.EEMAILTAKEN:
		return "email", "An account with this email already exists. Sign in, or reset your password if you forgot it.", http.StatusConflict, true
	case sluice.EINVALIDCREDS:
		return "", "Wrong email or password.", http.StatusUnauthorized, true
	case sluice.ERATELIMIT:
		what := "Too many attempts from your network."
		if strings.Contains(e.Message, "failed logins") {
			what = "Too many failed sign-ins for this account."
		}
		return "", what + " " + retryText(e.RetryAfter, now), http.StatusTooManyRequests, true
	case sluice.EUNAVAILABLE:
		return "", "The service is busy right now. Try again in a moment.", http.StatusServiceUnavailable, true
	}
	return "", "", 0, false
}

// sentence makes an API message read as a sentence: a capital first letter.
func sentence(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	return string(unicode.ToUpper(r)) + s[n:]
}

// authFailed renders the form page name again with the error of err.
func (s *Server) authFailed(w http.ResponseWriter, r *http.Request, name string, p *page, err error) {
	field, msg, status, ok := formError(err, s.now())
	if !ok {
		s.internalError(w, r, err)
		return
	}
	if field != "" {
		p.Errors = map[string]string{field: msg}
	} else {
		p.Error = msg
	}
	var e *sluice.Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(e.RetryAfter, 10))
	}
	s.render(w, r, status, name, p)
}

func (s *Server) handleSignupPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "signup", &page{Title: "Create an account"})
}

// handleSignup handles the sign-up form: the per-IP limit of POST
// /auth/register, then the account.
func (s *Server) handleSignup(w http.ResponseWriter, r *http.Request) {
	email, pw := r.PostForm.Get("email"), r.PostForm.Get("password")
	p := &page{Title: "Create an account", Form: map[string]string{"email": email}}
	if err := s.Auth.CheckAuthLimit(r.Context(), sluice.AuthRegister, s.clientIP(r)); err != nil {
		s.authFailed(w, r, "signup", p, err)
		return
	}
	if pw != r.PostForm.Get("password2") {
		p.Errors = map[string]string{"password2": "The two passwords differ. Type the same password twice."}
		s.render(w, r, http.StatusBadRequest, "signup", p)
		return
	}
	ctx := sluice.WithActor(r.Context(), sluice.Actor{Type: sluice.ActorUser, IP: s.ipString(r)})
	if _, err := s.Auth.Register(ctx, email, pw); err != nil {
		s.authFailed(w, r, "signup", p, err)
		return
	}
	http.Redirect(w, r, "/login?done=registered", http.StatusSeeOther)
}

func (s *Server) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.session(r); ok {
		http.Redirect(w, r, "/account", http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "login", &page{Title: "Sign in", Notice: notice(r)})
}

// handleLogin handles the sign-in form: the per-IP limit of POST
// /auth/login, then sluice.AuthService.Login, whose failed-login delays
// and answers are the API's.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	email := r.PostForm.Get("email")
	p := &page{Title: "Sign in", Form: map[string]string{"email": email}}
	if err := s.Auth.CheckAuthLimit(r.Context(), sluice.AuthLogin, s.clientIP(r)); err != nil {
		s.authFailed(w, r, "login", p, err)
		return
	}
	tok, sess, err := s.Auth.Login(r.Context(), email, r.PostForm.Get("password"))
	if err != nil {
		s.authFailed(w, r, "login", p, err)
		return
	}
	s.setCookie(w, r, sessionCookie, tok, "/", sess.ExpiresAt)
	http.Redirect(w, r, "/account", http.StatusSeeOther)
}

// handleLogout ends the browser's session and clears the cookie. Without
// a SessionEnder it ends every session of the account: signing out must
// never leave the session alive.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if a, sess, ok := s.session(r); ok {
		var err error
		if s.Sessions != nil {
			err = s.Sessions.DeleteSession(r.Context(), sess.TokenHash)
		} else {
			err = s.Accounts.DeleteSessions(r.Context(), a.ID)
		}
		if err != nil {
			s.internalError(w, r, err)
			return
		}
	}
	s.setCookie(w, r, sessionCookie, "", "/", time.Time{})
	http.Redirect(w, r, "/login?done=signed-out", http.StatusSeeOther)
}

func (s *Server) handleForgotPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "forgot", &page{Title: "Forgot your password?"})
}

// handleForgot handles the forgot-password form. It says the same for
// every well-formed email, as POST /auth/forgot-password does.
func (s *Server) handleForgot(w http.ResponseWriter, r *http.Request) {
	email := r.PostForm.Get("email")
	p := &page{Title: "Forgot your password?", Form: map[string]string{"email": email}}
	if err := s.Auth.CheckAuthLimit(r.Context(), sluice.AuthForgotPassword, s.clientIP(r)); err != nil {
		s.authFailed(w, r, "forgot", p, err)
		return
	}
	if err := s.Auth.ForgotPassword(r.Context(), email); err != nil {
		s.authFailed(w, r, "forgot", p, err)
		return
	}
	p.Data = "sent"
	p.Notice = "If an account has this email, a mail with a link to choose a new password is on its way. The link works once, for one hour."
	s.render(w, r, http.StatusOK, "forgot", p)
}

func (s *Server) handleResetPage(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	s.render(w, r, http.StatusOK, "reset", &page{Title: "Choose a new password", Form: map[string]string{"token": tok}})
}

// handleReset handles the new-password form: the token is spent and every
// session of the account ended, this browser's included.
func (s *Server) handleReset(w http.ResponseWriter, r *http.Request) {
	tok, pw := r.PostForm.Get("token"), r.PostForm.Get("password")
	p := &page{Title: "Choose a new password", Form: map[string]string{"token": tok}}
	if pw != r.PostForm.Get("password2") {
		p.Errors = map[string]string{"password2": "The two passwords differ. Type the same password twice."}
		s.render(w, r, http.StatusBadRequest, "reset", p)
		return
	}
	ctx := sluice.WithActor(r.Context(), sluice.Actor{Type: sluice.ActorUser, IP: s.ipString(r)})
	if _, err := s.Auth.ResetPassword(ctx, tok, pw); err != nil {
		if sluice.ErrorCode(err) == sluice.EINVALID && (errField(err) == "token") {
			p.Error = "This reset link is invalid, expired or already used. Ask for a new one below."
			s.render(w, r, http.StatusBadRequest, "reset", p)
			return
		}
		s.authFailed(w, r, "reset", p, err)
		return
	}
	s.setCookie(w, r, sessionCookie, "", "/", time.Time{})
	http.Redirect(w, r, "/login?done=password-reset", http.StatusSeeOther)
}

func errField(err error) string {
	var e *sluice.Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}
