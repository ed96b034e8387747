// Package inmem is sluice's in-process quota store: counters in sharded maps
// guarded by mutexes, idle keys evicted, and (optionally) persisted to a
// SQLite file in the data directory so that a restart loses nothing.
package inmem

import (
	"context"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/quota"
)

// numShards spreads keys over this many independently locked maps, so that
// cores deciding different keys rarely wait for one another. A power of two.
const numShards = 256

// DefaultSweepInterval is how often idle keys are evicted.
const DefaultSweepInterval = 10 * time.Second

// Store is an in-memory sluice.QuotaStore. It is safe for concurrent use.
// Close stops its background work (and, when persistent, flushes it).
//
// The state of each key is the quota package's []uint64 per window, which
// stays compact (two words per sliding window holding one second's charges),
// kept in its slot of the shard's table (table.go) when it fits there.
// A key is forgotten once nothing it holds counts any more (quota.Expiry), so
// memory is bounded by the keys active within the longest window, not by the
// keys ever seen.
type Store struct {
	seed   maphash.Seed
	shards [numShards]shard
	arena  arena // the shards' slots
	logger *slog.Logger

	p *persister // nil: not persistent

	wall func() time.Time // the background sweep's clock
	sw   sweeper          // owned by the background sweep (tests: SweepTick)

	stop chan struct{}
	done sync.WaitGroup
	once sync.Once
}

var (
	_ sluice.QuotaStore  = (*Store)(nil)
	_ sluice.QuotaSyncer = (*Store)(nil)
)

type shard struct {
	mu    sync.Mutex
	t     table
	dirty []string // keys changed since the last flush; guarded by mu
	// now is the latest Unix second a call on this shard decided at; the
	// background sweep evicts by it, so that eviction follows the callers'
	// clock (which tests set) rather than the wall clock. Guarded by mu.
	now int64
	// calls counts the calls on this shard, so that the sweep can tell an
	// idle store from a busy one. Guarded by mu.
	calls uint64
	_     [64]byte // keeps neighbouring shards' locks off one cache line
}

// Options configure a Store.
type Options struct {
	// SweepInterval is how often idle keys are evicted; 0 means
	// DefaultSweepInterval.
	SweepInterval time.Duration
	Logger        *slog.Logger
	// Now is the wall clock the background sweep reads to age the
	// callers' time while no call comes in; nil means time.Now.
	Now func() time.Time
}

// New returns a store that keeps its counters in memory only.
func New(opts Options) *Store { return newStore(opts, nil) }

// newStore returns a store persisted by p (nil: in memory only), whose
// background sweep sees p from its start.
func newStore(opts Options, p *persister) *Store {
	s := &Store{seed: maphash.MakeSeed(), logger: opts.Logger, p: p, wall: opts.Now, stop: make(chan struct{})}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	if s.wall == nil {
		s.wall = time.Now
	}
	for i := range s.shards {
		s.shards[i].t.arena = &s.arena
	}
	every := opts.SweepInterval
	if every <= 0 {
		every = DefaultSweepInterval
	}
	s.done.Add(1)
	go s.loop(every, func() { s.sweepTick(s.wall()) })
	return s
}

// Close stops the store's background work; a persistent store writes its
// last changes first. The store must not be used after Close.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		s.done.Wait()
		if s.p != nil {
			err = s.p.close(s)
		}
	})
	return err
}

func (s *Store) loop(every time.Duration, f func()) {
	defer s.done.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			f()
		}
	}
}

// shard returns the shard of key and the key's hash in its table.
func (s *Store) shard(key string) (*shard, uint64) {
	h := maphash.String(s.seed, key)
	return &s.shards[h&(numShards-1)], h
}

// Take implements sluice.QuotaStore. It allocates only when a key is new or
// its state outgrows its capacity.
func (s *Store) Take(ctx context.Context, key string, p *sluice.Policy, n int64, now time.Time) (d sluice.Decision, err error) {
	if n < 0 {
		return sluice.Decision{}, sluice.FieldError("n", "The number of units must not be negative.")
	}
	sh, h := s.shard(key)
	sh.mu.Lock()
	sh.seen(now)
	ks := sh.t.find(h, key)
	if ks == nil {
		ks = sh.t.insert(h, key)
		ks.alg, ks.nwin = p.Algorithm, uint8(len(p.Windows))
	} else if ks.alg != p.Algorithm || int(ks.nwin) != len(p.Windows) {
		// A state kept under another algorithm or number of windows
		// starts afresh.
		sh.t.reset(ks, p.Algorithm, len(p.Windows))
	}
	var arr [sluice.MaxWindows][]uint64
	st := sh.t.state(ks, &arr)
	quota.TakeTo(&d, p, st, n, now)
	sh.t.keep(ks, st)
	ks.expires = clampExpiry(quota.Expiry(p, st))
	charged := d.Allowed && n > 0
	if charged {
		s.markDirty(sh, ks, key)
	}
	sh.mu.Unlock()
	if charged && s.p != nil && s.p.sync {
		if err := s.p.writeKey(s, key); err != nil {
			s.undo(key, p, n, d.Time, now)
			return sluice.Decision{}, err
		}
	}
	return d, nil
}

