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

// rejections remembers recent rejections by the store: a request known to
// be rejected until some instant is rejected again locally until then,
// without a round trip. Admissions are never cached, so a cache can only
// reject a request the store might have admitted (after a refund or a
// reset elsewhere), never admit one it would have rejected.
//
// Entries are keyed by the quota key, the policy's figures and n: a
// rejection of 4 units says nothing about 1. The map is bounded: when it is
// full, expired entries are dropped, then arbitrary ones.
type rejections struct {
	size int // <= 0: no cache

	mu sync.Mutex
	m  map[string]rejection
}

type rejection struct {
	d     sluice.Decision
	at    time.Time // local clock when the store decided
	until time.Time // local clock from which the request may fit
}

// cacheKey names a request: key, policy and n.
func cacheKey(key string, p *sluice.Policy, n int64) string {
	var b strings.Builder
	b.WriteString(key)
	b.WriteByte(0)
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
// Time advanced and its RetryAfter recomputed from now.
func (c *rejections) get(k string, now time.Time) (sluice.Decision, bool) {
	if c.size <= 0 {
		return sluice.Decision{}, false
	}
	c.mu.Lock()
	r, ok := c.m[k]
	if ok && !now.Before(r.until) {
		delete(c.m, k)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return sluice.Decision{}, false
	}
	d := r.d
	elapsed := now.Sub(r.at)
	d.Time = d.Time.Add(elapsed)
	if d.RetryAfter != sluice.InfDuration {
		d.RetryAfter = r.until.Sub(now)
	}
	return d, true
}

// put remembers a rejection the store made, received at local time now.
func (c *rejections) put(k string, d sluice.Decision, now time.Time) {
	if c.size <= 0 || d.Allowed || d.RetryAfter <= 0 {
		return
	}
	until := now.Add(d.RetryAfter)
	if d.RetryAfter == sluice.InfDuration {
		until = now.Add(time.Minute) // n over a limit: until the policy may have changed
	}
	size := c.size
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]rejection)
	}
	if len(c.m) >= size {
		for k, r := range c.m {
			if !now.Before(r.until) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < size {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[k] = rejection{d: d, at: now, until: until}
}

// forget drops every cached rejection of key.
func (c *rejections) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if strings.HasPrefix(k, key+"\x00") {
			delete(c.m, k)
		}
	}
}
