package http

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice"
)

// Lifetimes and bounds of the account endpoints.
const (
	// DefaultSessionTTL is how long a login lasts unless Server.SessionTTL
	// says otherwise.
	DefaultSessionTTL = 7 * 24 * time.Hour
	// ResetTokenTTL is how long a password-reset token can be used.
	ResetTokenTTL = time.Hour
	// TelegramLinkTTL is how long a Telegram link code can be used.
	TelegramLinkTTL = 10 * time.Minute
	// MaxKeysPerAccount bounds the live API keys an account can create
	// itself.
	MaxKeysPerAccount = 100
	// TelegramLinkCodeLen is the length of a link code (base62).
	TelegramLinkCodeLen = 10

	sessionPrefix = "sls_" // + tokenLen base62 characters
	resetPrefix   = "slr_"
	tokenLen      = 40
)

var (
	errInvalidCreds = &sluice.Error{Code: sluice.EINVALIDCREDS, Message: "Invalid email or password."}
	errNoSession    = &sluice.Error{Code: sluice.EUNAUTHORIZED,
		Message: "Missing session token; log in with POST /auth/login and send Authorization: Bearer <token>."}
	errSessionNotBearer = &sluice.Error{Code: sluice.EUNAUTHORIZED,
		Message: "The Authorization header must be \"Bearer <session token>\"."}
	errKeyNotSession = &sluice.Error{Code: sluice.EUNAUTHORIZED,
		Message: "This endpoint needs a session token from POST /auth/login, not an API key."}
	errResetToken = sluice.FieldError("token",
		"The reset token is invalid, expired or already used; ask for a new one with POST /auth/forgot-password.")
)

// authState is what the auth endpoints need beyond the Server's fields.
type authState struct {
	login, register, forgot *rateLimit // per client IP
	forgotEmail             *rateLimit // per target email
	resets                  *resetter
}

func (s *Server) initAuth() {
	l := s.AuthLimits
	s.auth = &authState{
		login:       newRateLimit("{ip:login:", l.Login, DefaultLoginLimit, "per IP on POST /auth/login"),
		register:    newRateLimit("{ip:register:", l.Register, DefaultRegisterLimit, "per IP on POST /auth/register"),
		forgot:      newRateLimit("{ip:forgot_password:", l.ForgotPassword, DefaultForgotPasswordLimit, "per IP on POST /auth/forgot-password"),
		forgotEmail: newRateLimit("{forgot_password:", l.ForgotPasswordEmail, DefaultForgotPasswordEmailLimit, "per email address"),
	}
	s.auth.resets = newResetter(s)
	go dummyHash() // so that the first unknown email costs one hash, like the others
}

func (s *Server) sessionTTL() time.Duration {
	if s.SessionTTL > 0 {
		return s.SessionTTL
	}
	return DefaultSessionTTL
}

// dummyHash is a hash with the current parameters of a password nobody
// knows. A login for an unknown email verifies against it, so that it
// costs what a wrong password costs.
var dummyHash = sync.OnceValue(func() string {
	h, _ := HashPassword(sluice.RandomString(32)) // fails only if crypto/rand does
	return h
})

// validToken reports whether tok is prefix and tokenLen base62 characters.
func validToken(prefix, tok string) bool {
	if len(tok) != len(prefix)+tokenLen || !strings.HasPrefix(tok, prefix) {
		return false
	}
	for i := len(prefix); i < len(tok); i++ {
		if !isBase62(tok[i]) {
			return false
		}
	}
	return true
}