// undo takes back a charge of n units made at `at` whose synchronous write
// failed, so that a request answered with an error is not charged: the
// units leave memory, and the key is written again, best effort, in case a
// later write of the same key carried the charge to disk. If that write
// fails too, the disk keeps more than memory, which is the safe side: a
// crash then restores the charge rather than forgetting others.
func (s *Store) undo(key string, p *sluice.Policy, n int64, at, now time.Time) {
	sh, h := s.shard(key)
	sh.mu.Lock()
	ks := sh.t.find(h, key)
	if ks == nil || ks.alg != p.Algorithm || int(ks.nwin) != len(p.Windows) {
		sh.mu.Unlock()
		return
	}
	sh.refund(ks, p, n, at, now)
	sh.mu.Unlock()
	if err := s.p.writeKey(s, key); err != nil {
		s.logger.Warn("quota state: rewrite after a failed write", slog.String("error", err.Error()))
	}
}

// Synchronous reports whether the store writes every charge and refund to
// disk before answering (a persistent store whose flush interval is 0).
func (s *Store) Synchronous() bool { return s.p != nil && s.p.sync }

// markDirty lists key for the next flush of a store that flushes
// periodically. The caller holds sh.mu.
func (s *Store) markDirty(sh *shard, ks *slot, key string) {
	if s.p != nil && !s.p.sync && ks.flags&flagDirty == 0 {
		ks.flags |= flagDirty
		sh.dirty = append(sh.dirty, key)
	}
}

// refund gives back n units charged at `at` in the state of ks. The caller
// holds sh.mu.
func (sh *shard) refund(ks *slot, p *sluice.Policy, n int64, at, now time.Time) {
	var arr [sluice.MaxWindows][]uint64
	st := sh.t.state(ks, &arr)
	quota.Refund(p, st, n, at, now)
	sh.t.keep(ks, st)
	ks.expires = clampExpiry(quota.Expiry(p, st))
}

// Refund implements sluice.QuotaStore.
func (s *Store) Refund(ctx context.Context, key string, p *sluice.Policy, n int64, at, now time.Time) error {
	sh, h := s.shard(key)
	sh.mu.Lock()
	sh.seen(now)
	ks := sh.t.find(h, key)
	if ks == nil || ks.alg != p.Algorithm || int(ks.nwin) != len(p.Windows) {
		sh.mu.Unlock()
		return nil // nothing counted that could be refunded
	}
	sh.refund(ks, p, n, at, now)
	s.markDirty(sh, ks, key)
	sh.mu.Unlock()
	if s.p != nil && s.p.sync {
		return s.p.writeKey(s, key)
	}
	return nil
}

// Peek implements sluice.QuotaStore.
func (s *Store) Peek(ctx context.Context, key string, p *sluice.Policy, now time.Time) (sluice.Decision, error) {
	sh, h := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.seen(now)
	var arr, cur [sluice.MaxWindows][]uint64
	var buf [3 * sluice.MaxWindows]uint64
	ks := sh.t.find(h, key)
	if ks == nil || ks.alg != p.Algorithm || int(ks.nwin) != len(p.Windows) {
		// A fresh key, or one kept under another algorithm or shape:
		// answer as if fresh and keep the state, which the next Take
		// decides about (a peek never writes).
		st := arr[:len(p.Windows)]
		for i := range st {
			st[i] = buf[3*i : 3*i : 3*i+3]
		}
		return quota.Peek(p, st, now), nil
	}
	// Decide on a copy: the algorithms drop what no longer counts, and a
	// peek under another policy (other lengths or limits) must not move
	// the state the takes decide on.
	kst := sh.t.state(ks, &cur)
	st := arr[:len(kst)]
	for i, w := range kst {
		if len(w) <= 3 {
			st[i] = append(buf[3*i:3*i:3*i+3], w...)
		} else {
			st[i] = append([]uint64(nil), w...)
		}
	}
	return quota.Peek(p, st, now), nil
}

