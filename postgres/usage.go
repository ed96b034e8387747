package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	sluice "github.com/sluicehq/sluice"
)

var _ sluice.UsageStore = (*DB)(nil)

// usageMigration creates the usage history (CONTRACT.md §10): one table per
// granularity, a row per bucket, account, key, channel and model, added to
// by AddUsage from every gateway. bucket is the bucket's start in Unix
// seconds (UTC), as in the sqlite store. The primary key serves an
// account's history; the bucket index serves the top accounts and the
// purge.
var usageMigration = func() string {
	var b strings.Builder
	for _, t := range []string{"usage_minute", "usage_hour", "usage_day"} {
		fmt.Fprintf(&b, `
CREATE TABLE %[1]s (
	account_id    bigint NOT NULL,
	bucket        bigint NOT NULL, -- start of the bucket, Unix seconds
	key_id        text NOT NULL,   -- the API key's lookup ID, or 'telegram'
	channel       text NOT NULL,
	model         text NOT NULL,
	images        bigint NOT NULL, -- units charged (or let through in shadow mode)
	requests      bigint NOT NULL, -- admitted requests, shadow included
	rejected      bigint NOT NULL, -- refused requests
	refunded      bigint NOT NULL, -- units given back
	shadow        bigint NOT NULL, -- units let through in shadow mode
	rejected_hour bigint NOT NULL, -- refused by the hour window
	rejected_day  bigint NOT NULL, -- refused by the day window
	PRIMARY KEY (account_id, bucket, key_id, channel, model)
);
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

// AddUsage adds the counts to their rows in one transaction. Gateways that
// add to the same rows at once wait for each other's row locks; they take
// them in the order of the counts, which the history package sorts, so
// that they never deadlock.
func (db *DB) AddUsage(ctx context.Context, counts []sluice.UsageCount) error {
	if len(counts) == 0 {
		return nil
	}
	var batch pgx.Batch
	for _, c := range counts {
		t, err := usageTable(c.Granularity)
		if err != nil {
			return err
		}
		batch.Queue(`
INSERT INTO `+t+` AS u (account_id, bucket, key_id, channel, model,
	images, requests, rejected, refunded, shadow, rejected_hour, rejected_day)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (account_id, bucket, key_id, channel, model) DO UPDATE SET
	images = u.images + excluded.images,
	requests = u.requests + excluded.requests,
	rejected = u.rejected + excluded.rejected,
	refunded = u.refunded + excluded.refunded,
	shadow = u.shadow + excluded.shadow,
	rejected_hour = u.rejected_hour + excluded.rejected_hour,
	rejected_day = u.rejected_day + excluded.rejected_day`,
			c.AccountID, c.Start.Unix(), c.KeyID, c.Channel, c.Model,
			c.Images, c.Requests, c.Rejected, c.Refunded, c.Shadow, c.RejectedHour, c.RejectedDay)
	}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, &batch).Close()
	})
	if err != nil {
		return fmt.Errorf("add usage: %w", err)
	}
	return nil
}

// PurgeUsage deletes the rows of granularity g that start before before.
func (db *DB) PurgeUsage(ctx context.Context, g string, before time.Time) (int64, error) {
	t, err := usageTable(g)
	if err != nil {
		return 0, err
	}
	tag, err := db.pool.Exec(ctx, `DELETE FROM `+t+` WHERE bucket < $1`, before.Unix())
	if err != nil {
		return 0, fmt.Errorf("purge usage: %w", err)
	}
	return tag.RowsAffected(), nil
}

// UsageHistory returns the buckets of q, oldest first.
func (db *DB) UsageHistory(ctx context.Context, q sluice.UsageQuery) ([]sluice.UsageBucket, error) {
	t, err := usageTable(q.Granularity)
	if err != nil {
		return nil, err
	}
	group, order := "''::text", "bucket"
	if q.GroupBy != "" {
		var ok bool
		if group, ok = groupColumns[q.GroupBy]; !ok {
			return nil, sluice.FieldError("group_by", "Unknown group_by %q.", q.GroupBy)
		}
		order = `bucket, ` + group + ` COLLATE "C"` // byte order, as in sqlite
	}
	rows, err := db.pool.Query(ctx, `
SELECT bucket, `+group+` AS grp, (sum(images) - sum(refunded))::bigint, sum(requests)::bigint,
	sum(rejected)::bigint, sum(refunded)::bigint, sum(shadow)::bigint, sum(rejected_hour)::bigint, sum(rejected_day)::bigint
FROM `+t+`
WHERE account_id = $1 AND bucket >= $2 AND bucket < $3
GROUP BY bucket, grp
ORDER BY `+order, q.AccountID, ceilUnix(q.From), ceilUnix(q.To))
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
	rows, err := db.pool.Query(ctx, `
SELECT account_id, (sum(images) - sum(refunded))::bigint AS n
FROM `+t+`
WHERE bucket >= $1 AND bucket < $2
GROUP BY account_id
HAVING sum(images) - sum(refunded) > 0
ORDER BY n DESC, account_id
LIMIT $3`, ceilUnix(from), ceilUnix(to), limit)
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