func isBase62(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

type statusJSON struct {
	Status string `json:"status"`
}

// credentialsBody is the body of POST /auth/register and POST /auth/login.
type credentialsBody struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// validateRegister checks a new account's email and password.
func (b *credentialsBody) validateRegister() error {
	b.Email = strings.TrimSpace(b.Email)
	if err := validNewEmail(b.Email); err != nil {
		return err
	}
	if b.Password == "" {
		return sluice.FieldError("password", "password is required.")
	}
	return validPassword(b.Password)
}

// validateLogin checks the form of a login: both fields present and
// within bounds. Whether the email is registered is not a question of form.
func (b *credentialsBody) validateLogin() error {
	b.Email = strings.TrimSpace(b.Email)
	if b.Email == "" {
		return sluice.FieldError("email", "email is required.")
	}
	if len(b.Email) > MaxEmail {
		return sluice.FieldError("email", "email must be at most %d bytes.", MaxEmail)
	}
	if b.Password == "" {
		return sluice.FieldError("password", "password is required.")
	}
	if utf8.RuneCountInString(b.Password) > MaxPassword {
		return sluice.FieldError("password", "password must be at most %d characters.", MaxPassword)
	}
	return nil
}

func validNewEmail(email string) error {
	if email == "" {
		return sluice.FieldError("email", "email is required.")
	}
	if len(email) > MaxEmail {
		return sluice.FieldError("email", "email must be at most %d bytes.", MaxEmail)
	}
	if !validEmail(email) {
		return sluice.FieldError("email", "email must be an email address like name@example.com.")
	}
	return nil
}

// forgotBody is the body of POST /auth/forgot-password.
type forgotBody struct {
	Email string `json:"email"`
}

func (b *forgotBody) validate() error {
	b.Email = strings.TrimSpace(b.Email)
	return validNewEmail(b.Email)
}

// resetBody is the body of POST /auth/reset-password.
type resetBody struct {
	Token    string `json:"token"`
	Password string `json:"password"`
}

// validate checks the form of the token (so that a mistyped one costs no
// database write) and the new password.
func (b *resetBody) validate() error {
	if b.Token == "" {
		return sluice.FieldError("token", "token is required: the reset token from the mail.")
	}
	if !validToken(resetPrefix, b.Token) {
		return errResetToken
	}
	if b.Password == "" {
		return sluice.FieldError("password", "password is required.")
	}
	return validPassword(b.Password)
}

// handleRegister handles POST /auth/register: a Starter account with a
// password. The per-IP limit is decided before the body is read.
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	if !s.limitIP(w, r, s.auth.register) {
		return
	}
	var b credentialsBody
	if err := s.decodeJSON(w, r, &b); err != nil {
		s.Error(w, r, err)
		return
	}
	a, err := s.Register(r.Context(), b.Email, b.Password)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	if st := stateOf(r); st != nil {
		st.accountID = a.ID
	}
	s.writeJSON(w, r, http.StatusCreated, &createdAccountJSON{UserID: a.ID, Email: a.Email, Plan: a.Plan})
}

// Register creates a Starter account with a password (sluice.AuthService).
// The caller has counted the attempt with CheckAuthLimit.
func (s *Server) Register(ctx context.Context, email, password string) (*sluice.Account, error) {
	s.init()
	b := credentialsBody{Email: email, Password: password}
	if err := b.validateRegister(); err != nil {
		return nil, err
	}
	hash, err := HashPassword(b.Password)
	if err != nil {
		return nil, err
	}
	a := &sluice.Account{Email: b.Email, PasswordHash: hash, Plan: sluice.DefaultPlan}
	if err := s.Accounts.CreateAccount(ctx, a); err != nil {
		return nil, err
	}
	return a, nil
}

type sessionJSON struct {
	Token     string `json:"token"`
	ExpiresAt string `json:"expires_at"`
}

// handleLogin handles POST /auth/login (see Login).
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !s.limitIP(w, r, s.auth.login) {
		return
	}
	var b credentialsBody
	if err := s.decodeJSON(w, r, &b); err != nil {
		s.Error(w, r, err)
		return
	}
	token, sess, err := s.Login(r.Context(), b.Email, b.Password)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	if st := stateOf(r); st != nil {
		st.accountID = sess.AccountID
	}
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, r, http.StatusOK, &sessionJSON{Token: token, ExpiresAt: rfc3339(sess.ExpiresAt)})
}

