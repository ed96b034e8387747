package http_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
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
// It reports the median time of a request of each (medians, since a
// descheduled goroutine makes a few requests take milliseconds) and the
// cost of recording in percent of the median.
//
// With store=hung the recorder writes to a database that never answers:
// requests must cost the same (the recorder drops what does not fit).
func BenchmarkGenerateHistoryPaired(b *testing.B) {
	for _, store := range []string{"sqlite", "hung"} {
		b.Run("store="+store, func(b *testing.B) { benchPaired(b, store) })
	}
}

// hungStore is a usage store whose writes never return until the
// benchmark ends.
type hungStore struct {
	sluice.UsageStore
	release chan struct{}
}

func (s hungStore) AddUsage(ctx context.Context, cs []sluice.UsageCount) error {
	<-s.release
	return ctx.Err()
}

func benchPaired(b *testing.B, store string) {
	body := []byte(`{"model":"sluice-sketch","prompt":"a lighthouse at dusk","n":1,"size":"512x512"}`)
	var us sluice.UsageStore
	switch store {
	case "sqlite":
		db, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "usage.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		us = db
	case "hung":
		h := hungStore{release: make(chan struct{})}
		b.Cleanup(func() { close(h.release) })
		us = h
	}
	rec := history.New(us, history.Options{FlushInterval: 100 * time.Millisecond, PurgeInterval: -1,
		Logger: slog.New(slog.DiscardHandler)})
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		rec.Close(ctx)
	})
	off, keyOff := benchServer(b, "mem")
	on, keyOn := benchServer(b, "mem", func(s *sluicehttp.Server) { s.Usage = sluice.UsageRecorders{rec} })
	var (
		mu      sync.Mutex
		samples [2][]time.Duration
	)
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
		// Room for the samples up front: appending must not allocate
		// inside the measured loop.
		var local [2][]time.Duration
		for j := range local {
			local[j] = make([]time.Duration, 0, 1<<16)
		}
		for i := 0; pb.Next(); i++ {
			j := i & 1
			r := reqs[j]
			r.Body = io.NopCloser(bytes.NewReader(body))
			clear(w.h)
			w.status = 0
			t := time.Now()
			hs[j].ServeHTTP(w, r)
			if d := time.Since(t); len(local[j]) < cap(local[j]) {
				local[j] = append(local[j], d)
			}
			if w.status != http.StatusOK {
				b.Fatalf("status %d", w.status)
			}
		}
		mu.Lock()
		for j := range 2 {
			samples[j] = append(samples[j], local[j]...)
		}
		mu.Unlock()
	})
	if len(samples[0]) == 0 || len(samples[1]) == 0 {
		return
	}
	median := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2])
	}
	offNs, onNs := median(samples[0]), median(samples[1])
	b.ReportMetric(offNs, "ns/req-off")
	b.ReportMetric(onNs, "ns/req-on")
	b.ReportMetric(100*(onNs-offNs)/offNs, "%cost")
}
