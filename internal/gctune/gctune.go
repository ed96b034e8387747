// Package gctune gives a process with a small heap fewer garbage
// collections: it raises GOGC after every collection so that the heap may
// grow by at least a floor (64 MiB for sluice) before the next, where Go's
// default lets it grow by as much as is live (GOGC=100).
//
// A gateway keeps little live: its connections' buffers, caches, a few
// megabytes. At GOGC=100 it then collects every few megabytes it
// allocates, ten times a second under load, and the collections cost it
// about a sixth of its CPU and put their pauses and mark assists into its
// tail latency. With the floor it collects every 64 MiB. A process with
// more live than the floor (an embedded store of a million keys) collects
// as at GOGC=100: the floor only matters where the heap is small.
//
// It is Go's GC guide's advice (a higher GOGC where memory is plentiful)
// with a bound: the heap exceeds what is live by at most
// max(live, floor), and a memory limit (GOMEMLIMIT) still wins. A process
// run with GOGC set is left alone: the operator chose.
package gctune

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Percent returns the GOGC that lets a heap with live bytes live grow by
// about floor before the next collection: 100 (Go's default) once live is
// at least floor, or when it is not known (0: no collection yet). Go never
// collects below a minimum heap of 4 MiB × GOGC/100, so a tiny live heap
// gets no more than makes that minimum live+floor: the heap then still
// grows by about floor, not by a multiple of it.
func Percent(live, floor uint64) int {
	const def, minHeap = 100, 4 << 20 // minHeap: the runtime's heapMinimum at GOGC=100
	if live == 0 || live >= floor {
		return def
	}
	// In floats: floor*100 need not fit in 64 bits.
	p := min(float64(floor)/float64(live), (float64(live)+float64(floor))/minHeap) * 100
	return max(int(p), def)
}

// Start tunes GOGC for a floor of floor bytes from now until stop is
// called, unless the environment sets GOGC. It reads the live heap after
// every collection (a cleanup on an object that each collection frees).
func Start(floor uint64) (stop func()) {
	if _, set := os.LookupEnv("GOGC"); set {
		return func() {}
	}
	t := &tuner{floor: floor, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.tune()
	t.arm()
	return func() {
		t.mu.Lock()
		t.stopped = true
		t.mu.Unlock()
		debug.SetGCPercent(100)
	}
}

type tuner struct {
	floor  uint64
	sample []metrics.Sample

	mu      sync.Mutex
	stopped bool
	percent int
}

// marker is what the tuner hangs its cleanup on: big enough not to share
// an allocation with other tiny objects, which would delay its cleanup.
type marker struct{ _ [16]byte }

// arm asks for tune to run after the next collection.
func (t *tuner) arm() {
	m := new(marker)
	runtime.AddCleanup(m, func(t *tuner) {
		if t.tune() {
			t.arm()
		}
	}, t)
}

// tune sets GOGC for the live heap and reports whether the tuner still
// runs.
func (t *tuner) tune() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.sample)
	var live uint64
	if s := t.sample[0]; s.Value.Kind() == metrics.KindUint64 {
		live = s.Value.Uint64()
	}
	// Leave GOGC alone for changes under a tenth: each call reprices
	// the collector's pacing.
	if p := Percent(live, t.floor); p*10 < t.percent*9 || p*10 > t.percent*11 {
		debug.SetGCPercent(p)
		t.percent = p
	}
	return true
}
