package quota

import (
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

// BenchmarkRejectionsPut puts new rejections into a full cache: each put
// evicts one. It was O(size) a put (a scan of the whole map); it is O(1).
func BenchmarkRejectionsPut(b *testing.B) {
	for _, size := range []int{1_000, DefaultRejectionCacheSize, 100_000} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			b.ReportAllocs()
			now := time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)
			c := rejections{size: size}
			d := sluice.Decision{RetryAfter: time.Hour}
			p := sluice.Policy{Windows: []sluice.Window{{Name: "hour", Length: time.Hour, Limit: 2}}}
			req := requestKey(&p, 1)
			keys := make([]string, 2*size)
			for i := range keys {
				keys[i] = "{acct:" + strconv.Itoa(i) + "}"
			}
			for i := range size {
				c.put(keys[i], req, d, now, now, 0)
			}
			b.ResetTimer()
			for i := range b.N {
				c.put(keys[(size+i)%len(keys)], req, d, now, now, 0) // a new key: evicts the oldest
			}
		})
	}
}
