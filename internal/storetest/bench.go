package storetest

import (
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	sluice "github.com/sluicehq/sluice"
)

// BenchmarkIdempotencyStore measures the calls a keyed image request makes
// on s, with answers of bodySize bytes:
//
//   - "claim": Begin of a new key, the one call before the quota is taken
//     (one round trip);
//   - "claim+complete": that and Complete with the answer once it was
//     relayed (a second round trip): what a served keyed request adds on
//     its path;
//   - "claim+charge+complete": the same with the record of the charge in
//     between, all that a served keyed request writes (the charge is
//     written off the request's path, while the image is generated);
//   - "replay": Begin of a key whose answer is kept (the retry's only
//     store call besides the quota peek);
//   - "claim+abandon": Begin and Abandon (a failed keyed request).
//
// Run in parallel: the gateway's handlers do.
func BenchmarkIdempotencyStore(b *testing.B, s sluice.IdempotencyStore, bodySize int) {
	body := answerBody(bodySize)
	var seq atomic.Int64
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	newClaim := func(now time.Time) *sluice.IdempotencyRecord {
		n := seq.Add(1)
		return &sluice.IdempotencyRecord{AccountID: n % 1000, Key: "bench-" + run + "-" + strconv.FormatInt(n, 10),
			Fingerprint: fingerprint("x"), Token: "token-" + strconv.FormatInt(n, 10), ExpiresAt: now.Add(time.Minute)}
	}
	claimed := func(b *testing.B, now time.Time) *sluice.IdempotencyRecord {
		rec := newClaim(now)
		if _, ok, err := s.Begin(b.Context(), rec, now); err != nil || !ok {
			b.Fatalf("Begin = %v, %v", ok, err)
		}
		return rec
	}
	b.Run("claim", func(b *testing.B) {
		b.ReportAllocs()
		now := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				claimed(b, now)
			}
		})
	})
	for _, charge := range []bool{false, true} {
		name := map[bool]string{false: "claim+complete", true: "claim+charge+complete"}[charge]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(bodySize))
			now := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					d := *claimed(b, now)
					if charge {
						if err := s.Charge(b.Context(), d.AccountID, d.Key, d.Token, 1, now, now.Add(time.Hour)); err != nil {
							b.Fatal(err)
						}
					}
					d.Done, d.Status, d.ContentType, d.Body, d.ExpiresAt = true, 200, "application/json", body, now.Add(time.Hour)
					if err := s.Complete(b.Context(), &d); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
	b.Run("replay", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(bodySize))
		now := time.Now()
		const keys = 64
		recs := make([]*sluice.IdempotencyRecord, keys)
		for i := range recs {
			recs[i] = claimed(b, now)
			d := *recs[i]
			d.Done, d.Status, d.Body, d.ExpiresAt = true, 200, body, now.Add(time.Hour)
			if err := s.Complete(b.Context(), &d); err != nil {
				b.Fatal(err)
			}
		}
		var i atomic.Int64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r := *recs[i.Add(1)%keys]
				r.Token = "retry"
				got, ok, err := s.Begin(b.Context(), &r, now)
				if err != nil || ok || len(got.Body) != bodySize {
					b.Fatalf("Begin of a kept answer = %v, %v", ok, err)
				}
			}
		})
	})
	b.Run("claim+abandon", func(b *testing.B) {
		b.ReportAllocs()
		now := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				rec := claimed(b, now)
				if err := s.Abandon(b.Context(), rec.AccountID, rec.Key, rec.Token); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// FillIdempotencyStore stores n kept answers of bodySize bytes in s, for
// measuring what a record costs on disk.
func FillIdempotencyStore(b *testing.B, s sluice.IdempotencyStore, n, bodySize int) {
	body := answerBody(bodySize)
	now := time.Now()
	run := strconv.FormatInt(now.UnixNano(), 36)
	for i := range n {
		// A key as the Go client makes them: 32 hex digits.
		rec := &sluice.IdempotencyRecord{AccountID: int64(i % 100), Key: run + strconv.FormatInt(int64(1e15+i), 16),
			Fingerprint: fingerprint(strconv.Itoa(i)), Token: sluice.RandomString(22), ExpiresAt: now.Add(time.Minute)}
		if _, ok, err := s.Begin(b.Context(), rec, now); err != nil || !ok {
			b.Fatalf("Begin = %v, %v", ok, err)
		}
		rec.Done, rec.Status, rec.ContentType, rec.Body, rec.ExpiresAt = true, 200, "application/json", body, now.Add(time.Hour)
		if err := s.Complete(b.Context(), rec); err != nil {
			b.Fatal(err)
		}
	}
}

// answerBody is a body like an image answer's: base64 of random bytes (PNG
// data does not compress), which neither SQLite nor PostgreSQL's TOAST can
// shrink.
func answerBody(size int) []byte {
	raw := make([]byte, size*3/4+3)
	rand.Read(raw)
	return []byte(base64.StdEncoding.EncodeToString(raw)[:size])
}
