package postgres

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ExecForTest runs a statement on the pool, for tests that break the
// schema on purpose.
func (db *DB) ExecForTest(ctx context.Context, sql string) error {
	_, err := db.pool.Exec(ctx, sql)
	return err
}

// Pool exposes the DB's pool to the tests of package postgres_test.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }
