package client

import (
	"context"
	"testing"
	"time"
)

// Test409InProgress: a 409 idempotency_in_progress (the first attempt of
// the request is still being served) is retried after its Retry-After with
// the same Idempotency-Key and body, and the replayed 200 is the answer.
func Test409InProgress(t *testing.T) {
	f := newFake(t,
		answer(409, `{"error":"idempotency_in_progress","message":"A request with this Idempotency-Key is still being served; retry in a second."}`, "Retry-After", "1"),
		answer(200, okImages, "Idempotent-Replayed", "true"))
	c := newClient(f)
	if _, err := c.GenerateImages(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	rs := f.requests()
	if len(rs) != 2 {
		t.Fatalf("%d requests, want 2", len(rs))
	}
	if rs[0].key == "" || rs[0].key != rs[1].key || rs[0].body != rs[1].body {
		t.Fatalf("the retry is not the same request: %+v", rs)
	}
	if wait := rs[1].at.Sub(rs[0].at); wait < 1e9 {
		t.Fatalf("retried after %v, before the Retry-After of 1s", wait)
	}
}

// Test422KeyReused: a 422 idempotency_key_reused is final, not retried.
func Test422KeyReused(t *testing.T) {
	f := newFake(t, answer(422, `{"error":"idempotency_key_reused","message":"This Idempotency-Key was used with a different request; use a new key for a new request."}`))
	_, err := newClient(f).GenerateImages(context.Background(), req)
	if e, ok := err.(*Error); !ok || e.Status != 422 || e.Code != "idempotency_key_reused" {
		t.Fatalf("err = %v, want the 422", err)
	}
	if n := len(f.requests()); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

// TestWithIdempotencyKey: a key chosen by the caller is sent on every
// attempt of the call, and only under its context.
func TestWithIdempotencyKey(t *testing.T) {
	f := newFake(t, answer(503, `{"error":"quota_unavailable","message":"x"}`), ok())
	c := newClient(f)
	ctx := WithIdempotencyKey(context.Background(), "order-4711")
	if _, err := c.GenerateImages(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GenerateImages(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	rs := f.requests()
	if len(rs) != 3 || rs[0].key != "order-4711" || rs[1].key != "order-4711" || rs[2].key == "order-4711" || rs[2].key == "" {
		t.Fatalf("keys %q %q %q, want order-4711 twice, then one of the client's", rs[0].key, rs[1].key, rs[2].key)
	}
}

const inProgress = `{"error":"idempotency_in_progress","message":"A request with this Idempotency-Key is still being served; retry in a second."}`

// Test409OutsideRetryBudget: a gateway died serving the first attempt; the
// retries get 409 until its claim lapses, and more of them than the retry
// budget are sent, all with the first attempt's key, until the answer.
func Test409OutsideRetryBudget(t *testing.T) {
	f := newFake(t,
		answer(503, `{"error":"upstream_error","message":"x"}`), // the dying gateway
		answer(409, inProgress, "Retry-After", "1"),
		answer(409, inProgress, "Retry-After", "1"),
		ok())
	c := newClient(f, WithMaxRetries(1))
	if _, err := c.GenerateImages(context.Background(), req); err != nil {
		t.Fatalf("with 1 retry and two 409s: %v", err)
	}
	rs := f.requests()
	if len(rs) != 4 {
		t.Fatalf("%d requests, want 4", len(rs))
	}
	for _, r := range rs[1:] {
		if r.key != rs[0].key {
			t.Fatalf("keys %q, want the first attempt's on every retry", []string{rs[0].key, rs[1].key, rs[2].key, rs[3].key})
		}
	}
}

// Test409Bounded: 409s are retried for WithMaxInProgress in all, then the
// 409 is the answer; WithMaxRetries(0) retries none.
func Test409Bounded(t *testing.T) {
	f := newFake(t, answer(409, inProgress, "Retry-After", "1"))
	start := time.Now()
	_, err := newClient(f, WithMaxInProgress(2500*time.Millisecond)).GenerateImages(context.Background(), req)
	if e, ok := err.(*Error); !ok || e.Status != 409 {
		t.Fatalf("err = %v, want the 409", err)
	}
	// Two retries fit in 2.5 s at a second (and a jitter under 0.1 s)
	// each; a third would end past it.
	if n := len(f.requests()); n != 3 {
		t.Errorf("%d requests in %v, want 3", n, time.Since(start).Round(time.Millisecond))
	}

	f = newFake(t, answer(409, inProgress, "Retry-After", "1"))
	if _, err := newClient(f, WithMaxRetries(0)).GenerateImages(context.Background(), req); err == nil {
		t.Fatal("WithMaxRetries(0): no error")
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("WithMaxRetries(0): %d requests, want 1", n)
	}
}
