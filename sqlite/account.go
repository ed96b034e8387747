package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	sluice "github.com/sluicehq/sluice"
)

// Errors shown to users. Each call makes a new one, since an *sluice.Error
// is mutable. They never carry a password, hash or token.

func errAccountNotFound() error {
	return sluice.Errorf(sluice.ENOTFOUND, "Account not found.")
}

func errKeyNotFound() error {
	return sluice.Errorf(sluice.ENOTFOUND, "API key not found.")
}

func errSessionNotFound() error {
	return sluice.Errorf(sluice.ENOTFOUND, "Session not found or expired.")
}

func errTokenNotFound() error {
	return sluice.Errorf(sluice.ENOTFOUND, "Token not found or expired.")
}

func errEmailTaken() error {
	return sluice.Errorf(sluice.EEMAILTAKEN, "An account with this email already exists.")
}
func errTelegramTaken() error {
	return sluice.Errorf(sluice.ETELEGRAMTAKEN, "This Telegram user is already bound to an account.")
}

// emailKey is what email uniqueness and lookups compare: the email
// lower-cased, or NULL for no email.
func emailKey(email string) sql.NullString {
	if email == "" {
		return sql.NullString{}
	}
	return sql.NullString{String: strings.ToLower(email), Valid: true}
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func nullID(id int64) sql.NullInt64 { return sql.NullInt64{Int64: id, Valid: id != 0} }

// limit returns l as stored: every unlimited value is stored as -1.
func limit(l sluice.Limit) int64 {
	if l.IsUnlimited() {
		return int64(sluice.Unlimited)
	}
	return int64(l)
}

// CreateAccount stores a and sets its ID and CreatedAt. An empty Plan is
// stored as sluice.DefaultPlan, and a.Plan is set to it. A Telegram user
// already bound to another account is ETELEGRAMTAKEN. It writes
// account.created in the same transaction.
func (db *DB) CreateAccount(ctx context.Context, a *sluice.Account) error {
	plan := a.Plan
	if plan == "" {
		plan = sluice.DefaultPlan
	}
	var oh, od sql.NullInt64
	if o := a.Override; o != nil {
		oh = sql.NullInt64{Int64: limit(o.Hour), Valid: true}
		od = sql.NullInt64{Int64: limit(o.Day), Valid: true}
	}
	created := db.now()
	createdNanos, err := nanos(created)
	if err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	defer tx.Rollback()
	var id int64
	err = tx.QueryRowContext(ctx, `
INSERT INTO accounts (email, email_key, password_hash, plan, override_hour, override_day, telegram_id, created_at, mail_alerts, telegram_model)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
RETURNING id`,
		nullString(a.Email), emailKey(a.Email), a.PasswordHash, plan, oh, od, nullID(a.TelegramID), createdNanos, !a.MailAlertsOff, a.TelegramModel,
	).Scan(&id)
	switch {
	case isUnique(err) && strings.Contains(err.Error(), "accounts.email_key"):
		return errEmailTaken()
	case isUnique(err) && strings.Contains(err.Error(), "accounts.telegram_id"):
		return errTelegramTaken()
	case err != nil:
		return fmt.Errorf("create account: %w", err)
	}
	if err := db.insertAudit(ctx, tx, sluice.NewAuditEvent(ctx, sluice.AuditAccountCreated, id, auditCreated(a, plan))); err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	a.ID, a.Plan, a.CreatedAt = id, plan, created
	return nil
}

const accountColumns = `id, email, password_hash, plan, override_hour, override_day, telegram_id, created_at, mail_alerts, telegram_model`

// scanAccount reads the accountColumns of one row (a *sql.Row or the
// current row of *sql.Rows).
func scanAccount(row interface{ Scan(...any) error }) (*sluice.Account, error) {
	var (
		a       sluice.Account
		email   sql.NullString
		oh, od  sql.NullInt64
		tg      sql.NullInt64
		created int64
		mail    bool
	)
	if err := row.Scan(&a.ID, &email, &a.PasswordHash, &a.Plan, &oh, &od, &tg, &created, &mail, &a.TelegramModel); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, errAccountNotFound()
		}
		return nil, err
	}
	a.Email = email.String
	if oh.Valid && od.Valid {
		a.Override = &sluice.LimitOverride{Hour: sluice.Limit(oh.Int64), Day: sluice.Limit(od.Int64)}
	}
	a.TelegramID = tg.Int64
	a.CreatedAt = fromNanos(created)
	a.MailAlertsOff = !mail
	return &a, nil
}

