package inmem

import (
	"math"

	"github.com/sluicehq/sluice"
)

// A table is one shard's keys: their slots, dense and in the order the keys
// came (so that keys that arrive together sit together), and an
// open-addressing hash index of them (linear probing, backward-shift
// deletion) whose entries hold 32 bits of the key's hash and the slot's
// position. A slot is one cache line and holds a small key's state. Why not
// a Go map of pointers: a take on a cold key then touches the map's control
// word, its slot, the key and the state, where here it touches one index
// entry (8 bytes: the index of 100,000 keys is 1.3 MB and stays in cache
// better than a map of them) and one slot; and a key costs its map entry, a
// pointer and a 128-byte state allocation on top of its key, 200 B a key
// against about 100 B here. Its methods expect the shard's lock held.
type table struct {
	index  []uint64 // 0: empty; else the hash's high 32 bits << 32 | slot+1
	slots  []slot
	spills []spill // states too big for a slot; indexed by slot.words[0]
	free   []uint32
}

// slot is one key and its state: 64 bytes.
//
// A state of up to two windows whose words fit in inlineWords (sliding
// windows holding one second of charges, calendar windows, a token bucket
// of one window) lives in words: with one window, words[:lens&15]; with
// two, window i in words[2i:2i+(lens>>4i&15)]. A bigger state is spilled:
// words[0] indexes the table's spills, which hold it as the quota package's
// slices (which grow by append and then stay, so that a busy key allocates
// nothing once its windows reach their size).
type slot struct {
	hash    uint64 // the key's hash
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

// minIndex is the smallest index; the index grows by a half past 3/4 full
// and shrinks when under 1/8.
const minIndex = 16

// home returns the ideal entry, in an index of n entries, of a hash whose
// high 32 bits are tag (fast range reduction; the low bits of the hash
// choose the shard).
func home(tag uint64, n int) int { return int(tag * uint64(n) >> 32) }

// count returns the number of keys.
func (t *table) count() int { return len(t.slots) }

// find returns the slot of key (hash h), or nil. The slot stays valid until
// the next insert or delete.
func (t *table) find(h uint64, key string) *slot {
	if e := t.lookup(h, key); e >= 0 {
		return &t.slots[uint32(t.index[e])-1]
	}
	return nil
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
			if s := &t.slots[uint32(e)-1]; s.hash == h && s.key == key {
				return i
			}
		}
		if i++; i == n {
			i = 0
		}
	}
}

// entryOf returns the index entry of slot j.
func (t *table) entryOf(j int) int {
	n := len(t.index)
	for i := home(t.slots[j].hash>>32, n); ; {
		if uint32(t.index[i]) == uint32(j+1) {
			return i
		}
		if i++; i == n {
			i = 0
		}
	}
}

// insert adds key (hash h, not in the table) with an empty state and
// returns its slot, valid until the next insert or delete. The table keeps
// key as given: the caller clones it.
func (t *table) insert(h uint64, key string) *slot {
	if (len(t.slots)+1)*4 > len(t.index)*3 {
		t.reindex(max(minIndex, len(t.index)+len(t.index)/2))
	}
	t.slots = append(t.slots, slot{hash: h, key: key})
	t.place(h>>32, len(t.slots)-1)
	return &t.slots[len(t.slots)-1]
}

// place adds the index entry of slot j, whose hash's high bits are tag.
func (t *table) place(tag uint64, j int) {
	n := len(t.index)
	i := home(tag, n)
	for t.index[i] != 0 {
		if i++; i == n {
			i = 0
		}
	}
	t.index[i] = tag<<32 | uint64(j+1)
}

// reindex rebuilds the index with n entries.
func (t *table) reindex(n int) {
	t.index = make([]uint64, n)
	for j := range t.slots {
		t.place(t.slots[j].hash>>32, j)
	}
}

// deleteAt removes the key of index entry i: it empties the entry, moving
// back the entries after it that probing would no longer find, and moves
// the last slot into the key's slot.
func (t *table) deleteAt(i int) {
	j := int(uint32(t.index[i]) - 1)
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
	t.release(&t.slots[j])
	last := len(t.slots) - 1
	if j != last {
		t.index[t.entryOf(last)] = t.slots[last].hash&^(1<<32-1) | uint64(j+1)
		t.slots[j] = t.slots[last]
	}
	t.slots[last] = slot{}
	t.slots = t.slots[:last]
}

// delete removes key (hash h) if present.
func (t *table) delete(h uint64, key string) {
	if e := t.lookup(h, key); e >= 0 {
		t.deleteAt(e)
		t.shrink()
	}
}

// shrink makes a mostly empty table smaller.
func (t *table) shrink() {
	if len(t.index) > minIndex && len(t.slots)*8 < len(t.index) {
		t.slots = append([]slot(nil), t.slots...)
		t.reindex(max(minIndex, len(t.slots)*2))
	}
}

// sweep deletes every key whose state counts nothing at the Unix second
// sec.
func (t *table) sweep(sec int64) {
	for j := 0; j < len(t.slots); {
		if int64(t.slots[j].expires) <= sec {
			t.deleteAt(t.entryOf(j)) // the last slot moves into j: look again
			continue
		}
		j++
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
