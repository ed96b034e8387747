// Package quota holds the counting algorithms of sluice as pure state
// transitions, and the Limiter that applies a deployment's mode and failure
// policy on top of a sluice.QuotaStore.
//
// # State
//
// The state of one key under a policy is one []uint64 per window, which a
// store keeps as it likes (in memory, packed in a database row) and hands to
// Take, Peek and Refund. A nil window state is a fresh window. Layouts:
//
//   - Sliding: s[0] is the number of units counted; s[1:] are the charges,
//     oldest first, one word per second that has any: the Unix second in the
//     high 40 bits and the units charged in it in the low 24. A state never
//     holds more charge words than the window's limit (each counts at least
//     one unit) nor more than one per second of the window (plus one per 16M
//     units in a single second), nor, with a limit, more than maxCharges
//     (128): beyond that its oldest charges move to the end of their cell
//     (coarsen). A key with one unit holds two words.
//   - Calendar: s[0] is the Unix second the counted window started at, s[1]
//     the units counted in it.
//   - TokenBucket: s[0] is the debt, s[1] the Unix microsecond it was
//     computed at, s[2] the window length in microseconds it was computed
//     for. The debt is the units missing from a full bucket times the
//     window length in microseconds: a unit costs W, the bucket holds L*W
//     and drains at L per microsecond, so that every step is exact integer
//     arithmetic.
//
// A window without a limit (Unlimited) still counts, so that a decision
// tells how much it used (WindowStatus.Counted), and never rejects. Sliding
// and calendar windows keep the layouts above (a sliding one counts in
// steps of ceil(length/512) seconds, so that it holds at most about 512
// charge words: chargeSecond). A token bucket has no
// rate without a limit: its unlimited windows count like calendar windows
// aligned to multiples of their length since the Unix epoch (a day window
// starts at midnight UTC), in s[0] the units, s[1] the Unix second the
// window started at, s[2] the mark unlimitedMark. A limit set or removed
// converts the state: a bucket's missing units become the count of the
// current window, and a count of the current window becomes a debt.
//
// Every function here is pure: it reads and rewrites the state it is given,
// and allocates only when a sliding state outgrows its capacity.
package quota

import (
	"math/bits"
	"time"

	"github.com/sluicehq/sluice"
)

const (
	countBits = 24
	countMask = 1<<countBits - 1

	// unlimitedMark is s[2] of an unlimited window's count under the
	// token-bucket algorithm, where a bucket holds its window length in
	// microseconds (never this large).
	unlimitedMark = 1 << 63
)

// Take decides a request of n units for the state st (one entry per window of
// p; entries may be nil) at now. If n units fit in every window it charges
// every window; otherwise it charges nothing. Either way it may drop parts of
// st that no longer count at now, which changes no answer.
func Take(p *sluice.Policy, st [][]uint64, n int64, now time.Time) sluice.Decision {
	var d sluice.Decision
	TakeTo(&d, p, st, n, now)
	return d
}

// TakeTo is Take writing its decision to *d, which must be the zero
// Decision. A store passes its own result, so that the decision (376 bytes)
// is built where its caller reads it instead of built, then copied out of
// Take and again out of the store: those copies were a third of an
// in-memory decision's time.
func TakeTo(d *sluice.Decision, p *sluice.Policy, st [][]uint64, n int64, now time.Time) {
	d.Allowed, d.Time, d.Blocking, d.N = true, now, -1, len(p.Windows)
	nowUs := now.UnixMicro()
	for i := range p.Windows {
		w := &p.Windows[i]
		st[i] = normalize(p, w, st[i], now, nowUs)
		if w.Limit.IsUnlimited() {
			continue
		}
		if wait, ok := room(p, w, st[i], n, now, nowUs); !ok {
			d.Allowed = false
			d.Windows[i].Short = true
			if d.Blocking < 0 || wait > d.RetryAfter {
				d.RetryAfter, d.Blocking = wait, i
			}
		}
	}
	if d.Allowed && n > 0 {
		for i := range p.Windows {
			st[i] = charge(p, &p.Windows[i], st[i], n, now, nowUs)
		}
	}
	if d.Allowed {
		d.RetryAfter = 0
	}
	for i := range p.Windows {
		w := &p.Windows[i]
		s := &d.Windows[i]
		s.Name, s.Length, s.Limit = w.Name, w.Length, w.Limit
		s.Counted = counted(p, w, st[i])
		if !w.Limit.IsUnlimited() {
			s.Remaining, s.Reset = status(p, w, st[i], now, nowUs)
		}
	}
}

