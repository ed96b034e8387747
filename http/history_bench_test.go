package http_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	sluicehttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/history"
	"github.com/sluicehq/sluice/sqlite"
)

// BenchmarkGenerateHistory measures the cost of recording the usage
// history on the image endpoint: the same gateway with recording off and
// on, the recorder flushing into a real SQLite file every 100ms (a hundred
// times more often than the default) so that the flushes' cost shows.
// Compare off and on of the same run:
//
//	go test ./http -run XXX -bench GenerateHistory -count 10 | benchstat -col /history -
func BenchmarkGenerateHistory(b *testing.B) {
	body := []byte(`{"model":"sluice-sketch","prompt":"a lighthouse at dusk","n":1,"size":"512x512"}`)
	for _, mode := range []string{"off", "on"} {
		b.Run("history="+mode, func(b *testing.B) {
			var opts []func(*sluicehttp.Server)
			var rec *history.Recorder
			if mode == "on" {
				db, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "usage.db"))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { db.Close() })
				rec = history.New(db, history.Options{FlushInterval: 100 * time.Millisecond, PurgeInterval: -1,
					Logger: slog.New(slog.DiscardHandler)})
				b.Cleanup(func() { rec.Close(context.Background()) })
				opts = append(opts, func(s *sluicehttp.Server) { s.Usage = sluice.UsageRecorders{rec} })
			}
			h, key := benchServer(b, "mem", opts...)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r, _ := http.NewRequest("POST", "http://sluice/v1/images/generations", nil)
				r.Header.Set("Authorization", "Bearer "+key)
				r.Header.Set("Content-Type", "application/json")
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					r.Body = io.NopCloser(bytes.NewReader(body))
					clear(w.h)
					w.status = 0
					h.ServeHTTP(w, r)
					if w.status != http.StatusOK {
						b.Fatalf("status %d", w.status)
					}
				}
			})
			if rec != nil {
				b.StopTimer()
				if d := rec.Dropped(); d != 0 {
					b.Fatalf("%d events dropped", d)
				}
			}
		})
	}
}
