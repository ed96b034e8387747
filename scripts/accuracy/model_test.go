package main

import (
	"math/rand/v2"
	"testing"
)

// The model's checks agree with a brute-force simulation on exact times:
// a greedy replay never over-admits, and one extra charge squeezed in is
// found.
func TestModelAgainstBruteForce(t *testing.T) {
	ws := []window{{name: "hour", length: 2, limit: 3}, {name: "day", length: 5, limit: 6}}
	for _, algo := range []algorithm{sliding, calendar, tokenBucket} {
		for seed := range 50 {
			rng := rand.New(rand.NewPCG(uint64(seed), 1))
			var times []int64
			t0 := int64(1_700_000_000) * second
			for range 60 {
				times = append(times, t0+rng.Int64N(12*second))
			}
			var charged []int64
			for _, tm := range sortedCopy(times) {
				if fitsAtAll(algo, ws, charged, tm, 1) == tm {
					charged = append(charged, tm)
				}
			}
			if got := greedy(algo, ws, times); got != len(charged) {
				t.Fatalf("%s seed %d: greedy %d, replay %d", algo, seed, got, len(charged))
			}
			spans := func(ts []int64) []span {
				var s []span
				for _, x := range ts {
					s = append(s, span{x, x})
				}
				return s
			}
			for _, w := range ws {
				if o := overAdmission(algo, w, spans(charged)); o != 0 {
					t.Fatalf("%s seed %d: the model's own admissions over-admit %s by %d", algo, seed, w.name, o)
				}
			}
			// A refused request admitted anyway is found, unless the
			// refusal came from the other window.
			for _, tm := range times {
				if fitsAtAll(algo, ws, charged, tm, 1) == tm || contains(charged, tm) {
					continue
				}
				extra := append(append([]int64{}, charged...), tm)
				over := int64(0)
				for _, w := range ws {
					over = max(over, overAdmission(algo, w, spans(extra)))
				}
				if over == 0 {
					t.Fatalf("%s seed %d: an extra charge at %d (refused by the model) is not an over-admission", algo, seed, tm-t0)
				}
				break
			}
		}
	}
}

// fitsAt answers the instant a refused request fits, the way retry_after
// counts: at that instant it fits, a microsecond earlier it does not.
func TestFitsAtIsTheFirstInstant(t *testing.T) {
	ws := []window{{name: "hour", length: 2, limit: 3}, {name: "day", length: 5, limit: 6}}
	t0 := int64(1_700_000_000) * second
	for _, algo := range []algorithm{sliding, calendar, tokenBucket} {
		rng := rand.New(rand.NewPCG(7, 7))
		var charged []int64
		for range 200 {
			tm := t0 + rng.Int64N(20*second)
			if contains(charged, tm) {
				continue
			}
			at := fitsAtAll(algo, ws, onlyBefore(charged, tm), tm, 1)
			if at == tm {
				continue
			}
			before := onlyBefore(charged, tm)
			if fitsAtAll(algo, ws, before, at, 1) != at {
				t.Fatalf("%s: told %d, but the request does not fit then", algo, at-tm)
			}
			if fitsAtAll(algo, ws, before, at-1, 1) == at-1 {
				t.Fatalf("%s: told %d, but it fits a microsecond earlier", algo, at-tm)
			}
			_ = charged
		}
		// Fill with the greedy replay of sorted times and check again.
		var ts []int64
		for range 100 {
			ts = append(ts, t0+rng.Int64N(20*second))
		}
		for _, tm := range sortedCopy(ts) {
			at := fitsAtAll(algo, ws, charged, tm, 1)
			if at == tm {
				charged = append(charged, tm)
				continue
			}
			if fitsAtAll(algo, ws, charged, at, 1) != at || fitsAtAll(algo, ws, charged, at-1, 1) == at-1 {
				t.Fatalf("%s: fitsAt %d is not the first instant it fits", algo, at-tm)
			}
		}
	}
}

func onlyBefore(ts []int64, t int64) []int64 {
	var out []int64
	for _, x := range ts {
		if x <= t {
			out = append(out, x)
		}
	}
	return out
}

func contains(ts []int64, t int64) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

func sortedCopy(ts []int64) []int64 {
	out := append([]int64{}, ts...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}