// Peek is Take of zero units: the figures of every window, charging nothing.
func Peek(p *sluice.Policy, st [][]uint64, now time.Time) sluice.Decision {
	return Take(p, st, 0, now)
}

// Refund gives back n units charged by a Take decided at the instant at.
// Sliding: the units leave the second they were charged in, if it still
// counts; calendar: the window they were charged in, if it is still the
// current one; token bucket: the debt falls by n units but never below what
// it would be had the charge not been made, which is the same as never below
// zero.
func Refund(p *sluice.Policy, st [][]uint64, n int64, at, now time.Time) {
	nowUs := now.UnixMicro()
	for i := range p.Windows {
		w := &p.Windows[i]
		if n <= 0 {
			continue
		}
		st[i] = normalize(p, w, st[i], now, nowUs)
		s := st[i]
		switch p.Algorithm {
		case sluice.Sliding:
			if len(s) == 0 {
				continue
			}
			sec := chargeSecond(w, at.Unix())
			if !refundSecond(s, sec, uint64(n)) && !w.Limit.IsUnlimited() {
				// No word of that second: the charge may have been
				// moved to the end of its cell (coarsen).
				refundSecond(s, cellEnd(w, sec), uint64(n))
			}
			st[i] = compact(s)
		case sluice.Calendar:
			if len(s) == 2 && uint64(calendarStart(p, w, at)) == s[0] {
				s[1] -= min(s[1], uint64(n))
			}
		case sluice.TokenBucket:
			switch {
			case len(s) != 3:
			case s[2] == unlimitedMark:
				if uint64(epochStart(w, at)) == s[1] {
					s[0] -= min(s[0], uint64(n))
				}
			default:
				s[0] -= min(s[0], uint64(n)*s[2])
			}
		}
	}
}

// Expiry returns the Unix second from which st counts nothing under p, so
// that a store may forget it; 0 if it counts nothing now.
func Expiry(p *sluice.Policy, st [][]uint64) int64 {
	var exp int64
	for i := range p.Windows {
		w := &p.Windows[i]
		s := st[i]
		if len(s) == 0 {
			continue
		}
		var e int64
		switch p.Algorithm {
		case sluice.Sliding:
			if len(s) > 1 {
				e = int64(s[len(s)-1]>>countBits) + seconds(w.Length)
			}
		case sluice.Calendar:
			if len(s) == 2 && s[1] > 0 {
				e = calendarEnd(p, w, time.Unix(int64(s[0]), 0))
			}
		case sluice.TokenBucket:
			if len(s) == 3 && s[2] == unlimitedMark {
				if s[0] > 0 {
					e = int64(s[1]) + seconds(w.Length)
				}
			} else if len(s) == 3 && s[0] > 0 {
				l := uint64(max(w.Limit, 1))
				e = int64(s[1]+(s[0]+l-1)/l+999_999) / 1_000_000
			}
		}
		exp = max(exp, e)
	}
	return exp
}

