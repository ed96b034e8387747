package inmem

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sluicehq/sluice"
)

// A table is one shard's keys: an open-addressing hash index (linear
// probing, backward-shift deletion) whose entries hold 32 bits of the key's
// hash and the key's slot in the store's arena. A slot is one cache line and
// holds a small key's state.
//
// Why not a Go map of pointers: a key would cost its map entry, a pointer
// and a 128-byte state allocation on top of its key (200 B a key against
// about 100 B here). Why an arena shared by the shards rather than slots in
// each table: slots are handed out in the order keys come, across shards,
// so that keys that come together (an account's keys, a batch, a walk in
// order) sit together and the hardware prefetches them; a take then misses
// the cache at most on its index entry (8 bytes: the index of 100,000 keys
// is 1.3 MB) and its slot, which holds the key's bytes too when the key is
// short, as account keys are ("{acct:123456789}" is 16 bytes). Its methods
// expect the shard's lock held.
type table struct {
	arena *arena
	index []uint64          // 0: empty; else the hash's high 32 bits << 32 | slot id+1
	count int               // keys
	free  []uint32          // ids of slots this table freed, to reuse
	long  map[uint32]string // keys longer than shortKey, by slot id
}

// slot is one key and its state: 64 bytes. A key of up to shortKey bytes
// is in kb; a longer one in the table's long keys.
//
// A state of up to two windows whose words fit in inlineWords (sliding
// windows holding one second of charges, calendar windows, a token bucket
// of one window) lives in words: with one window, words[:lens&15]; with
// two, window i in words[2i:2i+(lens>>4i&15)]. A bigger state is spilled:
// sp holds it as the quota package's slices (which grow by append and then stay, so that a busy key allocates
// nothing once its windows reach their size).
type slot struct {
	kb      [shortKey]byte
	words   [inlineWords]uint64
	sp      *spill // the state, if spilled
	expires uint32 // Unix second from which the state counts nothing (clamped)
	alg     sluice.Algorithm
	nwin    uint8 // windows of the state
	lens    uint8 // inline: the windows' word counts, 4 bits each
	flags   uint8 // flagSpilled, flagDirty, and the key's length << klenShift
}

const (
	inlineWords = 4
	shortKey    = 16
)

const (
	flagSpilled = 1 << iota // the state is in sp
	flagDirty               // listed in the shard's dirty keys

	klenShift = 3
	klenLong  = 31 // the key is in the table's long keys
)

// is reports whether s, the slot of id, holds key.
func (t *table) is(s *slot, id uint32, key string) bool {
	if len(key) <= shortKey {
		return int(s.flags>>klenShift) == len(key) && string(s.kb[:len(key)]) == key
	}
	return s.flags>>klenShift == klenLong && t.long[id] == key
}

type spill [sluice.MaxWindows][]uint64

// minSpill is the least capacity of a window moved out of its slot, which
// then grows by append: a window that outgrew its slot is a busy one.
const minSpill = 8

// The arena holds the slots of every shard in chunks that never move. A
// slot belongs to the table that took it, which alone reads and writes it,
// under its shard's lock; a freed slot goes back to its table. After a
// spike of keys (a flood of addresses on the per-IP limits) the sweep
// compacts it, with every shard locked, once fewer than a quarter of its
// slots hold keys: the keys move to free slots low in the arena and the
// chunks above them are dropped (compact).
type arena struct {
	mu   sync.Mutex
	dir  atomic.Pointer[[]*chunk] // grows by copy under mu; read without it
	next uint32                   // slots handed out; guarded by mu
}

const chunkBits = 8

type chunk [1 << chunkBits]slot

// slot returns the slot of id.
func (a *arena) slot(id uint32) *slot {
	return &(*a.dir.Load())[id>>chunkBits][id&(1<<chunkBits-1)]
}

// take returns the id of a new slot.
func (a *arena) take() uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := a.next
	var dir []*chunk
	if p := a.dir.Load(); p != nil {
		dir = *p
	}
	if int(id>>chunkBits) == len(dir) {
		if id>>chunkBits == 1<<(32-chunkBits) {
			panic("inmem: more than 2^32 keys")
		}
		grown := append(dir[:len(dir):len(dir)], new(chunk))
		a.dir.Store(&grown)
	}
	a.next++
	return id
}

// Compaction: an arena of at least minCompact slots is compacted once
// fewer than a quarter of them hold keys, down to half as many again as
// the keys it holds (whole chunks), so that it does not compact again
// until a quarter of that is left.
const minCompact = 4 << chunkBits

// wantsCompact reports whether an arena of next slots of which live hold
// keys is worth compacting.
func wantsCompact(live int, next uint32) bool {
	return next >= minCompact && uint64(live)*4 < uint64(next)
}

// compact moves every key of tabs (all the tables with slots in a, whose
// shards' locks the caller holds) to a slot below live+live/2 rounded up to
// whole chunks, and drops the chunks above, which the garbage collector
// then frees. It takes time in the keys it moves, all shards waiting: the
// sweep runs it only when wantsCompact.
func (a *arena) compact(tabs []*table) {
	live := 0
	for _, t := range tabs {
		live += t.count
	}
	a.compactTo(tabs, live+live/2)
}

