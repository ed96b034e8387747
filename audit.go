package sluice

import (
	"context"
	"strconv"
	"time"
)

// Kinds of Actor (CONTRACT.md §10).
const (
	ActorAdmin    = "admin"    // the operator, with the admin token
	ActorUser     = "user"     // a user acting on their own account (session)
	ActorTelegram = "telegram" // a Telegram user, through the bot
	ActorSystem   = "system"   // sluice itself
)

// Actor is who makes a change: its kind, its id (the account id of a user,
// the Telegram user id of a Telegram user, empty for the admin and the
// system) and the client IP it came from (empty when there is none).
type Actor struct {
	Type string
	ID   string
	IP   string
}

type actorKey struct{}

// WithActor returns a context that carries a as the actor of the changes
// made with it. Account stores read it to write the audit event of each
// change in the change's own transaction.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor carried by ctx; without one it is the
// system.
func ActorFrom(ctx context.Context) Actor {
	if a, ok := ctx.Value(actorKey{}).(Actor); ok && a.Type != "" {
		return a
	}
	return Actor{Type: ActorSystem}
}

// Audit actions (CONTRACT.md §10).
const (
	AuditAccountCreated = "account.created"
	AuditPlanChanged    = "plan.changed"   // details: from, to
	AuditLimitsChanged  = "limits.changed" // details: from, to ({"hour","day"}, null = unlimited)
	AuditLimitsRemoved  = "limits.removed" // details: from
	AuditKeyCreated     = "key.created"    // details: key_id, name (never the key)
	AuditKeyRevoked     = "key.revoked"    // details: key_id, name
	AuditUsageReset     = "usage.reset"
	AuditPasswordReset  = "password.reset"
	AuditTelegramLinked = "telegram.linked" // details: telegram_id
	AuditAlertsChanged  = "alerts.changed"  // details: email (from, to)
	// AuditTelegramUnlinked is the event of the account that loses its
	// Telegram user: to another account (details: telegram_id,
	// to_account_id) or by an unbinding (details: telegram_id).
	AuditTelegramUnlinked = "telegram.unlinked"
)

// AuditEvent is one change to an account, by whom. Details never hold a
// secret (a key, a token, a password or its hash). Read back from a store,
// the numbers in Details are json.Number, so that every digit of an ID
// survives.
type AuditEvent struct {
	ID        int64 // increasing; set by the store
	At        time.Time
	Actor     Actor
	Action    string
	AccountID int64
	Details   map[string]any // JSON-encodable; nil for none
}

// AuditFilter selects events for ListAudit: those of one account (0: of
// every account), with an ID below Before (0: from the newest), at most
// Limit of them (0: DefaultAuditLimit), newest first.
type AuditFilter struct {
	AccountID int64
	Before    int64
	Limit     int
}

// Bounds of AuditFilter.Limit.
const (
	DefaultAuditLimit = 50
	MaxAuditLimit     = 500
)

// AuditLog keeps the audit events. An AccountService that is also an
// AuditLog writes the event of each of its changes (account created, plan
// changed, override set or removed, key created or revoked, Telegram linked
// or unlinked) in the same transaction as the change, with the actor of the
// change's context (NewAuditEvent); a call that changes nothing writes
// nothing. SetPassword writes no event: a login also calls it to store a
// rehash of the same password. So whoever sets a password by a reset
// records password.reset with RecordAudit once SetPassword has succeeded,
// as the usage reset is recorded. Implementations are safe for concurrent
// use.
type AuditLog interface {
	// RecordAudit appends e, for a change made outside the account store
	// (a usage reset, a password reset); it sets e.ID, and e.At if zero.
	RecordAudit(ctx context.Context, e *AuditEvent) error
	// ListAudit returns the events that f selects, newest first.
	ListAudit(ctx context.Context, f AuditFilter) ([]*AuditEvent, error)
}

// NewAuditEvent returns the event of a change to the account made with ctx:
// its actor is ActorFrom(ctx), except that a user actor without an ID gets
// the account's ID. A user acts on their own account only (a session
// reaches no other), and a registration or a password reset has no session
// yet: the account is known only once the change is made. At is left zero
// for the store to set.
func NewAuditEvent(ctx context.Context, action string, accountID int64, details map[string]any) *AuditEvent {
	a := ActorFrom(ctx)
	if a.Type == ActorUser && a.ID == "" && accountID != 0 {
		a.ID = strconv.FormatInt(accountID, 10)
	}
	return &AuditEvent{Actor: a, Action: action, AccountID: accountID, Details: details}
}

// AuditLimits is a limit override as the details of limits.changed and
// limits.removed show it: {"hour":n,"day":n} with nil for an unlimited
// window; nil for no override (the plan's limits).
func AuditLimits(o *LimitOverride) map[string]any {
	if o == nil {
		return nil
	}
	l := func(l Limit) any {
		if l.IsUnlimited() {
			return nil
		}
		return int64(l)
	}
	return map[string]any{"hour": l(o.Hour), "day": l(o.Day)}
}

// EffectiveLimit returns f.Limit as ListAudit applies it: DefaultAuditLimit for 0
// or less, at most MaxAuditLimit.
func (f AuditFilter) EffectiveLimit() int {
	switch {
	case f.Limit <= 0:
		return DefaultAuditLimit
	case f.Limit > MaxAuditLimit:
		return MaxAuditLimit
	}
	return f.Limit
}
