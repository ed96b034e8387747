package inmem

import (
	"slices"
	"testing"
)

// FuzzDecodeState: a row of quota.db may hold anything (a disk's fault, a
// hand's edit). Decoding never panics nor allocates beyond the row's size,
// and a state it accepts encodes to bytes that decode to the same state.
func FuzzDecodeState(f *testing.F) {
	f.Add(encodeState([][]uint64{{1, 1_800_000_000<<24 | 1}, {1, 1_800_000_000<<24 | 1}}))
	f.Add(encodeState([][]uint64{nil, {3, 1_800_000_000, 7}}))
	f.Add([]byte{0xff, 0xff})
	f.Add([]byte{2, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, ok := decodeState(b)
		if !ok {
			return
		}
		words := 0
		for _, w := range st {
			words += len(w)
		}
		if words > len(b) {
			t.Fatalf("%d words from %d bytes", words, len(b))
		}
		again, ok := decodeState(encodeState(st))
		if !ok || len(again) != len(st) {
			t.Fatalf("%v: re-encoded, decodes to %v, %v", st, again, ok)
		}
		for i := range st {
			if !slices.Equal(st[i], again[i]) {
				t.Fatalf("window %d: %v, re-encoded %v", i, st[i], again[i])
			}
		}
	})
}
