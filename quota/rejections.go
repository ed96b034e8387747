package quota

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice"
)

// DefaultRejectionCacheSize is how many rejections a Limiter remembers.
const DefaultRejectionCacheSize = 10_000

// DefaultRejectionCacheTTL is the longest a rejection stays cached in a
// gateway that shares its store with others: the bound on how long a reset
// or refund made through another instance goes unseen when the
// invalidation bus lost its message, as cache.DefaultTTL is for accounts.
const DefaultRejectionCacheTTL = 500 * time.Millisecond

// rejections remembers recent rejections by the store: a request known to
// be rejected until some instant is rejected again locally until then (or
// for at most maxAge), without a round trip. Admissions are never cached,
// so a cache can only reject a request the store might have admitted
// (after a refund or a reset elsewhere), never admit one it would have
// rejected.
//
// Entries are keyed by the quota key, then by the policy's figures and n
// (the request): a rejection of 4 units says nothing about 1. forget drops
// a quota key's entries in one step. The cache is bounded: when it holds
// size entries, put evicts the one put longest ago, found in a FIFO of
// puts. Every operation is O(1) amortized: each put pushes one FIFO entry
// and an eviction pops until it finds a live one (stale ones, of entries
// since deleted or put again, are skipped); when the FIFO, popped and
// stale entries included, reaches twice the cache's size it is compacted to
// its live entries (at most size), which costs O(size) once per size puts
// at least.
type rejections struct {
	size   int           // <= 0: no cache
	maxAge time.Duration // 0: none

	mu   sync.Mutex
	gen  uint64                          // bumped by forget and clear
	m    map[string]map[string]rejection // quota key -> request -> rejection
	n    int                             // entries in m
	seq  uint64                          // numbers the puts
	fifo []queued                        // puts, oldest first from head
	head int
}

type rejection struct {
	d       sluice.Decision
	at      time.Time // local clock when the store's answer came
	until   time.Time // local clock from which the request may fit: answered from the cache only before
	retryAt time.Time // local clock from which it surely fits: what a cached answer tells
	seq     uint64    // the put that made it
}

// queued is a put in the FIFO; it is stale unless m[key][req].seq is seq.
type queued struct {
	key, req string
	seq      uint64
}

// requestKey names a request of a quota key: policy and n.
func requestKey(p *sluice.Policy, n int64) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(int(p.Algorithm)))
	if p.Location != nil {
		b.WriteString(p.Location.String())
	}
	for _, w := range p.Windows {
		b.WriteByte('|')
		b.WriteString(strconv.FormatInt(int64(w.Length), 36))
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(int64(w.Limit), 36))
	}
	b.WriteByte('#')
	b.WriteString(strconv.FormatInt(n, 10))
	return b.String()
}

// get returns the cached rejection of the request at local time now, its
// Time advanced and its RetryAfter recomputed from now. Without one, gen is
// what put needs to know whether a forget or clear happened meanwhile.
func (c *rejections) get(key, req string, now time.Time) (_ sluice.Decision, ok bool, gen uint64) {
	if c.size <= 0 {
		return sluice.Decision{}, false, 0
	}
	c.mu.Lock()
	gen = c.gen
	r, ok := c.m[key][req]
	if ok && (!now.Before(r.until) || c.maxAge > 0 && now.Sub(r.at) >= c.maxAge) {
		c.delete(key, req)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return sluice.Decision{}, false, gen
	}
	d := r.d
	elapsed := now.Sub(r.at)
	d.Time = d.Time.Add(elapsed)
	if d.RetryAfter != sluice.InfDuration {
		// The request fits from some instant between until and retryAt.
		// Where they round to different whole seconds, the second told
		// could be one too many (CONTRACT.md §2: a retry a second earlier
		// must be rejected): the store decides, as it does for the round
		// trip's share of each second.
		lo, hi := r.until.Sub(now), r.retryAt.Sub(now)
		if wholeSeconds(lo) != wholeSeconds(hi) {
			return sluice.Decision{}, false, gen
		}
		d.RetryAfter = hi
	}
	return d, true, gen
}

// wholeSeconds rounds a positive wait up to whole seconds, as
// Decision.RetryAfterSeconds does for retry_after.
func wholeSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// put remembers a rejection the store made during a call made at local
// time start and answered at received, unless a forget or clear happened
// since get returned gen (the store may have decided before the reset that
// the forget was for). The store decided at an unknown instant between
// the two, and counted its RetryAfter from there, so the request may fit
// from start + RetryAfter, and surely fits from received + RetryAfter. The
// cache answers only before the first (after it, the store decides: a
// cached rejection is never false) and tells the second (a retry at the
// time it gives succeeds: never early).
func (c *rejections) put(key, req string, d sluice.Decision, start, received time.Time, gen uint64) {
	if c.size <= 0 || d.Allowed || d.RetryAfter <= 0 {
		return
	}
	until, retryAt := start.Add(d.RetryAfter), received.Add(d.RetryAfter)
	if d.RetryAfter == sluice.InfDuration {
		until = received.Add(time.Minute) // n over a limit: until the policy may have changed
		retryAt = until
	}
	if !received.Before(until) {
		return // already stale
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if c.m == nil {
		c.m = make(map[string]map[string]rejection)
	}
	sub := c.m[key]
	if _, ok := sub[req]; !ok {
		for c.n >= c.size && c.evictOldest() {
		}
		if sub == nil {
			sub = make(map[string]rejection, 1)
			c.m[key] = sub
		}
		c.n++
	}
	c.seq++
	sub[req] = rejection{d: d, at: received, until: until, retryAt: retryAt, seq: c.seq}
	c.fifo = append(c.fifo, queued{key, req, c.seq})
	if len(c.fifo) > 2*c.size {
		c.compact()
	}
}

// evictOldest deletes the live entry put longest ago and reports whether
// there was one. c.mu must be held.
func (c *rejections) evictOldest() bool {
	for c.head < len(c.fifo) {
		q := c.fifo[c.head]
		c.fifo[c.head] = queued{} // let the strings go
		c.head++
		if r, ok := c.m[q.key][q.req]; ok && r.seq == q.seq {
			c.delete(q.key, q.req)
			return true
		}
	}
	return false
}

// compact drops the FIFO's consumed and stale entries. c.mu must be held.
func (c *rejections) compact() {
	live := make([]queued, 0, c.n+1)
	for _, q := range c.fifo[c.head:] {
		if r, ok := c.m[q.key][q.req]; ok && r.seq == q.seq {
			live = append(live, q)
		}
	}
	c.fifo, c.head = live, 0
}

// delete drops one entry. c.mu must be held.
func (c *rejections) delete(key, req string) {
	sub := c.m[key]
	if _, ok := sub[req]; !ok {
		return
	}
	delete(sub, req)
	c.n--
	if len(sub) == 0 {
		delete(c.m, key)
	}
}

// forget drops every cached rejection of key.
func (c *rejections) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.n -= len(c.m[key])
	delete(c.m, key)
}

// clear drops every cached rejection.
func (c *rejections) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.m, c.n, c.fifo, c.head = nil, 0, nil, 0
}
