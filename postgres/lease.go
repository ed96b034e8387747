package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice"
)

var (
	_ sluice.LeaseService = (*DB)(nil)
	_ sluice.OnceSet      = (*DB)(nil)
)

// Leases are rows of the leases table, with their expiry on the database's
// clock (clock_timestamp()), so that the instances' clocks need not agree.
// A lease row is never deleted: its fence only grows.
//
// Why a row with an expiry and not an advisory lock: a session lock lives
// as long as its connection, and a paused process (SIGSTOP, a frozen VM)
// keeps its connection, so nobody could take over; a lease expires
// whatever its holder does.

// AcquireLease implements sluice.LeaseService.
func (db *DB) AcquireLease(ctx context.Context, name string, ttl time.Duration) (int64, error) {
	var fence int64
	err := db.pool.QueryRow(ctx, `
INSERT INTO leases AS l (name, fence, expires_at) VALUES ($1, 1, clock_timestamp() + $2 * interval '1 millisecond')
ON CONFLICT (name) DO UPDATE SET fence = l.fence + 1, expires_at = excluded.expires_at
	WHERE l.expires_at <= clock_timestamp()
RETURNING fence`, name, ttl.Milliseconds()).Scan(&fence)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, nil // held
	case err != nil:
		return 0, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	return fence, nil
}

// RenewLease implements sluice.LeaseService.
func (db *DB) RenewLease(ctx context.Context, name string, fence int64, ttl time.Duration) (bool, error) {
	tag, err := db.pool.Exec(ctx, `
UPDATE leases SET expires_at = clock_timestamp() + $3 * interval '1 millisecond'
WHERE name = $1 AND fence = $2 AND expires_at > clock_timestamp()`, name, fence, ttl.Milliseconds())
	if err != nil {
		return false, fmt.Errorf("renew lease %s: %w", name, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ReleaseLease implements sluice.LeaseService.
func (db *DB) ReleaseLease(ctx context.Context, name string, fence int64) error {
	if _, err := db.pool.Exec(ctx, `UPDATE leases SET expires_at = '-infinity' WHERE name = $1 AND fence = $2`, name, fence); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

// oncePurgeEvery is how many MarkOnce calls of a DB pass between two
// deletions of the expired keys.
const oncePurgeEvery = 1024

var onceCalls atomic.Int64

// MarkOnce implements sluice.OnceSet: a row of once_keys, taken again
// once expired. Every oncePurgeEvery calls it also deletes the expired
// rows.
func (db *DB) MarkOnce(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if onceCalls.Add(1)%oncePurgeEvery == 0 {
		if _, err := db.pool.Exec(ctx, `DELETE FROM once_keys WHERE expires_at <= clock_timestamp()`); err != nil {
			return false, fmt.Errorf("mark once: purge: %w", err)
		}
	}
	tag, err := db.pool.Exec(ctx, `
INSERT INTO once_keys AS o (key, expires_at) VALUES ($1, clock_timestamp() + $2 * interval '1 millisecond')
ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE o.expires_at <= clock_timestamp()`, key, ttl.Milliseconds())
	if err != nil {
		return false, fmt.Errorf("mark once: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}
