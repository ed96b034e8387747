package inmem

import (
	"math"

	"github.com/sluicehq/sluice"
)

// A table is one shard's keys: an open-addressing hash table (linear
// probing, backward-shift deletion) of slots of one cache line each, the
// state of a small key held in its slot. Why not a Go map of pointers: a
// take on a cold key then touches the map's control word, its slot, the key
// and the state, four cache misses where a slot costs one (two with the
// key's bytes), and every key costs a map entry, a pointer and a state
// allocation on top of its key (200 B a key against ~120 B here). Its methods
// expect the shard's lock held.
type table struct {
	slots  []slot
	count  int     // used slots
	spills []spill // states too big for a slot; indexed by slot.words[0]
	free   []uint32
}

// slot is one key and its state: 64 bytes. hash 0 marks an empty slot.
//
// A state of up to two windows whose words fit in inlineWords (sliding
// windows holding one second of charges, calendar windows, a token bucket
// of one window) lives in words: with one window, words[:lens&15]; with
// two, window i in words[2i:2i+(lens>>4i&15)]. A bigger state is spilled:
// words[0] indexes the table's spills, which hold it as the quota package's
// slices (which grow by append and then stay, so that a busy key allocates
// nothing once its windows reach their size).
type slot struct {
	hash    uint64 // the key's hash, never 0 for a used slot
	key     string
	words   [inlineWords]uint64
	expires uint32 // Unix second from which the state counts nothing (clamped)
	alg     sluice.Algorithm
	nwin    uint8 // windows of the state
	lens    uint8 // inline: the windows' word counts, 4 bits each
	flags   uint8
}

const inlineWords = 4

const (
	flagSpilled = 1 << iota // the state is in spills[words[0]]
	flagDirty               // listed in the shard's dirty keys
)

type spill [sluice.MaxWindows][]uint64

// Load factor bounds: the table grows by a quarter past 3/4 full and
// shrinks when under 1/8, so that a slot costs 64 B / (0.6..0.75) on
// average.
const minSlots = 16

// index returns the ideal slot of hash h in a table of n slots (fast range
// reduction of its high 32 bits; the low bits choose the shard).
func index(h uint64, n int) int { return int((h >> 32) * uint64(n) >> 32) }

// find returns the slot of key (hash h), or nil.
func (t *table) find(h uint64, key string) *slot {
	if i := t.lookup(h, key); i >= 0 {
		return &t.slots[i]
	}
	return nil
}

// lookup returns the index of the slot of key (hash h), or -1.
func (t *table) lookup(h uint64, key string) int {
	n := len(t.slots)
	if n == 0 {
		return -1
	}
	for i := index(h, n); ; {
		s := &t.slots[i]
		if s.hash == h && s.key == key {
			return i
		}
		if s.hash == 0 {
			return -1
		}
		if i++; i == n {
			i = 0
		}
	}
}

// insert adds key (hash h, not in the table) with an empty state and
// returns its slot, which stays valid until the next insert or delete. The
// table keeps key as given: the caller clones it.
func (t *table) insert(h uint64, key string) *slot {
	if (t.count+1)*4 > len(t.slots)*3 {
		t.resize(max(minSlots, len(t.slots)+len(t.slots)/4))
	}
	t.count++
	n := len(t.slots)
	i := index(h, n)
	for t.slots[i].hash != 0 {
		if i++; i == n {
			i = 0
		}
	}
	s := &t.slots[i]
	*s = slot{hash: h, key: key}
	return s
}

// resize moves every key to a table of n slots.
func (t *table) resize(n int) {
	old := t.slots
	t.slots = make([]slot, n)
	for i := range old {
		if old[i].hash == 0 {
			continue
		}
		j := index(old[i].hash, n)
		for t.slots[j].hash != 0 {
			if j++; j == n {
				j = 0
			}
		}
		t.slots[j] = old[i]
	}
}

// deleteAt empties slot i, moving back the slots after it that probing
// would no longer find, and frees its spilled state.
func (t *table) deleteAt(i int) {
	t.release(&t.slots[i])
	n := len(t.slots)
	j := i
	for {
		if j++; j == n {
			j = 0
		}
		h := t.slots[j].hash
		if h == 0 {
			break
		}
		// The slot at j stays if its ideal slot k lies cyclically in
		// (i, j]; otherwise it moves to the hole at i.
		k := index(h, n)
		if i <= j {
			if i < k && k <= j {
				continue
			}
		} else if i < k || k <= j {
			continue
		}
		t.slots[i] = t.slots[j]
		i = j
	}
	t.slots[i] = slot{}
	t.count--
}

// delete removes key (hash h) if present.
func (t *table) delete(h uint64, key string) {
	if i := t.lookup(h, key); i >= 0 {
		t.deleteAt(i)
		t.shrink()
	}
}

// shrink makes a mostly empty table smaller.
func (t *table) shrink() {
	if len(t.slots) > minSlots && t.count*8 < len(t.slots) {
		t.resize(max(minSlots, t.count*2))
	}
}

// sweep deletes every key whose state counts nothing at the Unix second
// sec.
func (t *table) sweep(sec int64) {
	for i := 0; i < len(t.slots); {
		s := &t.slots[i]
		if s.hash != 0 && int64(s.expires) <= sec {
			t.deleteAt(i) // another slot may move into i: look again
			continue
		}
		i++
	}
	t.shrink()
}

// release frees the spilled state of s, if any.
func (t *table) release(s *slot) {
	if s.flags&flagSpilled != 0 {
		k := uint32(s.words[0])
		t.spills[k] = spill{}
		t.free = append(t.free, k)
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
		copy(st, t.spills[s.words[0]][:s.nwin])
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
		copy(t.spills[s.words[0]][:], st)
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
		if s.flags&flagSpilled == 0 && len(w) > 0 && inWords(s, w) {
			w = append(make([]uint64, 0, 2*len(w)), w...)
		}
		sp[i] = w
	}
	var k uint32
	if s.flags&flagSpilled != 0 {
		k = uint32(s.words[0])
	} else if n := len(t.free); n > 0 {
		k, t.free = t.free[n-1], t.free[:n-1]
	} else {
		k = uint32(len(t.spills))
		t.spills = append(t.spills, spill{})
	}
	t.spills[k] = sp
	s.words = [inlineWords]uint64{uint64(k)}
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
