package cache_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/cache"
	"github.com/sluicehq/sluice/internal/storetest"
	"github.com/sluicehq/sluice/sqlite"
)

func open(t *testing.T) *sqlite.DB {
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "sluice.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// The cache is an AccountService like any other.
func TestConformance(t *testing.T) {
	storetest.RunAccountService(t, func(t *testing.T) sluice.AccountService {
		return cache.New(open(t), time.Hour)
	})
}

// counting counts the lookups that reach the store.
type counting struct {
	sluice.AccountService
	keys, accts atomic.Int64
}

func (c *counting) FindAPIKey(ctx context.Context, id string) (*sluice.APIKey, error) {
	c.keys.Add(1)
	return c.AccountService.FindAPIKey(ctx, id)
}

func (c *counting) FindAccountByID(ctx context.Context, id int64) (*sluice.Account, error) {
	c.accts.Add(1)
	return c.AccountService.FindAccountByID(ctx, id)
}

func TestCaching(t *testing.T) {
	ctx := context.Background()
	store := &counting{AccountService: open(t)}
	c := cache.New(store, time.Hour)
	a := &sluice.Account{Email: "a@example.com", Plan: "vip"}
	if err := c.CreateAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	_, id, hash := sluice.NewAPIKey()
	if err := c.CreateAPIKey(ctx, &sluice.APIKey{ID: id, AccountID: a.ID, Name: "k", Hash: hash}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		k, err := c.FindAPIKey(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		k.Hash[0] ^= 0xff // a caller's change stays its own
		got, err := c.FindAccountByID(ctx, a.ID)
		if err != nil || got.Plan != "vip" {
			t.Fatalf("account %+v, %v", got, err)
		}
		got.Plan = "mangled"
	}
	if k, a := store.keys.Load(), store.accts.Load(); k != 1 || a != 1 {
		t.Fatalf("store saw %d key and %d account lookups, want 1 and 1", k, a)
	}
	if k, _ := c.FindAPIKey(ctx, id); string(k.Hash) != string(hash) {
		t.Fatal("a caller's change reached the cache")
	}

	// Writes through the cache apply at once.
	if err := c.SetPlan(ctx, a.ID, "pro"); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.FindAccountByID(ctx, a.ID); got.Plan != "pro" {
		t.Fatalf("plan %q after SetPlan, want pro", got.Plan)
	}
	if err := c.SetOverride(ctx, a.ID, &sluice.LimitOverride{Hour: 1, Day: sluice.Unlimited}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.FindAccountByID(ctx, a.ID); got.Override == nil || got.Override.Hour != 1 {
		t.Fatalf("override %+v after SetOverride", got.Override)
	}
	if err := c.RevokeAPIKey(ctx, a.ID, id, time.Now()); err != nil {
		t.Fatal(err)
	}
	if k, _ := c.FindAPIKey(ctx, id); k.RevokedAt.IsZero() {
		t.Fatal("a revoked key reads back live")
	}

	// Misses are not cached.
	before := store.keys.Load()
	for range 3 {
		if _, err := c.FindAPIKey(ctx, "nosuchkey000"); sluice.ErrorCode(err) != sluice.ENOTFOUND {
			t.Fatalf("unknown key: %v", err)
		}
	}
	if n := store.keys.Load() - before; n != 3 {
		t.Fatalf("%d lookups of an unknown key reached the store, want 3", n)
	}
}

// A change made behind the cache's back (another instance) shows after the
// TTL.
func TestTTL(t *testing.T) {
	ctx := context.Background()
	db := open(t)
	c := cache.New(db, time.Second)
	now := time.Now()
	c.Now = func() time.Time { return now }
	a := &sluice.Account{Email: "b@example.com", Plan: "vip"}
	db.CreateAccount(ctx, a)
	c.FindAccountByID(ctx, a.ID)
	db.SetPlan(ctx, a.ID, "basic")
	if got, _ := c.FindAccountByID(ctx, a.ID); got.Plan != "vip" {
		t.Fatalf("plan %q within the TTL, want the cached vip", got.Plan)
	}
	now = now.Add(time.Second)
	if got, _ := c.FindAccountByID(ctx, a.ID); got.Plan != "basic" {
		t.Fatalf("plan %q after the TTL, want basic", got.Plan)
	}
}

// slow holds every FindAccountByID until released, counting the calls.
type slow struct {
	sluice.AccountService
	calls   atomic.Int64
	release chan struct{}
}

func (s *slow) FindAccountByID(ctx context.Context, id int64) (*sluice.Account, error) {
	s.calls.Add(1)
	<-s.release
	return s.AccountService.FindAccountByID(ctx, id)
}

// Concurrent misses of one account share one lookup.
func TestSharedMiss(t *testing.T) {
	ctx := context.Background()
	db := open(t)
	a := &sluice.Account{Email: "c@example.com", Plan: "vip"}
	db.CreateAccount(ctx, a)
	store := &slow{AccountService: db, release: make(chan struct{})}
	c := cache.New(store, time.Hour)
	done := make(chan error)
	for range 20 {
		go func() {
			got, err := c.FindAccountByID(ctx, a.ID)
			if err == nil && got.Plan != "vip" {
				err = fmt.Errorf("plan %q", got.Plan)
			}
			done <- err
		}()
	}
	for store.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond) // let the others queue behind the first
	close(store.release)
	for range 20 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := store.calls.Load(); n != 1 {
		t.Fatalf("%d lookups reached the store, want 1", n)
	}
}

// hanging is a store whose account lookups hang until their context ends
// while hang is set.
type hanging struct {
	sluice.AccountService
	hang atomic.Bool
}

func (h *hanging) FindAccountByID(ctx context.Context, id int64) (*sluice.Account, error) {
	if h.hang.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return h.AccountService.FindAccountByID(ctx, id)
}

// TestFillTimeout: a fill whose store hangs ends after FillTimeout, so that
// once the store is back the next lookup of the id gets an answer instead
// of waiting on the hung fill.
func TestFillTimeout(t *testing.T) {
	db := open(t)
	a := &sluice.Account{Email: "h@example.com", Plan: "vip"}
	db.CreateAccount(context.Background(), a)
	store := &hanging{AccountService: db}
	c := cache.New(store, time.Hour)
	c.FillTimeout = 50 * time.Millisecond
	store.hang.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	if _, err := c.FindAccountByID(ctx, a.ID); err == nil {
		t.Fatal("a lookup answered while the store hangs")
	}
	cancel()
	store.hang.Store(false)
	// The hung fill ends within FillTimeout; poll with callers that give
	// up after a while, as requests do.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		got, err := c.FindAccountByID(ctx, a.ID)
		cancel()
		if err == nil && got.Plan == "vip" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookups still fail 5s after the store came back (FillTimeout 50ms): %v", err)
		}
	}
}

