package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	sluice "github.com/sluicehq/sluice"
)

var _ sluice.IdempotencyStore = (*Idempotency)(nil)

// Idempotency is the sluice.IdempotencyStore of a DB: its records live in
// the table idempotency of the same file. Claims are atomic because a claim
// is one upsert statement, and every write goes through the DB's one writer
// connection under SQLite's write lock (so also against other processes
// that open the file).
type Idempotency struct{ db *DB }

// Idempotency returns the DB's idempotency store.
func (db *DB) Idempotency() *Idempotency { return &Idempotency{db: db} }

// deleteBatch is how many expired records DeleteExpired deletes per
// statement, so that the writer is never held long.
const deleteBatch = 1000

// beginAttempts bounds Begin's loop: the record that held the key may be
// deleted (abandoned, purged) between the upsert and the read, and then the
// upsert is tried again.
const beginAttempts = 5

// Begin implements sluice.IdempotencyStore: an upsert on the writer that
// takes the key if it is free or expired and, if it was not, a read of the
// record that holds it on a reader, so that replaying a large answer does
// not hold the writer.
func (s *Idempotency) Begin(ctx context.Context, rec *sluice.IdempotencyRecord, now time.Time) (*sluice.IdempotencyRecord, bool, error) {
	exp, err := nanos(rec.ExpiresAt)
	if err != nil {
		return nil, false, fmt.Errorf("idempotency begin: %w", err)
	}
	nowN, err := nanos(now)
	if err != nil {
		return nil, false, fmt.Errorf("idempotency begin: %w", err)
	}
	for range beginAttempts {
		// An expired claim in flight whose charge holds is taken over by
		// the same request only, which inherits the charge.
		var charged, chargedAt, chargedUntil int64
		err := s.db.w.QueryRowContext(ctx, `
INSERT INTO idempotency (account_id, key, fingerprint, token, done, status, content_type, body, oversize, expires_at)
VALUES (?1, ?2, ?3, ?4, 0, 0, '', NULL, 0, ?5)
ON CONFLICT (account_id, key) DO UPDATE SET
	fingerprint = excluded.fingerprint, token = excluded.token, done = 0, status = 0,
	content_type = '', body = NULL, oversize = 0, expires_at = excluded.expires_at,
	charged = iif(idempotency.done = 0 AND idempotency.charged_until > ?6, idempotency.charged, 0),
	charged_at = iif(idempotency.done = 0 AND idempotency.charged_until > ?6, idempotency.charged_at, 0),
	charged_until = iif(idempotency.done = 0 AND idempotency.charged_until > ?6, idempotency.charged_until, 0)
WHERE idempotency.expires_at <= ?6
	AND (idempotency.done = 1 OR idempotency.charged_until <= ?6 OR idempotency.fingerprint = excluded.fingerprint)
RETURNING charged, charged_at, charged_until`,
			rec.AccountID, rec.Key, rec.Fingerprint[:], rec.Token, exp, nowN).Scan(&charged, &chargedAt, &chargedUntil)
		if err == nil {
			got := *rec
			got.Done, got.Status, got.ContentType, got.Body, got.Oversize = false, 0, "", nil, false
			got.ExpiresAt = fromNanos(exp)
			got.Charged, got.ChargedAt, got.ChargedUntil = 0, time.Time{}, time.Time{}
			if charged > 0 {
				got.Charged, got.ChargedAt, got.ChargedUntil = charged, fromNanos(chargedAt), fromNanos(chargedUntil)
			}
			return &got, true, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, false, fmt.Errorf("idempotency begin: %w", err)
		}
		// A reader starts after the upsert's commit, so it sees the
		// record that refused it, unless that went away since.
		got, err := scanIdempotency(s.db.r.QueryRowContext(ctx, `
SELECT account_id, key, fingerprint, token, done, status, content_type, body, oversize, expires_at, charged, charged_at, charged_until
FROM idempotency WHERE account_id = ? AND key = ?`, rec.AccountID, rec.Key))
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("idempotency begin: %w", err)
		}
		return got, false, nil
	}
	return nil, false, errors.New("idempotency begin: the key changed hands too often")
}

func scanIdempotency(row *sql.Row) (*sluice.IdempotencyRecord, error) {
	var (
		r                       sluice.IdempotencyRecord
		fp                      []byte
		exp, chargedAt, chUntil int64
		done                    int
		over                    int
		ctype                   string
	)
	if err := row.Scan(&r.AccountID, &r.Key, &fp, &r.Token, &done, &r.Status, &ctype, &r.Body, &over, &exp,
		&r.Charged, &chargedAt, &chUntil); err != nil {
		return nil, err
	}
	if r.Charged > 0 {
		r.ChargedAt, r.ChargedUntil = fromNanos(chargedAt), fromNanos(chUntil)
	}
	if len(fp) != len(r.Fingerprint) {
		return nil, errors.New("stored fingerprint has the wrong length")
	}
	copy(r.Fingerprint[:], fp)
	r.Done, r.Oversize, r.ContentType, r.ExpiresAt = done != 0, over != 0, ctype, fromNanos(exp)
	return &r, nil
}

