package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	sluice "github.com/sluicehq/sluice"
)

// Errors shown to users. Each call makes a new one, since an *sluice.Error
// is mutable. They never carry a password, hash or token.

func errAccountNotFound() error { return sluice.Errorf(sluice.ENOTFOUND, "Account not found.") }
func errKeyNotFound() error     { return sluice.Errorf(sluice.ENOTFOUND, "API key not found.") }
func errSessionNotFound() error {
	return sluice.Errorf(sluice.ENOTFOUND, "Session not found or expired.")
}
func errTokenNotFound() error { return sluice.Errorf(sluice.ENOTFOUND, "Token not found or expired.") }
func errEmailTaken() error {
	return sluice.Errorf(sluice.EEMAILTAKEN, "An account with this email already exists.")
}
func errTelegramTaken() error {
	return sluice.Errorf(sluice.ETELEGRAMTAKEN, "This Telegram user is already bound to an account.")
}

// emailKey is what email uniqueness and lookups compare: the email
// lower-cased, or NULL for no email.
func emailKey(email string) *string {
	if email == "" {
		return nil
	}
	k := strings.ToLower(email)
	return &k
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullID(id int64) *int64 {
	if id == 0 {
		return nil
	}
	return &id
}

// limit returns l as stored: every unlimited value is stored as -1.
func limit(l sluice.Limit) int64 {
	if l.IsUnlimited() {
		return int64(sluice.Unlimited)
	}
	return int64(l)
}

func override(o *sluice.LimitOverride) (oh, od *int64) {
	if o == nil {
		return nil, nil
	}
	h, d := limit(o.Hour), limit(o.Day)
	return &h, &d
}

// CreateAccount stores a and sets its ID and CreatedAt. An empty Plan is
// stored as sluice.DefaultPlan, and a.Plan is set to it. It writes
// account.created in the same transaction.
func (db *DB) CreateAccount(ctx context.Context, a *sluice.Account) error {
	plan := a.Plan
	if plan == "" {
		plan = sluice.DefaultPlan
	}
	oh, od := override(a.Override)
	created := db.now()
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	defer tx.Rollback(ctx)
	var id int64
	err = tx.QueryRow(ctx, `
INSERT INTO accounts (email, email_key, password_hash, plan, override_hour, override_day, telegram_id, created_at, mail_alerts, telegram_model)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING id`,
		nullString(a.Email), emailKey(a.Email), a.PasswordHash, plan, oh, od, nullID(a.TelegramID), created, !a.MailAlertsOff, a.TelegramModel,
	).Scan(&id)
	if ok, name := isUnique(err); ok && name == "accounts_email_key_key" {
		return errEmailTaken()
	} else if ok && name == "accounts_telegram_id_key" {
		return errTelegramTaken()
	} else if err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	if err := db.insertAudit(ctx, tx, sluice.NewAuditEvent(ctx, sluice.AuditAccountCreated, id, auditCreated(a, plan))); err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	a.ID, a.Plan, a.CreatedAt = id, plan, created
	return nil
}

const accountColumns = `id, email, password_hash, plan, override_hour, override_day, telegram_id, created_at, mail_alerts, telegram_model`

func scanAccount(row pgx.Row) (*sluice.Account, error) {
	var (
		a      sluice.Account
		email  *string
		oh, od *int64
		tg     *int64
		mail   bool
	)
	if err := row.Scan(&a.ID, &email, &a.PasswordHash, &a.Plan, &oh, &od, &tg, &a.CreatedAt, &mail, &a.TelegramModel); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, errAccountNotFound()
		}
		return nil, err
	}
	if email != nil {
		a.Email = *email
	}
	if oh != nil && od != nil {
		a.Override = &sluice.LimitOverride{Hour: sluice.Limit(*oh), Day: sluice.Limit(*od)}
	}
	if tg != nil {
		a.TelegramID = *tg
	}
	a.CreatedAt = a.CreatedAt.UTC()
	a.MailAlertsOff = !mail
	return &a, nil
}

