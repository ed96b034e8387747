package postgres_test

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice"
)

// BenchmarkListAudit reads a page of 50 from a log of 200,000 events over
// 1,000 accounts: of every account, of one account, and of one account from
// the middle of its history. Each should cost about the same whatever the
// size of the log (an index seek and 50 rows).
func BenchmarkListAudit(b *testing.B) {
	ctx := context.Background()
	db := openSchema(b)
	if err := db.ExecForTest(ctx, `
INSERT INTO audit_events (at, actor_type, actor_id, ip, action, account_id, details)
SELECT now(), 'admin', '', '203.0.113.7', 'plan.changed', i % 1000 + 1, '{"from":"starter","to":"vip"}'
FROM generate_series(1, 200000) AS i;
ANALYZE audit_events`); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		f    sluice.AuditFilter
	}{
		{"all", sluice.AuditFilter{}},
		{"account", sluice.AuditFilter{AccountID: 500}},
		{"account_before", sluice.AuditFilter{AccountID: 500, Before: 100_000}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				es, err := db.ListAudit(ctx, bc.f)
				if err != nil || len(es) != sluice.DefaultAuditLimit {
					b.Fatalf("ListAudit: %d events, %v", len(es), err)
				}
			}
		})
	}
}
