// Package history records the usage history of CONTRACT.md §10: a
// sluice.UsageRecorder that counts every quota decision in memory and
// writes the counts to a sluice.UsageStore (sqlite or postgres) in the
// background.
//
// Recording is on the request path, so Record never blocks on I/O, never
// allocates once a row exists for the event's account, key, channel, model
// and minute, and takes one of many sharded locks, the one its P used last
// (through a sync.Pool), so that concurrent requests (even of one account)
// rarely meet and a core mostly touches cache lines it holds already. A
// row may then be counted in several shards; a flush adds them up.
//
// Every FlushInterval the counts are swapped out of the shards and added to
// the store in one call: each minute's counts are added to their minute
// row, and also to their hour row and their day row. Writing all three
// granularities at flush time keeps the rollups exact with any number of
// gateways adding to one database: every write is an addition
// (INSERT … ON CONFLICT DO UPDATE SET x = x + excluded.x), none is a
// recomputation that could race with another instance or a late flush.
// It costs three upserts per row instead of one.
//
// What can be lost, and how it is counted (the dropped metric and a log
// line at most once a second):
//
//   - a crash loses the counts since the last flush (at most FlushInterval);
//     Close flushes;
//   - a flush that fails or outlasts FlushTimeout loses its batch: it is not
//     retried, since a write that timed out may still have committed and a
//     retry could count it twice;
//   - while the store is slow, counts keep accumulating in memory up to
//     MaxRows distinct rows; beyond that, events of rows not yet in memory
//     are dropped (events of existing rows still count).
//
// Retention is applied by Purge, which the Recorder runs every
// PurgeInterval: rows of each granularity older than its retention are
// deleted. Several gateways may purge the same store; deletes are
// idempotent.
package history

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
)

// Defaults of Options.
const (
	DefaultFlushInterval = 10 * time.Second
	DefaultPurgeInterval = 15 * time.Minute
	// DefaultMaxRows bounds the rows buffered in memory: at about 200
	// bytes a row, 16 MiB.
	DefaultMaxRows = 1 << 16
)

// Default retention of each granularity (CONTRACT.md §10).
var DefaultRetention = Retention{Minute: 48 * time.Hour, Hour: 90 * 24 * time.Hour, Day: 2 * 365 * 24 * time.Hour}

// Retention is how long rows of each granularity are kept; 0 keeps them
// for ever.
type Retention struct {
	Minute, Hour, Day time.Duration
}

// Options configure a Recorder. The zero value takes the defaults.
type Options struct {
	// FlushInterval is how often counts are written; 0 means
	// DefaultFlushInterval.
	FlushInterval time.Duration
	// FlushTimeout bounds one flush; 0 means FlushInterval (at least a
	// second).
	FlushTimeout time.Duration
	// Retention is applied every PurgeInterval; 0 means
	// DefaultPurgeInterval, negative means never (Purge may still be
	// called).
	Retention     Retention
	PurgeInterval time.Duration
	// MaxRows bounds the distinct rows held in memory between flushes; 0
	// means DefaultMaxRows.
	MaxRows int
	// Logger receives flush failures and drops, at most one line a
	// second; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil means none are registered.
	Registerer prometheus.Registerer
	// Now is the clock of the purge job; nil means time.Now.
	Now func() time.Time
}

var _ sluice.UsageRecorder = (*Recorder)(nil)

// Recorder is the usage history's sluice.UsageRecorder. New starts its
// background flush and purge; Close stops them, flushing what is left. It
// is safe for concurrent use.
type Recorder struct {
	store  sluice.UsageStore
	opts   Options
	log    *slog.Logger
	shards []shard
	mask   uint32
	// affine hands out shards with affinity to the P (sync.Pool keeps
	// its objects per P), so that a P's Records meet the cache lines it
	// used last instead of another core's. It only ever holds pointers to
	// shards; when the GC empties it, New deals the shards out again.
	affine sync.Pool
	next   atomic.Uint32
	// rows counts the rows in memory, against MaxRows: an atomic add per
	// new row, not per event.
	rows atomic.Int64

	flushMu sync.Mutex // serialises flushes; guards spare buffers
	spare   []shardBuf

	lost     atomic.Int64 // events lost in failed flushes
	lastLog  atomic.Int64 // Unix nanoseconds of the last drop or failure log line
	lastSeen int64        // dropped count at the last log line; guarded by flushMu
	flushDur *prometheus.HistogramVec

	stop, done chan struct{}
	closeOnce  sync.Once
}