// FindAccountByID returns the account with the ID.
func (db *DB) FindAccountByID(ctx context.Context, id int64) (*sluice.Account, error) {
	a, err := scanAccount(db.pool.QueryRow(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("find account: %w", err)
	}
	return a, nil
}

// FindAccountByEmail compares emails case-insensitively.
func (db *DB) FindAccountByEmail(ctx context.Context, email string) (*sluice.Account, error) {
	if email == "" {
		return nil, fmt.Errorf("find account: %w", errAccountNotFound())
	}
	a, err := scanAccount(db.pool.QueryRow(ctx, `SELECT `+accountColumns+` FROM accounts WHERE email_key = $1`, emailKey(email)))
	if err != nil {
		return nil, fmt.Errorf("find account: %w", err)
	}
	return a, nil
}

// FindAccountByTelegram returns the account the Telegram user is bound to.
func (db *DB) FindAccountByTelegram(ctx context.Context, telegramID int64) (*sluice.Account, error) {
	if telegramID == 0 {
		return nil, fmt.Errorf("find account: %w", errAccountNotFound())
	}
	a, err := scanAccount(db.pool.QueryRow(ctx, `SELECT `+accountColumns+` FROM accounts WHERE telegram_id = $1`, telegramID))
	if err != nil {
		return nil, fmt.Errorf("find account: %w", err)
	}
	return a, nil
}

// exec runs a statement that must change a row, mapping "no such row" to
// notFound.
func (db *DB) exec(ctx context.Context, op string, notFound func() error, query string, args ...any) error {
	tag, err := db.pool.Exec(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", op, notFound())
	}
	return nil
}

// SetPlan sets the account's plan and writes plan.changed in the same
// transaction; setting the plan the account has changes nothing and writes
// no event. The account's row is locked from the read of the old plan on.
func (db *DB) SetPlan(ctx context.Context, id int64, plan string) error {
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var from string
		err := tx.QueryRow(ctx, `SELECT plan FROM accounts WHERE id = $1 FOR UPDATE`, id).Scan(&from)
		if errors.Is(err, pgx.ErrNoRows) {
			return errAccountNotFound()
		} else if err != nil {
			return err
		}
		if from == plan {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE accounts SET plan = $1 WHERE id = $2`, plan, id); err != nil {
			return err
		}
		return db.insertAudit(ctx, tx, sluice.NewAuditEvent(ctx, sluice.AuditPlanChanged, id,
			map[string]any{"from": from, "to": plan}))
	})
	if err != nil {
		return fmt.Errorf("set plan: %w", err)
	}
	return nil
}

// SetOverride sets the account's limit override; nil removes it. Every
// negative limit is stored, and read back, as sluice.Unlimited. It writes
// limits.changed (or limits.removed) in the same transaction; an override
// equal to the one stored changes nothing and writes no event.
func (db *DB) SetOverride(ctx context.Context, id int64, o *sluice.LimitOverride) error {
	oh, od := override(o)
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var fh, fd *int64
		err := tx.QueryRow(ctx, `SELECT override_hour, override_day FROM accounts WHERE id = $1 FOR UPDATE`, id).Scan(&fh, &fd)
		if errors.Is(err, pgx.ErrNoRows) {
			return errAccountNotFound()
		} else if err != nil {
			return err
		}
		var from *sluice.LimitOverride
		if fh != nil && fd != nil {
			from = &sluice.LimitOverride{Hour: sluice.Limit(*fh), Day: sluice.Limit(*fd)}
		}
		if sameOverride(from, oh, od) {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE accounts SET override_hour = $1, override_day = $2 WHERE id = $3`, oh, od, id); err != nil {
			return err
		}
		e := sluice.NewAuditEvent(ctx, sluice.AuditLimitsChanged, id,
			map[string]any{"from": sluice.AuditLimits(from), "to": sluice.AuditLimits(o)})
		if o == nil {
			e = sluice.NewAuditEvent(ctx, sluice.AuditLimitsRemoved, id, map[string]any{"from": sluice.AuditLimits(from)})
		}
		return db.insertAudit(ctx, tx, e)
	})
	if err != nil {
		return fmt.Errorf("set override: %w", err)
	}
	return nil
}

