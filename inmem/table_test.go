package inmem

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/sluicehq/sluice"
)

// TestTableModel runs random inserts, deletes, state changes and sweeps on
// tables of one arena against a map, with short and long keys and hashes
// that collide in their high bits (the index's tags), so that probing,
// backward-shift deletion and resizing all run.
func TestTableModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var a arena
	tabs := []*table{{arena: &a}, {arena: &a}}
	type entry struct {
		tab     int
		hash    uint64
		expires uint32
		words   []uint64 // window 0's state
	}
	model := map[string]*entry{}
	key := func(i int) string {
		if i%3 == 0 {
			return fmt.Sprintf("a-long-key-of-more-than-16-bytes-%d", i)
		}
		return fmt.Sprintf("{acct:%d}", i)
	}
	hash := func(i int) uint64 {
		// Few distinct tags: long probe runs that wrap around.
		return uint64(r.IntN(8))<<32 | uint64(i)<<8 | uint64(i%2)
	}
	check := func(step int) {
		t.Helper()
		n := 0
		for k, e := range model {
			tab := tabs[e.tab]
			s := tab.find(e.hash, k)
			if s == nil {
				t.Fatalf("step %d: %q not found", step, k)
			}
			if s.expires != e.expires {
				t.Fatalf("step %d: %q expires %d, want %d", step, k, s.expires, e.expires)
			}
			var arr [sluice.MaxWindows][]uint64
			st := tab.state(s, &arr)
			if fmt.Sprint(st[0]) != fmt.Sprint(e.words) && !(len(st[0]) == 0 && len(e.words) == 0) {
				t.Fatalf("step %d: %q state %v, want %v", step, k, st[0], e.words)
			}
			if e.tab == 0 {
				n++
			}
		}
		if tabs[0].count != n {
			t.Fatalf("step %d: count %d, want %d", step, tabs[0].count, n)
		}
		// Every slot the arena handed out holds a key or is free, once.
		seen := map[uint32]bool{}
		for _, tab := range tabs {
			ids := append([]uint32(nil), tab.free...)
			for _, e := range tab.index {
				if e != 0 {
					ids = append(ids, uint32(e)-1)
				}
			}
			for _, id := range ids {
				if seen[id] || id >= a.next {
					t.Fatalf("step %d: slot %d twice or past the arena's %d", step, id, a.next)
				}
				seen[id] = true
			}
		}
		chunks := 0
		if d := a.dir.Load(); d != nil {
			chunks = len(*d)
		}
		if len(seen) != int(a.next) || chunks<<chunkBits < int(a.next) {
			t.Fatalf("step %d: %d slots held or free of %d handed out (%d chunks)", step, len(seen), a.next, chunks)
		}
	}
	hashes := map[int]uint64{}
	compactions := 0
	for step := range 20000 {
		// Many keys, then few: the arena has slots to give back.
		i := r.IntN(1500)
		if step > 10000 {
			i = r.IntN(200)
		}
		k := key(i)
		if _, ok := hashes[i]; !ok {
			hashes[i] = hash(i)
		}
		h := hashes[i]
		tab := int(h & 1)
		e := model[k]
		switch op := r.IntN(10); {
		case op < 5: // take: insert if new, then grow or shrink the state
			var s *slot
			if e == nil {
				s = tabs[tab].insert(h, k)
				s.nwin = 1
				e = &entry{tab: tab, hash: h}
				model[k] = e
			} else {
				s = tabs[tab].find(h, k)
			}
			var arr [sluice.MaxWindows][]uint64
			st := tabs[tab].state(s, &arr)
			if r.IntN(3) == 0 && len(st[0]) > 0 {
				st[0] = st[0][:r.IntN(len(st[0]))]
			} else {
				for range r.IntN(4) {
					st[0] = append(st[0], uint64(step))
				}
			}
			tabs[tab].keep(s, st)
			e.words = append([]uint64(nil), st[0]...)
			s.expires = uint32(step + r.IntN(200))
			if step < 10000 {
				s.expires += 5000 // kept a while: the arena grows
			}
			e.expires = s.expires
		case op < 7:
			tabs[tab].delete(h, k)
			delete(model, k)
		case op == 7 && r.IntN(4) == 0: // compact, as tightly as it may
			before := a.next
			a.compactTo(tabs, tabs[0].count+tabs[1].count)
			if a.next < before {
				compactions++
			}
		case op == 7:
			sec := int64(step)
			for _, tb := range tabs {
				tb.sweep(sec)
			}
			for k, e := range model {
				if int64(e.expires) <= sec {
					delete(model, k)
				}
			}
		default:
			if tabs[tab].find(h, k) == nil != (e == nil) {
				t.Fatalf("step %d: find %q: got %v, want present %v", step, k, tabs[tab].find(h, k), e != nil)
			}
		}
		if step%97 == 0 {
			check(step)
		}
	}
	check(-1)
	if compactions == 0 {
		t.Fatal("the arena was never compacted")
	}
	t.Logf("%d compactions", compactions)
}

// TestTableSpillEmptyWindow spills a state whose other window is empty in
// the slot: growing that window later must not write over the slot's
// words, which hold the spill's index.
func TestTableSpillEmptyWindow(t *testing.T) {
	tab := &table{arena: &arena{}}
	s := tab.insert(1<<40, "k")
	s.nwin = 2
	var arr [sluice.MaxWindows][]uint64
	st := tab.state(s, &arr)
	st[1] = append(st[1], 1, 2, 3) // outgrows the slot: spills
	tab.keep(s, st)
	st = tab.state(s, &arr)
	st[0] = append(st[0], 7, 8)
	tab.keep(s, st)
	st = tab.state(tab.find(1<<40, "k"), &arr)
	if got, want := fmt.Sprint(st[0], st[1]), "[7 8] [1 2 3]"; got != want {
		t.Fatalf("state %s, want %s", got, want)
	}
}

// TestSlotSize: a slot is one cache line.
func TestSlotSize(t *testing.T) {
	if got := unsafe.Sizeof(slot{}); got != 64 {
		t.Fatalf("slot is %d bytes, want 64", got)
	}
}
