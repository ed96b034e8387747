package storetest

import (
	"math/big"
	"slices"
	"time"

	"github.com/sluicehq/sluice"
)

// model is a brute-force reference for the quota algorithms: it keeps every
// charge it admitted and recomputes each answer from them by the contract's
// definitions (scanning forward second by second for sliding windows, exact
// rationals for token buckets). It shares no code with the quota package.
type model struct {
	p       sluice.Policy
	charges [][]charge      // per window
	tokens  []*big.Rat      // token bucket: units in the bucket
	last    []time.Duration // token bucket: microseconds since epoch of tokens
}

type charge struct {
	sec int64
	n   int64
	// moved: the charge was coarsened to the end of its cell (sec), and
	// counts from when it was made.
	moved bool
}

// maxWords and cellCount are the contract of a bounded sliding window: a
// limited window that would need more than maxWords distinct charge
// seconds moves its oldest charges to the end of their cell of
// ceil(length/cellCount) seconds, oldest cell first, until it needs fewer.
const (
	maxWords  = 128
	cellCount = 64
)

func newModel(p sluice.Policy) *model {
	m := &model{p: p, charges: make([][]charge, len(p.Windows))}
	for _, w := range p.Windows {
		m.tokens = append(m.tokens, big.NewRat(int64(w.Limit), 1))
		m.last = append(m.last, -1)
	}
	return m
}

// clone returns a copy of m that shares nothing with it.
func (m *model) clone() *model {
	c := &model{p: m.p, last: append([]time.Duration(nil), m.last...)}
	for _, cs := range m.charges {
		c.charges = append(c.charges, append([]charge(nil), cs...))
	}
	for _, t := range m.tokens {
		c.tokens = append(c.tokens, new(big.Rat).Set(t))
	}
	return c
}

// chargeSecond is the second a sliding window counts a charge made at t
// in: t, or for a window without a limit t rounded up to a multiple of
// ceil(length/512) seconds.
func (m *model) chargeSecond(i int, t int64) int64 {
	w := m.p.Windows[i]
	if m.p.Algorithm != sluice.Sliding || !w.Limit.IsUnlimited() {
		return t
	}
	g := (int64(w.Length/time.Second) + 511) / 512
	return (t + g - 1) / g * g // t > 0
}

// usedAt is the sum of the window's charges that count at second t.
func (m *model) usedAt(i int, t int64) int64 {
	w := m.p.Windows[i]
	var u int64
	for _, c := range m.charges[i] {
		switch m.p.Algorithm {
		case sluice.Sliding:
			// A window without a limit counts a charge from the second
			// it was rounded up to (chargeSecond) but already at t.
			if (c.sec <= t || w.Limit.IsUnlimited() || c.moved) && c.sec > t-int64(w.Length/time.Second) {
				u += c.n
			}
		case sluice.Calendar, sluice.TokenBucket: // a token bucket: unlimited windows only
			if m.start(i, c.sec) == m.start(i, t) {
				u += c.n
			}
		}
	}
	return u
}

// start is the calendar window's start for second t (UTC, whole-second
// lengths, by division: the model is only run in UTC). An unlimited window
// of a token bucket counts in the same windows.
func (m *model) start(i int, t int64) int64 {
	l := int64(m.p.Windows[i].Length / time.Second)
	return t - ((t%l)+l)%l
}

func (m *model) refill(i int, now time.Time) {
	w := m.p.Windows[i]
	us := time.Duration(now.UnixMicro())
	if m.last[i] >= 0 && us > m.last[i] {
		add := new(big.Rat).SetFrac64(int64(us-m.last[i])*int64(w.Limit), int64(w.Length/time.Microsecond))
		m.tokens[i].Add(m.tokens[i], add)
		if lim := big.NewRat(int64(w.Limit), 1); m.tokens[i].Cmp(lim) > 0 {
			m.tokens[i] = lim
		}
	}
	if us > m.last[i] {
		m.last[i] = us
	}
}

