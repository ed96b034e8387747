// Package cache keeps the accounts and API keys that requests look up on
// every call in memory, in front of a sluice.AccountService, so that the hot
// path of the gateway does not query the database.
//
// Freshness: a change made through the cache (a plan change, an override, a
// revoked key, a linked Telegram user, a new password) empties it before the
// call returns, so it applies on this instance's very next request. A change
// made elsewhere (another gateway instance on the same database) is seen
// once the entry's TTL has passed: at most TTL late.
package cache

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/sluicehq/sluice"
)

// DefaultTTL bounds how long a change made by another instance goes unseen.
const DefaultTTL = 500 * time.Millisecond

// maxEntries bounds the memory of each map; a full map is emptied.
const maxEntries = 100_000

// Accounts is a sluice.AccountService that caches FindAPIKey and
// FindAccountByID. It is safe for concurrent use.
type Accounts struct {
	sluice.AccountService // every method not below passes through

	// Now returns the current time; New sets time.Now. Set it before use.
	Now func() time.Time

	ttl time.Duration

	flight singleflight.Group // concurrent misses, by type and id

	mu    sync.Mutex
	gen   uint64 // bumped by every invalidation; guarded by mu
	keys  map[string]entry[sluice.APIKey]
	accts map[int64]entry[sluice.Account]
}

var (
	_ sluice.AccountService  = (*Accounts)(nil)
	_ sluice.AccountSearcher = (*Accounts)(nil)
	_ sluice.SessionEnder    = (*Accounts)(nil)
)

type entry[T any] struct {
	v       T
	expires time.Time
}

// New returns a cache in front of s whose entries live for ttl (0 means
// DefaultTTL).
func New(s sluice.AccountService, ttl time.Duration) *Accounts {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return &Accounts{AccountService: s, ttl: ttl, Now: time.Now,
		keys: make(map[string]entry[sluice.APIKey]), accts: make(map[int64]entry[sluice.Account])}
}

// FindAPIKey returns the key, from memory if it was looked up less than TTL
// ago. The caller may modify the result.
func (c *Accounts) FindAPIKey(ctx context.Context, id string) (*sluice.APIKey, error) {
	return lookup(c, c.keys, id, c.AccountService.FindAPIKey, ctx, func(k *sluice.APIKey) sluice.APIKey {
		v := *k
		v.Hash = append([]byte(nil), k.Hash...)
		return v
	})
}

// FindAccountByID returns the account, from memory if it was looked up less
// than TTL ago. The caller may modify the result.
func (c *Accounts) FindAccountByID(ctx context.Context, id int64) (*sluice.Account, error) {
	return lookup(c, c.accts, id, c.AccountService.FindAccountByID, ctx, func(a *sluice.Account) sluice.Account {
		v := *a
		if a.Override != nil {
			o := *a.Override
			v.Override = &o
		}
		return v
	})
}

// lookup serves id from m while fresh, else from find, storing the answer
// unless an invalidation happened while find ran (which may have returned
// what the invalidating write changed). Concurrent misses of one id share
// one call of find, so that an entry expiring under load costs the store one
// query, not one per waiting request. Errors are not cached. clone makes the
// copies that keep the cached value apart from what callers hold.
func lookup[K comparable, T any](c *Accounts, m map[K]entry[T], id K,
	find func(context.Context, K) (*T, error), ctx context.Context, clone func(*T) T) (*T, error) {
	now := c.Now()
	c.mu.Lock()
	e, ok := m[id]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		v := clone(&e.v)
		return &v, nil
	}
	fill := func() (any, error) {
		c.mu.Lock()
		gen := c.gen
		c.mu.Unlock()
		// The call outlives a caller that gives up: others may wait on it.
		v, err := find(context.WithoutCancel(ctx), id)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.gen == gen {
			if len(m) >= maxEntries {
				clear(m)
			}
			m[id] = entry[T]{v: clone(v), expires: now.Add(c.ttl)}
		}
		c.mu.Unlock()
		return v, nil
	}
	select {
	case res := <-c.flight.DoChan(fmt.Sprintf("%T/%v", id, id), fill):
		if res.Err != nil {
			return nil, res.Err
		}
		v := clone(res.Val.(*T))
		return &v, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// invalidate forgets everything: writes are rare, and a coarse rule is one
// that cannot miss a case.
func (c *Accounts) invalidate() {
	c.mu.Lock()
	c.gen++
	clear(c.keys)
	clear(c.accts)
	c.mu.Unlock()
}

// SetPlan passes through and empties the cache.
func (c *Accounts) SetPlan(ctx context.Context, id int64, plan string) error {
	defer c.invalidate()
	return c.AccountService.SetPlan(ctx, id, plan)
}

// SetOverride passes through and empties the cache.
func (c *Accounts) SetOverride(ctx context.Context, id int64, o *sluice.LimitOverride) error {
	defer c.invalidate()
	return c.AccountService.SetOverride(ctx, id, o)
}

// SetPassword passes through and empties the cache.
func (c *Accounts) SetPassword(ctx context.Context, id int64, hash string) error {
	defer c.invalidate()
	return c.AccountService.SetPassword(ctx, id, hash)
}

// LinkTelegram passes through and empties the cache.
func (c *Accounts) LinkTelegram(ctx context.Context, id, telegramID int64) error {
	defer c.invalidate()
	return c.AccountService.LinkTelegram(ctx, id, telegramID)
}

// RevokeAPIKey passes through and empties the cache: the key fails on its
// next use.
func (c *Accounts) RevokeAPIKey(ctx context.Context, accountID int64, id string, now time.Time) error {
	defer c.invalidate()
	return c.AccountService.RevokeAPIKey(ctx, accountID, id, now)
}

// TouchAPIKey passes through and forgets that one key, so that its
// LastUsedAt reads back.
func (c *Accounts) TouchAPIKey(ctx context.Context, id string, t time.Time) error {
	err := c.AccountService.TouchAPIKey(ctx, id, t)
	c.mu.Lock()
	c.gen++
	delete(c.keys, id)
	c.mu.Unlock()
	return err
}

// SearchAccounts passes the search to the store, uncached: it is for the
// operator's pages, not the request path. A store that cannot search
// answers an internal error.
func (c *Accounts) SearchAccounts(ctx context.Context, q sluice.AccountQuery) ([]*sluice.Account, error) {
	s, ok := c.AccountService.(sluice.AccountSearcher)
	if !ok {
		return nil, fmt.Errorf("search accounts: the account store cannot search")
	}
	return s.SearchAccounts(ctx, q)
}

// DeleteSession passes through: sessions are not cached.
func (c *Accounts) DeleteSession(ctx context.Context, tokenHash []byte) error {
	s, ok := c.AccountService.(sluice.SessionEnder)
	if !ok {
		return fmt.Errorf("delete session: the account store cannot end one session")
	}
	return s.DeleteSession(ctx, tokenHash)
}
