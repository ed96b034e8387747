package sluice

import (
	"context"
	"time"
)

// DefaultPlan is the plan of a new account.
const DefaultPlan = "starter"

// Account is a customer. Its plan and override decide its limits; all of its
// API keys and its Telegram identity draw from one set of counters.
type Account struct {
	ID    int64
	Email string // empty for an account created by the Telegram bot
	// PasswordHash is the argon2id hash in its encoded form; empty when
	// the account cannot log in with a password.
	PasswordHash string
	Plan         string
	Override     *LimitOverride // nil: the plan's limits
	TelegramID   int64          // 0: no Telegram user bound
	CreatedAt    time.Time
	// MailAlertsOff reports that the account turned off quota alerts by
	// mail (CONTRACT.md §10); the zero value, the default, sends them.
	MailAlertsOff bool
	// TelegramModel is the model the account's Telegram user chose with
	// /model (or the /models keyboard); empty for the plan's first model.
	// It is kept with the account so that it survives restarts and is
	// seen by every instance (CONTRACT.md §7).
	TelegramModel string
}

// LimitOverride replaces the plan's hourly and daily limits for one account.
type LimitOverride struct {
	Hour Limit
	Day  Limit
}

// Limits returns the account's hourly and daily limits under plan p.
func (a *Account) Limits(p *Plan) (hour, day Limit) {
	if a.Override != nil {
		return a.Override.Hour, a.Override.Day
	}
	return p.Hour, p.Day
}

// QuotaKey is the key of the account's counters in a QuotaStore. The braces
// are a Redis Cluster hash tag: every key of one account lands on one slot.
func (a *Account) QuotaKey() string { return AccountQuotaKey(a.ID) }

// APIKey is a key for the HTTP API. Only a hash of the key is stored; the key
// itself is shown once, when it is created.
type APIKey struct {
	ID         string // the public lookup part of the key, unique
	AccountID  int64
	Name       string
	Hash       []byte // SHA-256 of the whole key
	CreatedAt  time.Time
	LastUsedAt time.Time // zero: never used
	RevokedAt  time.Time // zero: not revoked
}

// Prefix is the part of the key that is safe to show: its kind and lookup ID.
func (k *APIKey) Prefix() string { return APIKeyPrefix + k.ID }

// Session is a logged-in user of the account endpoints. Only a hash of the
// session token is stored.
type Session struct {
	TokenHash []byte
	AccountID int64
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Kinds of single-use tokens.
const (
	TokenPasswordReset = "password_reset"
	TokenTelegramLink  = "telegram_link"
)

// AccountService stores accounts, API keys, sessions and single-use tokens.
// Implementations are safe for concurrent use. Lookups of something that
// does not exist, and changes to an account that does not exist, return an
// *Error with code ENOTFOUND. Something that expires at T has expired at
// every now >= T.
type AccountService interface {
	// CreateAccount stores a and sets its ID and CreatedAt, and its Plan to
	// DefaultPlan if empty. IDs are never reused. An email that is taken
	// (compared case-insensitively) is EEMAILTAKEN; a Telegram user
	// already bound to an account is ETELEGRAMTAKEN, and a is not stored.
	CreateAccount(ctx context.Context, a *Account) error
	FindAccountByID(ctx context.Context, id int64) (*Account, error)
	FindAccountByEmail(ctx context.Context, email string) (*Account, error)
	FindAccountByTelegram(ctx context.Context, telegramID int64) (*Account, error)
	SetPlan(ctx context.Context, id int64, plan string) error
	// SetOverride sets the account's limit override; nil removes it.
	SetOverride(ctx context.Context, id int64, o *LimitOverride) error
	SetPassword(ctx context.Context, id int64, passwordHash string) error
	// LinkTelegram binds the Telegram user to the account, taking it away
	// from any other account it was bound to.
	LinkTelegram(ctx context.Context, id int64, telegramID int64) error
	// SetMailAlerts turns the account's quota alerts by mail on or off
	// (Account.MailAlertsOff is !on).
	SetMailAlerts(ctx context.Context, id int64, on bool) error
	// SetTelegramModel sets the model the account's Telegram user chose
	// (Account.TelegramModel); "" goes back to the plan's first model. It
	// writes no audit event: a preference, not a change of rights.
	SetTelegramModel(ctx context.Context, id int64, model string) error

	// CreateAPIKey stores k and sets its CreatedAt.
	CreateAPIKey(ctx context.Context, k *APIKey) error
	// FindAPIKey returns the key with the lookup ID, revoked or not.
	FindAPIKey(ctx context.Context, id string) (*APIKey, error)
	// ListAPIKeys returns the account's keys that are not revoked, oldest first.
	ListAPIKeys(ctx context.Context, accountID int64) ([]*APIKey, error)
	// RevokeAPIKey revokes a key of the account; ENOTFOUND if the account
	// has no such live key.
	RevokeAPIKey(ctx context.Context, accountID int64, id string, now time.Time) error
	// TouchAPIKey records that the key was used at t.
	TouchAPIKey(ctx context.Context, id string, t time.Time) error

	CreateSession(ctx context.Context, s *Session) error
	// FindSession returns the session with the token hash if it has not
	// expired at now.
	FindSession(ctx context.Context, tokenHash []byte, now time.Time) (*Session, error)
	// DeleteSessions ends every session of the account.
	DeleteSessions(ctx context.Context, accountID int64) error

	// CreateToken stores a single-use token of a kind (TokenPasswordReset,
	// TokenTelegramLink) for the account, valid until expires.
	CreateToken(ctx context.Context, kind string, hash []byte, accountID int64, expires time.Time) error
	// ConsumeToken deletes the token and returns its account, atomically,
	// so that it can be used once; ENOTFOUND if it does not exist or has
	// expired at now. Consuming a TokenPasswordReset spends every
	// TokenPasswordReset of the account in the same atomic step, so that
	// once a password has been reset no older reset mail can set it again,
	// and of several racing tokens of one account only one succeeds.
	ConsumeToken(ctx context.Context, kind string, hash []byte, now time.Time) (accountID int64, err error)

	// DeleteExpired deletes the sessions and single-use tokens that have
	// expired at now, and returns how many it deleted. Lookups already
	// ignore them; this bounds the store's size.
	DeleteExpired(ctx context.Context, now time.Time) (int64, error)

	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
}
