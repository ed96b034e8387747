package inmem

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/sluicehq/sluice"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go
)

// Persistence. A persistent store keeps every key's state in memory, as a
// plain Store does, and writes the state of the keys that changed to a
// SQLite file (one row a key, the state packed in a blob) in one transaction
// every flush interval. Opening the file loads every row that still counts.
//
// Why this shape: deciding stays an in-memory operation (no I/O on the
// path of a request), a flush costs one write per changed key however many
// times it changed, and SQLite gives atomic, crash-safe commits (write-ahead
// log) without a format of our own to recover. The account store is SQLite
// too, but the counters live in a file of their own so that flushes never
// queue behind account writes.
//
// The bound: a graceful Close flushes everything, so a stop loses nothing. A
// crash (kill -9) loses the charges made after the start of the last flush
// that committed: at most one flush interval plus the time a flush takes.
// With a flush interval of 0 every charge and refund is written, with
// synchronous=FULL, before Take or Refund returns.
type persister struct {
	db   *sql.DB
	sync bool // write each change before returning

	mu     sync.Mutex // serialises writes: flushes, writeKey, reset
	flushN int        // flushes since the last cleanup of expired rows
}

const schema = `CREATE TABLE IF NOT EXISTS quota_state (
	key     TEXT PRIMARY KEY,
	alg     INTEGER NOT NULL,
	state   BLOB NOT NULL,
	expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS quota_state_expires ON quota_state (expires);`

const (
	upsertSQL = `INSERT INTO quota_state (key, alg, state, expires) VALUES (?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET alg = excluded.alg, state = excluded.state, expires = excluded.expires`
	deleteSQL = `DELETE FROM quota_state WHERE key = ?`
)

// Open returns a store whose counters persist in the SQLite file at path,
// created if need be, loading the counters that still count. flushInterval
// bounds what a crash can lose; 0 writes every change before returning.
func Open(ctx context.Context, path string, flushInterval time.Duration, opts Options) (*Store, error) {
	if flushInterval < 0 {
		return nil, errors.New("inmem: flush interval must not be negative")
	}
	syncMode := "NORMAL" // WAL: a commit survives a crash of the process
	if flushInterval == 0 {
		syncMode = "FULL" // ... and of the machine
	}
	dsn := fmt.Sprintf("file:%s?_pragma=journal_mode(WAL)&_pragma=synchronous(%s)&_pragma=busy_timeout(5000)", path, syncMode)
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open quota state: %w", err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("create quota state: %w", err)
	}
	s := newStore(opts, &persister{db: db, sync: flushInterval == 0})
	if err := s.p.load(ctx, s, time.Now()); err != nil {
		s.Close()
		return nil, err
	}
	if flushInterval > 0 {
		s.done.Add(1)
		go s.loop(flushInterval, func() {
			if err := s.p.flush(s); err != nil {
				s.logger.Error("quota state flush failed", slog.String("error", err.Error()))
			}
		})
	}
	return s, nil
}

// Inspection is what Inspect found in a file of counters.
type Inspection struct {
	Keys       int // keys whose state still counts, as Open would load them
	Unreadable int // rows Open would skip (with a warning): their keys start afresh
}

