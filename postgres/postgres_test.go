package postgres_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/storetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/postgres"
)

// openSchema opens a DB in a fresh schema of its own, dropped when t ends.
func openSchema(t testing.TB) *postgres.DB {
	t.Helper()
	url, _ := testenv.PostgresSchema(t)
	return open(t, url)
}

// open opens a DB on url (another pool, as another instance would), closed
// when t ends.
func open(t testing.TB, url string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestAuditLog(t *testing.T) {
	storetest.RunAuditLog(t, func(t *testing.T) storetest.AuditStore { return openSchema(t) },
		func(t *testing.T, s storetest.AuditStore) {
			// The schema is the first of the search_path of s's connections.
			if err := s.(*postgres.DB).ExecForTest(t.Context(), `DROP TABLE audit_events`); err != nil {
				t.Fatal(err)
			}
		})
}

func TestConformance(t *testing.T) {
	storetest.RunAccountService(t, func(t *testing.T) sluice.AccountService { return openSchema(t) })
}

func TestAlertMarks(t *testing.T) {
	storetest.RunAlertMarks(t, func(t *testing.T) sluice.AlertMarks { return openSchema(t) })
}

func TestIdempotencyStore(t *testing.T) {
	storetest.RunIdempotencyStore(t, func(t *testing.T) (sluice.IdempotencyStore, func() sluice.IdempotencyStore) {
		url, _ := testenv.PostgresSchema(t)
		return open(t, url).Idempotency(), func() sluice.IdempotencyStore { return open(t, url).Idempotency() }
	})
}

// BenchmarkIdempotency measures the idempotency store's calls with answers
// of one demo image (24 KiB) and of a large upstream answer (4 MiB). Run it
// with a count: -benchtime=200x.
func BenchmarkIdempotency(b *testing.B) {
	for _, size := range []int{24 << 10, 4 << 20} {
		b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
			storetest.BenchmarkIdempotencyStore(b, openSchema(b).Idempotency(), size)
		})
	}
}

// BenchmarkIdempotencyRecordBytes reports what a kept answer costs beyond
// its body (bytes/record), from pg_total_relation_size (table, TOAST and
// indexes) before and after 1,000 records with a 24 KiB body. Run it once:
// -benchtime=1x.
func BenchmarkIdempotencyRecordBytes(b *testing.B) {
	const n, body = 1000, 24 << 10
	db := openSchema(b)
	size := func() int64 {
		var v int64
		if err := db.Pool().QueryRow(b.Context(), `SELECT pg_total_relation_size('idempotency')`).Scan(&v); err != nil {
			b.Fatal(err)
		}
		return v
	}
	var total int64
	for b.Loop() {
		before := size()
		storetest.FillIdempotencyStore(b, db.Idempotency(), n, body)
		total += size() - before
	}
	b.ReportMetric(float64(total)/float64(b.N*n)-body, "overhead-bytes/record")
}

func TestUsageStore(t *testing.T) {
	storetest.RunUsageStore(t, func(t *testing.T) sluice.UsageStore { return openSchema(t) })
}

func TestBotUpdateStore(t *testing.T) {
	storetest.RunBotUpdateStore(t, func(t *testing.T) (sluice.BotUpdateStore, func() sluice.BotUpdateStore) {
		url, _ := testenv.PostgresSchema(t)
		return open(t, url).BotUpdates(), func() sluice.BotUpdateStore { return open(t, url).BotUpdates() }
	})
}

// BenchmarkBotUpdates measures the bot's journal calls. Run it with a
// count: -benchtime=2000x.
func BenchmarkBotUpdates(b *testing.B) {
	storetest.BenchmarkBotUpdateStore(b, openSchema(b).BotUpdates())
}
