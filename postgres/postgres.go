// Package postgres is the shared account store: a sluice.AccountService in
// PostgreSQL through a pgx connection pool, for many gateway instances.
//
// It keeps the semantics of the sqlite package: emails are unique and looked
// up case-insensitively through a key lower-cased in Go (strings.ToLower),
// account IDs come from an identity sequence and are never reused, and times
// are kept at microsecond precision (timestamptz). The schema is created and
// upgraded by numbered migrations recorded in schema_migrations, under an
// advisory lock so that gateways starting together migrate once.
//
// The schema lives in the connection's search_path: a URL such as
// postgres://host/db?search_path=sluice puts it in the schema sluice (which
// must exist), so that one database can hold several deployments (and tests
// a schema each).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	sluice "github.com/sluicehq/sluice"
)

var (
	_ sluice.AccountService = (*DB)(nil)
	_ sluice.AlertMarks     = (*DB)(nil)
)

// DB is the PostgreSQL account store. It is safe for concurrent use.
type DB struct {
	pool *pgxpool.Pool

	// Now returns the current time; it stamps CreatedAt of new accounts,
	// keys and sessions. Tests may replace it before the DB is used.
	Now func() time.Time
}

// Open connects to the database at url (a postgres:// URL or a key=value
// connection string, as pgx takes it) and applies the migrations it lacks.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	return OpenConfig(ctx, cfg)
}

// OpenConfig is Open with a parsed pool configuration.
func OpenConfig(ctx context.Context, cfg *pgxpool.Config) (*DB, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	db := &DB{pool: pool, Now: time.Now}
	if err := migrate(ctx, pool, migrations); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	return db, nil
}

// Close closes the pool, waiting for connections in use to be released.
func (db *DB) Close() error {
	db.pool.Close()
	return nil
}

// Ping reports whether the database answers and holds the schema.
func (db *DB) Ping(ctx context.Context) error {
	var n int
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		return fmt.Errorf("ping postgres: %w", err)
	}
	return nil
}

// now returns db.Now() in UTC at the precision stored.
func (db *DB) now() time.Time { return db.Now().UTC().Truncate(time.Microsecond) }

