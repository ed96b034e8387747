package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	sluice "github.com/sluicehq/sluice"
)

var _ sluice.UsageStore = (*DB)(nil)

// usageMigration creates the usage history (CONTRACT.md §10): one table per
// granularity, a row per bucket, account, key, channel and model, added to
// by AddUsage. bucket is the bucket's start in Unix seconds (UTC). The
// primary key serves an account's history; the bucket index serves the top
// accounts and the purge.
var usageMigration = func() string {
	var b strings.Builder
	for _, t := range usageTables {
		fmt.Fprintf(&b, `
CREATE TABLE %[1]s (
	account_id    INTEGER NOT NULL,
	bucket        INTEGER NOT NULL, -- start of the bucket, Unix seconds
	key_id        TEXT NOT NULL,    -- the API key's lookup ID, or "telegram"
	channel       TEXT NOT NULL,
	model         TEXT NOT NULL,
	images        INTEGER NOT NULL, -- units charged (or let through in shadow mode)
	requests      INTEGER NOT NULL, -- admitted requests, shadow included
	rejected      INTEGER NOT NULL, -- refused requests
	refunded      INTEGER NOT NULL, -- units given back
	shadow        INTEGER NOT NULL, -- units let through in shadow mode
	rejected_hour INTEGER NOT NULL, -- refused by the hour window
	rejected_day  INTEGER NOT NULL, -- refused by the day window
	PRIMARY KEY (account_id, bucket, key_id, channel, model)
) STRICT, WITHOUT ROWID;
CREATE INDEX %[1]s_bucket ON %[1]s (bucket, account_id);
`, t)
	}
	return b.String()
}()

// usageTables are the tables of each granularity.
var usageTables = map[string]string{
	sluice.GranularityMinute: "usage_minute",
	sluice.GranularityHour:   "usage_hour",
	sluice.GranularityDay:    "usage_day",
}

// groupColumns are the columns of each UsageQuery.GroupBy.
var groupColumns = map[string]string{
	sluice.GroupByKey:     "key_id",
	sluice.GroupByChannel: "channel",
	sluice.GroupByModel:   "model",
}

func usageTable(g string) (string, error) {
	t, ok := usageTables[g]
	if !ok {
		return "", sluice.FieldError("granularity", "Unknown granularity %q.", g)
	}
	return t, nil
}

