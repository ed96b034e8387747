package alert_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/alert"
	"github.com/sluicehq/sluice/sqlite"
)

// BenchmarkRecord measures what Record adds to a request: the common case,
// a decision that crosses nothing.
func BenchmarkRecord(b *testing.B) {
	db, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "sluice.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	n := &alert.Notifier{Accounts: db, Marks: db, Plans: sluice.DefaultPlans()}
	if err := n.Start(); err != nil {
		b.Fatal(err)
	}
	defer n.Close(b.Context())
	t0 := time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC)
	d := sluice.Decision{Allowed: true, Time: t0, Blocking: -1, N: 2}
	d.Windows[0] = sluice.WindowStatus{Name: "hour", Length: time.Hour, Limit: 100, Remaining: 50, Counted: 50, Reset: t0.Add(time.Hour)}
	d.Windows[1] = sluice.WindowStatus{Name: "day", Length: 24 * time.Hour, Limit: 1000, Remaining: 500, Counted: 500, Reset: t0.Add(24 * time.Hour)}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		e := sluice.UsageEvent{AccountID: 1, Plan: "vip", Outcome: sluice.UsageAdmitted, Units: 1, Decision: &d}
		for pb.Next() {
			n.Record(&e)
		}
	})
}
