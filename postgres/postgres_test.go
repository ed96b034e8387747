package postgres_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/storetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/postgres"
)

// openSchema opens a DB in a fresh schema of its own, dropped when t ends.
func openSchema(t *testing.T) *postgres.DB {
	t.Helper()
	ctx := context.Background()
	url := testenv.PostgresURL(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		testenv.Missing(t, "PostgreSQL at %s does not answer: %v", url, err)
	}
	schema := "sluicetest_" + testenv.Unique(t)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		conn.Close(ctx)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
		conn.Close(ctx)
	})
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	db, err := postgres.OpenConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	storetest.RunAccountService(t, func(t *testing.T) sluice.AccountService { return openSchema(t) })
}

func TestUsageStore(t *testing.T) {
	storetest.RunUsageStore(t, func(t *testing.T) sluice.UsageStore { return openSchema(t) })
}
