package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	sluice "github.com/sluicehq/sluice"
)

var _ sluice.BotUpdateStore = (*BotUpdates)(nil)

// botUpdateMigration creates the journal of the Telegram bot's updates
// (botupdate.go). A rowid table, not WITHOUT ROWID: a payload is an
// update's JSON, often a kilobyte or more.
//
// The partial index holds the updates not done, the few in flight, not the
// day of done ones: Claim walks it of one bot in id order, Renew and
// Release read the holder from the rows it leads to. Leases and holders
// are not in it, so that Renew, which moves every lease of an instance,
// rewrites no index.
const botUpdateMigration = `
CREATE TABLE bot_updates (
	bot           INTEGER NOT NULL, -- the bot's Telegram user id
	id            INTEGER NOT NULL, -- Telegram's update_id
	payload       BLOB NOT NULL,    -- the update's JSON; empty once done
	holder        TEXT NOT NULL,    -- the instance that handles the update
	lease_until   INTEGER NOT NULL, -- Unix nanoseconds
	done          INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1)),
	attempts      INTEGER NOT NULL,
	received_at   INTEGER NOT NULL, -- Unix nanoseconds
	expires_at    INTEGER NOT NULL, -- Unix nanoseconds
	charged       INTEGER NOT NULL DEFAULT 0, -- 0: nothing charged
	charged_at    INTEGER NOT NULL DEFAULT 0, -- Unix nanoseconds; 0 when nothing is charged
	charged_until INTEGER NOT NULL DEFAULT 0, -- Unix nanoseconds; 0 when nothing is charged
	PRIMARY KEY (bot, id)
) STRICT;
CREATE INDEX bot_updates_pending ON bot_updates (bot, id) WHERE done = 0;
CREATE INDEX bot_updates_expires ON bot_updates (expires_at);
`

// BotUpdates is the sluice.BotUpdateStore of a DB: its updates live in the
// table bot_updates of the same file. Every write, a claim included, is one
// statement on the DB's one writer connection under SQLite's write lock,
// so it is atomic also against other processes that open the file.
type BotUpdates struct{ db *DB }

// BotUpdates returns the DB's journal of bot updates.
func (db *DB) BotUpdates() *BotUpdates { return &BotUpdates{db: db} }

