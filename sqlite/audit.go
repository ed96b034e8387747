package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	sluice "github.com/sluicehq/sluice"
)

var _ sluice.AuditLog = (*DB)(nil)

// The audit log is the table audit_events. The account store's changes
// write their events in their own transaction (insertAudit), so that a
// change and its event are committed together or not at all; RecordAudit
// appends the events of changes made elsewhere. IDs come from AUTOINCREMENT
// on the single writer connection, so they increase in commit order.

// inTx runs f in a write transaction, committed if f returns nil. Errors
// are wrapped with op.
func (db *DB) inTx(ctx context.Context, op string, f func(tx *sql.Tx) error) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// insertAudit appends e in tx, stamped with the store's clock if e.At is
// zero, and sets e.ID and e.At.
func (db *DB) insertAudit(ctx context.Context, tx *sql.Tx, e *sluice.AuditEvent) error {
	at := e.At
	if at.IsZero() {
		at = db.now()
	}
	n, err := nanos(at)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	details, err := encodeDetails(e.Details)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	var id int64
	if err := tx.QueryRowContext(ctx, `
INSERT INTO audit_events (at, actor_type, actor_id, ip, action, account_id, details)
VALUES (?, ?, ?, ?, ?, ?, ?)
RETURNING id`,
		n, e.Actor.Type, e.Actor.ID, e.Actor.IP, e.Action, e.AccountID, details).Scan(&id); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	e.ID, e.At = id, fromNanos(n)
	return nil
}

// encodeDetails returns details as stored: a JSON object, or NULL for none.
func encodeDetails(details map[string]any) (sql.NullString, error) {
	if len(details) == 0 {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(details)
	if err != nil {
		return sql.NullString{}, fmt.Errorf("details: %w", err)
	}
	return sql.NullString{String: string(b), Valid: true}, nil
}

// decodeDetails reads details back, with numbers as json.Number.
func decodeDetails(s sql.NullString) (map[string]any, error) {
	if !s.Valid {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(s.String))
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
	if err := db.inTx(ctx, "record audit", func(tx *sql.Tx) error { return db.insertAudit(ctx, tx, &c) }); err != nil {
		return err
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
	q.WriteString(`SELECT id, at, actor_type, actor_id, ip, action, account_id, details FROM audit_events`)
	if f.AccountID != 0 {
		q.WriteString(and + `account_id = ?`)
		args, and = append(args, f.AccountID), " AND "
	}
	if f.Before > 0 {
		q.WriteString(and + `id < ?`)
		args = append(args, f.Before)
	}
	q.WriteString(` ORDER BY id DESC LIMIT ?`)
	args = append(args, f.EffectiveLimit())

	rows, err := db.r.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []*sluice.AuditEvent
	for rows.Next() {
		var (
			e       sluice.AuditEvent
			at      int64
			details sql.NullString
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor.Type, &e.Actor.ID, &e.Actor.IP, &e.Action, &e.AccountID, &details); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.At = fromNanos(at)
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