// sameOverride reports whether the stored override from is oh and od as
// they would be stored.
func sameOverride(from *sluice.LimitOverride, oh, od *int64) bool {
	if from == nil || oh == nil {
		return from == nil && oh == nil
	}
	return int64(from.Hour) == *oh && int64(from.Day) == *od
}

// SetPassword sets the account's password hash; empty disables password
// login. It writes no audit event: a login also calls it to store a rehash
// of the same password, which changes nothing for the account; the reset
// flow records password.reset itself (RecordAudit).
func (db *DB) SetPassword(ctx context.Context, id int64, passwordHash string) error {
	return db.exec(ctx, "set password", errAccountNotFound, `UPDATE accounts SET password_hash = $1 WHERE id = $2`, passwordHash, id)
}

// SetTelegramModel sets the model the account's Telegram user chose.
func (db *DB) SetTelegramModel(ctx context.Context, id int64, model string) error {
	return db.exec(ctx, "set telegram model", errAccountNotFound, `UPDATE accounts SET telegram_model = $1 WHERE id = $2`, model, id)
}

// SetMailAlerts turns the account's quota alerts by mail on or off. It
// writes alerts.changed in the same transaction; setting what is stored
// changes nothing and writes no event.
func (db *DB) SetMailAlerts(ctx context.Context, id int64, on bool) error {
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var from bool
		err := tx.QueryRow(ctx, `SELECT mail_alerts FROM accounts WHERE id = $1 FOR UPDATE`, id).Scan(&from)
		if errors.Is(err, pgx.ErrNoRows) {
			return errAccountNotFound()
		} else if err != nil {
			return err
		}
		if from == on {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE accounts SET mail_alerts = $1 WHERE id = $2`, on, id); err != nil {
			return err
		}
		return db.insertAudit(ctx, tx, sluice.NewAuditEvent(ctx, sluice.AuditAlertsChanged, id,
			map[string]any{"email": map[string]any{"from": from, "to": on}}))
	})
	if err != nil {
		return fmt.Errorf("set mail alerts: %w", err)
	}
	return nil
}

// LinkTelegram binds the Telegram user to the account, taking it away from
// any other account, in one transaction: if the account does not exist,
// nothing changes. A telegramID of 0 unbinds the account's Telegram user.
// The same transaction writes telegram.linked on the account (or
// telegram.unlinked for an unbinding) and telegram.unlinked on the account
// it was taken from; binding the user the account has writes nothing.
func (db *DB) LinkTelegram(ctx context.Context, id int64, telegramID int64) error {
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var cur, from *int64 // the account's Telegram user; the account losing telegramID
		err := tx.QueryRow(ctx, `SELECT telegram_id FROM accounts WHERE id = $1 FOR UPDATE`, id).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return errAccountNotFound()
		} else if err != nil {
			return err
		}
		if deref(cur) == telegramID {
			return nil
		}
		if telegramID != 0 {
			err := tx.QueryRow(ctx, `SELECT id FROM accounts WHERE telegram_id = $1 AND id <> $2 FOR UPDATE`, telegramID, id).Scan(&from)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		if telegramID != 0 {
			if _, err := tx.Exec(ctx, `UPDATE accounts SET telegram_id = NULL WHERE telegram_id = $1 AND id <> $2`, telegramID, id); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, `UPDATE accounts SET telegram_id = $1 WHERE id = $2`, nullID(telegramID), id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errAccountNotFound()
		}
		for _, e := range auditLink(ctx, id, deref(cur), telegramID, deref(from)) {
			if err := db.insertAudit(ctx, tx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("link telegram: %w", err)
	}
	return nil
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// CreateAPIKey stores k and sets its CreatedAt, and writes key.created (the
// key's ID and name, never its hash) in the same transaction. ENOTFOUND if
// the account does not exist.
func (db *DB) CreateAPIKey(ctx context.Context, k *sluice.APIKey) error {
	created := db.now()
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, `
INSERT INTO api_keys (id, account_id, name, hash, created_at, last_used_at, revoked_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		k.ID, k.AccountID, k.Name, k.Hash, created, nullTime(k.LastUsedAt), nullTime(k.RevokedAt))
	if ok, _ := isUnique(err); ok {
		return fmt.Errorf("create api key: lookup id already in use")
	} else if isForeignKey(err) {
		return fmt.Errorf("create api key: %w", errAccountNotFound())
	} else if err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	if err := db.insertAudit(ctx, tx, sluice.NewAuditEvent(ctx, sluice.AuditKeyCreated, k.AccountID,
		map[string]any{"key_id": k.ID, "name": k.Name})); err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	k.CreatedAt = created
	return nil
}

const apiKeyColumns = `id, account_id, name, hash, created_at, last_used_at, revoked_at`

func scanAPIKey(row pgx.Row) (*sluice.APIKey, error) {
	var (
		k                 sluice.APIKey
		lastUsed, revoked *time.Time
	)
	if err := row.Scan(&k.ID, &k.AccountID, &k.Name, &k.Hash, &k.CreatedAt, &lastUsed, &revoked); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, errKeyNotFound()
		}
		return nil, err
	}
	k.CreatedAt = k.CreatedAt.UTC()
	k.LastUsedAt = fromNullTime(lastUsed)
	k.RevokedAt = fromNullTime(revoked)
	return &k, nil
}

