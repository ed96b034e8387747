package http

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice"
)

const (
	// touchEvery is how often pending last-use times are written.
	touchEvery = 10 * time.Second
	// touchGap is the least time between two writes for one key.
	touchGap = time.Minute
)

// toucher records when API keys were last used without a database write per
// request: requests store the time in memory, and a background loop writes
// it with TouchAPIKey, at most once per key per touchGap. A key's entry is
// dropped once it has been written and stayed unused for two gaps. Safe for
// concurrent use.
type toucher struct {
	store  sluice.AccountService
	logger *slog.Logger
	keys   sync.Map // key ID → *touch

	stop chan struct{}
	done chan struct{}
}

type touch struct {
	used    atomic.Int64 // Unix nanoseconds of the last use
	flushed int64        // the used time last written; only the loop touches it
	wrote   int64        // Unix nanoseconds when it was written; loop only
}

func newToucher(store sluice.AccountService, logger *slog.Logger) *toucher {
	t := &toucher{store: store, logger: logger, stop: make(chan struct{}), done: make(chan struct{})}
	go t.loop()
	return t
}

// record notes that the key was used at now. Most calls are a lock-free map
// read and, at most once a second per key, an atomic store.
func (t *toucher) record(id string, now time.Time) {
	ns := now.UnixNano()
	if v, ok := t.keys.Load(id); ok {
		e := v.(*touch)
		if ns-e.used.Load() >= int64(time.Second) {
			e.used.Store(ns)
		}
		return
	}
	e := &touch{}
	e.used.Store(ns)
	if v, loaded := t.keys.LoadOrStore(strings.Clone(id), e); loaded {
		v.(*touch).used.Store(ns)
	}
}

func (t *toucher) loop() {
	defer close(t.done)
	tick := time.NewTicker(touchEvery)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), touchEvery)
			t.flush(ctx, time.Now(), false)
			cancel()
		}
	}
}

// flush writes the last use of every key used since its last write, if that
// write is at least touchGap old (or all of them if force). The gap is
// measured by the wall clock of the flushes, not by the recorded times.
func (t *toucher) flush(ctx context.Context, now time.Time, force bool) {
	nowNs := now.UnixNano()
	t.keys.Range(func(k, v any) bool {
		id, e := k.(string), v.(*touch)
		used := e.used.Load()
		switch {
		case used != e.flushed && (force || e.wrote == 0 || nowNs-e.wrote >= int64(touchGap)):
			if err := t.store.TouchAPIKey(ctx, id, time.Unix(0, used)); err != nil && sluice.ErrorCode(err) != sluice.ENOTFOUND {
				t.logger.LogAttrs(ctx, slog.LevelWarn, "record last use of api key",
					slog.String("key_id", id), slog.String("error", err.Error()))
			}
			// Written or not, do not retry before the next gap.
			e.flushed, e.wrote = used, nowNs
		case used == e.flushed && nowNs-e.wrote >= 2*int64(touchGap):
			// A use recorded between the Load above and this Delete is
			// lost; it is only a last-use time, and the next use
			// records it again.
			t.keys.Delete(k)
		}
		return ctx.Err() == nil
	})
}

// close stops the loop and writes every pending last use.
func (t *toucher) close(ctx context.Context, now time.Time) {
	close(t.stop)
	<-t.done
	t.flush(ctx, now, true)
}

// lastUse returns the last use of the key recorded on this instance, which
// may not have been written yet.
func (t *toucher) lastUse(id string) (time.Time, bool) {
	v, ok := t.keys.Load(id)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, v.(*touch).used.Load()), true
}