// FindAccountByID returns the account with the ID.
func (db *DB) FindAccountByID(ctx context.Context, id int64) (*sluice.Account, error) {
	a, err := scanAccount(db.r.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE id = ?`, id))
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
	a, err := scanAccount(db.r.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE email_key = ?`, emailKey(email)))
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
	a, err := scanAccount(db.r.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM accounts WHERE telegram_id = ?`, telegramID))
	if err != nil {
		return nil, fmt.Errorf("find account: %w", err)
	}
	return a, nil
}

// updateAccount runs an UPDATE of one account and maps "no such row" to
// ENOTFOUND.
func (db *DB) updateAccount(ctx context.Context, op, query string, args ...any) error {
	res, err := db.w.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if n == 0 {
		return fmt.Errorf("%s: %w", op, errAccountNotFound())
	}
	return nil
}

// SetPlan sets the account's plan and writes plan.changed in the same
// transaction; setting the plan the account has changes nothing and writes
// no event.
func (db *DB) SetPlan(ctx context.Context, id int64, plan string) error {
	return db.inTx(ctx, "set plan", func(tx *sql.Tx) error {
		var from string
		err := tx.QueryRowContext(ctx, `SELECT plan FROM accounts WHERE id = ?`, id).Scan(&from)
		if errors.Is(err, sql.ErrNoRows) {
			return errAccountNotFound()
		} else if err != nil {
			return err
		}
		if from == plan {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET plan = ? WHERE id = ?`, plan, id); err != nil {
			return err
		}
		return db.insertAudit(ctx, tx, sluice.NewAuditEvent(ctx, sluice.AuditPlanChanged, id,
			map[string]any{"from": from, "to": plan}))
	})
}

// SetOverride sets the account's limit override; nil removes it. Every
// negative limit is stored, and read back, as sluice.Unlimited. It writes
// limits.changed (or limits.removed) in the same transaction; an override
// equal to the one stored changes nothing and writes no event.
func (db *DB) SetOverride(ctx context.Context, id int64, o *sluice.LimitOverride) error {
	var oh, od sql.NullInt64
	if o != nil {
		oh = sql.NullInt64{Int64: limit(o.Hour), Valid: true}
		od = sql.NullInt64{Int64: limit(o.Day), Valid: true}
	}
	return db.inTx(ctx, "set override", func(tx *sql.Tx) error {
		var fh, fd sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT override_hour, override_day FROM accounts WHERE id = ?`, id).Scan(&fh, &fd)
		if errors.Is(err, sql.ErrNoRows) {
			return errAccountNotFound()
		} else if err != nil {
			return err
		}
		if fh == oh && fd == od {
			return nil
		}
		if _, err := tx.ExecContext(ctx,
			`UPDATE accounts SET override_hour = ?, override_day = ? WHERE id = ?`, oh, od, id); err != nil {
			return err
		}
		var from *sluice.LimitOverride
		if fh.Valid && fd.Valid {
			from = &sluice.LimitOverride{Hour: sluice.Limit(fh.Int64), Day: sluice.Limit(fd.Int64)}
		}
		e := sluice.NewAuditEvent(ctx, sluice.AuditLimitsChanged, id,
			map[string]any{"from": sluice.AuditLimits(from), "to": sluice.AuditLimits(o)})
		if o == nil {
			e = sluice.NewAuditEvent(ctx, sluice.AuditLimitsRemoved, id, map[string]any{"from": sluice.AuditLimits(from)})
		}
		return db.insertAudit(ctx, tx, e)
	})
}

// SetPassword sets the account's password hash; empty disables password
// login. It writes no audit event: a login also calls it to store a rehash
// of the same password, which changes nothing for the account; the reset
// flow records password.reset itself (RecordAudit).
func (db *DB) SetPassword(ctx context.Context, id int64, passwordHash string) error {
	return db.updateAccount(ctx, "set password", `UPDATE accounts SET password_hash = ? WHERE id = ?`, passwordHash, id)
}

// SetTelegramModel sets the model the account's Telegram user chose.
func (db *DB) SetTelegramModel(ctx context.Context, id int64, model string) error {
	return db.updateAccount(ctx, "set telegram model", `UPDATE accounts SET telegram_model = ? WHERE id = ?`, model, id)
}

// SetMailAlerts turns the account's quota alerts by mail on or off. It
// writes alerts.changed in the same transaction; setting what is stored
// changes nothing and writes no event.
func (db *DB) SetMailAlerts(ctx context.Context, id int64, on bool) error {
	return db.inTx(ctx, "set mail alerts", func(tx *sql.Tx) error {
		var from bool
		err := tx.QueryRowContext(ctx, `SELECT mail_alerts FROM accounts WHERE id = ?`, id).Scan(&from)
		if errors.Is(err, sql.ErrNoRows) {
			return errAccountNotFound()
		} else if err != nil {
			return err
		}
		if from == on {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET mail_alerts = ? WHERE id = ?`, on, id); err != nil {
			return err
		}
		return db.insertAudit(ctx, tx, sluice.NewAuditEvent(ctx, sluice.AuditAlertsChanged, id,
			map[string]any{"email": map[string]any{"from": from, "to": on}}))
	})
}

