// Package redis is sluice's shared quota store: the counters of every gateway
// instance in one Redis (or Valkey, or Redis Cluster), decided by one
// server-side Lua script per call.
//
// # One key, one script, one round trip
//
// The state of a key under a policy (every window) lives in one Redis
// string, Prefix+key, packed as fixed-width integers: a sliding window is a
// list of (Unix second, units) pairs, at most one per second that has a
// charge, and its running total; a limited window keeps at most 128 pairs,
// coarsening its oldest charges as quota does (quota.maxCharges), so that a
// busy account's state, which Redis copies and hashes whole each time Lua
// reads or writes it, is bounded by the window and not by the limit. A
// calendar window is two numbers, a token bucket three (quota/algorithm.go
// describes the figures). The script never unpacks a sliding window's list:
// it reads the pairs it drops from the front and the newest one at their
// offsets, and writes the kept pairs back as one substring.
//
// A state written by this script is read correctly by the script before
// the bound (a rolling upgrade): its layout is the same, a coarsened pair
// is a pair. That older script does not coarsen, and a refund it makes of a
// charge this script coarsened finds no pair of that second and is lost
// (the safe side: the units count until their cell ends).
// Each Take, Peek and Refund is one EVALSHA of quota.lua (EVAL when the
// server has not cached it yet), which runs the algorithms of the quota
// package with the same semantics, all windows or none, and returns the
// figures the Decision is built from. The call's numbers travel packed in
// one argument and the figures come back packed in one string: Redis
// converts a decimal argument with strtod and a reply table element by
// element, which cost a sixth of a decision. (A Redis 7 FUNCTION, FCALL,
// measured within 1% of EVALSHA, not worth loading functions on every
// node.) Every key written carries a TTL at
// the instant nothing in it counts any more (quota.Expiry).
//
// The gateway's keys hold a hash tag ({acct:42}); one call touches exactly
// one key, so the script runs on Redis Cluster as on a single server.
//
// # Clock
//
// The script reads the server's TIME, so gateways whose clocks disagree make
// the same decisions: Decision.Time is Redis's time, and the now passed to
// Take is used only to send calendar windows' zone offsets (which must hold
// within two days of Redis's time). Options.CallerClock makes the store
// decide at the passed now instead, for tests.
//
// # Limits of the Lua arithmetic
//
// Lua numbers are doubles: integers are exact below 2^53. A token bucket
// counts in units times microseconds of its window, so the store refuses a
// token-bucket window whose limit times its length in microseconds reaches
// 2^52 (100,000 per day is fine; 100 million per day is not).
package redis

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/quota"
)

//go:embed quota.lua
var quotaLua string

var script = rueidis.NewLuaScript(quotaLua)

// Store is a sluice.QuotaStore in Redis. It is safe for concurrent use.
//
// Once connected, a call reads the client from an atomic pointer: no lock
// is taken on the decision path. Until then (Open before Redis is up), one
// dial at a time runs in the background, and each call waits for it no
// longer than its context allows: a dial to a dead or unreachable Redis
// never holds a decision longer than the caller's deadline (the Limiter's
// quota.timeout).
type Store struct {
	prefix string
	caller bool
	owned  bool // Close closes the client

	client atomic.Pointer[rueidis.Client] // nil until a dial succeeds
	lua    *rueidis.Lua                   // the quota script; tests run an older one

	dial    func() (rueidis.Client, error) // Open's: connects on first use
	mu      sync.Mutex                     // guards dialing and closed
	dialing *dialAttempt                   // the dial in flight, if any
	closed  bool
}

// dialAttempt is one background dial; done is closed when it has ended,
// err set if it failed.
type dialAttempt struct {
	done chan struct{}
	err  error
}

var _ sluice.QuotaStore = (*Store)(nil)

// Options configure a Store.
type Options struct {
	// Prefix is put in front of every key; "" means none.
	Prefix string
	// CallerClock makes the store decide at the now its callers pass
	// instead of at the server's TIME. Only tests want it: gateways with
	// skewed clocks would then disagree.
	CallerClock bool
}

// New returns a store on client (a rueidis client: it pipelines the calls of
// concurrent callers on one connection). Close does not close the client.
func New(client rueidis.Client, opts Options) *Store {
	s := &Store{prefix: opts.Prefix, caller: opts.CallerClock, lua: script}
	s.client.Store(&client)
	return s
}

