package history_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/history"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/postgres"
	"github.com/sluicehq/sluice/sqlite"
)

// t0 is a day boundary: 2026-03-10T00:00:00Z.
var t0 = time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)

func openSQLite(t *testing.T) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "sluice.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openPostgres opens a DB on url (another pool, as another gateway would),
// closed when t ends.
func openPostgres(t *testing.T, url string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newRecorder returns a Recorder that never flushes or purges by itself.
func newRecorder(t *testing.T, s sluice.UsageStore, opts history.Options) *history.Recorder {
	t.Helper()
	if opts.FlushInterval == 0 {
		opts.FlushInterval = time.Hour
	}
	if opts.PurgeInterval == 0 {
		opts.PurgeInterval = -1
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := history.New(s, opts)
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

func event(acct int64, at time.Time, key, model string, o sluice.UsageOutcome, units int64, window string) *sluice.UsageEvent {
	ch := sluice.ChannelAPI
	if key == sluice.UsageKeyTelegram {
		ch = sluice.ChannelTelegram
	}
	return &sluice.UsageEvent{AccountID: acct, Plan: "vip", KeyID: key, Channel: ch, Model: model, Time: at,
		Outcome: o, Units: units, Window: window}
}

func hist(t *testing.T, s sluice.UsageService, q sluice.UsageQuery) []sluice.UsageBucket {
	t.Helper()
	b, err := s.UsageHistory(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRecordFlush: what Record counts comes out of the store at every
// granularity, rolled up exactly, refunds netted and shadow counted.
func TestRecordFlush(t *testing.T) {
	db := openSQLite(t)
	reg := prometheus.NewRegistry()
	r := newRecorder(t, db, history.Options{Registerer: reg})
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, e := range []*sluice.UsageEvent{
		event(1, at(10*time.Second), "k1", "sketch", sluice.UsageAdmitted, 2, ""),
		event(1, at(50*time.Second), "k1", "sketch", sluice.UsageAdmitted, 1, ""),
		event(1, at(50*time.Second), "k1", "sketch", sluice.UsageRefunded, 1, ""),
		event(1, at(70*time.Second), "k2", "studio", sluice.UsageRejected, 1, "hour"),
		event(1, at(70*time.Second), sluice.UsageKeyTelegram, "sketch", sluice.UsageAdmitted, 1, ""),
		event(1, at(90*time.Minute), "k1", "sketch", sluice.UsageShadow, 3, "day"),
		event(1, at(25*time.Hour), "k1", "sketch", sluice.UsageRejected, 4, "day"),
		event(2, at(10*time.Second), "k9", "sketch", sluice.UsageAdmitted, 4, ""),
	} {
		r.Record(e)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A second flush adds to the same rows.
	r.Record(event(1, at(20*time.Second), "k1", "sketch", sluice.UsageAdmitted, 1, ""))
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	q := sluice.UsageQuery{AccountID: 1, From: t0, To: t0.Add(48 * time.Hour)}
	for _, tc := range []struct {
		g, by string
		want  []sluice.UsageBucket
	}{
		{sluice.GranularityMinute, "", []sluice.UsageBucket{
			{Start: t0, Images: 3, Requests: 3, Refunded: 1},
			{Start: at(time.Minute), Images: 1, Requests: 1, Rejected: 1, RejectedHour: 1},
			{Start: at(90 * time.Minute), Images: 3, Requests: 1, Shadow: 3},
			{Start: at(25 * time.Hour), Rejected: 1, RejectedDay: 1},
		}},
		{sluice.GranularityHour, "", []sluice.UsageBucket{
			{Start: t0, Images: 4, Requests: 4, Rejected: 1, Refunded: 1, RejectedHour: 1},
			{Start: at(time.Hour), Images: 3, Requests: 1, Shadow: 3},
			{Start: at(25 * time.Hour), Rejected: 1, RejectedDay: 1},
		}},
		{sluice.GranularityDay, "", []sluice.UsageBucket{
			{Start: t0, Images: 7, Requests: 5, Rejected: 1, Refunded: 1, Shadow: 3, RejectedHour: 1},
			{Start: at(24 * time.Hour), Rejected: 1, RejectedDay: 1},
		}},
		{sluice.GranularityDay, sluice.GroupByChannel, []sluice.UsageBucket{
			{Start: t0, Group: "api", Images: 6, Requests: 4, Rejected: 1, Refunded: 1, Shadow: 3, RejectedHour: 1},
			{Start: t0, Group: "telegram", Images: 1, Requests: 1},
			{Start: at(24 * time.Hour), Group: "api", Rejected: 1, RejectedDay: 1},
		}},
	} {
		q.Granularity, q.GroupBy = tc.g, tc.by
		if diff := cmp.Diff(tc.want, hist(t, db, q), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s by %q (-want +got):\n%s", tc.g, tc.by, diff)
		}
	}
	if got, want := r.Recorded(), [4]int64{5, 2, 1, 1}; got != want {
		t.Errorf("Recorded() = %v, want %v", got, want)
	}
	if got := metricValue(t, reg, "sluice_usage_recorded_total", "admitted"); got != 5 {
		t.Errorf("sluice_usage_recorded_total{outcome=admitted} = %v, want 5", got)
	}
	if got := metricValue(t, reg, "sluice_usage_flush_duration_seconds", "ok"); got != 2 {
		t.Errorf("sluice_usage_flush_duration_seconds{result=ok} count = %v, want 2", got)
	}
	if got := metricValue(t, reg, "sluice_usage_dropped_total", ""); got != 0 {
		t.Errorf("sluice_usage_dropped_total = %v, want 0", got)
	}
}

// metricValue returns the value of a counter, or the count of a histogram,
// whose one label has the value (any series if label is empty); -1 if none.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if label != "" && (len(m.Label) != 1 || m.Label[0].GetValue() != label) {
				continue
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

// hungStore is a UsageStore whose AddUsage blocks until release is closed,
// ignoring its context, as a database that hangs would; or fails with err.
type hungStore struct {
	sluice.UsageStore
	entered chan struct{} // receives once per call
	release chan struct{}
	err     error
}

func (s *hungStore) AddUsage(ctx context.Context, cs []sluice.UsageCount) error {
	if s.err != nil {
		return s.err
	}
	s.entered <- struct{}{}
	<-s.release
	return ctx.Err()
}

// TestHungStore: a store that hangs never holds up Record. Counts pile up
// to MaxRows; events beyond are dropped and counted; Close gives up when
// its context ends.
func TestHungStore(t *testing.T) {
	s := &hungStore{entered: make(chan struct{}, 1), release: make(chan struct{})}
	defer close(s.release)
	r := history.New(s, history.Options{FlushInterval: time.Hour, PurgeInterval: -1, MaxRows: 64,
		Logger: slog.New(slog.DiscardHandler)})
	// A flush takes its batch and hangs with it.
	r.Record(event(1, t0, "first", "m", sluice.UsageAdmitted, 1, ""))
	go r.Flush(context.Background())
	<-s.entered
	const events = 10_000
	for i := range events {
		// Distinct keys: each needs a row of its own.
		r.Record(event(int64(i), t0, "k", "m", sluice.UsageAdmitted, 1, ""))
	}
	recorded, dropped := r.Recorded()[sluice.UsageAdmitted], r.Dropped()
	if recorded != 1+64 || dropped != events-64 {
		t.Errorf("recorded %d and dropped %d of %d events with room for 64 rows", recorded, dropped, events+1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a hung store: %v, want the context's deadline", err)
	}
}

// TestFailingStore: a flush that fails loses its batch, counted as
// dropped events, and is not retried.
func TestFailingStore(t *testing.T) {
	s := &hungStore{err: errors.New("connection refused")}
	r := newRecorder(t, s, history.Options{})
	for i := range 5 {
		r.Record(event(1, t0.Add(time.Duration(i)*time.Hour), "k", "m", sluice.UsageAdmitted, 1, ""))
	}
	if err := r.Flush(t.Context()); err == nil {
		t.Fatal("Flush into a failing store: no error")
	}
	if got := r.Dropped(); got != 5 {
		t.Errorf("Dropped() = %d, want 5", got)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Errorf("Flush of nothing: %v", err)
	}
	if got := r.Dropped(); got != 5 {
		t.Errorf("Dropped() after an empty flush = %d, want 5", got)
	}
}

// TestPurge: retention per granularity, with the clock as a parameter.
func TestPurge(t *testing.T) {
	db := openSQLite(t)
	r := newRecorder(t, db, history.Options{Retention: history.Retention{Minute: 2 * time.Hour, Hour: 48 * time.Hour, Day: 0}})
	for d := range 5 {
		r.Record(event(1, t0.Add(time.Duration(d)*24*time.Hour), "k", "m", sluice.UsageAdmitted, 1, ""))
		r.Record(event(1, t0.Add(time.Duration(d)*24*time.Hour+time.Hour), "k", "m", sluice.UsageAdmitted, 1, ""))
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(4*24*time.Hour + 2*time.Hour) // day 4, 02:00
	if err := r.Purge(t.Context(), now); err != nil {
		t.Fatal(err)
	}
	count := func(g string) int {
		return len(hist(t, db, sluice.UsageQuery{AccountID: 1, Granularity: g, From: t0, To: t0.Add(30 * 24 * time.Hour)}))
	}
	// Minutes from 00:00 on day 4 are kept (the cutoff is 00:00); hours
	// from day 2, 02:00 (days 3 and 4); days for ever.
	for _, tc := range []struct {
		g    string
		want int
	}{{sluice.GranularityMinute, 2}, {sluice.GranularityHour, 4}, {sluice.GranularityDay, 5}} {
		if got := count(tc.g); got != tc.want {
			t.Errorf("%s rows after purge: %d, want %d", tc.g, got, tc.want)
		}
	}
	// Purging again changes nothing.
	if err := r.Purge(t.Context(), now); err != nil {
		t.Fatal(err)
	}
	if got := count(sluice.GranularityHour); got != 4 {
		t.Errorf("hour rows after a second purge: %d, want 4", got)
	}
}

// TestTwoRecordersOnePostgres: two gateways record into one PostgreSQL at
// once, flushing concurrently; the history holds the exact sums.
func TestTwoRecordersOnePostgres(t *testing.T) {
	url, _ := testenv.PostgresSchema(t)
	dbs := []*postgres.DB{openPostgres(t, url), openPostgres(t, url)}
	const perKey = 300
	var wg sync.WaitGroup
	for i, db := range dbs {
		r := history.New(db, history.Options{FlushInterval: 5 * time.Millisecond, PurgeInterval: -1,
			Logger: slog.New(slog.DiscardHandler)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perKey {
				for k := range 4 {
					at := t0.Add(time.Duration(n%120) * time.Minute)
					r.Record(event(int64(1+k%2), at, "key"+strconv.Itoa(k), "m"+strconv.Itoa(i), sluice.UsageAdmitted, 2, ""))
					r.Record(event(int64(1+k%2), at, "key"+strconv.Itoa(k), "m"+strconv.Itoa(i), sluice.UsageRejected, 1, "hour"))
				}
				if n%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			if err := r.Close(context.Background()); err != nil {
				t.Error(err)
			}
			if d := r.Dropped(); d != 0 {
				t.Errorf("recorder %d dropped %d events", i, d)
			}
		}()
	}
	wg.Wait()
	for _, g := range []string{sluice.GranularityMinute, sluice.GranularityHour, sluice.GranularityDay} {
		b := hist(t, dbs[0], sluice.UsageQuery{AccountID: 1, Granularity: g, From: t0, To: t0.Add(24 * time.Hour)})
		var images, requests, rejected int64
		for _, x := range b {
			images, requests, rejected = images+x.Images, requests+x.Requests, rejected+x.Rejected
		}
		// Account 1 has keys 0 and 2, from both gateways.
		if want := int64(2 * 2 * perKey); requests != want || rejected != want || images != 2*want {
			t.Errorf("%s: images %d, requests %d, rejected %d; want %d, %d, %d", g, images, requests, rejected, 2*want, want, want)
		}
	}
}