// Add implements sluice.BotUpdateStore.
func (s *BotUpdates) Add(ctx context.Context, u *sluice.BotUpdate) (bool, error) {
	var ns [3]int64
	for i, t := range []time.Time{u.LeaseUntil, u.ReceivedAt, u.ExpiresAt} {
		n, err := nanos(t)
		if err != nil {
			return false, fmt.Errorf("bot updates add: %w", err)
		}
		ns[i] = n
	}
	payload := u.Payload
	if payload == nil {
		payload = []byte{} // the driver binds a nil slice as NULL
	}
	res, err := s.db.w.ExecContext(ctx, `
INSERT INTO bot_updates (bot, id, payload, holder, lease_until, done, attempts, received_at, expires_at)
VALUES (?, ?, ?, ?, ?, 0, 1, ?, ?)
ON CONFLICT (bot, id) DO NOTHING`,
		u.Bot, u.ID, payload, u.Holder, ns[0], ns[1], ns[2])
	if err != nil {
		return false, fmt.Errorf("bot updates add: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("bot updates add: %w", err)
	}
	return n == 1, nil
}

// Renew implements sluice.BotUpdateStore.
func (s *BotUpdates) Renew(ctx context.Context, bot int64, holder string, until time.Time) error {
	untilN, err := nanos(until)
	if err != nil {
		return fmt.Errorf("bot updates renew: %w", err)
	}
	if _, err := s.db.w.ExecContext(ctx,
		`UPDATE bot_updates SET lease_until = ? WHERE bot = ? AND holder = ? AND done = 0`,
		untilN, bot, holder); err != nil {
		return fmt.Errorf("bot updates renew: %w", err)
	}
	return nil
}

// Release implements sluice.BotUpdateStore. A lease that ended before now
// is left as it is: moving it to now would keep the update from an
// instance whose clock is a little behind.
func (s *BotUpdates) Release(ctx context.Context, bot int64, holder string, now time.Time) error {
	nowN, err := nanos(now)
	if err != nil {
		return fmt.Errorf("bot updates release: %w", err)
	}
	if _, err := s.db.w.ExecContext(ctx,
		`UPDATE bot_updates SET lease_until = min(lease_until, ?) WHERE bot = ? AND holder = ? AND done = 0`,
		nowN, bot, holder); err != nil {
		return fmt.Errorf("bot updates release: %w", err)
	}
	return nil
}

// Claim implements sluice.BotUpdateStore with one UPDATE on the writer: the
// subquery that picks the updates and the update of them run under the
// write lock that the statement takes before it reads, so two claims, from
// this process or another, never pick the same update.
func (s *BotUpdates) Claim(ctx context.Context, bot int64, holder string, until, now time.Time, n int) ([]*sluice.BotUpdate, error) {
	if n <= 0 {
		return nil, nil // and not LIMIT -1, which SQLite reads as no limit
	}
	untilN, err := nanos(until)
	if err != nil {
		return nil, fmt.Errorf("bot updates claim: %w", err)
	}
	nowN, err := nanos(now)
	if err != nil {
		return nil, fmt.Errorf("bot updates claim: %w", err)
	}
	rows, err := s.db.w.QueryContext(ctx, `
UPDATE bot_updates SET holder = ?2, lease_until = ?3, attempts = attempts + 1,
	charged = iif(charged_until > ?4, charged, 0),
	charged_at = iif(charged_until > ?4, charged_at, 0),
	charged_until = iif(charged_until > ?4, charged_until, 0)
WHERE rowid IN (
	SELECT rowid FROM bot_updates
	WHERE bot = ?1 AND done = 0 AND lease_until <= ?4 AND expires_at > ?4 AND holder <> ?2
	ORDER BY id LIMIT ?5)
RETURNING id, payload, attempts, received_at, expires_at, charged, charged_at, charged_until`,
		bot, holder, untilN, nowN, n)
	if err != nil {
		return nil, fmt.Errorf("bot updates claim: %w", err)
	}
	defer rows.Close()
	var us []*sluice.BotUpdate
	for rows.Next() {
		u := &sluice.BotUpdate{Bot: bot, Holder: holder, LeaseUntil: fromNanos(untilN)}
		var received, expires, chargedAt, chargedUntil int64
		if err := rows.Scan(&u.ID, &u.Payload, &u.Attempts, &received, &expires,
			&u.Charged, &chargedAt, &chargedUntil); err != nil {
			return nil, fmt.Errorf("bot updates claim: %w", err)
		}
		u.ReceivedAt, u.ExpiresAt = fromNanos(received), fromNanos(expires)
		if u.Charged > 0 {
			u.ChargedAt, u.ChargedUntil = fromNanos(chargedAt), fromNanos(chargedUntil)
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
	var atN, untilN int64
	if units != 0 {
		var err error
		if atN, err = nanos(at); err != nil {
			return fmt.Errorf("bot updates charge: %w", err)
		}
		if untilN, err = nanos(until); err != nil {
			return fmt.Errorf("bot updates charge: %w", err)
		}
	}
	res, err := s.db.w.ExecContext(ctx, `
UPDATE bot_updates SET charged = ?, charged_at = ?, charged_until = ?
WHERE bot = ? AND id = ? AND holder = ? AND done = 0`,
		units, atN, untilN, bot, id, holder)
	return updateHeld("charge", res, err)
}

// Finish implements sluice.BotUpdateStore.
func (s *BotUpdates) Finish(ctx context.Context, bot, id int64, holder string) error {
	res, err := s.db.w.ExecContext(ctx, `
UPDATE bot_updates SET done = 1, payload = x'', charged = 0, charged_at = 0, charged_until = 0
WHERE bot = ? AND id = ? AND holder = ? AND done = 0`,
		bot, id, holder)
	return updateHeld("finish", res, err)
}

// updateHeld is the error of the statement op on an update held that
// returned res, err: ENOTFOUND if it changed no row (the holder no longer
// holds the update, it is done, or it does not exist).
func updateHeld(op string, res sql.Result, err error) error {
	return oneRow("bot updates "+op, "The bot update is not held.", res, err)
}

// DeleteExpired implements sluice.BotUpdateStore, deleteBatch updates per
// statement.
func (s *BotUpdates) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	nowN, err := nanos(now)
	if err != nil {
		return 0, fmt.Errorf("bot updates delete expired: %w", err)
	}
	return deleteBatches(ctx, s.db.w, "bot updates delete expired", `
DELETE FROM bot_updates WHERE rowid IN (
	SELECT rowid FROM bot_updates WHERE expires_at <= ?1 LIMIT ?2)`, nowN)
}
