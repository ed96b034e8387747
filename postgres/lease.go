package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice"
)

var _ sluice.LeaseService = (*DB)(nil)

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
