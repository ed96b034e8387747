package postgres

import (
	"context"
	"fmt"
	"time"

	sluice "github.com/sluicehq/sluice"
)

// MarkAlert stores m unless a mark for its account, window and threshold
// holds at now, in one statement: an upsert that replaces only an expired
// mark. Concurrent callers on the same key serialise on its row, and the
// loser's WHERE sees the winner's mark, so exactly one gets true.
func (db *DB) MarkAlert(ctx context.Context, m sluice.AlertMark, now time.Time) (bool, error) {
	tag, err := db.pool.Exec(ctx, `
INSERT INTO alert_marks (account_id, window_name, threshold, until) VALUES ($1, $2, $3, $4)
ON CONFLICT (account_id, window_name, threshold) DO UPDATE SET until = excluded.until
WHERE alert_marks.until <= $5`,
		m.AccountID, m.Window, m.Threshold, m.Until.UTC(), now.UTC())
	if err != nil {
		return false, fmt.Errorf("mark alert: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}

// DeleteExpiredAlerts deletes the marks that no longer hold at now.
func (db *DB) DeleteExpiredAlerts(ctx context.Context, now time.Time) (int64, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM alert_marks WHERE until <= $1`, now.UTC())
	if err != nil {
		return 0, fmt.Errorf("delete expired alerts: %w", err)
	}
	return tag.RowsAffected(), nil
}
