package http_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	sluicehttp "github.com/sluicehq/sluice/http"
)

// TestLoginDelaysParallel: parallel attempts cannot race the failed-login
// delays. Of many wrong passwords sent at once, at most LoginFreeFailures
// are verified before the delays start, then one per delay period; the
// right password gets in at the first attempt after a delay. An unknown
// email is counted the same way.
func TestLoginDelaysParallel(t *testing.T) {
	const racers = 24
	for _, tc := range []struct {
		email string
		known bool
	}{{"ada@example.com", true}, {"nobody@example.com", false}} {
		t.Run(tc.email, func(t *testing.T) {
			h := newHarness(t, noAuthLimits)
			if tc.known {
				h.register(tc.email, "correct horse battery")
			}
			// burst sends racers wrong passwords at once and returns how
			// many were verified (401) and refused (429).
			burst := func() (verified, refused int) {
				t.Helper()
				var (
					wg       sync.WaitGroup
					mu       sync.Mutex
					statuses = map[int]int{}
				)
				for i := range racers {
					wg.Go(func() {
						res := h.from(fmt.Sprintf("198.51.100.%d:1", i+1), "POST", "/auth/login",
							fmt.Sprintf(`{"email":%q,"password":"wrong password"}`, tc.email), nil)
						mu.Lock()
						statuses[res.Status]++
						mu.Unlock()
					})
				}
				wg.Wait()
				if statuses[http.StatusUnauthorized]+statuses[http.StatusTooManyRequests] != racers {
					t.Fatalf("statuses %v, want only 401 and 429", statuses)
				}
				return statuses[http.StatusUnauthorized], statuses[http.StatusTooManyRequests]
			}
			// Steps, each a burst after the clock moved by advance.
			for i, step := range []struct {
				advance  time.Duration
				verified int
			}{
				{0, sluicehttp.LoginFreeFailures}, // the free failures, however many race
				{0, 0},                            // the first delay holds
				{time.Second, 0},
				{time.Second, 1}, // 2 s after the fifth failure: one attempt
				{0, 0},
				{3 * time.Second, 0},
				{time.Second, 1}, // 4 s after the sixth
				{8 * time.Second, 1},
			} {
				h.Clock.Add(step.advance)
				if got, _ := burst(); got != step.verified {
					t.Fatalf("step %d (+%v): %d of %d parallel wrong passwords verified, want %d",
						i, step.advance, got, racers, step.verified)
				}
			}
			if !tc.known {
				return
			}
			// Eight failures: the next attempt waits 16 s after the last.
			h.Clock.Add(15 * time.Second)
			res := h.from("192.0.2.1:1", "POST", "/auth/login", `{"email":"ada@example.com","password":"correct horse battery"}`, nil)
			wantStatus(t, res, http.StatusTooManyRequests)
			h.Clock.Add(time.Second)
			res = h.from("192.0.2.1:1", "POST", "/auth/login", `{"email":"ada@example.com","password":"correct horse battery"}`, nil)
			wantStatus(t, res, http.StatusOK)
			// The success cleared everything: the free failures are back.
			if got, _ := burst(); got != sluicehttp.LoginFreeFailures {
				t.Fatalf("after a success: %d of %d parallel wrong passwords verified, want %d", got, racers, sluicehttp.LoginFreeFailures)
			}
		})
	}
}
