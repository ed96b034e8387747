package postgres

import "context"

// ExecForTest runs a statement on the pool, for tests that break the
// schema on purpose.
func (db *DB) ExecForTest(ctx context.Context, sql string) error {
	_, err := db.pool.Exec(ctx, sql)
	return err
}
