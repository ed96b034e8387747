// Package sqlite is the embedded account store: a sluice.AccountService in
// one SQLite file (modernc.org/sqlite, pure Go).
//
// The file is in WAL mode. All writes go through a single connection, so
// they are serialised in the process and never wait on SQLite's locks;
// reads use a pool of read-only connections and run concurrently with each
// other and with the writer. busy_timeout covers other processes that open
// the same file (an operator's sqlite3 shell, a backup).
//
// Times are stored as Unix nanoseconds (UTC) and read back exactly.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	sluice "github.com/sluicehq/sluice"
)

var (
	_ sluice.AccountService = (*DB)(nil)
	_ sluice.AlertMarks     = (*DB)(nil)
)

// busyTimeout is how long a statement waits for a lock held by another
// connection (in practice: another process) before failing with SQLITE_BUSY.
const busyTimeout = 5 * time.Second

// DB is the SQLite account store. It is safe for concurrent use.
type DB struct {
	path string
	w    *sql.DB // exactly one connection: every write and every write transaction
	r    *sql.DB // read-only connections (PRAGMA query_only)

	// Now returns the current time; it stamps CreatedAt of new accounts,
	// keys and sessions. Tests may replace it before the DB is used.
	Now func() time.Time
}

// Open opens the database file at path, creating it if it does not exist,
// and applies the migrations it lacks. The directory must exist.
func Open(ctx context.Context, path string) (*DB, error) {
	if path == "" || path == ":memory:" {
		return nil, fmt.Errorf("open sqlite: a database file path is required")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	// A file: URI, so that any path (even one with '?' or '#') names the
	// file, and the driver's parameters never mix with it.
	uri := "file:" + (&url.URL{Path: abs}).EscapedPath()
	pragmas := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)", busyTimeout.Milliseconds())

	db := &DB{path: abs, Now: time.Now}

	// The writer comes first: it creates the file and switches it to WAL,
	// which is a persistent property of the file, before any reader opens it.
	// _txlock=immediate takes the write lock at BEGIN, so a transaction never
	// has to upgrade a read lock (which fails at once with SQLITE_BUSY when
	// another process writes, busy_timeout notwithstanding).
	db.w, err = sql.Open("sqlite", uri+"?"+pragmas+"&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	db.w.SetMaxOpenConns(1)
	db.w.SetMaxIdleConns(1)
	db.w.SetConnMaxLifetime(0)
	db.w.SetConnMaxIdleTime(0)
	if err := db.w.PingContext(ctx); err != nil {
		db.w.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	if err := migrate(ctx, db.w, migrations); err != nil {
		db.w.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}

	db.r, err = sql.Open("sqlite", uri+"?"+pragmas+"&_pragma=query_only(1)")
	if err != nil {
		db.w.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	db.r.SetMaxOpenConns(n)
	db.r.SetMaxIdleConns(n)
	db.r.SetConnMaxLifetime(0)
	db.r.SetConnMaxIdleTime(0)
	if err := db.r.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	return db, nil
}

// Path returns the absolute path of the database file.
func (db *DB) Path() string { return db.path }

// Close closes the database. Calls in flight may fail.
func (db *DB) Close() error {
	var errs []error
	if db.r != nil {
		errs = append(errs, db.r.Close())
	}
	if db.w != nil {
		errs = append(errs, db.w.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sqlite: %w", err)
	}
	return nil
}

// Ping reports whether the database file can be read.
func (db *DB) Ping(ctx context.Context) error {
	var n int
	if err := db.r.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		return fmt.Errorf("ping sqlite: %w", err)
	}
	return nil
}

// now returns db.Now() in UTC without a monotonic reading.
func (db *DB) now() time.Time { return db.Now().UTC() }

// migrations are the schema, one step per element, applied in order. An
// applied step is never edited: a change is a new step at the end.
var migrations = []string{
	// 1: accounts, API keys, sessions and single-use tokens.
	`
CREATE TABLE accounts (
	-- AUTOINCREMENT: an ID is never reused, since quota counters are keyed by it.
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	email         TEXT,          -- as given; NULL for an account created by the Telegram bot
	email_key     TEXT UNIQUE,   -- email lower-cased (Go strings.ToLower): what uniqueness and lookups use
	password_hash TEXT NOT NULL DEFAULT '',
	plan          TEXT NOT NULL,
	-- Both NULL: no override (the plan's limits). Otherwise both set; -1 is unlimited.
	override_hour INTEGER,
	override_day  INTEGER,
	telegram_id   INTEGER UNIQUE, -- NULL: no Telegram user bound
	created_at    INTEGER NOT NULL, -- Unix nanoseconds
	CHECK ((email IS NULL) = (email_key IS NULL)),
	CHECK ((override_hour IS NULL) = (override_day IS NULL)),
	CHECK (override_hour >= -1 AND override_day >= -1),
	CHECK (telegram_id <> 0)
) STRICT;

CREATE TABLE api_keys (
	id           TEXT NOT NULL PRIMARY KEY, -- the key's public lookup ID
	account_id   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	name         TEXT NOT NULL,
	hash         BLOB NOT NULL,   -- SHA-256 of the whole key
	created_at   INTEGER NOT NULL,
	last_used_at INTEGER,         -- NULL: never used
	revoked_at   INTEGER          -- NULL: live
) STRICT;
CREATE INDEX api_keys_account ON api_keys (account_id, created_at);

CREATE TABLE sessions (
	token_hash BLOB NOT NULL PRIMARY KEY,
	account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX sessions_account ON sessions (account_id);

CREATE TABLE tokens (
	kind       TEXT NOT NULL,
	hash       BLOB NOT NULL,
	account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	expires_at INTEGER NOT NULL,
	PRIMARY KEY (kind, hash)
) STRICT, WITHOUT ROWID;
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
	id         INTEGER PRIMARY KEY AUTOINCREMENT, -- increasing: the order of the log
	at         INTEGER NOT NULL,                  -- Unix nanoseconds
	actor_type TEXT NOT NULL,                     -- admin, user, telegram, system
	actor_id   TEXT NOT NULL DEFAULT '',
	ip         TEXT NOT NULL DEFAULT '',
	action     TEXT NOT NULL,
	account_id INTEGER NOT NULL,
	details    TEXT,                              -- a JSON object; NULL for none
	CHECK (details IS NULL OR json_type(details) = 'object')
) STRICT;
-- One account's events, newest first, below an id.
CREATE INDEX audit_events_account ON audit_events (account_id, id);
`,
	// 4: quota alerts: the mail preference and the marks of sent alerts.
	`
ALTER TABLE accounts ADD COLUMN mail_alerts INTEGER NOT NULL DEFAULT 1 CHECK (mail_alerts IN (0, 1));

CREATE TABLE alert_marks (
	account_id INTEGER NOT NULL,
	window_name TEXT NOT NULL,
	threshold  INTEGER NOT NULL,
	until      INTEGER NOT NULL, -- Unix nanoseconds: the mark holds while now < until
	PRIMARY KEY (account_id, window_name, threshold)
) STRICT, WITHOUT ROWID;
CREATE INDEX alert_marks_until ON alert_marks (until);
`,
	// 5: idempotency records (CONTRACT.md §9; idempotency.go). A rowid
	// table, not WITHOUT ROWID: a kept answer may be megabytes.
	`
CREATE TABLE idempotency (
	account_id   INTEGER NOT NULL,
	key          TEXT NOT NULL,   -- the Idempotency-Key
	fingerprint  BLOB NOT NULL,   -- sluice.Fingerprint of the request
	token        TEXT NOT NULL,   -- the attempt that claimed the key
	done         INTEGER NOT NULL DEFAULT 0, -- 0: in flight until expires_at; 1: answer kept until expires_at
	status       INTEGER NOT NULL DEFAULT 0,
	content_type TEXT NOT NULL DEFAULT '',
	body         BLOB,
	oversize     INTEGER NOT NULL DEFAULT 0, -- 1: the answer was over the bound and its body not kept
	expires_at   INTEGER NOT NULL, -- Unix nanoseconds
	PRIMARY KEY (account_id, key)
) STRICT;
CREATE INDEX idempotency_expires ON idempotency (expires_at);
`,
	// 6: the usage history (usage.go).
	usageMigration,
	// 7: the model chosen in the Telegram bot, with the account.
	`ALTER TABLE accounts ADD COLUMN telegram_model TEXT NOT NULL DEFAULT '';`,
	// 8: the charge of an idempotency claim in flight, inherited by the
	// retry that takes it over (sluice.IdempotencyRecord.Charged).
	`
ALTER TABLE idempotency ADD COLUMN charged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE idempotency ADD COLUMN charged_at INTEGER NOT NULL DEFAULT 0;    -- Unix nanoseconds
ALTER TABLE idempotency ADD COLUMN charged_until INTEGER NOT NULL DEFAULT 0; -- Unix nanoseconds
`,
	// 9: the journal of the Telegram bot's updates (botupdate.go).
	botUpdateMigration,
}

// migrate applies the steps of ms that the database lacks, each in its own
// transaction together with its row in schema_migrations. Step i (from 0)
// is version i+1. It is safe against another process migrating the same
// file at the same time: each version is checked again under the write lock.
func migrate(ctx context.Context, w *sql.DB, ms []string) error {
	if _, err := w.ExecContext(ctx, `
CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	applied_at INTEGER NOT NULL -- Unix nanoseconds
) STRICT`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for i, m := range ms {
		if err := migrateStep(ctx, w, i+1, m); err != nil {
			return fmt.Errorf("migrate to version %d: %w", i+1, err)
		}
	}
	return nil
}

func migrateStep(ctx context.Context, w *sql.DB, version int, stmt string) error {
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, stmt); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
		version, time.Now().UnixNano()); err != nil {
		return err
	}
	return tx.Commit()
}

// sqliteCode returns the extended result code of err, or 0 if err does not
// come from SQLite.
func sqliteCode(err error) int {
	var e *sqlite.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return 0
}

func isUnique(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func isForeignKey(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// Times are stored as Unix nanoseconds, which cover the years 1678 to 2262.

var (
	minTime = time.Unix(0, -1<<63)
	maxTime = time.Unix(0, 1<<63-1)
)

// nanos returns t as stored, or an error if t is outside the range that
// can be stored (which includes the zero time).
func nanos(t time.Time) (int64, error) {
	if t.Before(minTime) || t.After(maxTime) {
		return 0, fmt.Errorf("time %s out of range", t.UTC().Format(time.RFC3339))
	}
	return t.UnixNano(), nil
}

// nullNanos is nanos for a column where NULL stands for the zero time.
func nullNanos(t time.Time) (sql.NullInt64, error) {
	if t.IsZero() {
		return sql.NullInt64{}, nil
	}
	n, err := nanos(t)
	return sql.NullInt64{Int64: n, Valid: err == nil}, err
}

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func fromNullNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromNanos(n.Int64)
}
