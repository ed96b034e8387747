package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	sluice "github.com/sluicehq/sluice"
)

var _ sluice.BotUpdateStore = (*BotUpdates)(nil)

// botUpdateMigration creates the journal of the Telegram bot's updates
// (botupdate.go). The payload is bytea, not jsonb, so that it is kept byte
// for byte.
//
// The partial index holds the updates not done, the few in flight, not the
// day of done ones: Claim walks it of one bot in id order, Renew and
// Release read the holder from the rows it leads to. Leases, holders and
// charges are in no index, so that Renew, Claim and Charge can update a
// row in place (HOT) without touching an index.
const botUpdateMigration = `
CREATE TABLE bot_updates (
	bot           bigint NOT NULL,      -- the bot's Telegram user id
	id            bigint NOT NULL,      -- Telegram's update_id
	payload       bytea NOT NULL,       -- the update's JSON; empty once done
	holder        text NOT NULL,        -- the instance that handles the update
	lease_until   timestamptz NOT NULL,
	done          boolean NOT NULL DEFAULT false,
	attempts      integer NOT NULL,
	received_at   timestamptz NOT NULL,
	expires_at    timestamptz NOT NULL,
	charged       bigint NOT NULL DEFAULT 0, -- 0: nothing charged
	charged_at    timestamptz NOT NULL DEFAULT 'epoch', -- 'epoch' when nothing is charged
	charged_until timestamptz NOT NULL DEFAULT 'epoch', -- 'epoch' when nothing is charged
	PRIMARY KEY (bot, id)
);
CREATE INDEX bot_updates_pending ON bot_updates (bot, id) WHERE NOT done;
CREATE INDEX bot_updates_expires ON bot_updates (expires_at);
`

// BotUpdates is the sluice.BotUpdateStore of a DB: its updates live in the
// table bot_updates of the same schema, shared by every instance. Adds are
// atomic across instances because an Add is one INSERT … ON CONFLICT DO
// NOTHING, claims because a claim locks the rows it takes (FOR UPDATE SKIP
// LOCKED) before it updates them.
type BotUpdates struct{ db *DB }

// BotUpdates returns the DB's journal of bot updates.
func (db *DB) BotUpdates() *BotUpdates { return &BotUpdates{db: db} }

