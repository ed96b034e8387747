package http_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	sluicehttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/quota"
	"github.com/sluicehq/sluice/sqlite"
)

// memAccounts is an account store of one account and one key in memory,
// to measure the gateway without a database. Other methods are not
// implemented (nil interface).
type memAccounts struct {
	sluice.AccountService
	account sluice.Account
	key     sluice.APIKey
}

func (m *memAccounts) FindAPIKey(ctx context.Context, id string) (*sluice.APIKey, error) {
	if id != m.key.ID {
		return nil, sluice.Errorf(sluice.ENOTFOUND, "no key")
	}
	k := m.key
	return &k, nil
}

func (m *memAccounts) FindAccountByID(ctx context.Context, id int64) (*sluice.Account, error) {
	if id != m.account.ID {
		return nil, sluice.Errorf(sluice.ENOTFOUND, "no account")
	}
	a := m.account
	return &a, nil
}

func (m *memAccounts) TouchAPIKey(ctx context.Context, id string, t time.Time) error { return nil }

// benchPlan has limits that a benchmark never reaches, so that every
// request is admitted and carries the full set of headers.
var benchPlan = sluice.Plan{ID: "bench", Name: "Bench", Hour: 1 << 36, Day: 1 << 36, Models: sluice.ModelsAll, API: true}

const benchImages = `{"created":1709900000,"data":[{"b64_json":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}]}`

// discardWriter is a reusable http.ResponseWriter that keeps nothing, so
// that the benchmark measures the gateway rather than a recorder.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }

// benchServer returns a gateway over the account store that stores makes,
// and an API key of its one account; opts change the Server before it
// starts.
func benchServer(b *testing.B, store string, opts ...func(*sluicehttp.Server)) (http.Handler, string) {
	ctx := context.Background()
	key, id, hash := sluice.NewAPIKey()
	var accounts sluice.AccountService
	switch store {
	case "mem":
		accounts = &memAccounts{
			account: sluice.Account{ID: 1, Email: "b@example.com", Plan: "bench"},
			key:     sluice.APIKey{ID: id, AccountID: 1, Hash: hash},
		}
	case "sqlite":
		db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		a := &sluice.Account{Email: "b@example.com", Plan: "bench"}
		if err := db.CreateAccount(ctx, a); err != nil {
			b.Fatal(err)
		}
		if err := db.CreateAPIKey(ctx, &sluice.APIKey{ID: id, AccountID: a.ID, Name: "bench", Hash: hash}); err != nil {
			b.Fatal(err)
		}
		accounts = db
	}
	qs := inmem.New(inmem.Options{})
	b.Cleanup(func() { qs.Close() })
	s := &sluicehttp.Server{
		Accounts: accounts,
		Quota:    &quota.Limiter{Store: qs},
		Images: &fakeGen{GenerateFn: func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
			return &sluice.ImageResult{Body: io.NopCloser(strings.NewReader(benchImages)), ContentType: "application/json"}, nil
		}},
		Plans:  []sluice.Plan{benchPlan},
		Models: sluice.DefaultModels(),
		Logger: slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(s)
	}
	b.Cleanup(func() { s.Close(context.Background()) })
	return s.Handler(), key
}

// BenchmarkGenerate measures a whole POST /v1/images/generations through
// Handler(): middleware, key lookup, body decoding, quota, headers, relay.
func BenchmarkGenerate(b *testing.B) {
	body := []byte(`{"model":"sluice-sketch","prompt":"a lighthouse at dusk","n":1,"size":"512x512"}`)
	newRequest := func(key string) *http.Request {
		r, _ := http.NewRequest("POST", "http://sluice/v1/images/generations", nil)
		r.Header.Set("Authorization", "Bearer "+key)
		r.Header.Set("Content-Type", "application/json")
		return r
	}
	serve := func(b *testing.B, h http.Handler, r *http.Request, w *discardWriter) {
		r.Body = io.NopCloser(bytes.NewReader(body))
		clear(w.h)
		w.status = 0
		h.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
	for _, store := range []string{"mem", "sqlite"} {
		b.Run(store, func(b *testing.B) {
			h, key := benchServer(b, store)
			r, w := newRequest(key), &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				serve(b, h, r, w)
			}
		})
		b.Run(store+"/parallel", func(b *testing.B) {
			h, key := benchServer(b, store)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r, w := newRequest(key), &discardWriter{h: http.Header{}}
				for pb.Next() {
					serve(b, h, r, w)
				}
			})
		})
	}
}

// BenchmarkUsage measures GET /v1/usage: a key lookup and a Peek.
func BenchmarkUsage(b *testing.B) {
	h, key := benchServer(b, "mem")
	r, _ := http.NewRequest("GET", "http://sluice/v1/usage", nil)
	r.Header.Set("Authorization", "Bearer "+key)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, r)
	}
}