// key names one row of the minute granularity in memory.
type key struct {
	account int64
	minute  int64 // Unix minutes
	keyID   string
	channel string
	model   string
}

// counts are what happened in one row; events counts the Records that
// went into it, for the dropped metric.
type counts struct {
	images, requests, rejected, refunded, shadow, rejHour, rejDay int64
	events                                                        int64
}

type row struct {
	key key
	c   counts
}

// shardBuf is the rows of one shard since the last flush: rows in order of
// first event, index mapping a key to its position.
type shardBuf struct {
	rows  []row
	index map[key]int32
}

// shard is one lock and its rows, padded so that two shards never share a
// cache line.
type shard struct {
	mu  sync.Mutex
	buf shardBuf
	// last is the key of the shard's last event and at its row in buf
	// (-1: none): comparing keys costs a fraction of hashing one, and a
	// busy key meets itself in every shard.
	last     key
	at       int32
	recorded [4]int64 // by sluice.UsageOutcome
	dropped  int64    // events refused because the shard was full
	_        [64]byte
}

// New returns a Recorder writing to store, and starts its background jobs.
func New(store sluice.UsageStore, opts Options) *Recorder {
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = max(opts.FlushInterval, time.Second)
	}
	if opts.PurgeInterval == 0 {
		opts.PurgeInterval = DefaultPurgeInterval
	}
	if opts.MaxRows <= 0 {
		opts.MaxRows = DefaultMaxRows
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	n := 8
	for n < 4*runtime.GOMAXPROCS(0) {
		n *= 2
	}
	r := &Recorder{
		store:  store,
		opts:   opts,
		log:    opts.Logger,
		shards: make([]shard, n),
		mask:   uint32(n - 1),
		spare:  make([]shardBuf, n),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	for i := range r.shards {
		r.shards[i].at = -1
		r.shards[i].buf.index = make(map[key]int32)
		r.spare[i].index = make(map[key]int32)
	}
	r.affine.New = func() any { return &r.shards[r.next.Add(1)&r.mask] }
	r.register(opts.Registerer)
	go r.run()
	return r
}

// Record counts e in memory. It never blocks on I/O and never fails; an
// event that does not fit (MaxRows) is dropped and counted.
func (r *Recorder) Record(e *sluice.UsageEvent) {
	if e.Outcome > sluice.UsageShadow {
		return
	}
	k := key{account: e.AccountID, minute: floorDiv(e.Time.Unix(), 60), keyID: e.KeyID, channel: e.Channel, model: e.Model}
	s := r.affine.Get().(*shard)
	s.mu.Lock()
	i := s.at
	if i < 0 || s.last != k {
		var ok bool
		if i, ok = s.buf.index[k]; !ok {
			if r.rows.Add(1) > int64(r.opts.MaxRows) {
				r.rows.Add(-1)
				s.dropped++
				s.mu.Unlock()
				r.affine.Put(s)
				return
			}
			i = int32(len(s.buf.rows))
			s.buf.rows = append(s.buf.rows, row{key: k})
			s.buf.index[k] = i
		}
		s.last, s.at = k, i
	}
	c := &s.buf.rows[i].c
	c.events++
	switch e.Outcome {
	case sluice.UsageAdmitted:
		c.images += e.Units
		c.requests++
	case sluice.UsageShadow:
		c.images += e.Units
		c.requests++
		c.shadow += e.Units
	case sluice.UsageRejected:
		c.rejected++
		switch e.Window {
		case "hour":
			c.rejHour++
		case "day":
			c.rejDay++
		}
	case sluice.UsageRefunded:
		c.refunded += e.Units
	}
	s.recorded[e.Outcome]++
	s.mu.Unlock()
	r.affine.Put(s)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// run flushes every FlushInterval and purges every PurgeInterval until
// Close.
func (r *Recorder) run() {
	defer close(r.done)
	flush := time.NewTicker(r.opts.FlushInterval)
	defer flush.Stop()
	var purge <-chan time.Time
	if r.opts.PurgeInterval > 0 {
		t := time.NewTicker(r.opts.PurgeInterval)
		defer t.Stop()
		purge = t.C
	}
	for {
		select {
		case <-r.stop:
			return
		case <-flush.C:
			ctx, cancel := context.WithTimeout(context.Background(), r.opts.FlushTimeout)
			r.Flush(ctx)
			cancel()
		case <-purge:
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := r.Purge(ctx, r.opts.Now()); err != nil {
				r.log.Warn("usage history: purge failed", "error", err.Error())
			}
			cancel()
		}
	}
}

// Flush writes the counts recorded since the last flush to the store. A
// batch that fails is lost and counted as dropped, and the error returned.
// Flushes run one at a time.
func (r *Recorder) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	start := time.Now()
	batch, events := r.drain()
	var err error
	if len(batch) > 0 {
		err = r.store.AddUsage(ctx, batch)
		result := "ok"
		if err != nil {
			result = "error"
			r.lost.Add(events)
		}
		if r.flushDur != nil {
			r.flushDur.WithLabelValues(result).Observe(time.Since(start).Seconds())
		}
	}
	r.report(err, events)
	return err
}

// drain swaps every shard's rows out and returns them as the counts to add
// at each granularity, sorted so that concurrent flushes of several
// gateways lock rows in one order; events is the number of Records they
// hold. flushMu must be held.
func (r *Recorder) drain() (batch []sluice.UsageCount, events int64) {
	type aggKey struct {
		g     uint8
		start int64
		key
	}
	agg := make(map[aggKey]*counts)
	add := func(k aggKey, c *counts) {
		a := agg[k]
		if a == nil {
			a = new(counts)
			agg[k] = a
		}
		a.images += c.images
		a.requests += c.requests
		a.rejected += c.rejected
		a.refunded += c.refunded
		a.shadow += c.shadow
		a.rejHour += c.rejHour
		a.rejDay += c.rejDay
	}
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		buf := s.buf
		s.buf = r.spare[i]
		s.last, s.at = key{}, -1
		s.mu.Unlock()
		r.rows.Add(-int64(len(buf.rows)))
		for j := range buf.rows {
			rw := &buf.rows[j]
			events += rw.c.events
			k := rw.key
			sec := k.minute * 60
			k.minute = 0
			add(aggKey{0, sec, k}, &rw.c)
			add(aggKey{1, floorDiv(sec, 3600) * 3600, k}, &rw.c)
			add(aggKey{2, floorDiv(sec, 86400) * 86400, k}, &rw.c)
		}
		clear(buf.index)
		clear(buf.rows) // drop the strings they hold
		buf.rows = buf.rows[:0]
		r.spare[i] = buf
	}
	names := [3]string{sluice.GranularityMinute, sluice.GranularityHour, sluice.GranularityDay}
	batch = make([]sluice.UsageCount, 0, len(agg))
	for k, c := range agg {
		batch = append(batch, sluice.UsageCount{
			Granularity: names[k.g], Start: time.Unix(k.start, 0).UTC(),
			AccountID: k.account, KeyID: k.keyID, Channel: k.channel, Model: k.model,
			Images: c.images, Requests: c.requests, Rejected: c.rejected, Refunded: c.refunded,
			Shadow: c.shadow, RejectedHour: c.rejHour, RejectedDay: c.rejDay,
		})
	}
	SortCounts(batch)
	return batch, events
}