// LinkTelegram binds the Telegram user to the account, taking it away from
// any other account, in one transaction: if the account does not exist,
// nothing changes. A telegramID of 0 unbinds the account's Telegram user.
// The same transaction writes telegram.linked on the account (or
// telegram.unlinked for an unbinding) and telegram.unlinked on the account
// it was taken from; binding the user the account has writes nothing.
func (db *DB) LinkTelegram(ctx context.Context, id int64, telegramID int64) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("link telegram: %w", err)
	}
	defer tx.Rollback()

	var cur, from sql.NullInt64 // the account's Telegram user; the account losing telegramID
	err = tx.QueryRowContext(ctx, `SELECT telegram_id FROM accounts WHERE id = ?`, id).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("link telegram: %w", errAccountNotFound())
	} else if err != nil {
		return fmt.Errorf("link telegram: %w", err)
	}
	if cur.Int64 == telegramID {
		return nil
	}
	if telegramID != 0 {
		err := tx.QueryRowContext(ctx, `SELECT id FROM accounts WHERE telegram_id = ? AND id <> ?`, telegramID, id).Scan(&from)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("link telegram: %w", err)
		}
	}
	if telegramID != 0 {
		if _, err := tx.ExecContext(ctx,
			`UPDATE accounts SET telegram_id = NULL WHERE telegram_id = ? AND id <> ?`, telegramID, id); err != nil {
			return fmt.Errorf("link telegram: %w", err)
		}
	}
	res, err := tx.ExecContext(ctx, `UPDATE accounts SET telegram_id = ? WHERE id = ?`, nullID(telegramID), id)
	if err != nil {
		return fmt.Errorf("link telegram: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("link telegram: %w", err)
	} else if n == 0 {
		return fmt.Errorf("link telegram: %w", errAccountNotFound())
	}
	for _, e := range auditLink(ctx, id, cur.Int64, telegramID, from.Int64) {
		if err := db.insertAudit(ctx, tx, e); err != nil {
			return fmt.Errorf("link telegram: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("link telegram: %w", err)
	}
	return nil
}

// CreateAPIKey stores k and sets its CreatedAt, and writes key.created (the
// key's ID and name, never its hash) in the same transaction. ENOTFOUND if
// the account does not exist.
func (db *DB) CreateAPIKey(ctx context.Context, k *sluice.APIKey) error {
	created := db.now()
	createdNanos, err := nanos(created)
	if err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	lastUsed, err := nullNanos(k.LastUsedAt)
	if err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	revoked, err := nullNanos(k.RevokedAt)
	if err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `
INSERT INTO api_keys (id, account_id, name, hash, created_at, last_used_at, revoked_at)
VALUES (?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.AccountID, k.Name, k.Hash, createdNanos, lastUsed, revoked)
	switch {
	case isForeignKey(err):
		return fmt.Errorf("create api key: %w", errAccountNotFound())
	case isUnique(err):
		return fmt.Errorf("create api key: lookup id already in use")
	case err != nil:
		return fmt.Errorf("create api key: %w", err)
	}
	if err := db.insertAudit(ctx, tx, sluice.NewAuditEvent(ctx, sluice.AuditKeyCreated, k.AccountID,
		map[string]any{"key_id": k.ID, "name": k.Name})); err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	k.CreatedAt = created
	return nil
}

const apiKeyColumns = `id, account_id, name, hash, created_at, last_used_at, revoked_at`

type scanner interface{ Scan(dest ...any) error }

func scanAPIKey(row scanner) (*sluice.APIKey, error) {
	var (
		k                 sluice.APIKey
		created           int64
		lastUsed, revoked sql.NullInt64
	)
	if err := row.Scan(&k.ID, &k.AccountID, &k.Name, &k.Hash, &created, &lastUsed, &revoked); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, errKeyNotFound()
		}
		return nil, err
	}
	k.CreatedAt = fromNanos(created)
	k.LastUsedAt = fromNullNanos(lastUsed)
	k.RevokedAt = fromNullNanos(revoked)
	return &k, nil
}

// FindAPIKey returns the key with the lookup ID, revoked or not.
func (db *DB) FindAPIKey(ctx context.Context, id string) (*sluice.APIKey, error) {
	k, err := scanAPIKey(db.r.QueryRowContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ?`, id))
	if err != nil {
		return nil, fmt.Errorf("find api key: %w", err)
	}
	return k, nil
}

