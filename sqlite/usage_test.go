package sqlite

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"

	sluice "github.com/sluicehq/sluice"
)

// BenchmarkAddUsage measures one flush of the usage history: 1,000 rows
// of each granularity (1,000 accounts' minute), added to existing rows.
func BenchmarkAddUsage(b *testing.B) {
	db, err := Open(b.Context(), filepath.Join(b.TempDir(), "sluice.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2026, 3, 10, 9, 30, 0, 0, time.UTC)
	var cs []sluice.UsageCount
	for _, g := range []string{sluice.GranularityDay, sluice.GranularityHour, sluice.GranularityMinute} {
		d, _ := sluice.UsageGranularity(g)
		for a := range 1000 {
			cs = append(cs, sluice.UsageCount{Granularity: g, Start: at.Truncate(d), AccountID: int64(a + 1),
				KeyID: "key" + strconv.Itoa(a), Channel: sluice.ChannelAPI, Model: "sluice-sketch", Images: 1, Requests: 1})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := db.AddUsage(b.Context(), cs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(cs)), "ns/row")
}
