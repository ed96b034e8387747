package http_test

import (
	"testing"

	"github.com/sluicehq/sluice/quota"
)

// The auth endpoints' limits and the plan quotas fail by policies of their
// own: here the store is down, plan quotas fail closed and auth limits open.
func TestFailurePolicyPerClass(t *testing.T) {
	h := newHarness(t, func(h *harness, l *quota.Limiter) {
		l.Store = failingStore{}
		h.S.AuthQuota = &quota.Limiter{Store: failingStore{}, OnError: quota.FailOpen, Now: h.Clock.Now}
	})
	_, key := h.account("vip")
	wantStatus(t, h.generate(key, 1), 503)
	wantStatus(t, h.do("POST", "/auth/register", "", `{"email":"open@example.com","password":"correcthorse"}`), 201)

	// Without an AuthQuota of its own, the auth endpoints share the plan
	// quotas' policy: closed.
	h = newHarness(t, func(h *harness, l *quota.Limiter) { l.Store = failingStore{} })
	wantStatus(t, h.do("POST", "/auth/register", "", `{"email":"closed@example.com","password":"correcthorse"}`), 503)
}