// Login checks a password and starts a session (sluice.AuthService). A
// wrong password, an unknown email and an account without a password get
// the same EINVALIDCREDS after the same work: one password hash (against a
// dummy hash when there is no real one). Failures are counted per email
// (known or not) and slow the next attempts down once they are no longer
// free (see LoginFreeFailures). The caller has counted the attempt with
// CheckAuthLimit.
func (s *Server) Login(ctx context.Context, email, password string) (string, *sluice.Session, error) {
	s.init()
	b := credentialsBody{Email: email, Password: password}
	if err := b.validateLogin(); err != nil {
		return "", nil, err
	}
	// What is decided from here on is recorded even if the client hangs
	// up: hanging up must not be a way to guess without being counted.
	ctx = context.WithoutCancel(ctx)
	lf := newLoginFailures(b.Email)
	claim, wait, err := s.claimLogin(ctx, lf)
	if err != nil {
		return "", nil, err
	}
	if wait > 0 {
		return "", nil, tooManyFailures(wait)
	}
	a, err := s.Accounts.FindAccountByEmail(ctx, b.Email)
	if err != nil && sluice.ErrorCode(err) != sluice.ENOTFOUND {
		return "", nil, err
	}
	known := err == nil && a.PasswordHash != ""
	hash := dummyHash()
	if known {
		hash = a.PasswordHash
	}
	ok, rehash := VerifyPassword(hash, b.Password)
	if !known || !ok {
		s.loginFailed(ctx, lf, claim)
		return "", nil, errInvalidCreds
	}
	s.loginSucceeded(ctx, lf, claim)
	if rehash {
		// Stored with older parameters: store it with the current ones.
		if h, err := HashPassword(b.Password); err == nil {
			if err := s.Accounts.SetPassword(ctx, a.ID, h); err != nil {
				s.logger().LogAttrs(ctx, slog.LevelWarn, "rehash password",
					slog.Int64("account_id", a.ID), slog.String("error", err.Error()))
			}
		}
	}
	token := sessionPrefix + sluice.RandomString(tokenLen)
	now := s.now()
	sess := &sluice.Session{TokenHash: sluice.HashToken(token), AccountID: a.ID, CreatedAt: now, ExpiresAt: now.Add(s.sessionTTL())}
	if err := s.Accounts.CreateSession(ctx, sess); err != nil {
		return "", nil, err
	}
	return token, sess, nil
}

