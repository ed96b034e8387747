package client

import (
	"context"
	"testing"
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
