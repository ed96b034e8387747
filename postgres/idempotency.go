package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	sluice "github.com/sluicehq/sluice"
)

var _ sluice.IdempotencyStore = (*Idempotency)(nil)

// Idempotency is the sluice.IdempotencyStore of a DB: its records live in
// the table idempotency of the same schema, shared by every instance.
// Claims are atomic across instances because Begin is one INSERT … ON
// CONFLICT DO UPDATE … WHERE statement: of concurrent inserts of one key,
// PostgreSQL lets one insert and makes the others wait for it, then see its
// row (not expired) and change nothing.
type Idempotency struct{ db *DB }

// Idempotency returns the DB's idempotency store.
func (db *DB) Idempotency() *Idempotency { return &Idempotency{db: db} }

// deleteBatch is how many expired records DeleteExpired deletes per
// statement, so that no statement holds many row locks or runs long.
const deleteBatch = 1000

// beginAttempts bounds Begin's loop: the record that held the key may be
// deleted (abandoned) between the upsert and the read, and then the upsert
// is tried again.
const beginAttempts = 5

// Begin implements sluice.IdempotencyStore: one round trip when the key is
// free (the usual case), two when a record holds it.
func (s *Idempotency) Begin(ctx context.Context, rec *sluice.IdempotencyRecord, now time.Time) (*sluice.IdempotencyRecord, bool, error) {
	exp := rec.ExpiresAt.UTC().Truncate(time.Microsecond)
	for range beginAttempts {
		// An expired claim in flight whose charge holds is taken over by
		// the same request only, which inherits the charge.
		var (
			charged                 int64
			chargedAt, chargedUntil time.Time
		)
		err := s.db.pool.QueryRow(ctx, `
INSERT INTO idempotency AS i (account_id, key, fingerprint, token, done, status, content_type, body, oversize, expires_at)
VALUES ($1, $2, $3, $4, false, 0, '', NULL, false, $5)
ON CONFLICT (account_id, key) DO UPDATE SET
	fingerprint = excluded.fingerprint, token = excluded.token, done = false, status = 0,
	content_type = '', body = NULL, oversize = false, expires_at = excluded.expires_at,
	charged = CASE WHEN NOT i.done AND i.charged_until > $6 THEN i.charged ELSE 0 END,
	charged_at = CASE WHEN NOT i.done AND i.charged_until > $6 THEN i.charged_at ELSE 'epoch' END,
	charged_until = CASE WHEN NOT i.done AND i.charged_until > $6 THEN i.charged_until ELSE 'epoch' END
WHERE i.expires_at <= $6 AND (i.done OR i.charged_until <= $6 OR i.fingerprint = excluded.fingerprint)
RETURNING charged, charged_at, charged_until`, rec.AccountID, rec.Key, rec.Fingerprint[:], rec.Token, exp, now.UTC()).Scan(
			&charged, &chargedAt, &chargedUntil)
		if err == nil {
			got := *rec
			got.Done, got.Status, got.ContentType, got.Body, got.Oversize = false, 0, "", nil, false
			got.ExpiresAt = exp
			got.Charged, got.ChargedAt, got.ChargedUntil = 0, time.Time{}, time.Time{}
			if charged > 0 {
				got.Charged, got.ChargedAt, got.ChargedUntil = charged, chargedAt.UTC(), chargedUntil.UTC()
			}
			return &got, true, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return nil, false, fmt.Errorf("idempotency begin: %w", err)
		}
		var (
			r  sluice.IdempotencyRecord
			fp []byte
		)
		err = s.db.pool.QueryRow(ctx, `
SELECT account_id, key, fingerprint, token, done, status, content_type, body, oversize, expires_at, charged, charged_at, charged_until
FROM idempotency WHERE account_id = $1 AND key = $2`, rec.AccountID, rec.Key).Scan(
			&r.AccountID, &r.Key, &fp, &r.Token, &r.Done, &r.Status, &r.ContentType, &r.Body, &r.Oversize, &r.ExpiresAt,
			&r.Charged, &chargedAt, &chargedUntil)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // abandoned in between: try to claim it again
		}
		if err != nil {
			return nil, false, fmt.Errorf("idempotency begin: %w", err)
		}
		if len(fp) != len(r.Fingerprint) {
			return nil, false, errors.New("idempotency begin: stored fingerprint has the wrong length")
		}
		copy(r.Fingerprint[:], fp)
		r.ExpiresAt = r.ExpiresAt.UTC()
		if r.Charged > 0 {
			r.ChargedAt, r.ChargedUntil = chargedAt.UTC(), chargedUntil.UTC()
		}
		return &r, false, nil
	}
	return nil, false, errors.New("idempotency begin: the key changed hands too often")
}

