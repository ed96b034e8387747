package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
)

// SchemaVersion reports the schema of the database file at path without
// changing it: have is the number of migrations applied (or the highest
// version recorded, if the file was migrated by a newer sluice), want the
// number this build knows; Open applies the want-have that are pending. A
// file that does not exist is an error satisfying errors.Is(err,
// fs.ErrNotExist); a file without a schema_migrations table has version 0.
func SchemaVersion(ctx context.Context, path string) (have, want int, err error) {
	want = len(migrations)
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, want, fmt.Errorf("sqlite schema: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return 0, want, fmt.Errorf("sqlite schema: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: abs}).EscapedPath()+"?mode=ro&_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	if err != nil {
		return 0, want, fmt.Errorf("sqlite schema: %w", err)
	}
	defer db.Close()
	var table int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&table); err != nil {
		return 0, want, fmt.Errorf("sqlite schema: %w", err)
	}
	if table == 0 {
		return 0, want, nil
	}
	var n, top sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE version <= ?), max(version) FROM schema_migrations`, want).Scan(&n, &top); err != nil {
		return 0, want, fmt.Errorf("sqlite schema: %w", err)
	}
	if top.Int64 > int64(want) {
		return int(top.Int64), want, nil
	}
	return int(n.Int64), want, nil
}
