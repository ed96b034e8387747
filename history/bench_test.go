package history_test

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/history"
)

// nullStore takes every flush and keeps nothing.
type nullStore struct{ sluice.UsageStore }

func (nullStore) AddUsage(ctx context.Context, cs []sluice.UsageCount) error { return nil }

// BenchmarkRecord measures Record on the request path: one hot account
// and key (every request meets the same row), and many accounts.
func BenchmarkRecord(b *testing.B) {
	for _, accounts := range []int{1, 1000} {
		b.Run("accounts="+strconv.Itoa(accounts), func(b *testing.B) {
			r := history.New(nullStore{}, history.Options{FlushInterval: 100 * time.Millisecond, PurgeInterval: -1,
				Logger: slog.New(slog.DiscardHandler)})
			defer r.Close(context.Background())
			keys := make([]string, accounts)
			for i := range keys {
				keys[i] = "key" + strconv.Itoa(i)
			}
			now := time.Now()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				e := sluice.UsageEvent{Channel: sluice.ChannelAPI, Model: "sluice-sketch", Time: now, Units: 1}
				i := 0
				for pb.Next() {
					e.AccountID, e.KeyID = int64(i%accounts), keys[i%accounts]
					r.Record(&e)
					i++
				}
			})
		})
	}
}
