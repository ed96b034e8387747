package quota_test

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/quota"
)

// TestBoundedSliding: a limited sliding window charged every second of
// three days keeps at most 128 charge words (plus the total), counts every
// unit it admitted, and admits a new unit no earlier than the exact window
// would: moving charges to the end of their cell only ever delays them.
func TestBoundedSliding(t *testing.T) {
	p := sluice.Policy{Windows: []sluice.Window{
		{Name: "hour", Length: time.Hour, Limit: 1 << 30},
		{Name: "day", Length: 24 * time.Hour, Limit: 1 << 30},
	}}
	st := make([][]uint64, 2)
	start := time.Unix(1_800_000_000, 0)
	const secs = 3 * 86400
	// charged[s] is what the test charged before second s: 1, 2, 3, 1,
	// 2, 3, ... units a second from second 0.
	charged := make([]int64, secs+1)
	for s := range int64(secs) {
		charged[s+1] = charged[s] + 1 + s%3
	}
	unitsIn := func(sec, wsec int64) int64 { return charged[sec+1] - charged[max(0, sec-wsec+1)] }
	var units int64
	for sec := range int64(secs) {
		now := start.Add(time.Duration(sec) * time.Second)
		n := 1 + sec%3
		d := quota.Take(&p, st, n, now)
		if !d.Allowed {
			t.Fatalf("second %d: refused", sec)
		}
		units += n
		for i, w := range p.Windows {
			if len(st[i]) > 129 {
				t.Fatalf("second %d: the %s window holds %d words", sec, w.Name, len(st[i])-1)
			}
			// Exactly, the window counts the units of its last
			// length; coarsened, at least that, and at most a cell
			// (length/64) more.
			wsec := int64(w.Length / time.Second)
			exact := min(units, unitsIn(sec, wsec))
			cell := (wsec + 63) / 64
			if got := d.Windows[i].Counted; got < exact || got > unitsIn(sec, wsec+cell) {
				t.Fatalf("second %d: the %s window counts %d; exactly %d", sec, w.Name, got, exact)
			}
		}
	}
}

// TestBoundedCapacity: a busy window's state never keeps room for more
// words than it can hold (its count, min(limit, 128) charges and one
// more), where append alone would double 128 words to 256.
func TestBoundedCapacity(t *testing.T) {
	p := sluice.Policy{Windows: []sluice.Window{
		{Name: "hour", Length: time.Hour, Limit: 100},
		{Name: "day", Length: 24 * time.Hour, Limit: 1000},
	}}
	st := make([][]uint64, 2)
	start := time.Unix(1_800_000_000, 0)
	admitted := 0
	for sec := range int64(86400) {
		if d := quota.Take(&p, st, 1, start.Add(time.Duration(sec)*40*time.Second)); d.Allowed {
			admitted++
		}
		for i, most := range []int{102, 130} {
			if cap(st[i]) > most {
				t.Fatalf("take %d: the %s window has room for %d words, more than %d", sec, p.Windows[i].Name, cap(st[i]), most)
			}
		}
	}
	if admitted < 1000 {
		t.Fatalf("only %d takes admitted: the windows never filled", admitted)
	}
}
