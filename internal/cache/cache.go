// Package cache keeps the accounts and API keys that requests look up on
// every call in memory, in front of a sluice.AccountService, so that the hot
// path of the gateway does not query the database.
//
// Freshness: a change made through the cache (a plan change, an override, a
// revoked key, a linked Telegram user, a new password) empties it before the
// call returns, so it applies on this instance's very next request, and is
// published on the Bus, if there is one: the other instances' caches that
// receive it (Invalidate) forget the entry at once. A change whose message
// is lost, or made elsewhere (straight in the database, an instance without
// a bus), is seen once the entry's TTL has passed: at most TTL late.
//
// Fills (the store's answer to a miss, shared by concurrent callers) run
// detached from any one caller's cancellation, but no longer than
// FillTimeout, so that a store that hangs cannot hang a fill, and every
// later lookup of that id waiting on it, for ever.
//
// The audit log is not the cache's business: the store writes the events
// of the changes that pass through, and reads of the log go to the store
// itself (cmd/sluice hands it over as the sluice.AuditLog), never through
// a copy that could be stale.
package cache

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/sluicehq/sluice"
)

// DefaultTTL bounds how long a change made by another instance goes unseen.
const DefaultTTL = 500 * time.Millisecond

// DefaultFillTimeout bounds one query of the store for a miss.
const DefaultFillTimeout = 5 * time.Second

// publishTimeout bounds the publication of a change on the Bus.
const publishTimeout = time.Second

// maxEntries bounds the memory of each map; a full map is emptied.
const maxEntries = 100_000

// Accounts is a sluice.AccountService that caches FindAPIKey and
// FindAccountByID. It is safe for concurrent use.
type Accounts struct {
	sluice.AccountService // every method not below passes through

	// Now returns the current time; New sets time.Now. Set it before use.
	Now func() time.Time
	// FillTimeout bounds each query of the store for a miss; New sets
	// DefaultFillTimeout. Set it before use.
	FillTimeout time.Duration
	// Bus, if set before use, carries the changes made through this cache
	// to the other instances; Invalidate applies theirs.
	Bus sluice.InvalidationBus
	// Logger reports failed publications; nil means slog.Default().
	Logger *slog.Logger

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
	return &Accounts{AccountService: s, ttl: ttl, Now: time.Now, FillTimeout: DefaultFillTimeout,
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
		// The call outlives a caller that gives up (others may wait on
		// it), but not a store that hangs.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.FillTimeout)
		defer cancel()
		v, err := find(fctx, id)
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

// changed empties the cache after a write through it, and publishes inv
// if the write succeeded (a failed one may still have been applied: the
// cache is emptied anyway). A failed publication is logged: the others see
// the change within their TTL.
func (c *Accounts) changed(ctx context.Context, err error, inv sluice.Invalidation) error {
	c.invalidate()
	if err == nil && c.Bus != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
		defer cancel()
		if perr := c.Bus.Publish(ctx, inv); perr != nil {
			log := c.Logger
			if log == nil {
				log = slog.Default()
			}
			log.LogAttrs(ctx, slog.LevelWarn, "cache: publishing an invalidation failed; other instances see the change within their TTL",
				slog.String("kind", inv.Kind.String()), slog.String("id", inv.ID), slog.String("error", perr.Error()))
		}
	}
	return err
}

func account(id int64) sluice.Invalidation {
	return sluice.Invalidation{Kind: sluice.InvalidateAccount, ID: strconv.FormatInt(id, 10)}
}

// SetPlan passes through, empties the cache and publishes the change.
func (c *Accounts) SetPlan(ctx context.Context, id int64, plan string) error {
	return c.changed(ctx, c.AccountService.SetPlan(ctx, id, plan), account(id))
}

// SetOverride passes through, empties the cache and publishes the change.
func (c *Accounts) SetOverride(ctx context.Context, id int64, o *sluice.LimitOverride) error {
	return c.changed(ctx, c.AccountService.SetOverride(ctx, id, o), account(id))
}

// SetPassword passes through, empties the cache and publishes the change.
func (c *Accounts) SetPassword(ctx context.Context, id int64, hash string) error {
	return c.changed(ctx, c.AccountService.SetPassword(ctx, id, hash), account(id))
}

// LinkTelegram passes through, empties the cache and publishes the change.
func (c *Accounts) LinkTelegram(ctx context.Context, id, telegramID int64) error {
	return c.changed(ctx, c.AccountService.LinkTelegram(ctx, id, telegramID), account(id))
}

// SetTelegramModel passes through, empties the cache and publishes the
// change.
func (c *Accounts) SetTelegramModel(ctx context.Context, id int64, model string) error {
	return c.changed(ctx, c.AccountService.SetTelegramModel(ctx, id, model), account(id))
}

// SetMailAlerts passes through, empties the cache and publishes the change.
func (c *Accounts) SetMailAlerts(ctx context.Context, id int64, on bool) error {
	return c.changed(ctx, c.AccountService.SetMailAlerts(ctx, id, on), account(id))
}

// RevokeAPIKey passes through, empties the cache and publishes the change:
// the key fails on its next use, here and on every instance that receives
// it.
func (c *Accounts) RevokeAPIKey(ctx context.Context, accountID int64, id string, now time.Time) error {
	return c.changed(ctx, c.AccountService.RevokeAPIKey(ctx, accountID, id, now),
		sluice.Invalidation{Kind: sluice.InvalidateAPIKey, ID: id})
}

// Invalidate applies an invalidation received from another instance: it
// forgets the account or API key it names, or everything for InvalidateAll
// (or an id it cannot read); InvalidateQuota is not the cache's. A fill
// in flight when it arrives is not stored. It does not block.
func (c *Accounts) Invalidate(inv sluice.Invalidation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch inv.Kind {
	case sluice.InvalidateQuota:
		return
	case sluice.InvalidateAccount:
		if id, err := strconv.ParseInt(inv.ID, 10, 64); err == nil {
			delete(c.accts, id)
			c.gen++
			return
		}
	case sluice.InvalidateAPIKey:
		delete(c.keys, inv.ID)
		c.gen++
		return
	}
	c.gen++
	clear(c.keys)
	clear(c.accts)
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