// ListAPIKeys returns the account's live keys, oldest first; keys created
// at the same instant are in the order they were created.
func (db *DB) ListAPIKeys(ctx context.Context, accountID int64) ([]*sluice.APIKey, error) {
	rows, err := db.r.QueryContext(ctx, `
SELECT `+apiKeyColumns+` FROM api_keys
WHERE account_id = ? AND revoked_at IS NULL
ORDER BY created_at, rowid`, accountID)
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
	at, err := nanos(now)
	if err != nil {
		return fmt.Errorf("revoke api key: %w", err)
	}
	return db.inTx(ctx, "revoke api key", func(tx *sql.Tx) error {
		var name string
		err := tx.QueryRowContext(ctx,
			`UPDATE api_keys SET revoked_at = ? WHERE id = ? AND account_id = ? AND revoked_at IS NULL RETURNING name`,
			at, id, accountID).Scan(&name)
		if errors.Is(err, sql.ErrNoRows) {
			return errKeyNotFound()
		} else if err != nil {
			return err
		}
		return db.insertAudit(ctx, tx, sluice.NewAuditEvent(ctx, sluice.AuditKeyRevoked, accountID,
			map[string]any{"key_id": id, "name": name}))
	})
}

// TouchAPIKey records that the key was used at t; ENOTFOUND if there is no
// such key. It is a write: callers on a hot path may want to touch a key at
// most once in a while.
func (db *DB) TouchAPIKey(ctx context.Context, id string, t time.Time) error {
	at, err := nanos(t)
	if err != nil {
		return fmt.Errorf("touch api key: %w", err)
	}
	res, err := db.w.ExecContext(ctx, `UPDATE api_keys SET last_used_at = ? WHERE id = ?`, at, id)
	if err != nil {
		return fmt.Errorf("touch api key: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("touch api key: %w", err)
	} else if n == 0 {
		return fmt.Errorf("touch api key: %w", errKeyNotFound())
	}
	return nil
}

// CreateSession stores s; a zero CreatedAt is set to the current time.
// ENOTFOUND if the account does not exist.
func (db *DB) CreateSession(ctx context.Context, s *sluice.Session) error {
	created := s.CreatedAt
	if created.IsZero() {
		created = db.now()
	}
	createdNanos, err := nanos(created)
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	expires, err := nanos(s.ExpiresAt)
	if err != nil {
		return fmt.Errorf("create session: expiry: %w", err)
	}
	_, err = db.w.ExecContext(ctx,
		`INSERT INTO sessions (token_hash, account_id, created_at, expires_at) VALUES (?, ?, ?, ?)`,
		s.TokenHash, s.AccountID, createdNanos, expires)
	switch {
	case isForeignKey(err):
		return fmt.Errorf("create session: %w", errAccountNotFound())
	case isUnique(err):
		return fmt.Errorf("create session: token hash already in use")
	case err != nil:
		return fmt.Errorf("create session: %w", err)
	}
	s.CreatedAt = created
	return nil
}

// FindSession returns the session with the token hash if it expires after
// now.
func (db *DB) FindSession(ctx context.Context, tokenHash []byte, now time.Time) (*sluice.Session, error) {
	at, err := nanos(now)
	if err != nil {
		return nil, fmt.Errorf("find session: %w", err)
	}
	var (
		s                sluice.Session
		created, expires int64
	)
	err = db.r.QueryRowContext(ctx,
		`SELECT token_hash, account_id, created_at, expires_at FROM sessions WHERE token_hash = ? AND expires_at > ?`,
		tokenHash, at).Scan(&s.TokenHash, &s.AccountID, &created, &expires)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("find session: %w", errSessionNotFound())
	case err != nil:
		return nil, fmt.Errorf("find session: %w", err)
	}
	s.CreatedAt, s.ExpiresAt = fromNanos(created), fromNanos(expires)
	return &s, nil
}

