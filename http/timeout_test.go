package http_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	sluicehttp "github.com/sluicehq/sluice/http"
)

// TestSlowGenerationWriteTimeout: with WriteTimeout 0 (server.write_timeout:
// 0) a generation slower than the timeout of the control case completes;
// a tiny timeout, the control, cuts the same request off.
func TestSlowGenerationWriteTimeout(t *testing.T) {
	const delay = 300 * time.Millisecond
	for _, tc := range []struct {
		name   string
		write  time.Duration
		wantOK bool
	}{
		{"none", 0, true},
		{"tiny", 20 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, withServer(func(s *sluicehttp.Server) { s.WriteTimeout = tc.write }))
			h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				return okImages(req.N), nil
			}
			_, key := h.account("vip")
			req, err := http.NewRequest("POST", h.S.URL()+"/v1/images/generations",
				strings.NewReader(`{"model":"sluice-sketch","prompt":"a lighthouse","n":1}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+key)
			res, err := h.Client.Do(req)
			ok := err == nil && res.StatusCode == http.StatusOK
			if err == nil {
				_, rerr := io.ReadAll(res.Body)
				res.Body.Close()
				ok = ok && rerr == nil
			}
			if ok != tc.wantOK {
				t.Fatalf("slow generation with write timeout %v: answered %v (err %v), want %v", tc.write, ok, err, tc.wantOK)
			}
		})
	}
}