// Complete implements sluice.IdempotencyStore.
func (s *Idempotency) Complete(ctx context.Context, rec *sluice.IdempotencyRecord) error {
	exp, err := nanos(rec.ExpiresAt)
	if err != nil {
		return fmt.Errorf("idempotency complete: %w", err)
	}
	body := rec.Body
	if rec.Oversize {
		body = nil
	} else if body == nil {
		body = []byte{}
	}
	res, err := s.db.w.ExecContext(ctx, `
UPDATE idempotency SET done = 1, status = ?, content_type = ?, body = ?, oversize = ?, expires_at = ?,
	charged = 0, charged_at = 0, charged_until = 0
WHERE account_id = ? AND key = ? AND token = ? AND done = 0`,
		rec.Status, rec.ContentType, body, rec.Oversize, exp, rec.AccountID, rec.Key, rec.Token)
	return held("complete", res, err)
}

// Extend implements sluice.IdempotencyStore.
func (s *Idempotency) Extend(ctx context.Context, accountID int64, key, token string, expires time.Time) error {
	exp, err := nanos(expires)
	if err != nil {
		return fmt.Errorf("idempotency extend: %w", err)
	}
	res, err := s.db.w.ExecContext(ctx,
		`UPDATE idempotency SET expires_at = ? WHERE account_id = ? AND key = ? AND token = ? AND done = 0`,
		exp, accountID, key, token)
	return held("extend", res, err)
}

// Charge implements sluice.IdempotencyStore.
func (s *Idempotency) Charge(ctx context.Context, accountID int64, key, token string, units int64, at, until time.Time) error {
	atN, err := nanos(at)
	if err != nil {
		return fmt.Errorf("idempotency charge: %w", err)
	}
	untilN, err := nanos(until)
	if err != nil {
		return fmt.Errorf("idempotency charge: %w", err)
	}
	res, err := s.db.w.ExecContext(ctx,
		`UPDATE idempotency SET charged = ?, charged_at = ?, charged_until = ? WHERE account_id = ? AND key = ? AND token = ? AND done = 0`,
		units, atN, untilN, accountID, key, token)
	return held("charge", res, err)
}

// held is the error of the update op of a claim in flight that returned
// res, err: ENOTFOUND if it changed no row (the attempt no longer holds the
// claim).
func held(op string, res sql.Result, err error) error {
	return oneRow("idempotency "+op, "The idempotency claim is no longer held.", res, err)
}

// oneRow is the error of the statement op that returned res, err and was
// to change one row: ENOTFOUND with the message gone if it changed none.
func oneRow(op, gone string, res sql.Result, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if n == 0 {
		return sluice.Errorf(sluice.ENOTFOUND, "%s", gone)
	}
	return nil
}

// Abandon implements sluice.IdempotencyStore.
func (s *Idempotency) Abandon(ctx context.Context, accountID int64, key, token string) error {
	if _, err := s.db.w.ExecContext(ctx,
		`DELETE FROM idempotency WHERE account_id = ? AND key = ? AND token = ? AND done = 0`,
		accountID, key, token); err != nil {
		return fmt.Errorf("idempotency abandon: %w", err)
	}
	return nil
}

// DeleteExpired implements sluice.IdempotencyStore, deleteBatch records per
// statement.
func (s *Idempotency) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	nowN, err := nanos(now)
	if err != nil {
		return 0, fmt.Errorf("idempotency delete expired: %w", err)
	}
	return deleteBatches(ctx, s.db.w, "idempotency delete expired", `
DELETE FROM idempotency WHERE rowid IN (
	SELECT rowid FROM idempotency WHERE expires_at <= ?1 AND charged_until <= ?1 LIMIT ?2)`, nowN)
}

// deleteBatches runs the DELETE query, whose parameters are ?1 now and ?2
// the batch's size, until it deletes fewer than deleteBatch rows, so that
// the writer is never held long, and returns how many it deleted.
func deleteBatches(ctx context.Context, w *sql.DB, op, query string, now int64) (int64, error) {
	var total int64
	for {
		res, err := w.ExecContext(ctx, query, now, deleteBatch)
		if err != nil {
			return total, fmt.Errorf("%s: %w", op, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("%s: %w", op, err)
		}
		total += n
		if n < deleteBatch {
			return total, nil
		}
	}
}