// bus records what is published.
type bus struct {
	mu  sync.Mutex
	got []sluice.Invalidation
}

func (b *bus) Publish(ctx context.Context, inv sluice.Invalidation) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got = append(b.got, inv)
	return nil
}

func (b *bus) Subscribe(fn func(sluice.Invalidation)) func() { return func() {} }

// TestInvalidation: two caches (two instances) on one database. A change
// through one is published, and the other, on receiving it, forgets the
// entry at once, long before its TTL.
func TestInvalidation(t *testing.T) {
	ctx := context.Background()
	db := open(t)
	store := &counting{AccountService: db}
	var pub bus
	a, b := cache.New(db, time.Hour), cache.New(store, time.Hour)
	a.Bus = &pub
	acct := &sluice.Account{Email: "i@example.com", Plan: "starter"}
	db.CreateAccount(ctx, acct)
	key := &sluice.APIKey{ID: "k1", AccountID: acct.ID, Hash: []byte("h"), Name: "n", CreatedAt: time.Now()}
	if err := db.CreateAPIKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	id := strconv.FormatInt(acct.ID, 10)
	steps := []struct {
		name    string
		do      func()
		plan    string // b's answer
		revoked bool
		queries int64 // lookups that reached b's store
	}{
		{"first lookups", func() {}, "starter", false, 2},
		{"cached", func() {}, "starter", false, 0},
		{"plan changed through a, not received", func() { a.SetPlan(ctx, acct.ID, "vip") }, "starter", false, 0},
		{"received", func() { b.Invalidate(sluice.Invalidation{Kind: sluice.InvalidateAccount, ID: id}) }, "vip", false, 1},
		{"revoked through a, received", func() {
			a.RevokeAPIKey(ctx, acct.ID, "k1", time.Now())
			b.Invalidate(sluice.Invalidation{Kind: sluice.InvalidateAPIKey, ID: "k1"})
		}, "vip", true, 1},
		{"a quota key's message", func() { b.Invalidate(sluice.Invalidation{Kind: sluice.InvalidateQuota, ID: id}) }, "vip", true, 0},
		{"resubscribed: all", func() { b.Invalidate(sluice.Invalidation{Kind: sluice.InvalidateAll}) }, "vip", true, 2},
		{"an id it cannot read: all", func() { b.Invalidate(sluice.Invalidation{Kind: sluice.InvalidateAccount, ID: "x"}) }, "vip", true, 2},
	}
	for _, s := range steps {
		s.do()
		before := store.keys.Load() + store.accts.Load()
		k, err := b.FindAPIKey(ctx, "k1")
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got, err := b.FindAccountByID(ctx, acct.ID)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		queries := store.keys.Load() + store.accts.Load() - before
		if got.Plan != s.plan || (!k.RevokedAt.IsZero()) != s.revoked || queries != s.queries {
			t.Fatalf("%s: plan %q, revoked %v, %d queries; want %q, %v, %d", s.name, got.Plan, !k.RevokedAt.IsZero(), queries, s.plan, s.revoked, s.queries)
		}
	}
	want := []sluice.Invalidation{{Kind: sluice.InvalidateAccount, ID: id}, {Kind: sluice.InvalidateAPIKey, ID: "k1"}}
	if diff := cmp.Diff(want, pub.got); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
}
