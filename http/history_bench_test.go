package http_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/history"
	sluicehttp "github.com/sluicehq/sluice/http"
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

// BenchmarkGenerateHistoryPaired sends every other request to a gateway
// with recording on and the others to the same gateway with it off,
// timing each, so that the load of a shared machine falls on both alike.
// It reports the time per request of each and the cost of recording in
// percent.
func BenchmarkGenerateHistoryPaired(b *testing.B) {
	body := []byte(`{"model":"sluice-sketch","prompt":"a lighthouse at dusk","n":1,"size":"512x512"}`)
	db, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "usage.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	rec := history.New(db, history.Options{FlushInterval: 100 * time.Millisecond, PurgeInterval: -1,
		Logger: slog.New(slog.DiscardHandler)})
	b.Cleanup(func() { rec.Close(context.Background()) })
	off, keyOff := benchServer(b, "mem")
	on, keyOn := benchServer(b, "mem", func(s *sluicehttp.Server) { s.Usage = sluice.UsageRecorders{rec} })
	var spent [2]atomic.Int64
	var n [2]atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var reqs [2]*http.Request
		for i, key := range []string{keyOff, keyOn} {
			reqs[i], _ = http.NewRequest("POST", "http://sluice/v1/images/generations", nil)
			reqs[i].Header.Set("Authorization", "Bearer "+key)
			reqs[i].Header.Set("Content-Type", "application/json")
		}
		hs := [2]http.Handler{off, on}
		w := &discardWriter{h: http.Header{}}
		var local, count [2]int64
		for i := 0; pb.Next(); i++ {
			j := i & 1
			r := reqs[j]
			r.Body = io.NopCloser(bytes.NewReader(body))
			clear(w.h)
			w.status = 0
			t := time.Now()
			hs[j].ServeHTTP(w, r)
			local[j] += int64(time.Since(t))
			count[j]++
			if w.status != http.StatusOK {
				b.Fatalf("status %d", w.status)
			}
		}
		for j := range 2 {
			spent[j].Add(local[j])
			n[j].Add(count[j])
		}
	})
	if n[0].Load() == 0 || n[1].Load() == 0 {
		return
	}
	offNs := float64(spent[0].Load()) / float64(n[0].Load())
	onNs := float64(spent[1].Load()) / float64(n[1].Load())
	b.ReportMetric(offNs, "ns/req-off")
	b.ReportMetric(onNs, "ns/req-on")
	b.ReportMetric(100*(onNs-offNs)/offNs, "%cost")
}