// compactTo is compact down to n slots, rounded up to whole chunks; n is
// at least the keys the tables hold, so that a free slot below the new end
// awaits every key above it.
func (a *arena) compactTo(tabs []*table, n int) {
	const perChunk = 1 << chunkBits
	keep := uint32((n + perChunk - 1) / perChunk * perChunk)
	if keep >= a.next {
		return
	}
	// Below keep every slot holds a key or is in a table's free list, and
	// there are at least as many free ones as keys above keep.
	var free []uint32
	for _, t := range tabs {
		for _, id := range t.free {
			if id < keep {
				free = append(free, id)
			}
		}
		t.free = t.free[:0]
	}
	dir := *a.dir.Load()
	at := func(id uint32) *slot { return &dir[id>>chunkBits][id&(perChunk-1)] }
	for _, t := range tabs {
		for i, e := range t.index {
			id := uint32(e) - 1
			if e == 0 || id < keep {
				continue
			}
			to := free[len(free)-1]
			free = free[:len(free)-1]
			*at(to) = *at(id)
			t.index[i] = e>>32<<32 | uint64(to+1)
			if key, ok := t.long[id]; ok {
				delete(t.long, id)
				t.long[to] = key
			}
		}
	}
	// The free slots left go back to the tables, a share each.
	for i, id := range free {
		t := tabs[i%len(tabs)]
		t.free = append(t.free, id)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	kept := append([]*chunk(nil), dir[:keep>>chunkBits]...)
	a.dir.Store(&kept)
	a.next = keep
}

// minIndex is the smallest index; the index grows by a half past 3/4 full
// and shrinks when under 1/8.
const minIndex = 16

// home returns the ideal entry, in an index of n entries, of a hash whose
// high 32 bits are tag (fast range reduction; the low bits of the hash
// choose the shard).
func home(tag uint64, n int) int { return int(tag * uint64(n) >> 32) }

// slotOf returns the slot of index entry e.
func (t *table) slotOf(e uint64) *slot { return t.arena.slot(uint32(e) - 1) }

// find returns the slot of key (hash h), or nil. It is lookup with the
// arena's directory read once: through lookup and slotOf, a take on random
// keys measured 20 % slower (BenchmarkTake/burst/random).
func (t *table) find(h uint64, key string) *slot {
	n := len(t.index)
	if n == 0 {
		return nil
	}
	tag := h >> 32
	dir := *t.arena.dir.Load()
	for i := home(tag, n); ; {
		e := t.index[i]
		if e == 0 {
			return nil
		}
		if e>>32 == tag {
			id := uint32(e) - 1
			if s := &dir[id>>chunkBits][id&(1<<chunkBits-1)]; t.is(s, id, key) {
				return s
			}
		}
		if i++; i == n {
			i = 0
		}
	}
}

// lookup returns the index entry of key (hash h), or -1.
func (t *table) lookup(h uint64, key string) int {
	n := len(t.index)
	if n == 0 {
		return -1
	}
	tag := h >> 32
	for i := home(tag, n); ; {
		e := t.index[i]
		if e == 0 {
			return -1
		}
		if e>>32 == tag {
			if s := t.slotOf(e); t.is(s, uint32(e)-1, key) {
				return i
			}
		}
		if i++; i == n {
			i = 0
		}
	}
}

// insert adds key (hash h, not in the table) with an empty state and
// returns its slot.
func (t *table) insert(h uint64, key string) *slot {
	if (t.count+1)*4 > len(t.index)*3 {
		t.reindex(max(minIndex, len(t.index)+len(t.index)/2))
	}
	var id uint32
	if n := len(t.free); n > 0 {
		id, t.free = t.free[n-1], t.free[:n-1]
	} else {
		id = t.arena.take()
	}
	t.place(t.index, h>>32, id)
	t.count++
	s := t.arena.slot(id)
	*s = slot{}
	if len(key) <= shortKey {
		copy(s.kb[:], key)
		s.flags = uint8(len(key)) << klenShift
	} else {
		if t.long == nil {
			t.long = make(map[uint32]string)
		}
		t.long[id] = strings.Clone(key)
		s.flags = klenLong << klenShift
	}
	return s
}

// place adds to index the entry of slot id, whose hash's high bits are tag.
func (t *table) place(index []uint64, tag uint64, id uint32) {
	n := len(index)
	i := home(tag, n)
	for index[i] != 0 {
		if i++; i == n {
			i = 0
		}
	}
	index[i] = tag<<32 | uint64(id+1)
}

// reindex rebuilds the index with n entries.
func (t *table) reindex(n int) {
	old := t.index
	t.index = make([]uint64, n)
	for _, e := range old {
		if e != 0 {
			t.place(t.index, e>>32, uint32(e)-1)
		}
	}
}

// deleteAt removes the key of index entry i: it frees the key's slot, and
// empties the entry, moving back the entries after it that probing would
// no longer find.
func (t *table) deleteAt(i int) {
	id := uint32(t.index[i]) - 1
	s := t.arena.slot(id)
	t.release(s)
	if s.flags>>klenShift == klenLong {
		delete(t.long, id)
	}
	*s = slot{}
	t.free = append(t.free, id)
	t.count--
	n := len(t.index)
	k := i
	for {
		if k++; k == n {
			k = 0
		}
		e := t.index[k]
		if e == 0 {
			break
		}
		// The entry at k stays if its home lies cyclically in (i, k];
		// otherwise it moves to the hole at i.
		h := home(e>>32, n)
		if i <= k {
			if i < h && h <= k {
				continue
			}
		} else if i < h || h <= k {
			continue
		}
		t.index[i] = e
		i = k
	}
	t.index[i] = 0
}

// delete removes key (hash h) if present.
func (t *table) delete(h uint64, key string) {
	if e := t.lookup(h, key); e >= 0 {
		t.deleteAt(e)
		t.shrink()
	}
}

// shrink makes a mostly empty index smaller.
func (t *table) shrink() {
	if len(t.index) > minIndex && t.count*8 < len(t.index) {
		t.reindex(max(minIndex, t.count*2))
	}
}

// sweep deletes every key whose state counts nothing at the Unix second
// sec.
func (t *table) sweep(sec int64) {
	for i := 0; i < len(t.index); {
		if e := t.index[i]; e != 0 && int64(t.slotOf(e).expires) <= sec {
			t.deleteAt(i) // another entry may move into i: look again
			continue
		}
		i++
	}
	t.shrink()
}

// release frees the spilled state of s, if any.
func (t *table) release(s *slot) {
	if s.flags&flagSpilled != 0 {
		s.sp = nil
		s.flags &^= flagSpilled
	}
}

// inline returns where window i of a state of nwin windows lives in a
// slot's words, and how many words it may take there (0: none).
func inline(nwin uint8, i int) (off, size int) {
	switch nwin {
	case 1:
		return 0, inlineWords
	case 2:
		return 2 * i, inlineWords / 2
	}
	return 0, 0
}

// state returns the state of s as the quota package takes it, in arr: the
// windows alias the slot's words (or its spill), so that the algorithms
// update it in place; keep then records what they did.
func (t *table) state(s *slot, arr *[sluice.MaxWindows][]uint64) [][]uint64 {
	st := arr[:s.nwin]
	if s.flags&flagSpilled != 0 {
		copy(st, s.sp[:s.nwin])
		return st
	}
	for i := range st {
		off, size := inline(s.nwin, i)
		n := int(s.lens >> (4 * i) & 15)
		st[i] = s.words[off : off+n : off+size]
	}
	return st
}

// keep records st, the state of s returned by state and then updated.
func (t *table) keep(s *slot, st [][]uint64) {
	if s.flags&flagSpilled != 0 {
		copy(s.sp[:], st)
		return
	}
	var lens uint8
	for i, w := range st {
		off, _ := inline(s.nwin, i)
		if len(w) > 0 && &w[0] != &s.words[off] {
			t.set(s, st) // a window outgrew its words
			return
		}
		lens |= uint8(len(w)) << (4 * i)
	}
	s.lens = lens
}

// fits reports whether st fits in a slot's words.
func fits(st [][]uint64) bool {
	for i, w := range st {
		if _, size := inline(uint8(len(st)), i); len(w) > size {
			return false
		}
	}
	return true
}

// set makes st the state of s (whose nwin is len(st)): in its words if it
// fits, else spilled. st may alias the slot's words.
func (t *table) set(s *slot, st [][]uint64) {
	if s.flags&flagSpilled == 0 && fits(st) {
		var words [inlineWords]uint64
		var lens uint8
		for i, w := range st {
			off, _ := inline(s.nwin, i)
			copy(words[off:], w)
			lens |= uint8(len(w)) << (4 * i)
		}
		s.words, s.lens = words, lens
		return
	}
	var sp spill
	for i, w := range st {
		switch {
		case s.flags&flagSpilled != 0:
		case len(w) == 0:
			w = nil // not the slot's words, which a spilled state leaves unused
		case inWords(s, w):
			w = append(make([]uint64, 0, max(2*len(w), minSpill)), w...)
		}
		sp[i] = w
	}
	if s.sp == nil {
		s.sp = new(spill)
	}
	*s.sp = sp
	s.words = [inlineWords]uint64{}
	s.lens = 0
	s.flags |= flagSpilled
}

// inWords reports whether w lies in the words of s.
func inWords(s *slot, w []uint64) bool {
	for i := range s.words {
		if &w[0] == &s.words[i] {
			return true
		}
	}
	return false
}

// reset gives s an empty state of nwin windows under alg.
func (t *table) reset(s *slot, alg sluice.Algorithm, nwin int) {
	t.release(s)
	s.words, s.lens, s.alg, s.nwin = [inlineWords]uint64{}, 0, alg, uint8(nwin)
}

// clampExpiry stores an expiry second in a slot's 32 bits: never earlier
// (a key is kept at worst until 2106), 0 for anything not after 1970.
func clampExpiry(e int64) uint32 {
	return uint32(min(max(e, 0), math.MaxUint32))
}
