package http

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice"
)

// maxBearer bounds a bearer token; no key or session token comes close.
const maxBearer = 512

var (
	errMissingKey = &sluice.Error{Code: sluice.EINVALIDKEY,
		Message: "Missing API key; send it as Authorization: Bearer <key>."}
	errInvalidKey = &sluice.Error{Code: sluice.EINVALIDKEY, Message: "Invalid API key."}
	errNotBearer  = &sluice.Error{Code: sluice.EINVALIDKEY,
		Message: "The Authorization header must be \"Bearer <key>\"."}
	errRevokedKey = &sluice.Error{Code: sluice.EINVALIDKEY, Message: "This API key has been revoked."}
	errSession    = &sluice.Error{Code: sluice.EUNAUTHORIZED, Message: "Invalid or expired session token."}
	errAdmin      = &sluice.Error{Code: sluice.EUNAUTHORIZED, Message: "Missing or invalid admin token."}
)

// parseBearer returns the token of an "Authorization: Bearer <token>" header
// value. The scheme is case-insensitive (RFC 9110 §11.1); the token is 1 to
// maxBearer visible ASCII characters.
func parseBearer(h string) (token string, ok bool) {
	const scheme = "Bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	token = strings.TrimRight(strings.TrimLeft(h[len(scheme):], " "), " ")
	if token == "" || len(token) > maxBearer {
		return "", false
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return "", false
		}
	}
	return token, true
}

// principal is whom a request acts for: an account, through an API key or a
// session.
type principal struct {
	account *sluice.Account
	key     *sluice.APIKey  // nil unless authenticated by an API key
	session *sluice.Session // nil unless authenticated by a session token
}

// authAPIKey authenticates the request's API key. A malformed key is refused
// without touching the account store; the stored hash is compared in
// constant time. The key's last use is recorded in memory only.
func (s *Server) authAPIKey(r *http.Request) (*principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, errMissingKey
	}
	tok, ok := parseBearer(h)
	if !ok {
		return nil, errNotBearer
	}
	return s.apiKeyPrincipal(r.Context(), tok)
}

func (s *Server) apiKeyPrincipal(ctx context.Context, tok string) (p *principal, err error) {
	id, hash, ok := sluice.ParseAPIKey(tok)
	if !ok {
		return nil, errInvalidKey
	}
	ctx, span := s.startSpan(ctx, "account.lookup", trace.SpanKindInternal)
	if span != nil {
		defer func() { endSpan(span, err) }()
	}
	k, err := s.Accounts.FindAPIKey(ctx, id)
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		return nil, errInvalidKey
	} else if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(k.Hash, hash) != 1 {
		return nil, errInvalidKey
	}
	if !k.RevokedAt.IsZero() {
		return nil, errRevokedKey
	}
	a, err := s.Accounts.FindAccountByID(ctx, k.AccountID)
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		return nil, errInvalidKey
	} else if err != nil {
		return nil, err
	}
	s.touches.record(k.ID, s.now())
	return &principal{account: a, key: k}, nil
}

// sessionPrincipal authenticates a session token.
func (s *Server) sessionPrincipal(ctx context.Context, tok string) (p *principal, err error) {
	ctx, span := s.startSpan(ctx, "account.lookup", trace.SpanKindInternal)
	if span != nil {
		defer func() { endSpan(span, err) }()
	}
	sess, err := s.Accounts.FindSession(ctx, sluice.HashToken(tok), s.now())
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		return nil, errSession
	} else if err != nil {
		return nil, err
	}
	a, err := s.Accounts.FindAccountByID(ctx, sess.AccountID)
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		return nil, errSession
	} else if err != nil {
		return nil, err
	}
	return &principal{account: a, session: sess}, nil
}

// authKeyOrSession authenticates an API key (a bearer with the key prefix)
// or else a session token.
func (s *Server) authKeyOrSession(r *http.Request) (*principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, &sluice.Error{Code: sluice.EINVALIDKEY,
			Message: "Missing credentials; send an API key or a session token as Authorization: Bearer <token>."}
	}
	tok, ok := parseBearer(h)
	if !ok {
		return nil, errNotBearer
	}
	if strings.HasPrefix(tok, sluice.APIKeyPrefix) {
		return s.apiKeyPrincipal(r.Context(), tok)
	}
	return s.sessionPrincipal(r.Context(), tok)
}

// admin wraps an admin handler: the bearer must be the admin token. Both
// sides are hashed before the constant-time comparison so that not even the
// token's length leaks through timing. An empty AdminToken refuses all. The
// handler's changes are made by Actor{admin, IP}.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := parseBearer(r.Header.Get("Authorization"))
		if !ok || s.AdminToken == "" {
			s.Error(w, r, errAdmin)
			return
		}
		got, want := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(s.AdminToken))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			s.Error(w, r, errAdmin)
			return
		}
		h(w, r.WithContext(sluice.WithActor(r.Context(), sluice.Actor{Type: sluice.ActorAdmin, IP: s.actorIP(r)})))
	}
}