// normalize returns s with whatever no longer counts at now dropped.
func normalize(p *sluice.Policy, w *sluice.Window, s []uint64, now time.Time, nowUs int64) []uint64 {
	switch p.Algorithm {
	case sluice.Sliding:
		if len(s) < 2 {
			if len(s) == 1 {
				s[0] = 0
			}
			return s
		}
		cut := uint64(now.Unix() - seconds(w.Length)) // charges at or before cut are out
		j := 1
		for j < len(s) && s[j]>>countBits <= cut {
			s[0] -= s[j] & countMask
			j++
		}
		if j > 1 {
			s = s[:1+copy(s[1:], s[j:])]
		}
		return s
	case sluice.Calendar:
		start := uint64(calendarStart(p, w, now))
		if len(s) != 2 {
			return append(s[:0], start, 0)
		}
		if s[0] != start {
			s[0], s[1] = start, 0
		}
		return s
	default: // TokenBucket
		wUs := uint64(w.Length / time.Microsecond)
		if w.Limit.IsUnlimited() {
			start := uint64(epochStart(w, now))
			switch {
			case len(s) != 3:
				return append(s[:0], 0, start, unlimitedMark)
			case s[2] != unlimitedMark:
				// A bucket whose limit was removed: its missing units
				// count in the current window.
				used := uint64(0)
				if s[2] != 0 {
					used = (s[0] + s[2] - 1) / s[2]
				}
				s[0], s[1], s[2] = used, start, unlimitedMark
			case s[1] != start:
				s[0], s[1] = 0, start
			}
			return s
		}
		if len(s) != 3 {
			return append(s[:0], 0, uint64(nowUs), wUs)
		}
		if s[2] == unlimitedMark {
			// A count of an unlimited window that got a limit: the units
			// counted in the current window are the bucket's debt now.
			debt := uint64(0)
			if s[1] == uint64(epochStart(w, now)) {
				debt = min(s[0], 1<<62/wUs) * wUs // far beyond any limit: a full debt, no overflow
			}
			s[0], s[1], s[2] = debt, uint64(nowUs), wUs
			return s
		}
		if s[2] != wUs && s[2] != 0 {
			s[0] = rescale(s[0], wUs, s[2])
			s[2] = wUs
		}
		if elapsed := nowUs - int64(s[1]); elapsed > 0 {
			l := uint64(max(w.Limit, 0))
			if l == 0 {
				// An empty bucket of size zero never refills.
			} else if uint64(elapsed) >= (s[0]+l-1)/l {
				s[0] = 0
			} else {
				s[0] -= uint64(elapsed) * l
			}
			s[1] = uint64(nowUs)
		}
		return s
	}
}

// room reports whether n units fit in the window, and if not, how long until
// they would.
func room(p *sluice.Policy, w *sluice.Window, s []uint64, n int64, now time.Time, nowUs int64) (time.Duration, bool) {
	l := int64(w.Limit)
	if n > l {
		return sluice.InfDuration, false
	}
	switch p.Algorithm {
	case sluice.Sliding:
		used := int64(0)
		if len(s) > 0 {
			used = int64(s[0])
		}
		if used+n <= l {
			return 0, true
		}
		// Drop the oldest charges until n fits: the second that frees
		// the last unit needed is when the retry succeeds.
		need := used + n - l
		for j := 1; j < len(s); j++ {
			need -= int64(s[j] & countMask)
			if need <= 0 {
				at := int64(s[j]>>countBits) + seconds(w.Length)
				return time.Unix(at, 0).Sub(now), false
			}
		}
		return sluice.InfDuration, false // unreachable: used is the sum of the charges
	case sluice.Calendar:
		if int64(s[1])+n <= l {
			return 0, true
		}
		return time.Unix(calendarEnd(p, w, time.Unix(int64(s[0]), 0)), 0).Sub(now), false
	default:
		wUs := s[2]
		capacity := uint64(l) * wUs
		cost := uint64(n) * wUs
		if s[0]+cost <= capacity {
			return 0, true
		}
		if l == 0 {
			// A bucket of size zero never refills: a debt left from
			// before the limit was lowered to 0 keeps even a peek out.
			return sluice.InfDuration, false
		}
		over := s[0] + cost - capacity
		waitUs := (over + uint64(l) - 1) / uint64(l)
		return time.Duration(waitUs)*time.Microsecond - time.Duration(now.Nanosecond()%1000), false
	}
}

// charge counts n units at now; the caller has checked that they fit.
func charge(p *sluice.Policy, w *sluice.Window, s []uint64, n int64, now time.Time, nowUs int64) []uint64 {
	switch p.Algorithm {
	case sluice.Sliding:
		if len(s) == 0 {
			s = append(s, 0)
		}
		s[0] += uint64(n)
		sec := chargeSecond(w, now.Unix())
		if len(s) > maxCharges && !w.Limit.IsUnlimited() && s[len(s)-1]>>countBits < sec {
			s = coarsen(w, s)
		}
		last := len(s) - 1
		if last >= 1 && s[last]>>countBits > sec {
			// The clock went back: keep the charges in order, and
			// count these with the newest, which is the safe side.
			sec = s[last] >> countBits
		}
		left := uint64(n)
		if last >= 1 && s[last]>>countBits == sec {
			add := min(left, countMask-s[last]&countMask)
			s[last] += add
			left -= add
		}
		for left > 0 {
			c := min(left, countMask)
			s = append(grow(w, s), sec<<countBits|c)
			left -= c
		}
		return s
	case sluice.Calendar:
		s[1] += uint64(n)
		return s
	default:
		if s[2] == unlimitedMark {
			s[0] += uint64(n)
		} else {
			s[0] += uint64(n) * s[2]
		}
		return s
	}
}