// handleForgotPassword handles POST /auth/forgot-password (see
// ForgotPassword).
func (s *Server) handleForgotPassword(w http.ResponseWriter, r *http.Request) {
	if !s.limitIP(w, r, s.auth.forgot) {
		return
	}
	var b forgotBody
	if err := s.decodeJSON(w, r, &b); err != nil {
		s.Error(w, r, err)
		return
	}
	if err := s.ForgotPassword(r.Context(), b.Email); err != nil {
		s.Error(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusAccepted, &statusJSON{Status: "sent"})
}

// ForgotPassword starts a password reset (sluice.AuthService). Every
// well-formed email gets nil after the same work on the request path (the
// form check, a non-blocking enqueue): whether the account exists is
// looked up later, by the resetter, off the request path, so that neither
// the answer nor its timing tells. The caller has counted the attempt with
// CheckAuthLimit.
func (s *Server) ForgotPassword(ctx context.Context, email string) error {
	s.init()
	b := forgotBody{Email: email}
	if err := b.validate(); err != nil {
		return err
	}
	s.auth.resets.enqueue(ctx, b.Email)
	return nil
}

// handleResetPassword handles POST /auth/reset-password (see
// ResetPassword).
func (s *Server) handleResetPassword(w http.ResponseWriter, r *http.Request) {
	var b resetBody
	if err := s.decodeJSON(w, r, &b); err != nil {
		s.Error(w, r, err)
		return
	}
	id, err := s.ResetPassword(r.Context(), b.Token, b.Password)
	if id != 0 {
		if st := stateOf(r); st != nil {
			st.accountID = id
		}
	}
	if err != nil {
		s.Error(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, &statusJSON{Status: "password_reset"})
}

// ResetPassword spends a reset token (sluice.AuthService): the new
// password is stored, every session of the account ended and its failed
// logins forgotten. An invalid, expired or used token is EINVALID naming
// "token". Once the token is spent it returns the account's ID, even with
// an error.
func (s *Server) ResetPassword(ctx context.Context, token, password string) (int64, error) {
	s.init()
	b := resetBody{Token: token, Password: password}
	if err := b.validate(); err != nil {
		return 0, err
	}
	id, err := s.Accounts.ConsumeToken(ctx, sluice.TokenPasswordReset, sluice.HashToken(b.Token), s.now())
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		return 0, errResetToken
	} else if err != nil {
		return 0, err
	}
	// The token is spent: finish even if the client hangs up.
	ctx = context.WithoutCancel(ctx)
	hash, err := HashPassword(b.Password)
	if err != nil {
		return id, err
	}
	if err := s.Accounts.SetPassword(ctx, id, hash); err != nil {
		return id, err
	}
	s.recordAudit(ctx, sluice.AuditPasswordReset, id)
	if err := s.Accounts.DeleteSessions(ctx, id); err != nil {
		return id, err
	}
	if a, err := s.Accounts.FindAccountByID(ctx, id); err == nil && a.Email != "" {
		s.loginClear(ctx, newLoginFailures(a.Email))
	}
	return id, nil
}

// authSession authenticates the session token of an account endpoint. An
// API key is refused: keys cannot manage keys.
func (s *Server) authSession(r *http.Request) (*principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, errNoSession
	}
	tok, ok := parseBearer(h)
	if !ok {
		return nil, errSessionNotBearer
	}
	if strings.HasPrefix(tok, sluice.APIKeyPrefix) {
		return nil, errKeyNotSession
	}
	if !validToken(sessionPrefix, tok) {
		return nil, errSession
	}
	return s.sessionPrincipal(r.Context(), tok)
}

// sessionAccount authenticates an account endpoint's session and resolves
// its account; if api, the plan must include API access. On failure it has
// answered the request.
func (s *Server) sessionAccount(w http.ResponseWriter, r *http.Request, api bool) (*quotaCtx, bool) {
	p, err := s.authSession(r)
	if err != nil {
		s.Error(w, r, err)
		return nil, false
	}
	return s.resolveAccount(w, r, p, api)
}

// handleCreateOwnKey handles POST /v1/keys: like the admin's POST
// /admin/accounts/{id}/keys, for the session's own account, whose plan must
// include API access.
func (s *Server) handleCreateOwnKey(w http.ResponseWriter, r *http.Request) {
	q, ok := s.sessionAccount(w, r, true)
	if !ok {
		return
	}
	var b keyBody
	if err := s.decodeValid(w, r, &b, func() error { return b.validate() }); err != nil {
		s.failWithUsage(w, r, q, err)
		return
	}
	keys, err := s.Accounts.ListAPIKeys(r.Context(), q.account.ID)
	if err != nil {
		s.failWithUsage(w, r, q, err)
		return
	}
	if len(keys) >= MaxKeysPerAccount {
		s.failWithUsage(w, r, q, sluice.Errorf(sluice.EINVALID,
			"An account can have at most %d API keys; revoke one with DELETE /v1/keys/{id} first.", MaxKeysPerAccount))
		return
	}
	k, key, err := s.createAPIKey(r.Context(), q.account.ID, b.Name)
	if err != nil {
		s.failWithUsage(w, r, q, err)
		return
	}
	s.peekHeaders(w, r, q)
	s.writeCreatedKey(w, r, k, key)
}