// Open returns a store on the Redis at url (see ParseURL). It connects on
// first use, and again on every call until it succeeds, so that a gateway
// may start before its Redis (calls fail meanwhile). Close closes the
// connection.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	o, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	s := &Store{prefix: opts.Prefix, caller: opts.CallerClock, owned: true, lua: script}
	s.dial = func() (rueidis.Client, error) { return rueidis.NewClient(o) }
	// Connect now if Redis is up, within ctx; the script loads on first use
	// (EVAL on NOSCRIPT).
	_, _ = s.conn(ctx)
	return s, nil
}

// conn returns the client. If Open's store has none yet it starts a dial,
// or joins the one in flight, and waits for it while ctx allows; the dial
// goes on without the caller, for the next calls.
func (s *Store) conn(ctx context.Context) (rueidis.Client, error) {
	if c := s.client.Load(); c != nil {
		return *c, nil
	}
	s.mu.Lock()
	if c := s.client.Load(); c != nil { // connected meanwhile
		s.mu.Unlock()
		return *c, nil
	}
	if s.closed || s.dial == nil {
		s.mu.Unlock()
		return nil, errors.New("redis: store closed")
	}
	d := s.dialing
	if d == nil {
		d = &dialAttempt{done: make(chan struct{})}
		s.dialing = d
		go s.connect(d)
	}
	s.mu.Unlock()
	select {
	case <-d.done:
		if d.err != nil {
			return nil, d.err
		}
		return *s.client.Load(), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("redis: connecting: %w", ctx.Err())
	}
}

// connect runs dial d and publishes its client, unless the store was
// closed meanwhile.
func (s *Store) connect(d *dialAttempt) {
	c, err := s.dial()
	s.mu.Lock()
	defer s.mu.Unlock()
	defer close(d.done)
	s.dialing = nil // the next call after a failure dials again
	switch {
	case err != nil:
		if c != nil {
			c.Close()
		}
		d.err = fmt.Errorf("redis: %w", err)
	case s.closed:
		c.Close()
		d.err = errors.New("redis: store closed")
	default:
		s.client.Store(&c)
	}
}

// Client returns the store's client, nil if Open's store has not connected
// yet.
func (s *Store) Client() rueidis.Client {
	if c := s.client.Load(); c != nil {
		return *c
	}
	return nil
}

// Close closes the connection if Open made it. A dial in flight is not
// waited for; its client is closed when it ends.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.client.Load(); s.owned && c != nil {
		(*c).Close()
	}
	s.closed = true
	return nil
}

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// maxBucket bounds a token bucket's limit times its window in microseconds,
// so that the script's arithmetic on doubles stays exact.
const maxBucket = 1 << 52

// args returns the script's arguments (quota.lua describes them): the call
// packed in one string of big-endian doubles, then the calendar tables.
func (s *Store) args(op byte, p *sluice.Policy, n int64, now time.Time, at time.Time) ([]string, error) {
	if len(p.Windows) > sluice.MaxWindows {
		return nil, fmt.Errorf("redis: a policy has at most %d windows", sluice.MaxWindows)
	}
	nowArg := int64(-1)
	if s.caller {
		nowArg = now.UnixMicro()
	}
	hdr := make([]byte, 0, 3+3*8+3*8*len(p.Windows))
	hdr = append(hdr, op, byte(p.Algorithm), byte(len(p.Windows)))
	hdr = appendNum(hdr, nowArg)
	hdr = appendNum(hdr, n)
	hdr = appendNum(hdr, at.Unix())
	args := []string{""}
	for i := range p.Windows {
		w := &p.Windows[i]
		var length int64
		cal, atStart := "", int64(0)
		switch p.Algorithm {
		case sluice.TokenBucket:
			length = int64(w.Length / time.Microsecond)
			if !w.Limit.IsUnlimited() && (length <= 0 || uint64(w.Limit) >= maxBucket/uint64(length)) {
				return nil, fmt.Errorf("redis: token bucket window %q: limit %d per %v is too large to count exactly", w.Name, w.Limit, w.Length)
			}
		case sluice.Calendar:
			length = int64(w.Length / time.Second)
			if length <= 0 {
				return nil, fmt.Errorf("redis: window %q is shorter than a second", w.Name)
			}
			cal = calendarTable(p, w, now)
			if op == opRefund {
				atStart = quota.CalendarStart(p, w, at)
			}
		default:
			length = int64(w.Length / time.Second)
		}
		hdr = appendNum(hdr, int64(w.Limit))
		hdr = appendNum(hdr, length)
		hdr = appendNum(hdr, atStart)
		if p.Algorithm == sluice.Calendar {
			args = append(args, cal)
		}
	}
	args[0] = string(hdr)
	return args, nil
}