// grow returns s with room for one more word. A sliding state grows by
// doubling, as append's would, but a limited window's no further than the
// words it holds at most (its count and min(limit, maxCharges) charges,
// and one more; past that, a state a lowered limit left, it doubles), so
// that a busy window does not keep twice the memory it can use: append
// would take one of 128 words to 256.
func grow(w *sluice.Window, s []uint64) []uint64 {
	if len(s) < cap(s) {
		return s
	}
	c := max(2*cap(s), 4)
	if most := int(min(int64(w.Limit), maxCharges)) + 2; !w.Limit.IsUnlimited() && len(s) < most {
		c = min(c, most)
	}
	return append(make([]uint64, 0, c), s...)
}

// maxCharges is the most charge words a limited sliding window keeps: a
// window that would need more coarsens its oldest charges (coarsen), so that
// a busy key's state, and what a decision on it costs, is bounded by the
// window and not by its limit. A window whose limit is at most maxCharges
// never coarsens.
const maxCharges = 128

// cells is the number of cells coarsen divides a limited sliding window
// into: at most cells+1 of them hold charges that count, half of
// maxCharges, so that coarsening the oldest charges always frees a word
// long before it reaches the newest.
const cells = 64

// cellEnd returns t rounded up to the end of its cell, a multiple of
// ceil(length/cells) seconds.
func cellEnd(w *sluice.Window, t uint64) uint64 {
	g := uint64((seconds(w.Length) + cells - 1) / cells)
	return (t + g - 1) / g * g
}

// coarsen frees at least one word of a limited sliding state s that holds
// maxCharges words, oldest first: each charge word moves to the end of its
// cell (cellEnd) and absorbs the words after it in the same cell, until
// fewer than maxCharges words are left. A moved charge counts until the end
// of its cell plus the window's length: later than it would exactly, never
// earlier, so that coarsening never admits more than the limit, and every
// answer (room, retry_after, Reset) is still computed from the words as
// they are, which a retry then finds. The newest words keep their second.
func coarsen(w *sluice.Window, s []uint64) []uint64 {
	k, j := 1, 1 // s[1:k] is coarsened, s[j:] still to read
	for j < len(s) && k-1+len(s)-j >= maxCharges {
		c := cellEnd(w, s[j]>>countBits)
		units := s[j] & countMask
		for j++; j < len(s) && s[j]>>countBits <= c && units+s[j]&countMask <= countMask; j++ {
			units += s[j] & countMask
		}
		s[k] = c<<countBits | units
		k++
	}
	return s[:k+copy(s[k:], s[j:])]
}

// refundSecond takes up to n units out of the charge words of second sec,
// newest first (a refund follows its charge closely), and reports whether
// s has any word of that second.
func refundSecond(s []uint64, sec, n uint64) bool {
	found := false
	for j := len(s) - 1; j >= 1 && n > 0; j-- {
		if s[j]>>countBits < sec {
			break
		}
		if s[j]>>countBits > sec {
			continue
		}
		found = true
		c := min(s[j]&countMask, n)
		s[j] -= c
		s[0] -= c
		n -= c
	}
	return found
}

// chargeSecond returns the Unix second a sliding window counts a charge
// made (or refunded) at second t in: t in a limited window. A window without
// a limit only reports what it used, so it counts in steps of
// ceil(length/512) seconds, rounded up: it holds at most about 512 charge
// words (a day: steps of 169 s) however busy the key, and a charge counts
// up to a step longer than it would exactly, the safe side should a limit
// be set later.
func chargeSecond(w *sluice.Window, t int64) uint64 {
	if !w.Limit.IsUnlimited() {
		return uint64(t)
	}
	g := (seconds(w.Length) + 511) / 512
	if g <= 1 {
		return uint64(t)
	}
	return uint64(t + floorMod(-t, g))
}

// counted returns the units the window counts: for a token bucket, the
// whole units missing from a full bucket (an unlimited one: its count).
func counted(p *sluice.Policy, w *sluice.Window, s []uint64) int64 {
	switch {
	case len(s) == 0:
		return 0
	case p.Algorithm == sluice.Sliding:
		return int64(s[0])
	case len(s) != 3 && p.Algorithm == sluice.TokenBucket, len(s) != 2 && p.Algorithm == sluice.Calendar:
		return 0
	case p.Algorithm == sluice.Calendar:
		return int64(s[1])
	case s[2] == unlimitedMark:
		return int64(s[0])
	default:
		return int64((s[0] + s[2] - 1) / s[2])
	}
}