// Complete implements sluice.IdempotencyStore.
func (s *Idempotency) Complete(ctx context.Context, rec *sluice.IdempotencyRecord) error {
	body := rec.Body
	if rec.Oversize {
		body = nil
	} else if body == nil {
		body = []byte{}
	}
	tag, err := s.db.pool.Exec(ctx, `
UPDATE idempotency SET done = true, status = $1, content_type = $2, body = $3, oversize = $4, expires_at = $5,
	charged = 0, charged_at = 'epoch', charged_until = 'epoch'
WHERE account_id = $6 AND key = $7 AND token = $8 AND NOT done`,
		rec.Status, rec.ContentType, body, rec.Oversize, rec.ExpiresAt.UTC(), rec.AccountID, rec.Key, rec.Token)
	if err != nil {
		return fmt.Errorf("idempotency complete: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return sluice.Errorf(sluice.ENOTFOUND, "The idempotency claim is no longer held.")
	}
	return nil
}

// Extend implements sluice.IdempotencyStore.
func (s *Idempotency) Extend(ctx context.Context, accountID int64, key, token string, expires time.Time) error {
	tag, err := s.db.pool.Exec(ctx,
		`UPDATE idempotency SET expires_at = $1 WHERE account_id = $2 AND key = $3 AND token = $4 AND NOT done`,
		expires.UTC(), accountID, key, token)
	if err != nil {
		return fmt.Errorf("idempotency extend: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return sluice.Errorf(sluice.ENOTFOUND, "The idempotency claim is no longer held.")
	}
	return nil
}

// Charge implements sluice.IdempotencyStore.
func (s *Idempotency) Charge(ctx context.Context, accountID int64, key, token string, units int64, at, until time.Time) error {
	tag, err := s.db.pool.Exec(ctx,
		`UPDATE idempotency SET charged = $1, charged_at = $2, charged_until = $3 WHERE account_id = $4 AND key = $5 AND token = $6 AND NOT done`,
		units, at.UTC(), until.UTC(), accountID, key, token)
	if err != nil {
		return fmt.Errorf("idempotency charge: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return sluice.Errorf(sluice.ENOTFOUND, "The idempotency claim is no longer held.")
	}
	return nil
}

// Abandon implements sluice.IdempotencyStore.
func (s *Idempotency) Abandon(ctx context.Context, accountID int64, key, token string) error {
	if _, err := s.db.pool.Exec(ctx,
		`DELETE FROM idempotency WHERE account_id = $1 AND key = $2 AND token = $3 AND NOT done`,
		accountID, key, token); err != nil {
		return fmt.Errorf("idempotency abandon: %w", err)
	}
	return nil
}

// DeleteExpired implements sluice.IdempotencyStore, deleteBatch records per
// statement.
func (s *Idempotency) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	return s.db.deleteBatches(ctx, "idempotency delete expired", `
DELETE FROM idempotency WHERE ctid = ANY (ARRAY (
	SELECT ctid FROM idempotency WHERE expires_at <= $1 AND charged_until <= $1 LIMIT $2))`, now)
}

// deleteBatches runs the DELETE query, whose parameters are $1 now and $2
// the batch's size, until it deletes fewer than deleteBatch rows, so that
// no statement holds its locks long, and returns how many it deleted.
func (db *DB) deleteBatches(ctx context.Context, op, query string, now time.Time) (int64, error) {
	var total int64
	for {
		tag, err := db.pool.Exec(ctx, query, now.UTC(), deleteBatch)
		if err != nil {
			return total, fmt.Errorf("%s: %w", op, err)
		}
		n := tag.RowsAffected()
		total += n
		if n < deleteBatch {
			return total, nil
		}
	}
}