// DeleteSessions ends every session of the account.
func (db *DB) DeleteSessions(ctx context.Context, accountID int64) error {
	if _, err := db.w.ExecContext(ctx, `DELETE FROM sessions WHERE account_id = ?`, accountID); err != nil {
		return fmt.Errorf("delete sessions: %w", err)
	}
	return nil
}

// CreateToken stores a single-use token of a kind for the account, valid
// until expires. ENOTFOUND if the account does not exist.
func (db *DB) CreateToken(ctx context.Context, kind string, hash []byte, accountID int64, expires time.Time) error {
	exp, err := nanos(expires)
	if err != nil {
		return fmt.Errorf("create token: expiry: %w", err)
	}
	_, err = db.w.ExecContext(ctx,
		`INSERT INTO tokens (kind, hash, account_id, expires_at) VALUES (?, ?, ?, ?)`, kind, hash, accountID, exp)
	switch {
	case isForeignKey(err):
		return fmt.Errorf("create token: %w", errAccountNotFound())
	case isUnique(err):
		return fmt.Errorf("create token: hash already in use")
	case err != nil:
		return fmt.Errorf("create token: %w", err)
	}
	return nil
}

// ConsumeToken deletes the token and returns its account in one statement,
// so that it is used once however many callers race for it; ENOTFOUND if
// it does not exist or has expired at now. An expired token is left in
// place. A password reset token takes every password reset token of its
// account with it, in the same statement.
func (db *DB) ConsumeToken(ctx context.Context, kind string, hash []byte, now time.Time) (int64, error) {
	at, err := nanos(now)
	if err != nil {
		return 0, fmt.Errorf("consume token: %w", err)
	}
	q := `DELETE FROM tokens WHERE kind = ?1 AND hash = ?2 AND expires_at > ?3 RETURNING account_id`
	if kind == sluice.TokenPasswordReset {
		q = `DELETE FROM tokens WHERE kind = ?1 AND account_id =
	(SELECT account_id FROM tokens WHERE kind = ?1 AND hash = ?2 AND expires_at > ?3)
RETURNING account_id`
	}
	rows, err := db.w.QueryContext(ctx, q, kind, hash, at)
	if err != nil {
		return 0, fmt.Errorf("consume token: %w", err)
	}
	defer rows.Close()
	var id int64
	for rows.Next() { // every row names the same account
		if err := rows.Scan(&id); err != nil {
			return 0, fmt.Errorf("consume token: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("consume token: %w", err)
	}
	if id == 0 {
		return 0, fmt.Errorf("consume token: %w", errTokenNotFound())
	}
	return id, nil
}

// DeleteExpired deletes the sessions and tokens that have expired at now.
func (db *DB) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	t, err := nanos(now)
	if err != nil {
		return 0, fmt.Errorf("delete expired: %w", err)
	}
	var n int64
	for _, q := range []string{`DELETE FROM sessions WHERE expires_at <= ?`, `DELETE FROM tokens WHERE expires_at <= ?`} {
		res, err := db.w.ExecContext(ctx, q, t)
		if err != nil {
			return n, fmt.Errorf("delete expired: %w", err)
		}
		k, _ := res.RowsAffected()
		n += k
	}
	return n, nil
}