// appendNum appends x as the script reads numbers: a big-endian double
// (exact: every figure the store sends is below 2^53).
func appendNum(b []byte, x int64) []byte {
	return binary.BigEndian.AppendUint64(b, math.Float64bits(float64(x)))
}

// The script's operations.
const (
	opTake   = 0
	opRefund = 1
)

// calendarTable describes the calendar window around now for the script:
// "O,off0,from1,off1,..." lists the zone offsets in force from two days
// before now to two days after (windows are multiples of their length since
// local midnight); "D,m1,m2,..." lists local midnights, for day windows in
// a zone that changes its offset in that span.
func calendarTable(p *sluice.Policy, w *sluice.Window, now time.Time) string {
	loc := p.Location
	if loc == nil || loc == time.UTC {
		return "O,0"
	}
	const margin = 48 * time.Hour
	from, to := now.Add(-margin), now.Add(margin)
	_, off := from.In(loc).Zone()
	var segs []int64
	for t := from; ; {
		_, end := t.In(loc).ZoneBounds()
		if end.IsZero() || !end.Before(to) || !end.After(t) {
			break
		}
		_, o := end.In(loc).Zone()
		segs = append(segs, end.Unix(), int64(o))
		t = end
	}
	var b strings.Builder
	if len(segs) > 0 && w.Length == 24*time.Hour {
		b.WriteString("D")
		y, m, d := from.In(loc).Date()
		for k := -1; k <= 6; k++ {
			b.WriteByte(',')
			b.WriteString(strconv.FormatInt(time.Date(y, m, d+k, 0, 0, 0, 0, loc).Unix(), 10))
		}
		return b.String()
	}
	b.WriteString("O,")
	b.WriteString(strconv.Itoa(off))
	for _, x := range segs {
		b.WriteByte(',')
		b.WriteString(strconv.FormatInt(x, 10))
	}
	return b.String()
}

func (s *Store) run(ctx context.Context, key string, args []string) ([]byte, error) {
	c, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	v, err := s.lua.Exec(ctx, c, []string{s.prefix + key}, args).AsBytes()
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	return v, nil
}

// Take implements sluice.QuotaStore in one round trip.
func (s *Store) Take(ctx context.Context, key string, p *sluice.Policy, n int64, now time.Time) (sluice.Decision, error) {
	if n < 0 {
		return sluice.Decision{}, sluice.FieldError("n", "The number of units must not be negative.")
	}
	args, err := s.args(opTake, p, n, now, now)
	if err != nil {
		return sluice.Decision{}, err
	}
	v, err := s.run(ctx, key, args)
	if err != nil {
		return sluice.Decision{}, err
	}
	return s.decision(p, v, now)
}

// Peek implements sluice.QuotaStore: a take of zero units, which writes
// nothing.
func (s *Store) Peek(ctx context.Context, key string, p *sluice.Policy, now time.Time) (sluice.Decision, error) {
	return s.Take(ctx, key, p, 0, now)
}

// Refund implements sluice.QuotaStore.
func (s *Store) Refund(ctx context.Context, key string, p *sluice.Policy, n int64, at, now time.Time) error {
	if n <= 0 {
		return nil
	}
	args, err := s.args(opRefund, p, n, now, at)
	if err != nil {
		return err
	}
	_, err = s.run(ctx, key, args)
	return err
}