// FindAPIKey returns the key with the lookup ID, revoked or not.
func (db *DB) FindAPIKey(ctx context.Context, id string) (*sluice.APIKey, error) {
	k, err := scanAPIKey(db.pool.QueryRow(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("find api key: %w", err)
	}
	return k, nil
}

// ListAPIKeys returns the account's live keys, oldest first; keys created
// at the same instant are in the order they were created.
func (db *DB) ListAPIKeys(ctx context.Context, accountID int64) ([]*sluice.APIKey, error) {
	rows, err := db.pool.Query(ctx, `
SELECT `+apiKeyColumns+` FROM api_keys
WHERE account_id = $1 AND revoked_at IS NULL
ORDER BY created_at, seq`, accountID)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	defer rows.Close()
	var keys []*sluice.APIKey
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list api keys: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return keys, nil
}

// RevokeAPIKey revokes a live key of the account at now, and writes
// key.revoked in the same transaction; ENOTFOUND if the account has no
// such live key.
func (db *DB) RevokeAPIKey(ctx context.Context, accountID int64, id string, now time.Time) error {
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var name string
		err := tx.QueryRow(ctx,
			`UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND account_id = $3 AND revoked_at IS NULL RETURNING name`,
			nullTime(now), id, accountID).Scan(&name)
		if errors.Is(err, pgx.ErrNoRows) {
			return errKeyNotFound()
		} else if err != nil {
			return err
		}
		return db.insertAudit(ctx, tx, sluice.NewAuditEvent(ctx, sluice.AuditKeyRevoked, accountID,
			map[string]any{"key_id": id, "name": name}))
	})
	if err != nil {
		return fmt.Errorf("revoke api key: %w", err)
	}
	return nil
}

// TouchAPIKey records that the key was used at t; ENOTFOUND if there is no
// such key.
func (db *DB) TouchAPIKey(ctx context.Context, id string, t time.Time) error {
	return db.exec(ctx, "touch api key", errKeyNotFound, `UPDATE api_keys SET last_used_at = $1 WHERE id = $2`, nullTime(t), id)
}

// CreateSession stores s; a zero CreatedAt is set to the current time.
// ENOTFOUND if the account does not exist.
func (db *DB) CreateSession(ctx context.Context, s *sluice.Session) error {
	created := s.CreatedAt
	if created.IsZero() {
		created = db.now()
	}
	_, err := db.pool.Exec(ctx,
		`INSERT INTO sessions (token_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)`,
		s.TokenHash, s.AccountID, created, s.ExpiresAt)
	if ok, _ := isUnique(err); ok {
		return fmt.Errorf("create session: token hash already in use")
	} else if isForeignKey(err) {
		return fmt.Errorf("create session: %w", errAccountNotFound())
	} else if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	s.CreatedAt = created
	return nil
}