// ceilRat returns the smallest integer at least r.
func ceilRat(r *big.Rat) int64 {
	q, rem := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if rem.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	return q.Int64()
}

func floorRat(r *big.Rat) int64 {
	q, rem := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if rem.Sign() < 0 {
		q.Sub(q, big.NewInt(1))
	}
	return q.Int64()
}

// window returns the window's remaining units at now, when they next grow,
// and how long until n units fit (0 if they do now).
func (m *model) window(i int, n int64, now time.Time) (remaining int64, reset time.Time, wait time.Duration) {
	w := m.p.Windows[i]
	l := int64(w.Limit)
	t := now.Unix()
	wsec := int64(w.Length / time.Second)
	if m.p.Algorithm == sluice.TokenBucket {
		m.refill(i, now)
		tok := m.tokens[i]
		remaining = floorRat(tok)
		reset = time.Unix(t, 0)
		if tok.Cmp(big.NewRat(l, 1)) < 0 {
			// Time until tokens reach remaining+1, in whole microseconds.
			need := new(big.Rat).Sub(big.NewRat(remaining+1, 1), tok)
			us := ceilRat(need.Mul(need, big.NewRat(int64(w.Length/time.Microsecond), l)))
			at := now.UnixMicro() + us
			reset = time.Unix((at+999_999)/1_000_000, 0)
		}
		if n > l {
			return remaining, reset, sluice.InfDuration
		}
		if tok.Cmp(big.NewRat(n, 1)) < 0 {
			need := new(big.Rat).Sub(big.NewRat(n, 1), tok)
			us := ceilRat(need.Mul(need, big.NewRat(int64(w.Length/time.Microsecond), l)))
			wait = time.Duration(us) * time.Microsecond
		}
		return remaining, reset, wait
	}
	used := m.usedAt(i, t)
	remaining = max(l-used, 0)
	reset = time.Unix(t, 0)
	if used > 0 {
		// The first second at which Remaining is larger, with no traffic.
		for T := t + 1; ; T++ {
			if max(l-m.usedAt(i, T), 0) > remaining {
				reset = time.Unix(T, 0)
				break
			}
		}
	}
	if n > l {
		return remaining, reset, sluice.InfDuration
	}
	if used+n > l {
		for T := t + 1; T <= t+wsec; T++ {
			if m.usedAt(i, T)+n <= l {
				return remaining, reset, time.Unix(T, 0).Sub(now)
			}
		}
		panic("model: no second within the window frees room")
	}
	return remaining, reset, 0
}

func (m *model) take(n int64, now time.Time) sluice.Decision {
	d := sluice.Decision{Allowed: true, Time: now, Blocking: -1, N: len(m.p.Windows)}
	for i, w := range m.p.Windows {
		if w.Limit.IsUnlimited() {
			continue
		}
		if _, _, wait := m.window(i, n, now); wait > 0 {
			d.Allowed = false
			d.Windows[i].Short = true
			if d.Blocking < 0 || wait > d.RetryAfter {
				d.RetryAfter, d.Blocking = wait, i
			}
		}
	}
	if d.Allowed {
		d.RetryAfter = 0
		if n > 0 {
			for i, w := range m.p.Windows {
				if m.p.Algorithm == sluice.TokenBucket && !w.Limit.IsUnlimited() {
					m.tokens[i].Sub(m.tokens[i], big.NewRat(n, 1))
				} else {
					m.charges[i] = append(m.charges[i], m.place(i, now))
					m.charges[i][len(m.charges[i])-1].n = n
				}
			}
		}
	}
	for i, w := range m.p.Windows {
		s := &d.Windows[i]
		s.Name, s.Length, s.Limit = w.Name, w.Length, w.Limit
		switch {
		case w.Limit.IsUnlimited() || m.p.Algorithm != sluice.TokenBucket:
			s.Counted = m.usedAt(i, now.Unix())
		}
		if !w.Limit.IsUnlimited() {
			s.Remaining, s.Reset, _ = m.window(i, 0, now)
			if m.p.Algorithm == sluice.TokenBucket {
				s.Counted = int64(w.Limit) - s.Remaining // whole units missing
			}
		}
	}
	return d
}