// Reset implements sluice.QuotaStore.
func (s *Store) Reset(ctx context.Context, key string) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	if err := c.Do(ctx, c.B().Del().Key(s.prefix+key).Build()).Error(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

var errReply = errors.New("redis: malformed reply from the quota script")

// decision builds the Decision from the script's figures, packed as
// big-endian doubles: now in microseconds, then per window the units it
// counts, its reset and its wait (0 if the request fits in it; -1 never; a
// Unix second, or microseconds for a token bucket).
func (s *Store) decision(p *sluice.Policy, v []byte, now time.Time) (sluice.Decision, error) {
	if len(v) != 8*(1+3*len(p.Windows)) {
		return sluice.Decision{}, errReply
	}
	num := func(i int) int64 { return int64(math.Float64frombits(binary.BigEndian.Uint64(v[8*i:]))) }
	if !s.caller {
		now = time.UnixMicro(num(0))
	}
	d := sluice.Decision{Allowed: true, Time: now, Blocking: -1, N: len(p.Windows)}
	for i := range p.Windows {
		w := &p.Windows[i]
		ws := &d.Windows[i]
		ws.Name, ws.Length, ws.Limit = w.Name, w.Length, w.Limit
		f := 1 + 3*i
		ws.Counted = num(f)
		if w.Limit.IsUnlimited() {
			continue
		}
		ws.Remaining, ws.Reset = max(int64(w.Limit)-ws.Counted, 0), time.Unix(num(f+1), 0)
		x := num(f + 2)
		if x == 0 {
			continue
		}
		ws.Short, d.Allowed = true, false
		var wait time.Duration
		switch {
		case x < 0:
			wait = sluice.InfDuration
		case p.Algorithm == sluice.TokenBucket:
			wait = time.Duration(x)*time.Microsecond - time.Duration(now.Nanosecond()%1000)
		default:
			wait = time.Unix(x, 0).Sub(now)
		}
		if d.Blocking < 0 || wait > d.RetryAfter {
			d.RetryAfter, d.Blocking = wait, i
		}
	}
	if d.Allowed {
		d.RetryAfter = 0
	}
	return d, nil
}

// Time returns Redis's clock (TIME), for `sluice doctor` to compare with
// the machine's: the store decides at the server's time, so gateways whose
// clocks differ from it see windows reset at other moments than their own
// clocks say.
func (s *Store) Time(ctx context.Context) (time.Time, error) {
	c, err := s.conn(ctx)
	if err != nil {
		return time.Time{}, err
	}
	v, err := c.Do(ctx, c.B().Time().Build()).AsStrSlice()
	if err != nil {
		return time.Time{}, fmt.Errorf("redis: %w", err)
	}
	if len(v) != 2 {
		return time.Time{}, fmt.Errorf("redis: TIME answered %d fields", len(v))
	}
	sec, err1 := strconv.ParseInt(v[0], 10, 64)
	usec, err2 := strconv.ParseInt(v[1], 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, fmt.Errorf("redis: TIME answered %q", v)
	}
	return time.Unix(sec, usec*1000), nil
}

// MinVersion is the oldest Redis (or Valkey, which reports the Redis
// version it matches) that the quota script runs on: it sets a key's
// expiry with SET … PXAT (Redis 6.2) and keeps it with SET … KEEPTTL (6.0).
const MinVersion = "6.2"

// Version returns the server's version, redis_version of INFO server, for
// `sluice doctor` to compare with MinVersion (Supported).
func (s *Store) Version(ctx context.Context) (string, error) {
	c, err := s.conn(ctx)
	if err != nil {
		return "", err
	}
	info, err := c.Do(ctx, c.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return "", fmt.Errorf("redis: %w", err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v, nil
		}
	}
	return "", errors.New("redis: INFO server names no redis_version")
}

// Supported reports whether a server of version v ("7.0.15") runs the
// quota script, MinVersion or later, and whether v could be read at all
// (major.minor[.patch…], numbers).
func Supported(v string) (ok, known bool) {
	major, minor, known := majorMinor(v)
	if !known {
		return false, false
	}
	wantMajor, wantMinor, _ := majorMinor(MinVersion)
	return major > wantMajor || major == wantMajor && minor >= wantMinor, true
}

// majorMinor reads the first two numbers of a dotted version.
func majorMinor(v string) (major, minor int, ok bool) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || major < 0 || minor < 0 {
		return 0, 0, false
	}
	return major, minor, true
}