// Reset implements sluice.QuotaStore.
func (s *Store) Reset(ctx context.Context, key string) error {
	if s.p != nil {
		return s.p.reset(s, key)
	}
	sh, h := s.shard(key)
	sh.mu.Lock()
	sh.t.delete(h, key)
	sh.mu.Unlock()
	return nil
}

// Ping reports that the store is reachable, which it always is.
func (s *Store) Ping(ctx context.Context) error { return nil }

// Len returns the number of keys the store holds.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.t.count
		sh.mu.Unlock()
	}
	return n
}

// Sweep forgets every key whose state counts nothing at now, in memory and
// (for a persistent store) on disk. The store sweeps itself every
// SweepInterval (sweepTick); tests call Sweep directly.
func (s *Store) Sweep(now time.Time) {
	s.sweep(now.Unix())
	if s.p != nil {
		if err := s.p.deleteExpired(now.Unix()); err != nil {
			s.logger.Error("quota state cleanup failed", slog.String("error", err.Error()))
		}
	}
}

// sweeper is what the background sweep remembers between ticks. Only the
// sweep goroutine (or a test calling sweepTick) touches it.
type sweeper struct {
	calls    uint64    // the shards' calls at the last tick
	active   time.Time // wall time of the last tick that saw new calls
	drift    int64     // the callers' latest second minus the wall's, then
	diskWall time.Time // wall time of the last cleanup on disk
}

// Tolerances of the background sweep.
const (
	// realClock: callers whose latest time was within this of the wall
	// clock when they were last seen use the real clock, so that an idle
	// store can age their time by the wall's.
	realClock = time.Minute
	// diskSweepEvery spaces the deletions of expired rows on disk, which
	// cost a transaction each (a sync one in synchronous mode).
	diskSweepEvery = time.Minute
)

// sweepTick is one run of the background sweep at wall time wall: it
// evicts, from every shard, the keys that count nothing at the callers'
// latest time, and from time to time deletes the rows on disk that count
// nothing. The callers' latest time is the latest second any shard decided
// at (so that a shard without traffic is swept by the others' time); when
// no call has come in since the last tick and the callers use the real
// clock, it advances with the wall clock, so that an idle store still
// empties. Callers whose clock is far from the wall's (tests) are never
// aged: eviction then follows their time alone.
func (s *Store) sweepTick(wall time.Time) {
	var latest int64
	var calls uint64
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		latest = max(latest, sh.now)
		calls += sh.calls
		sh.mu.Unlock()
	}
	sw := &s.sw
	if calls != sw.calls || sw.active.IsZero() {
		sw.calls, sw.active = calls, wall
		sw.drift = latest - wall.Unix()
	}
	sec := latest
	if calls > 0 && time.Duration(max(sw.drift, -sw.drift))*time.Second <= realClock {
		sec = max(sec, wall.Unix()+sw.drift)
	}
	s.sweep(sec)
	if s.p != nil && wall.Sub(sw.diskWall) >= diskSweepEvery {
		sw.diskWall = wall
		if err := s.p.deleteExpired(sec); err != nil {
			s.logger.Error("quota state cleanup failed", slog.String("error", err.Error()))
		}
	}
}

// sweep forgets, in memory, every key whose state counts nothing at the
// Unix second sec, and compacts the arena if that left it mostly empty.
func (s *Store) sweep(sec int64) {
	live := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		sh.t.sweep(sec)
		live += sh.t.count
		sh.mu.Unlock()
	}
	s.arena.mu.Lock()
	next := s.arena.next
	s.arena.mu.Unlock()
	if wantsCompact(live, next) {
		s.compact()
	}
}

// compact compacts the arena, every shard locked meanwhile.
func (s *Store) compact() {
	tabs := make([]*table, len(s.shards))
	for i := range s.shards {
		s.shards[i].mu.Lock()
		tabs[i] = &s.shards[i].t
	}
	s.arena.compact(tabs)
	for i := range s.shards {
		s.shards[i].mu.Unlock()
	}
}

// seen records that a call on sh decided at now. The caller holds sh.mu.
func (sh *shard) seen(now time.Time) {
	sh.calls++
	if sec := now.Unix(); sec > sh.now {
		sh.now = sec
	}
}