// place returns the charge (without units) that a take at now adds to
// window i, coarsening the window's older charges first if it would hold
// more than maxWords distinct seconds.
func (m *model) place(i int, now time.Time) charge {
	w := m.p.Windows[i]
	sec := m.chargeSecond(i, now.Unix())
	if m.p.Algorithm != sluice.Sliding || w.Limit.IsUnlimited() {
		return charge{sec: sec}
	}
	wsec := int64(w.Length / time.Second)
	// The distinct seconds of the charges that count, oldest first.
	var secs []int64
	newest := int64(0)
	for _, c := range m.charges[i] {
		if c.n > 0 && c.sec > now.Unix()-wsec {
			secs = append(secs, c.sec)
			newest = max(newest, c.sec)
		}
	}
	slices.Sort(secs)
	secs = slices.Compact(secs)
	if newest >= sec {
		// The newest charge was moved past now: this one counts with it.
		return charge{sec: newest, moved: newest > sec}
	}
	if len(secs) < maxWords {
		return charge{sec: sec}
	}
	// Distinct seconds after coarsening the oldest cells, one cell at a
	// time, until fewer than maxWords remain.
	left := len(secs)
	for j := 0; j < len(secs) && left >= maxWords; {
		end := m.cellEnd(i, secs[j])
		k := j
		for k < len(secs) && secs[k] <= end {
			k++
		}
		for ci := range m.charges[i] {
			c := &m.charges[i][ci]
			if c.n > 0 && c.sec >= secs[j] && c.sec <= end && c.sec > now.Unix()-wsec {
				c.moved = c.moved || c.sec != end
				c.sec = end
			}
		}
		left -= k - j - 1
		j = k
	}
	return charge{sec: sec}
}

// cellEnd is second t rounded up to the end of its cell of window i, a
// multiple of ceil(length/cellCount) seconds.
func (m *model) cellEnd(i int, t int64) int64 {
	g := (int64(m.p.Windows[i].Length/time.Second) + cellCount - 1) / cellCount
	return (t + g - 1) / g * g
}

func (m *model) refund(n int64, at, now time.Time) {
	for i, w := range m.p.Windows {
		alg := m.p.Algorithm
		if alg == sluice.TokenBucket && w.Limit.IsUnlimited() {
			alg = sluice.Calendar // counts as in calendar windows
		}
		switch alg {
		case sluice.TokenBucket:
			m.refill(i, now)
			m.tokens[i].Add(m.tokens[i], big.NewRat(n, 1))
			if lim := big.NewRat(int64(w.Limit), 1); m.tokens[i].Cmp(lim) > 0 {
				m.tokens[i] = lim
			}
		case sluice.Sliding, sluice.Calendar:
			atSec := m.chargeSecond(i, at.Unix())
			if alg == sluice.Sliding && !w.Limit.IsUnlimited() && !m.hasSecond(i, atSec, now) {
				atSec = m.cellEnd(i, atSec) // coarsened: it counts at the end of its cell
			}
			counts := alg == sluice.Sliding && atSec > now.Unix()-int64(w.Length/time.Second) ||
				alg == sluice.Calendar && m.start(i, at.Unix()) == m.start(i, now.Unix())
			left := n
			for j := len(m.charges[i]) - 1; j >= 0 && left > 0 && counts; j-- {
				c := &m.charges[i][j]
				if c.sec == atSec || alg == sluice.Calendar && m.start(i, c.sec) == m.start(i, now.Unix()) {
					k := min(c.n, left)
					c.n -= k
					left -= k
				}
			}
		}
	}
}

// hasSecond reports whether window i holds units charged at second sec that
// still count at now.
func (m *model) hasSecond(i int, sec int64, now time.Time) bool {
	wsec := int64(m.p.Windows[i].Length / time.Second)
	for _, c := range m.charges[i] {
		if c.sec == sec && c.n > 0 && c.sec > now.Unix()-wsec {
			return true
		}
	}
	return false
}
