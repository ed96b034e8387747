package http_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/quota"
)

// TestLimitLoweredToZero: an admin sets an account's limits to 0 after it
// used some. Usage answers 200 with limit 0 and nothing remaining, a
// generation 429, the admin view 200, under every algorithm (the token
// bucket divided by zero and answered 500).
func TestLimitLoweredToZero(t *testing.T) {
	for _, alg := range []sluice.Algorithm{sluice.Sliding, sluice.Calendar, sluice.TokenBucket} {
		t.Run(alg.String(), func(t *testing.T) {
			h := newHarness(t, func(h *harness, _ *quota.Limiter) { h.S.Limits.Algorithm = alg })
			id, key := h.account("tiny")
			wantStatus(t, h.generate(key, 1), 200)
			wantStatus(t, h.do("PUT", fmt.Sprintf("/admin/accounts/%d/limits", id), adminToken, `{"hour":0,"day":0}`), 200)

			res := h.do("GET", "/v1/usage", key, "")
			wantStatus(t, res, 200)
			var u struct {
				Hour, Day struct{ Limit, Remaining *int64 }
			}
			if err := json.Unmarshal(res.Body, &u); err != nil {
				t.Fatal(err)
			}
			zero := int64(0)
			want := struct{ Limit, Remaining *int64 }{&zero, &zero}
			if diff := cmp.Diff(want, u.Hour); diff != "" {
				t.Errorf("usage hour (-want +got):\n%s\n%s", diff, res.Body)
			}
			// More than the limit can ever hold: 400 (CONTRACT §5), not 500.
			wantStatus(t, h.generate(key, 1), 400)
			wantStatus(t, h.do("GET", fmt.Sprintf("/admin/accounts/%d", id), adminToken, ""), 200)
		})
	}
}