// SortCounts sorts counts by granularity, account, start, key, channel and
// model: the order in which stores lock rows.
func SortCounts(cs []sluice.UsageCount) {
	slices.SortFunc(cs, func(a, b sluice.UsageCount) int {
		return cmp.Or(
			cmp.Compare(a.Granularity, b.Granularity),
			cmp.Compare(a.AccountID, b.AccountID),
			a.Start.Compare(b.Start),
			cmp.Compare(a.KeyID, b.KeyID),
			cmp.Compare(a.Channel, b.Channel),
			cmp.Compare(a.Model, b.Model),
		)
	})
}

// report logs a failed flush, or events dropped since the last line, at
// most once a second. flushMu must be held.
func (r *Recorder) report(err error, events int64) {
	dropped := r.Dropped()
	if err == nil && dropped == r.lastSeen {
		return
	}
	now := time.Now().UnixNano()
	if now-r.lastLog.Load() < int64(time.Second) {
		return
	}
	r.lastLog.Store(now)
	attrs := []any{"dropped_total", dropped, "dropped_since_last_report", dropped - r.lastSeen}
	r.lastSeen = dropped
	if err != nil {
		r.log.Warn("usage history: flush failed; its counts are lost", append(attrs, "events", events, "error", err.Error())...)
		return
	}
	r.log.Warn("usage history: events dropped: the store is slower than the traffic", attrs...)
}