type keyJSON struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Prefix     string  `json:"prefix"`
	CreatedAt  string  `json:"created_at"`
	LastUsedAt *string `json:"last_used_at"` // null: never used
}

type keyListJSON struct {
	Keys []keyJSON `json:"keys"`
}

// handleListKeys handles GET /v1/keys: the account's live keys, oldest
// first, without their secrets. last_used_at is the later of the stored
// time and a use that this instance has not written yet (it writes at most
// once a minute per key), so it can lag by up to a minute for uses served
// by other instances.
func (s *Server) handleListKeys(w http.ResponseWriter, r *http.Request) {
	q, ok := s.sessionAccount(w, r, false)
	if !ok {
		return
	}
	out, err := s.keyList(r.Context(), q.account.ID)
	if err != nil {
		s.failWithUsage(w, r, q, err)
		return
	}
	s.peekHeaders(w, r, q)
	s.writeJSON(w, r, http.StatusOK, out)
}

// keyList is the account's live keys as GET /v1/keys shows them, with last
// uses not yet written to the store.
func (s *Server) keyList(ctx context.Context, accountID int64) (*keyListJSON, error) {
	keys, err := s.Accounts.ListAPIKeys(ctx, accountID)
	if err != nil {
		return nil, err
	}
	out := &keyListJSON{Keys: make([]keyJSON, 0, len(keys))}
	for _, k := range keys {
		kj := keyJSON{ID: k.ID, Name: k.Name, Prefix: k.Prefix(), CreatedAt: rfc3339(k.CreatedAt)}
		last := k.LastUsedAt
		if t, ok := s.touches.lastUse(k.ID); ok && t.After(last) {
			last = t
		}
		if !last.IsZero() {
			v := rfc3339(last)
			kj.LastUsedAt = &v
		}
		out.Keys = append(out.Keys, kj)
	}
	return out, nil
}

// handleRevokeKey handles DELETE /v1/keys/{id}: 204, and the key is refused
// from its next use on (the revocation goes through the account store, and
// a caching store forgets what it held).
func (s *Server) handleRevokeKey(w http.ResponseWriter, r *http.Request) {
	q, ok := s.sessionAccount(w, r, false)
	if !ok {
		return
	}
	id := r.PathValue("id")
	err := s.Accounts.RevokeAPIKey(r.Context(), q.account.ID, id, s.now())
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		s.failWithUsage(w, r, q, sluice.Errorf(sluice.ENOTFOUND,
			"This account has no live API key with the ID %q; GET /v1/keys lists them.", shorten(id)))
		return
	} else if err != nil {
		s.failWithUsage(w, r, q, err)
		return
	}
	s.peekHeaders(w, r, q)
	w.WriteHeader(http.StatusNoContent)
}

type linkJSON struct {
	Code      string `json:"code"`
	ExpiresAt string `json:"expires_at"`
}

// handleTelegramLink handles POST /v1/telegram/link: a single-use code,
// valid for TelegramLinkTTL, that the bot's /link command exchanges for
// this account. Only its hash is stored. Any plan may link; a request body
// is ignored.
func (s *Server) handleTelegramLink(w http.ResponseWriter, r *http.Request) {
	q, ok := s.sessionAccount(w, r, false)
	if !ok {
		return
	}
	code := sluice.RandomString(TelegramLinkCodeLen)
	expires := s.now().Add(TelegramLinkTTL)
	if err := s.Accounts.CreateToken(r.Context(), sluice.TokenTelegramLink, sluice.HashToken(code), q.account.ID, expires); err != nil {
		s.failWithUsage(w, r, q, err)
		return
	}
	s.peekHeaders(w, r, q)
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, r, http.StatusCreated, &linkJSON{Code: code, ExpiresAt: rfc3339(expires)})
}
