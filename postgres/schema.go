package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SchemaVersion connects to the database at url (as Open takes it) and
// reports its schema without changing it: have is the highest migration
// applied (0 without a schema_migrations table), want the number this build
// knows; Open applies the want-have that are pending. A connection error
// (an unknown host, role or database, a wrong password) is returned as
// pgx gives it, which names the user and database but never the password.
func SchemaVersion(ctx context.Context, url string) (have, want int, err error) {
	want = len(migrations)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, want, fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var table *string
	if err := conn.QueryRow(ctx, `SELECT to_regclass('schema_migrations')::text`).Scan(&table); err != nil {
		return 0, want, fmt.Errorf("postgres schema: %w", err)
	}
	if table == nil {
		return 0, want, nil
	}
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return 0, want, fmt.Errorf("postgres schema: %w", err)
	}
	return have, want, nil
}