// Purge deletes the rows older than their granularity's retention at now.
func (r *Recorder) Purge(ctx context.Context, now time.Time) error {
	var errs []error
	for _, p := range []struct {
		g string
		d time.Duration
	}{
		{sluice.GranularityMinute, r.opts.Retention.Minute},
		{sluice.GranularityHour, r.opts.Retention.Hour},
		{sluice.GranularityDay, r.opts.Retention.Day},
	} {
		if p.d <= 0 {
			continue
		}
		if _, err := r.store.PurgeUsage(ctx, p.g, now.Add(-p.d)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close stops the background jobs and flushes what is left, waiting at most
// until ctx ends (a flush stuck in a hung store is abandoned then).
func (r *Recorder) Close(ctx context.Context) error {
	var err error
	r.closeOnce.Do(func() {
		close(r.stop)
		select {
		case <-r.done:
		case <-ctx.Done():
			err = ctx.Err()
			return
		}
		flushed := make(chan error, 1)
		go func() { flushed <- r.Flush(ctx) }()
		select {
		case err = <-flushed:
		case <-ctx.Done():
			err = ctx.Err()
		}
	})
	return err
}

// Recorded returns the number of events recorded with each outcome, by
// sluice.UsageOutcome.
func (r *Recorder) Recorded() [4]int64 {
	var n [4]int64
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for o, v := range s.recorded {
			n[o] += v
		}
		s.mu.Unlock()
	}
	return n
}

// Dropped returns the number of events lost: refused for want of room in
// memory, or in a batch whose flush failed.
func (r *Recorder) Dropped() int64 {
	n := r.lost.Load()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += s.dropped
		s.mu.Unlock()
	}
	return n
}

// register registers the metrics with reg, unless it is nil.
func (r *Recorder) register(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	names := [4]string{sluice.UsageAdmitted: "admitted", sluice.UsageRejected: "rejected",
		sluice.UsageRefunded: "refunded", sluice.UsageShadow: "shadow"}
	for o, name := range names {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "sluice_usage_recorded_total",
			Help:        "Quota decisions recorded in the usage history, by outcome (admitted, rejected, refunded, shadow).",
			ConstLabels: prometheus.Labels{"outcome": name},
		}, func() float64 { return float64(r.Recorded()[o]) }))
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sluice_usage_dropped_total",
		Help: "Recorded decisions lost from the usage history: no room in memory while the store was slow, or a flush that failed.",
	}, func() float64 { return float64(r.Dropped()) }))
	r.flushDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_usage_flush_duration_seconds",
		Help:    "Time to write one flush of the usage history to the store, by result (ok, error).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"result"})
	reg.MustRegister(r.flushDur)
}
