package sluice

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// Auth endpoints with a per-client-IP limit (CONTRACT.md §6), as
// AuthService.CheckAuthLimit names them.
const (
	AuthLogin          = "login"
	AuthRegister       = "register"
	AuthForgotPassword = "forgot_password"
)

// AuthService is how people sign up, sign in and reset their password,
// whichever front end they use: the JSON endpoints under /auth/ and the web
// console both go through one implementation, so that both apply the same
// per-IP limits, the same growing delays after failed logins and the same
// answers whether or not an email is registered. Implementations are safe
// for concurrent use.
//
// Errors are *Error: EINVALID naming the field at fault, EEMAILTAKEN,
// EINVALIDCREDS (the same for an unknown email and a wrong password), and
// ERATELIMIT with RetryAfter set.
type AuthService interface {
	// ClientIP returns the address of the client that sent r: the peer,
	// or, behind a trusted proxy, the rightmost X-Forwarded-For entry that
	// is not one. The zero Addr means it could not be told.
	ClientIP(r *http.Request) netip.Addr
	// CheckAuthLimit counts one request from ip against the per-IP limit
	// of endpoint (AuthLogin, AuthRegister, AuthForgotPassword). Every
	// attempt counts, before its form is read. Over the limit it returns
	// ERATELIMIT with RetryAfter.
	CheckAuthLimit(ctx context.Context, endpoint string, ip netip.Addr) error
	// Register creates a Starter account with a password.
	Register(ctx context.Context, email, password string) (*Account, error)
	// Login checks the password and starts a session. It returns the
	// session token (which only the caller sees; the store keeps its hash)
	// and the session.
	Login(ctx context.Context, email, password string) (token string, s *Session, err error)
	// ForgotPassword mails a single-use reset token to the account with
	// the email, if there is one. It returns before anything depends on
	// whether there is, and answers the same either way.
	ForgotPassword(ctx context.Context, email string) error
	// ResetPassword spends a reset token: the account's new password is
	// set and every one of its sessions ended.
	ResetPassword(ctx context.Context, token, password string) (accountID int64, err error)
}

// AccountQuery asks AccountSearcher for accounts: those whose email
// contains Text (case-insensitively) or whose ID is Text, with an ID above
// After, at most Limit of them (0: DefaultAccountSearchLimit), lowest ID
// first. An empty Text matches every account.
type AccountQuery struct {
	Text  string
	After int64
	Limit int
}

// Bounds of AccountQuery.Limit.
const (
	DefaultAccountSearchLimit = 50
	MaxAccountSearchLimit     = 500
)

// AccountSearcher finds accounts for the operator. Account stores implement
// it beside AccountService. Implementations are safe for concurrent use.
type AccountSearcher interface {
	SearchAccounts(ctx context.Context, q AccountQuery) ([]*Account, error)
}

// SearchTerms are the parts of q that an SQL store needs: the text trimmed
// and lower-cased (as stores keep emails for comparison), a LIKE pattern
// that matches it anywhere with '\' as the escape character, the ID it
// names (0 if it is not a positive integer) and the limit within bounds.
func SearchTerms(q AccountQuery) (text, pattern string, id int64, limit int) {
	text = strings.ToLower(strings.TrimSpace(q.Text))
	var b strings.Builder
	b.WriteByte('%')
	for _, c := range text {
		if c == '%' || c == '_' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte('%')
	if v, err := strconv.ParseInt(text, 10, 64); err == nil && v > 0 {
		id = v
	}
	limit = q.Limit
	if limit <= 0 {
		limit = DefaultAccountSearchLimit
	}
	return text, b.String(), id, min(limit, MaxAccountSearchLimit)
}

// SessionEnder ends one session, as signing out of one browser does.
// Account stores implement it beside AccountService.
type SessionEnder interface {
	// DeleteSession ends the session with the token hash; ending one that
	// does not exist (or no longer does) is not an error.
	DeleteSession(ctx context.Context, tokenHash []byte) error
}