// migrations are the schema, one step per element, applied in order. An
// applied step is never edited: a change is a new step at the end.
var migrations = []string{
	// 1: accounts, API keys, sessions and single-use tokens.
	`
CREATE TABLE accounts (
	-- an identity: an ID is never reused, since quota counters are keyed by it.
	id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	email         text,          -- as given; NULL for an account created by the Telegram bot
	email_key     text UNIQUE,   -- email lower-cased (Go strings.ToLower): what uniqueness and lookups use
	password_hash text NOT NULL DEFAULT '',
	plan          text NOT NULL,
	-- Both NULL: no override (the plan's limits). Otherwise both set; -1 is unlimited.
	override_hour bigint,
	override_day  bigint,
	telegram_id   bigint UNIQUE, -- NULL: no Telegram user bound
	created_at    timestamptz NOT NULL,
	CHECK ((email IS NULL) = (email_key IS NULL)),
	CHECK ((override_hour IS NULL) = (override_day IS NULL)),
	CHECK (override_hour >= -1 AND override_day >= -1),
	CHECK (telegram_id <> 0)
);

CREATE TABLE api_keys (
	seq          bigint GENERATED ALWAYS AS IDENTITY, -- creation order among equal created_at
	id           text NOT NULL PRIMARY KEY, -- the key's public lookup ID
	account_id   bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	name         text NOT NULL,
	hash         bytea NOT NULL,   -- SHA-256 of the whole key
	created_at   timestamptz NOT NULL,
	last_used_at timestamptz,      -- NULL: never used
	revoked_at   timestamptz       -- NULL: live
);
CREATE INDEX api_keys_account ON api_keys (account_id, created_at, seq);

CREATE TABLE sessions (
	token_hash bytea NOT NULL PRIMARY KEY,
	account_id bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	created_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_account ON sessions (account_id);

CREATE TABLE tokens (
	kind       text NOT NULL,
	hash       bytea NOT NULL,
	account_id bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (kind, hash)
);
CREATE INDEX tokens_account ON tokens (account_id);
`,
	// 2: DeleteExpired finds what has expired without a scan.
	`
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX tokens_expires ON tokens (expires_at);
`,
	// 3: the audit log. No foreign key: an account's history outlives it.
	`
CREATE TABLE audit_events (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- increasing: the order of the log
	at         timestamptz NOT NULL,
	actor_type text NOT NULL,                 -- admin, user, telegram, system
	actor_id   text NOT NULL DEFAULT '',
	ip         text NOT NULL DEFAULT '',
	action     text NOT NULL,
	account_id bigint NOT NULL,
	details    jsonb,                         -- an object; NULL for none
	CHECK (details IS NULL OR jsonb_typeof(details) = 'object')
);
-- One account's events, newest first, below an id.
CREATE INDEX audit_events_account ON audit_events (account_id, id);
`,
	// 4: quota alerts: the mail preference and the marks of sent alerts.
	`
ALTER TABLE accounts ADD COLUMN mail_alerts boolean NOT NULL DEFAULT true;

CREATE TABLE alert_marks (
	account_id  bigint NOT NULL,
	window_name text NOT NULL,
	threshold   integer NOT NULL,
	until       timestamptz NOT NULL, -- the mark holds while now < until
	PRIMARY KEY (account_id, window_name, threshold)
);
CREATE INDEX alert_marks_until ON alert_marks (until);
`,
	// 5: idempotency records (CONTRACT.md §9; idempotency.go).
	`
CREATE TABLE idempotency (
	account_id   bigint NOT NULL,
	key          text NOT NULL,   -- the Idempotency-Key
	fingerprint  bytea NOT NULL,  -- sluice.Fingerprint of the request
	token        text NOT NULL,   -- the attempt that claimed the key
	done         boolean NOT NULL DEFAULT false, -- false: in flight until expires_at; true: answer kept until expires_at
	status       integer NOT NULL DEFAULT 0,
	content_type text NOT NULL DEFAULT '',
	body         bytea,
	oversize     boolean NOT NULL DEFAULT false, -- the answer was over the bound and its body not kept
	expires_at   timestamptz NOT NULL,
	PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_expires ON idempotency (expires_at);
`,
	// 6: the usage history (usage.go).
	usageMigration,
	// 7: the Telegram bot on several instances (lease.go): the model
	// chosen in the bot, with the account; the poller's lease; the updates
	// already handled.
	`
ALTER TABLE accounts ADD COLUMN telegram_model text NOT NULL DEFAULT '';

CREATE TABLE leases (
	name       text PRIMARY KEY,
	fence      bigint NOT NULL,      -- grows with every acquisition
	expires_at timestamptz NOT NULL  -- on the database's clock; -infinity once released
);

CREATE TABLE once_keys (
	key        text PRIMARY KEY,
	expires_at timestamptz NOT NULL
);
CREATE INDEX once_keys_expires ON once_keys (expires_at);
`,
	// 8: the charge of an idempotency claim in flight, inherited by the
	// retry that takes it over (sluice.IdempotencyRecord.Charged).
	`
ALTER TABLE idempotency
	ADD COLUMN charged bigint NOT NULL DEFAULT 0,
	ADD COLUMN charged_at timestamptz NOT NULL DEFAULT 'epoch',
	ADD COLUMN charged_until timestamptz NOT NULL DEFAULT 'epoch';
`,
	// 9: the journal of the Telegram bot's updates (botupdate.go).
	botUpdateMigration,
}

// migrationLock is the key of the advisory lock that migrations hold.
const migrationLock = 0x5_1ce

// migrate applies the steps of ms that the schema lacks, in one transaction
// under an advisory lock, each with its row in schema_migrations. Step i
// (from 0) is version i+1.
func migrate(ctx context.Context, pool *pgxpool.Pool, ms []string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if _, err := tx.Exec(ctx, `
CREATE TABLE IF NOT EXISTS schema_migrations (
	version    integer PRIMARY KEY,
	applied_at timestamptz NOT NULL
)`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		var have int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		for i := have; i < len(ms); i++ {
			if _, err := tx.Exec(ctx, ms[i]); err != nil {
				return fmt.Errorf("migrate to version %d: %w", i+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())`, i+1); err != nil {
				return fmt.Errorf("migrate to version %d: %w", i+1, err)
			}
		}
		return nil
	})
}

func pgCode(err error) (code, constraint string) {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code, e.ConstraintName
	}
	return "", ""
}

func isUnique(err error) (bool, string) {
	c, name := pgCode(err)
	return c == "23505", name
}

func isForeignKey(err error) bool {
	c, _ := pgCode(err)
	return c == "23503"
}

// nullTime is t for a column where NULL stands for the zero time.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC().Truncate(time.Microsecond)
	return &u
}

func fromNullTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}
