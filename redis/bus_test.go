package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/redis"
)

// received collects what a bus delivers.
type received chan sluice.Invalidation

func subscribe(t *testing.T, b *redis.Bus) received {
	ch := make(received, 100)
	cancel := b.Subscribe(func(inv sluice.Invalidation) { ch <- inv })
	t.Cleanup(cancel)
	return ch
}

// next returns the next delivery, failing t after 5 s.
func (r received) next(t *testing.T, what string) sluice.Invalidation {
	t.Helper()
	select {
	case inv := <-r:
		return inv
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: nothing delivered within 5s", what)
		return sluice.Invalidation{}
	}
}

// none checks that nothing is delivered within a short while.
func (r received) none(t *testing.T, what string) {
	t.Helper()
	select {
	case inv := <-r:
		t.Fatalf("%s: delivered %+v, want nothing", what, inv)
	case <-time.After(200 * time.Millisecond):
	}
}

func openBus(t *testing.T, url, prefix string) *redis.Bus {
	t.Helper()
	b, err := redis.OpenBus(url, redis.BusOptions{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestBus: two buses on the machine's Redis (two instances): what one
// publishes reaches the other's subscribers, not its own; each subscriber
// first gets InvalidateAll, the subscription's start.
func TestBus(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) }) // first registered: runs last
	sharedClient(t)                                                    // skips without Redis
	url := "redis://" + testenv.RedisAddr(t)
	prefix := "sluicetest:" + testenv.Unique(t) + ":"
	a, b := openBus(t, url, prefix), openBus(t, url, prefix)
	other := openBus(t, url, prefix+"other:") // another prefix: another deployment
	ra, rb, ro := subscribe(t, a), subscribe(t, b), subscribe(t, other)
	all := sluice.Invalidation{Kind: sluice.InvalidateAll}
	for name, r := range map[string]received{"a": ra, "b": rb, "other": ro} {
		if got := r.next(t, name+" subscribes"); got != all {
			t.Fatalf("%s's first delivery %+v, want %+v", name, got, all)
		}
	}
	ctx := context.Background()
	steps := []struct {
		from, to *redis.Bus
		toR      received
		inv      sluice.Invalidation
	}{
		{a, b, rb, sluice.Invalidation{Kind: sluice.InvalidateQuota, ID: "{acct:42}"}},
		{a, b, rb, sluice.Invalidation{Kind: sluice.InvalidateAccount, ID: "42"}},
		{b, a, ra, sluice.Invalidation{Kind: sluice.InvalidateAPIKey, ID: "key with spaces"}},
	}
	for i, s := range steps {
		if err := s.from.Publish(ctx, s.inv); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if diff := cmp.Diff(s.inv, s.toR.next(t, "receiver")); diff != "" {
			t.Fatalf("step %d: received (-want +got):\n%s", i, diff)
		}
	}
	ra.none(t, "a, its own messages")
	rb.none(t, "b, its own messages")
	ro.none(t, "a bus under another prefix")
	if err := a.Publish(ctx, all); err == nil {
		t.Error("InvalidateAll was published")
	}
}

// TestBusResubscribes: a bus whose Redis dies and comes back subscribes
// again by itself and says so with InvalidateAll (what was published
// meanwhile is lost), then delivers again. A bus opened before its Redis
// is up subscribes once it is.
func TestBusResubscribes(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) }) // first registered: runs last
	srv := &server{t: t, bin: testenv.RedisServer(t), port: freePort(t), dir: t.TempDir()}
	url := "redis://" + srv.addr() + "?dial_timeout=200ms"
	a, b := openBus(t, url, "p:"), openBus(t, url, "p:")
	rb := subscribe(t, b)
	ctx := context.Background()
	if err := a.Publish(ctx, sluice.Invalidation{Kind: sluice.InvalidateQuota, ID: "k"}); err == nil {
		t.Fatal("published with Redis down")
	}
	all := sluice.Invalidation{Kind: sluice.InvalidateAll}
	publish := func(id string) {
		t.Helper()
		inv := sluice.Invalidation{Kind: sluice.InvalidateQuota, ID: id}
		// a may not be connected (or subscribed) yet: retry until b gets it.
		deadline := time.Now().Add(10 * time.Second)
		for {
			if err := a.Publish(ctx, inv); err == nil {
				select {
				case got := <-rb:
					if got == inv {
						return
					}
					if got != all {
						t.Fatalf("received %+v, want %+v", got, inv)
					}
				case <-time.After(200 * time.Millisecond):
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%+v not received within 10s", inv)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	srv.start()
	if got := rb.next(t, "subscribed once Redis is up"); got != all {
		t.Fatalf("first delivery %+v, want %+v", got, all)
	}
	publish("before")
	srv.stop()
	srv.start()
	defer srv.stop()
	if got := rb.next(t, "resubscribed"); got != all {
		t.Fatalf("after Redis restarted: %+v, want %+v", got, all)
	}
	publish("after")
}
