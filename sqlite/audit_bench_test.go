package sqlite

import (
	"path/filepath"
	"testing"

	sluice "github.com/sluicehq/sluice"
)

// auditBenchEvents and auditBenchAccounts size the log of BenchmarkListAudit:
// 200,000 events over 1,000 accounts.
const (
	auditBenchEvents   = 200_000
	auditBenchAccounts = 1_000
)

// BenchmarkListAudit reads a page of 50 from a large log: of every account,
// of one account, and of one account from the middle of its history. Each
// should cost about the same whatever the size of the log (an index seek
// and 50 rows).
func BenchmarkListAudit(b *testing.B) {
	ctx := b.Context()
	db, err := Open(ctx, filepath.Join(b.TempDir(), "sluice.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := db.w.ExecContext(ctx, `
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
INSERT INTO audit_events (at, actor_type, actor_id, ip, action, account_id, details)
SELECT i, 'admin', '', '203.0.113.7', 'plan.changed', i % ? + 1, '{"from":"starter","to":"vip"}' FROM n`,
		auditBenchEvents, auditBenchAccounts); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		f    sluice.AuditFilter
	}{
		{"all", sluice.AuditFilter{}},
		{"account", sluice.AuditFilter{AccountID: 500}},
		{"account_before", sluice.AuditFilter{AccountID: 500, Before: auditBenchEvents / 2}},
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
