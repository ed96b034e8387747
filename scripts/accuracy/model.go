package main

// The reference model: what sluice's rules allow, computed from the window
// lengths and limits and the times of the requests, independently of the
// gateway's code. Times are Unix microseconds on the clock that decides
// (Redis's TIME, or the embedded gateway's clock with its offset).
//
// A request's decision happened at an unknown instant between its send and
// its receipt. Every check below is conservative in that uncertainty: an
// over-admission is counted only if the admitted requests exceed a limit
// wherever in their intervals they were decided, a false refusal only if the
// refused request fits wherever it and the others were decided, and the
// retry_after error is the distance between the interval the model allows
// and the interval the answer allows.

import (
	"slices"
	"sort"
)

const second = int64(1_000_000) // µs

// algorithm is one of sluice's counting algorithms.
type algorithm string

const (
	sliding     algorithm = "sliding"
	calendar    algorithm = "calendar"
	tokenBucket algorithm = "token_bucket"
)

// window is one limit: at most limit units per length seconds.
type window struct {
	name   string
	length int64 // whole seconds
	limit  int64
}

// span is when a request may have been decided: [lo, hi] in µs.
type span struct{ lo, hi int64 }

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// overAdmission returns by how many units the charges exceed w's limit in
// the worst single window (sliding: any W consecutive seconds; calendar:
// an aligned window; token bucket: any span [x, y], which may hold at most
// limit + limit·(y−x)/length), counting only charges that lie in it however
// they were decided. 0 means none.
func overAdmission(algo algorithm, w window, charges []span) int64 {
	worst := int64(0)
	switch algo {
	case sliding:
		for _, c := range charges {
			x := floorDiv(c.lo, second) // a window of seconds [x, x+W-1]
			n := int64(0)
			for _, d := range charges {
				if floorDiv(d.lo, second) >= x && floorDiv(d.hi, second) <= x+w.length-1 {
					n++
				}
			}
			worst = max(worst, n-w.limit)
		}
	case calendar:
		count := map[int64]int64{}
		for _, c := range charges {
			k := floorDiv(floorDiv(c.lo, second), w.length)
			if floorDiv(floorDiv(c.hi, second), w.length) == k {
				count[k]++
			}
		}
		for _, n := range count {
			worst = max(worst, n-w.limit)
		}
	case tokenBucket:
		wUs := w.length * second
		var his []int64
		for _, c := range charges {
			x := c.lo
			his = his[:0]
			for _, d := range charges {
				if d.lo >= x {
					his = append(his, d.hi)
				}
			}
			slices.Sort(his)
			for k, y := range his {
				allowed := w.limit + w.limit*(y-x)/wUs
				worst = max(worst, int64(k+1)-allowed)
			}
		}
	}
	return worst
}

// fitsAt returns the earliest instant ≥ t at which a request of n units fits
// w, given the charges (instants, in any order) decided before it, counting
// only those at or before t. It returns t when the request fits at once.
func fitsAt(algo algorithm, w window, charges []int64, t, n int64) int64 {
	var in []int64
	for _, c := range charges {
		if c <= t {
			in = append(in, c)
		}
	}
	slices.Sort(in)
	sec := floorDiv(t, second)
	switch algo {
	case sliding:
		var secs []int64
		for _, c := range in {
			if s := floorDiv(c, second); s > sec-w.length {
				secs = append(secs, s)
			}
		}
		need := int64(len(secs)) + n - w.limit
		if need <= 0 {
			return t
		}
		if need > int64(len(secs)) {
			return 1 << 62
		}
		return (secs[need-1] + w.length) * second
	case calendar:
		k := floorDiv(sec, w.length)
		used := int64(0)
		for _, c := range in {
			if floorDiv(floorDiv(c, second), w.length) == k {
				used++
			}
		}
		if used+n <= w.limit {
			return t
		}
		return (k + 1) * w.length * second
	default:
		// Debt in units·W µs, drained at limit per µs: the arithmetic of
		// quota's token bucket.
		wUs := w.length * second
		debt, at := int64(0), int64(0)
		for i, c := range in {
			if i > 0 {
				debt = max(0, debt-w.limit*(c-at))
			}
			debt += wUs
			at = c
		}
		if len(in) > 0 {
			debt = max(0, debt-w.limit*(t-at))
		}
		over := debt + n*wUs - w.limit*wUs
		if over <= 0 {
			return t
		}
		return t + (over+w.limit-1)/w.limit
	}
}

// fitsAtAll is fitsAt over every window: the latest of their answers.
func fitsAtAll(algo algorithm, ws []window, charges []int64, t, n int64) int64 {
	at := t
	for _, w := range ws {
		at = max(at, fitsAt(algo, w, charges, t, n))
	}
	return at
}

// greedy replays the model over requests decided at the given instants, in
// order, admitting each that fits every window: the most the rules allow
// for requests arriving at those times.
func greedy(algo algorithm, ws []window, times []int64) int {
	ts := slices.Clone(times)
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	var charged []int64
	for _, t := range ts {
		if fitsAtAll(algo, ws, charged, t, 1) == t {
			charged = append(charged, t)
		}
	}
	return len(charged)
}