// AddUsage adds the counts to their rows in one transaction.
func (db *DB) AddUsage(ctx context.Context, counts []sluice.UsageCount) error {
	if len(counts) == 0 {
		return nil
	}
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("add usage: %w", err)
	}
	defer tx.Rollback()
	stmts := map[string]*sql.Stmt{} // by table, prepared once a flush
	for _, c := range counts {
		t, err := usageTable(c.Granularity)
		if err != nil {
			return err
		}
		st := stmts[t]
		if st == nil {
			if st, err = tx.PrepareContext(ctx, addUsageSQL(t)); err != nil {
				return fmt.Errorf("add usage: %w", err)
			}
			defer st.Close()
			stmts[t] = st
		}
		if _, err := st.ExecContext(ctx,
			c.AccountID, c.Start.Unix(), c.KeyID, c.Channel, c.Model,
			c.Images, c.Requests, c.Rejected, c.Refunded, c.Shadow, c.RejectedHour, c.RejectedDay); err != nil {
			return fmt.Errorf("add usage: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("add usage: %w", err)
	}
	return nil
}

// addUsageSQL adds one count to its row of table t.
func addUsageSQL(t string) string {
	return `
INSERT INTO ` + t + ` (account_id, bucket, key_id, channel, model,
	images, requests, rejected, refunded, shadow, rejected_hour, rejected_day)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (account_id, bucket, key_id, channel, model) DO UPDATE SET
	images = images + excluded.images,
	requests = requests + excluded.requests,
	rejected = rejected + excluded.rejected,
	refunded = refunded + excluded.refunded,
	shadow = shadow + excluded.shadow,
	rejected_hour = rejected_hour + excluded.rejected_hour,
	rejected_day = rejected_day + excluded.rejected_day`
}

// PurgeUsage deletes the rows of granularity g that start before before.
func (db *DB) PurgeUsage(ctx context.Context, g string, before time.Time) (int64, error) {
	t, err := usageTable(g)
	if err != nil {
		return 0, err
	}
	res, err := db.w.ExecContext(ctx, `DELETE FROM `+t+` WHERE bucket < ?`, before.Unix())
	if err != nil {
		return 0, fmt.Errorf("purge usage: %w", err)
	}
	return res.RowsAffected()
}

// UsageHistory returns the buckets of q, oldest first.
func (db *DB) UsageHistory(ctx context.Context, q sluice.UsageQuery) ([]sluice.UsageBucket, error) {
	t, err := usageTable(q.Granularity)
	if err != nil {
		return nil, err
	}
	group := "''"
	if q.GroupBy != "" {
		var ok bool
		if group, ok = groupColumns[q.GroupBy]; !ok {
			return nil, sluice.FieldError("group_by", "Unknown group_by %q.", q.GroupBy)
		}
	}
	rows, err := db.r.QueryContext(ctx, `
SELECT bucket, `+group+` AS grp, sum(images) - sum(refunded), sum(requests), sum(rejected), sum(refunded), sum(shadow),
	sum(rejected_hour), sum(rejected_day)
FROM `+t+`
WHERE account_id = ? AND bucket >= ? AND bucket < ?
GROUP BY bucket, grp
ORDER BY bucket, grp`, q.AccountID, ceilUnix(q.From), ceilUnix(q.To))
	if err != nil {
		return nil, fmt.Errorf("usage history: %w", err)
	}
	defer rows.Close()
	var out []sluice.UsageBucket
	for rows.Next() {
		var b sluice.UsageBucket
		var start int64
		if err := rows.Scan(&start, &b.Group, &b.Images, &b.Requests, &b.Rejected, &b.Refunded, &b.Shadow, &b.RejectedHour, &b.RejectedDay); err != nil {
			return nil, fmt.Errorf("usage history: %w", err)
		}
		b.Start = time.Unix(start, 0).UTC()
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage history: %w", err)
	}
	return out, nil
}

// TopUsage returns the accounts with the most images in [from, to), read
// from the coarsest granularity to which from and to are both aligned.
func (db *DB) TopUsage(ctx context.Context, from, to time.Time, limit int) ([]sluice.UsageTotal, error) {
	t := usageTables[topGranularity(from, to)]
	rows, err := db.r.QueryContext(ctx, `
SELECT account_id, sum(images) - sum(refunded) AS n
FROM `+t+`
WHERE bucket >= ? AND bucket < ?
GROUP BY account_id
HAVING n > 0
ORDER BY n DESC, account_id
LIMIT ?`, ceilUnix(from), ceilUnix(to), limit)
	if err != nil {
		return nil, fmt.Errorf("top usage: %w", err)
	}
	defer rows.Close()
	var out []sluice.UsageTotal
	for rows.Next() {
		var u sluice.UsageTotal
		if err := rows.Scan(&u.AccountID, &u.Images); err != nil {
			return nil, fmt.Errorf("top usage: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("top usage: %w", err)
	}
	return out, nil
}

// topGranularity is the coarsest granularity to which from and to are both
// aligned.
func topGranularity(from, to time.Time) string {
	for _, g := range []string{sluice.GranularityDay, sluice.GranularityHour} {
		d, _ := sluice.UsageGranularity(g)
		if from.Truncate(d).Equal(from) && to.Truncate(d).Equal(to) {
			return g
		}
	}
	return sluice.GranularityMinute
}

// ceilUnix is t in Unix seconds, rounded up: a bucket starts in [from, to)
// exactly when its start second is in [ceilUnix(from), ceilUnix(to)).
func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}