// FindSession returns the session with the token hash if it expires after
// now.
func (db *DB) FindSession(ctx context.Context, tokenHash []byte, now time.Time) (*sluice.Session, error) {
	var s sluice.Session
	err := db.pool.QueryRow(ctx,
		`SELECT token_hash, account_id, created_at, expires_at FROM sessions WHERE token_hash = $1 AND expires_at > $2`,
		tokenHash, now).Scan(&s.TokenHash, &s.AccountID, &s.CreatedAt, &s.ExpiresAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("find session: %w", errSessionNotFound())
	case err != nil:
		return nil, fmt.Errorf("find session: %w", err)
	}
	s.CreatedAt, s.ExpiresAt = s.CreatedAt.UTC(), s.ExpiresAt.UTC()
	return &s, nil
}

// DeleteSessions ends every session of the account.
func (db *DB) DeleteSessions(ctx context.Context, accountID int64) error {
	if _, err := db.pool.Exec(ctx, `DELETE FROM sessions WHERE account_id = $1`, accountID); err != nil {
		return fmt.Errorf("delete sessions: %w", err)
	}
	return nil
}

// CreateToken stores a single-use token of a kind for the account, valid
// until expires. ENOTFOUND if the account does not exist.
func (db *DB) CreateToken(ctx context.Context, kind string, hash []byte, accountID int64, expires time.Time) error {
	_, err := db.pool.Exec(ctx,
		`INSERT INTO tokens (kind, hash, account_id, expires_at) VALUES ($1, $2, $3, $4)`, kind, hash, accountID, expires)
	if ok, _ := isUnique(err); ok {
		return fmt.Errorf("create token: hash already in use")
	} else if isForeignKey(err) {
		return fmt.Errorf("create token: %w", errAccountNotFound())
	} else if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	return nil
}

// ConsumeToken deletes the token and returns its account in one statement,
// so that it is used once however many callers race for it; ENOTFOUND if
// it does not exist or has expired at now. An expired token is left in
// place. A password reset token takes every password reset token of its
// account with it, in the same statement. Of statements racing for tokens
// of one account, the first to delete a row wins it; under READ COMMITTED
// the others find those rows gone when its transaction commits, and delete
// nothing, so only one of them succeeds.
func (db *DB) ConsumeToken(ctx context.Context, kind string, hash []byte, now time.Time) (int64, error) {
	q := `DELETE FROM tokens WHERE kind = $1 AND hash = $2 AND expires_at > $3 RETURNING account_id`
	if kind == sluice.TokenPasswordReset {
		// A data-modifying WITH runs to completion whatever the outer
		// query reads of it.
		q = `WITH spent AS (
	DELETE FROM tokens WHERE kind = $1 AND account_id =
		(SELECT account_id FROM tokens WHERE kind = $1 AND hash = $2 AND expires_at > $3)
	RETURNING account_id)
SELECT account_id FROM spent LIMIT 1`
	}
	var id int64
	err := db.pool.QueryRow(ctx, q, kind, hash, now).Scan(&id)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, fmt.Errorf("consume token: %w", errTokenNotFound())
	case err != nil:
		return 0, fmt.Errorf("consume token: %w", err)
	}
	return id, nil
}

// DeleteExpired deletes the sessions and tokens that have expired at now.
func (db *DB) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	for _, q := range []string{`DELETE FROM sessions WHERE expires_at <= $1`, `DELETE FROM tokens WHERE expires_at <= $1`} {
		tag, err := db.pool.Exec(ctx, q, now)
		if err != nil {
			return n, fmt.Errorf("delete expired: %w", err)
		}
		n += tag.RowsAffected()
	}
	return n, nil
}