// Add implements sluice.BotUpdateStore.
func (s *BotUpdates) Add(ctx context.Context, u *sluice.BotUpdate) (bool, error) {
	payload := u.Payload
	if payload == nil {
		payload = []byte{} // pgx sends a nil slice as NULL
	}
	tag, err := s.db.pool.Exec(ctx, `
INSERT INTO bot_updates (bot, id, payload, holder, lease_until, done, attempts, received_at, expires_at)
VALUES ($1, $2, $3, $4, $5, false, 1, $6, $7)
ON CONFLICT (bot, id) DO NOTHING`,
		u.Bot, u.ID, payload, u.Holder, u.LeaseUntil.UTC(), u.ReceivedAt.UTC(), u.ExpiresAt.UTC())
	if err != nil {
		return false, fmt.Errorf("bot updates add: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// Renew implements sluice.BotUpdateStore.
func (s *BotUpdates) Renew(ctx context.Context, bot int64, holder string, until time.Time) error {
	if _, err := s.db.pool.Exec(ctx,
		`UPDATE bot_updates SET lease_until = $1 WHERE bot = $2 AND holder = $3 AND NOT done`,
		until.UTC(), bot, holder); err != nil {
		return fmt.Errorf("bot updates renew: %w", err)
	}
	return nil
}

// Release implements sluice.BotUpdateStore. A lease that ended before now
// is left as it is: moving it to now would keep the update from an
// instance whose clock is a little behind.
func (s *BotUpdates) Release(ctx context.Context, bot int64, holder string, now time.Time) error {
	if _, err := s.db.pool.Exec(ctx,
		`UPDATE bot_updates SET lease_until = LEAST(lease_until, $1) WHERE bot = $2 AND holder = $3 AND NOT done`,
		now.UTC(), bot, holder); err != nil {
		return fmt.Errorf("bot updates release: %w", err)
	}
	return nil
}

// Claim implements sluice.BotUpdateStore with one statement. The subquery,
// an InitPlan run once, locks the updates it picks and skips those that
// another claim (or a Renew, a Charge) has locked; a row that another
// claim changed and committed since the statement's snapshot is checked
// again, as it is now, before it is locked. So two claims never take the
// same update, and neither waits for the other.
func (s *BotUpdates) Claim(ctx context.Context, bot int64, holder string, until, now time.Time, n int) ([]*sluice.BotUpdate, error) {
	if n <= 0 {
		return nil, nil
	}
	rows, err := s.db.pool.Query(ctx, `
UPDATE bot_updates SET holder = $2, lease_until = $3, attempts = attempts + 1,
	charged = CASE WHEN charged_until > $4 THEN charged ELSE 0 END,
	charged_at = CASE WHEN charged_until > $4 THEN charged_at ELSE 'epoch' END,
	charged_until = CASE WHEN charged_until > $4 THEN charged_until ELSE 'epoch' END
WHERE bot = $1 AND id = ANY (ARRAY (
	SELECT id FROM bot_updates
	WHERE bot = $1 AND NOT done AND lease_until <= $4 AND expires_at > $4 AND holder <> $2
	ORDER BY id LIMIT $5
	FOR UPDATE SKIP LOCKED))
RETURNING id, payload, attempts, received_at, expires_at, charged, charged_at, charged_until`,
		bot, holder, until.UTC(), now.UTC(), n)
	if err != nil {
		return nil, fmt.Errorf("bot updates claim: %w", err)
	}
	defer rows.Close()
	lease := until.UTC().Truncate(time.Microsecond)
	var us []*sluice.BotUpdate
	for rows.Next() {
		u := &sluice.BotUpdate{Bot: bot, Holder: holder, LeaseUntil: lease}
		var chargedAt, chargedUntil time.Time
		if err := rows.Scan(&u.ID, &u.Payload, &u.Attempts, &u.ReceivedAt, &u.ExpiresAt,
			&u.Charged, &chargedAt, &chargedUntil); err != nil {
			return nil, fmt.Errorf("bot updates claim: %w", err)
		}
		u.ReceivedAt, u.ExpiresAt = u.ReceivedAt.UTC(), u.ExpiresAt.UTC()
		if u.Charged > 0 {
			u.ChargedAt, u.ChargedUntil = chargedAt.UTC(), chargedUntil.UTC()
		}
		us = append(us, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("bot updates claim: %w", err)
	}
	// RETURNING gives the rows in no particular order.
	slices.SortFunc(us, func(a, b *sluice.BotUpdate) int { return cmp.Compare(a.ID, b.ID) })
	return us, nil
}

// Charge implements sluice.BotUpdateStore.
func (s *BotUpdates) Charge(ctx context.Context, bot, id int64, holder string, units int64, at, until time.Time) error {
	if units == 0 {
		at, until = time.Unix(0, 0), time.Unix(0, 0) // 'epoch': nothing charged
	}
	tag, err := s.db.pool.Exec(ctx, `
UPDATE bot_updates SET charged = $1, charged_at = $2, charged_until = $3
WHERE bot = $4 AND id = $5 AND holder = $6 AND NOT done`,
		units, at.UTC(), until.UTC(), bot, id, holder)
	if err != nil {
		return fmt.Errorf("bot updates charge: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return sluice.Errorf(sluice.ENOTFOUND, "The bot update is not held.")
	}
	return nil
}

// Finish implements sluice.BotUpdateStore.
func (s *BotUpdates) Finish(ctx context.Context, bot, id int64, holder string) error {
	tag, err := s.db.pool.Exec(ctx, `
UPDATE bot_updates SET done = true, payload = '', charged = 0, charged_at = 'epoch', charged_until = 'epoch'
WHERE bot = $1 AND id = $2 AND holder = $3 AND NOT done`,
		bot, id, holder)
	if err != nil {
		return fmt.Errorf("bot updates finish: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return sluice.Errorf(sluice.ENOTFOUND, "The bot update is not held.")
	}
	return nil
}

// DeleteExpired implements sluice.BotUpdateStore, deleteBatch updates per
// statement.
func (s *BotUpdates) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	return s.db.deleteBatches(ctx, "bot updates delete expired", `
DELETE FROM bot_updates WHERE ctid = ANY (ARRAY (
	SELECT ctid FROM bot_updates WHERE expires_at <= $1 LIMIT $2))`, now)
}