// epochStart returns the Unix second at which the window of an unlimited
// token bucket that holds t started: a multiple of the window's length
// since the Unix epoch.
func epochStart(w *sluice.Window, t time.Time) int64 {
	sec := t.Unix()
	return sec - floorMod(sec, seconds(w.Length))
}

// status returns the units left in the window and when that number next
// grows.
func status(p *sluice.Policy, w *sluice.Window, s []uint64, now time.Time, nowUs int64) (remaining int64, reset time.Time) {
	l := int64(w.Limit)
	sec := now.Unix()
	switch p.Algorithm {
	case sluice.Sliding:
		if len(s) < 2 {
			return l, time.Unix(sec, 0)
		}
		// Remaining grows when enough of the oldest charges leave to
		// bring the count under the limit: the oldest one, unless a
		// lowered limit left more than the limit counted.
		need := max(int64(s[0])-l+1, 1)
		j := 1
		for ; j < len(s)-1; j++ {
			if need -= int64(s[j] & countMask); need <= 0 {
				break
			}
		}
		return max(l-int64(s[0]), 0), time.Unix(int64(s[j]>>countBits)+seconds(w.Length), 0)
	case sluice.Calendar:
		if s[1] == 0 {
			return l, time.Unix(sec, 0)
		}
		return max(l-int64(s[1]), 0), time.Unix(calendarEnd(p, w, time.Unix(int64(s[0]), 0)), 0)
	default:
		debt, wUs := s[0], s[2]
		if debt == 0 || l == 0 {
			return l, time.Unix(sec, 0)
		}
		missing := (debt + wUs - 1) / wUs // whole units missing from a full bucket
		// Remaining grows when the debt falls to (k-1)*W, k being the
		// units missing but at most the limit (a lowered limit may leave
		// more missing than the bucket holds).
		k := min(missing, uint64(l))
		waitUs := (debt - (k-1)*wUs + uint64(l) - 1) / uint64(l)
		atUs := nowUs + int64(waitUs)
		return max(l-int64(missing), 0), time.Unix((atUs+999_999)/1_000_000, 0)
	}
}

// compact drops sliding charge words whose count fell to zero.
func compact(s []uint64) []uint64 {
	if len(s) == 0 {
		return s
	}
	k := 1
	for j := 1; j < len(s); j++ {
		if s[j]&countMask != 0 {
			s[k] = s[j]
			k++
		}
	}
	return s[:k]
}

// calendarStart returns the Unix second at which the calendar window that
// holds t started: midnight in the policy's location for a window of a day,
// else a multiple of the window's length since the local midnight (since the
// Unix epoch in local time for windows longer than a day).
func calendarStart(p *sluice.Policy, w *sluice.Window, t time.Time) int64 {
	loc := location(p)
	if w.Length == 24*time.Hour {
		y, m, d := t.In(loc).Date()
		return time.Date(y, m, d, 0, 0, 0, 0, loc).Unix()
	}
	_, off := t.In(loc).Zone()
	local := t.Unix() + int64(off)
	l := seconds(w.Length)
	return local - floorMod(local, l) - int64(off)
}

// calendarEnd returns the Unix second at which the calendar window that
// started at start ends.
func calendarEnd(p *sluice.Policy, w *sluice.Window, start time.Time) int64 {
	if w.Length == 24*time.Hour {
		loc := location(p)
		y, m, d := start.In(loc).Date()
		return time.Date(y, m, d+1, 0, 0, 0, 0, loc).Unix()
	}
	return start.Unix() + seconds(w.Length)
}

func location(p *sluice.Policy) *time.Location {
	if p.Location == nil {
		return time.UTC
	}
	return p.Location
}

func seconds(d time.Duration) int64 { return int64(d / time.Second) }

func floorMod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// rescale returns debt*to/from without overflowing 64 bits.
func rescale(debt, to, from uint64) uint64 {
	hi, lo := bits.Mul64(debt, to)
	if hi >= from {
		return 1<<64 - 1
	}
	q, _ := bits.Div64(hi, lo, from)
	return q
}
