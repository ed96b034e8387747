package testenv_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestPostgresSchema: a pool opened on the connection string of
// PostgresSchema (as postgres.Open opens one) works in the schema, in both
// forms of connection string; the schema is gone when the test ends.
func TestPostgresSchema(t *testing.T) {
	ctx := context.Background()
	base := testenv.PostgresURL(t)
	for _, tc := range []struct {
		name string
		env  string // SLUICE_TEST_POSTGRES_URL; empty: as it is
	}{
		{"url", ""},
		{"key_value", "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"},
	} {
		var schema string
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				if os.Getenv("SLUICE_TEST_POSTGRES_URL") != "" {
					t.Skip("SLUICE_TEST_POSTGRES_URL is set: no key=value form of it to try")
				}
				t.Setenv("SLUICE_TEST_POSTGRES_URL", tc.env)
			}
			var url string
			url, schema = testenv.PostgresSchema(t)
			pool, err := pgxpool.New(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			var current string
			if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&current); err != nil || current != schema {
				t.Fatalf("current_schema() = %q, %v; want %q", current, err, schema)
			}
			if _, err := pool.Exec(ctx, `CREATE TABLE probe (id int)`); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'probe'`,
				schema).Scan(&n); err != nil || n != 1 {
				t.Fatalf("tables probe in %s: %d, %v; want 1", schema, n, err)
			}
		})
		if schema == "" {
			continue // skipped
		}
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, schema).Scan(&n)
		conn.Close(ctx)
		if err != nil || n != 0 {
			t.Errorf("%s: schema %s after the test: %d, %v; want gone", tc.name, schema, n, err)
		}
	}
}
