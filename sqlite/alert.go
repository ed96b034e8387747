package sqlite

import (
	"context"
	"fmt"
	"time"

	sluice "github.com/sluicehq/sluice"
)

// MarkAlert stores m unless a mark for its account, window and threshold
// holds at now, in one statement on the single writer connection: an
// upsert that replaces only an expired mark, so that of several callers
// (goroutines, or processes sharing the file) exactly one gets true.
func (db *DB) MarkAlert(ctx context.Context, m sluice.AlertMark, now time.Time) (bool, error) {
	until, err := nanos(m.Until)
	if err != nil {
		return false, fmt.Errorf("mark alert: %w", err)
	}
	nowNanos, err := nanos(now)
	if err != nil {
		return false, fmt.Errorf("mark alert: %w", err)
	}
	res, err := db.w.ExecContext(ctx, `
INSERT INTO alert_marks (account_id, window_name, threshold, until) VALUES (?, ?, ?, ?)
ON CONFLICT (account_id, window_name, threshold) DO UPDATE SET until = excluded.until
WHERE alert_marks.until <= ?`,
		m.AccountID, m.Window, m.Threshold, until, nowNanos)
	if err != nil {
		return false, fmt.Errorf("mark alert: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("mark alert: %w", err)
	}
	return n > 0, nil
}

// DeleteExpiredAlerts deletes the marks that no longer hold at now.
func (db *DB) DeleteExpiredAlerts(ctx context.Context, now time.Time) (int64, error) {
	nowNanos, err := nanos(now)
	if err != nil {
		return 0, fmt.Errorf("delete expired alerts: %w", err)
	}
	res, err := db.w.ExecContext(ctx, `DELETE FROM alert_marks WHERE until <= ?`, nowNanos)
	if err != nil {
		return 0, fmt.Errorf("delete expired alerts: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete expired alerts: %w", err)
	}
	return n, nil
}
