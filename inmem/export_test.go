package inmem

import (
	"database/sql"
	"time"
)

// CorruptForTest writes an undecodable state row for key.
func CorruptForTest(path, key string) error {
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(upsertSQL, key, 0, []byte{0xff, 0xff}, time.Now().Add(time.Hour).Unix())
	return err
}

// SweepTick runs one tick of the background sweep at wall time wall.
func (s *Store) SweepTick(wall time.Time) { s.sweepTick(wall) }

// FailWritesForTest makes every write of a quota state row in the file at
// path fail (fail) or succeed again, through triggers that another
// connection installs.
func FailWritesForTest(path string, fail bool) error {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	defer db.Close()
	stmts := []string{`DROP TRIGGER IF EXISTS fail_insert`, `DROP TRIGGER IF EXISTS fail_update`}
	if fail {
		stmts = []string{
			`CREATE TRIGGER fail_insert BEFORE INSERT ON quota_state BEGIN SELECT RAISE(ABORT, 'injected write failure'); END`,
			`CREATE TRIGGER fail_update BEFORE UPDATE ON quota_state BEGIN SELECT RAISE(ABORT, 'injected write failure'); END`,
		}
	}
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			return err
		}
	}
	return nil
}

// RowsForTest returns the keys of the rows in the file at path.
func RowsForTest(path string) ([]string, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.Query(`SELECT key FROM quota_state ORDER BY key`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// ArenaSlots returns the number of slots the arena has handed out.
func (s *Store) ArenaSlots() int {
	s.arena.mu.Lock()
	defer s.arena.mu.Unlock()
	return int(s.arena.next)
}
