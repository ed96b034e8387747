package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	sluice "github.com/sluicehq/sluice"
)

var _ sluice.AuditLog = (*DB)(nil)

// The audit log is the table audit_events. The account store's changes
// write their events in their own transaction (insertAudit), so that a
// change and its event are committed together or not at all; RecordAudit
// appends the events of changes made elsewhere.
//
// IDs come from an identity sequence: they increase in the order events
// are inserted, which across concurrent transactions may differ slightly
// from the order they commit in. A listing paged with Before may then miss
// an event that committed after its page was read with an ID inside it; a
// fresh listing shows it.

// insertAudit appends e in tx, stamped with the store's clock if e.At is
// zero, and sets e.ID and e.At.
func (db *DB) insertAudit(ctx context.Context, tx pgx.Tx, e *sluice.AuditEvent) error {
	at := e.At
	if at.IsZero() {
		at = db.now()
	}
	at = at.UTC().Truncate(time.Microsecond) // what timestamptz keeps
	details, err := encodeDetails(e.Details)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	var id int64
	if err := tx.QueryRow(ctx, `
INSERT INTO audit_events (at, actor_type, actor_id, ip, action, account_id, details)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id`,
		at, e.Actor.Type, e.Actor.ID, e.Actor.IP, e.Action, e.AccountID, details).Scan(&id); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	e.ID, e.At = id, at
	return nil
}

// encodeDetails returns details as stored: a JSON object, or NULL for none.
func encodeDetails(details map[string]any) (*string, error) {
	if len(details) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(details)
	if err != nil {
		return nil, fmt.Errorf("details: %w", err)
	}
	s := string(b)
	return &s, nil
}

// decodeDetails reads details back, with numbers as json.Number.
func decodeDetails(s *string) (map[string]any, error) {
	if s == nil {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(*s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("details: %w", err)
	}
	return m, nil
}

// RecordAudit appends e, for a change made outside the store; it sets e.ID,
// and e.At to the store's clock if it is zero. e.Actor is stored as it is.
func (db *DB) RecordAudit(ctx context.Context, e *sluice.AuditEvent) error {
	c := *e
	if err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error { return db.insertAudit(ctx, tx, &c) }); err != nil {
		return fmt.Errorf("record audit: %w", err)
	}
	e.ID, e.At = c.ID, c.At
	return nil
}

// ListAudit returns the events that f selects, newest first. A Before of 0
// or less is no bound; the limit is f.EffectiveLimit(). The primary key
// serves the listing of every account, the index audit_events_account
// (account_id, id) that of one.
func (db *DB) ListAudit(ctx context.Context, f sluice.AuditFilter) ([]*sluice.AuditEvent, error) {
	var (
		q    strings.Builder
		args []any
		and  = " WHERE "
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	q.WriteString(`SELECT id, at, actor_type, actor_id, ip, action, account_id, details FROM audit_events`)
	if f.AccountID != 0 {
		q.WriteString(and + `account_id = ` + arg(f.AccountID))
		and = " AND "
	}
	if f.Before > 0 {
		q.WriteString(and + `id < ` + arg(f.Before))
	}
	q.WriteString(` ORDER BY id DESC LIMIT ` + arg(f.EffectiveLimit()))

	rows, err := db.pool.Query(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []*sluice.AuditEvent
	for rows.Next() {
		var (
			e       sluice.AuditEvent
			details *string
		)
		if err := rows.Scan(&e.ID, &e.At, &e.Actor.Type, &e.Actor.ID, &e.Actor.IP, &e.Action, &e.AccountID, &details); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.At = e.At.UTC()
		if e.Details, err = decodeDetails(details); err != nil {
			return nil, fmt.Errorf("list audit: event %d: %w", e.ID, err)
		}
		out = append(out, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}

// auditCreated is the details of account.created: the plan, and the email,
// Telegram user and override if the account has them.
func auditCreated(a *sluice.Account, plan string) map[string]any {
	d := map[string]any{"plan": plan}
	if a.Email != "" {
		d["email"] = a.Email
	}
	if a.TelegramID != 0 {
		d["telegram_id"] = a.TelegramID
	}
	if a.Override != nil {
		d["limits"] = sluice.AuditLimits(a.Override)
	}
	return d
}

// auditLink is the events of LinkTelegram(id, telegramID) on an account
// whose Telegram user was cur (0: none), taking telegramID from the
// account from (0: none): telegram.unlinked on from, then telegram.linked
// (or, for an unbinding, telegram.unlinked) on the account. Both have the
// actor of the change to the account.
func auditLink(ctx context.Context, id, cur, telegramID, from int64) []*sluice.AuditEvent {
	e := sluice.NewAuditEvent(ctx, sluice.AuditTelegramUnlinked, id, map[string]any{"telegram_id": cur})
	if telegramID != 0 {
		d := map[string]any{"telegram_id": telegramID}
		if from != 0 {
			d["from_account_id"] = from
		}
		if cur != 0 {
			d["previous_telegram_id"] = cur
		}
		e = sluice.NewAuditEvent(ctx, sluice.AuditTelegramLinked, id, d)
	}
	if from == 0 {
		return []*sluice.AuditEvent{e}
	}
	taken := &sluice.AuditEvent{Actor: e.Actor, Action: sluice.AuditTelegramUnlinked, AccountID: from,
		Details: map[string]any{"telegram_id": telegramID, "to_account_id": id}}
	return []*sluice.AuditEvent{taken, e}
}