// Inspect reads the file of counters at path as Open would load it, without
// writing to it (another process may be serving from it), and reports what
// it holds. A file that does not exist is an error satisfying
// errors.Is(err, fs.ErrNotExist); one without the table yet holds nothing.
func Inspect(ctx context.Context, path string, now time.Time) (Inspection, error) {
	var in Inspection
	if _, err := os.Stat(path); err != nil {
		return in, err
	}
	db, err := sql.Open("sqlite", fmt.Sprintf("file:%s?mode=ro&_pragma=busy_timeout(5000)", path))
	if err != nil {
		return in, err
	}
	defer db.Close()
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'quota_state'`).Scan(&tables); err != nil {
		return in, err
	}
	if tables == 0 {
		return in, nil
	}
	rows, err := db.QueryContext(ctx, `SELECT alg, state FROM quota_state WHERE expires > ?`, now.Unix())
	if err != nil {
		return in, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			alg  int64
			blob []byte
		)
		if err := rows.Scan(&alg, &blob); err != nil {
			return in, err
		}
		if _, ok := decodeRow(alg, blob); !ok {
			in.Unreadable++
			continue
		}
		in.Keys++
	}
	return in, rows.Err()
}

// Flush writes every change not yet written. It runs every flush interval;
// tests call it directly.
func (s *Store) Flush() error {
	if s.p == nil {
		return nil
	}
	return s.p.flush(s)
}

func (p *persister) load(ctx context.Context, s *Store, now time.Time) error {
	rows, err := p.db.QueryContext(ctx, `SELECT key, alg, state, expires FROM quota_state WHERE expires > ?`, now.Unix())
	if err != nil {
		return fmt.Errorf("load quota state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			key     string
			alg     int64
			blob    []byte
			expires int64
		)
		if err := rows.Scan(&key, &alg, &blob, &expires); err != nil {
			return fmt.Errorf("load quota state: %w", err)
		}
		st, ok := decodeRow(alg, blob)
		if !ok {
			s.logger.Warn("skipping unreadable quota state", slog.String("key", key))
			continue
		}
		sh, h := s.shard(key)
		sh.mu.Lock()
		ks := sh.t.find(h, key)
		if ks == nil {
			ks = sh.t.insert(h, key)
		}
		sh.t.reset(ks, sluice.Algorithm(alg), len(st))
		sh.t.set(ks, st)
		ks.expires = clampExpiry(expires)
		sh.mu.Unlock()
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load quota state: %w", err)
	}
	return nil
}

// decodeRow returns the state of a row, and false if the row cannot be
// read: a state that does not decode, or an algorithm this build lacks.
func decodeRow(alg int64, blob []byte) ([][]uint64, bool) {
	st, ok := decodeState(blob)
	return st, ok && alg >= 0 && alg <= int64(sluice.TokenBucket)
}

type row struct {
	key     string
	alg     sluice.Algorithm
	state   []byte // nil: delete the row
	expires int64
}

// snapshot returns the row for key as the store holds it now, taking the
// shard lock.
func snapshot(s *Store, key string) row {
	sh, h := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return snapshotLocked(sh, h, key)
}

// snapshotLocked is snapshot for a caller that holds sh.mu and knows the
// key's hash h.
func snapshotLocked(sh *shard, h uint64, key string) row {
	ks := sh.t.find(h, key)
	if ks == nil {
		return row{key: key}
	}
	ks.flags &^= flagDirty
	var arr [sluice.MaxWindows][]uint64
	st := sh.t.state(ks, &arr)
	return row{key: key, alg: ks.alg, state: encodeState(st), expires: int64(ks.expires)}
}

// flush writes the changed keys, and every 64th time deletes the rows that
// count nothing any more at the latest time the store decided at (the
// callers' clock, as eviction does).
func (p *persister) flush(s *Store) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var rows []row
	var seen int64
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		seen = max(seen, sh.now)
		for _, key := range sh.dirty {
			_, h := s.shard(key)
			rows = append(rows, snapshotLocked(sh, h, key))
		}
		clear(sh.dirty)
		sh.dirty = sh.dirty[:0]
		sh.mu.Unlock()
	}
	p.flushN++
	cleanup := p.flushN%64 == 0
	if len(rows) == 0 && !cleanup {
		return nil
	}
	err := p.write(rows, cleanup, time.Unix(seen, 0))
	if err != nil {
		// Mark the keys dirty again so that the next flush retries them.
		for _, r := range rows {
			sh, h := s.shard(r.key)
			sh.mu.Lock()
			if ks := sh.t.find(h, r.key); ks != nil {
				s.markDirty(sh, ks, r.key)
			}
			sh.mu.Unlock()
		}
	}
	return err
}

// write stores rows in one transaction, deleting rows that count nothing
// any more if cleanup is set. The caller holds p.mu.
func (p *persister) write(rows []row, cleanup bool, now time.Time) error {
	ctx := context.Background()
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("write quota state: %w", err)
	}
	defer tx.Rollback()
	for _, r := range rows {
		if r.state == nil {
			_, err = tx.ExecContext(ctx, deleteSQL, r.key)
		} else {
			_, err = tx.ExecContext(ctx, upsertSQL, r.key, int64(r.alg), r.state, r.expires)
		}
		if err != nil {
			return fmt.Errorf("write quota state: %w", err)
		}
	}
	if cleanup {
		if _, err := tx.ExecContext(ctx, `DELETE FROM quota_state WHERE expires <= ?`, now.Unix()); err != nil {
			return fmt.Errorf("write quota state: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("write quota state: %w", err)
	}
	return nil
}

// Sync returns once the counters of key, as they stand, are on disk: at
// once if the key has no change that a committed write does not hold (or
// the store writes every change, or keeps none), else after writing that
// key alone. It is what a caller needs before recording a charge that a
// crash must not outlive the counters (sluice.QuotaSyncer); a flush
// interval's worth of other keys stays in memory.
func (s *Store) Sync(ctx context.Context, key string) error {
	if s.p == nil || s.p.sync {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	// Under p.mu no write is under way: a clean key's last snapshot was
	// committed (a failed write marks its keys dirty again).
	sh, h := s.shard(key)
	sh.mu.Lock()
	ks := sh.t.find(h, key)
	clean := ks == nil || ks.flags&flagDirty == 0
	var r row
	if !clean {
		r = snapshotLocked(sh, h, key)
	}
	sh.mu.Unlock()
	if clean {
		return nil
	}
	if err := p.write([]row{r}, false, time.Time{}); err != nil {
		sh.mu.Lock()
		if ks := sh.t.find(h, key); ks != nil {
			ks.flags |= flagDirty // still listed in sh.dirty: the next flush writes it
		}
		sh.mu.Unlock()
		return err
	}
	return nil
}

// writeKey writes the current state of one key (flush interval 0).
func (p *persister) writeKey(s *Store, key string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.write([]row{snapshot(s, key)}, false, time.Time{})
}

// reset forgets key in memory and on disk.
func (p *persister) reset(s *Store, key string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	sh, h := s.shard(key)
	sh.mu.Lock()
	sh.t.delete(h, key)
	sh.mu.Unlock()
	return p.write([]row{{key: key}}, false, time.Time{})
}

// deleteExpired deletes the rows that count nothing at the Unix second sec.
func (p *persister) deleteExpired(sec int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.db.Exec(`DELETE FROM quota_state WHERE expires <= ?`, sec); err != nil {
		return fmt.Errorf("delete expired quota state: %w", err)
	}
	return nil
}

func (p *persister) close(s *Store) error {
	err := p.flush(s)
	return errors.Join(err, p.db.Close())
}

// encodeState packs a key's state: the number of windows, then for each
// window the number of words and the words, all as uvarints.
func encodeState(st [][]uint64) []byte {
	n := 1
	for _, w := range st {
		n += 1 + len(w)*5
	}
	b := make([]byte, 0, n)
	b = binary.AppendUvarint(b, uint64(len(st)))
	for _, w := range st {
		b = binary.AppendUvarint(b, uint64(len(w)))
		for _, v := range w {
			b = binary.AppendUvarint(b, v)
		}
	}
	return b
}

// decodeState unpacks what encodeState packed; ok is false for anything
// else.
func decodeState(b []byte) (st [][]uint64, ok bool) {
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	nw, ok := next()
	if !ok || nw > sluice.MaxWindows {
		return nil, false
	}
	st = make([][]uint64, nw)
	for i := range st {
		nv, ok := next()
		if !ok || nv > uint64(len(b)) {
			return nil, false
		}
		if nv > 0 {
			st[i] = make([]uint64, nv)
		}
		for j := range st[i] {
			if st[i][j], ok = next(); !ok {
				return nil, false
			}
		}
	}
	return st, len(b) == 0
}
