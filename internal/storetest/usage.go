package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	sluice "github.com/sluicehq/sluice"
)

// RunUsageStore runs the conformance suite of sluice.UsageStore. Every call
// of open must return a new, empty store, closed when the test ends.
func RunUsageStore(t *testing.T, open func(t *testing.T) sluice.UsageStore) {
	t.Run("AddAndHistory", func(t *testing.T) { testUsageHistory(t, open(t)) })
	t.Run("GroupBy", func(t *testing.T) { testUsageGroupBy(t, open(t)) })
	t.Run("Top", func(t *testing.T) { testUsageTop(t, open(t)) })
	t.Run("Purge", func(t *testing.T) { testUsagePurge(t, open(t)) })
	t.Run("ConcurrentAdds", func(t *testing.T) { testUsageConcurrent(t, open(t)) })
	t.Run("Invalid", func(t *testing.T) { testUsageInvalid(t, open(t)) })
}

// usageT0 is a day boundary: 2026-03-10T00:00:00Z.
var usageT0 = time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)

func addUsage(t *testing.T, s sluice.UsageStore, cs ...sluice.UsageCount) {
	t.Helper()
	if err := s.AddUsage(t.Context(), cs); err != nil {
		t.Fatalf("AddUsage: %v", err)
	}
}

func history(t *testing.T, s sluice.UsageStore, q sluice.UsageQuery) []sluice.UsageBucket {
	t.Helper()
	got, err := s.UsageHistory(t.Context(), q)
	if err != nil {
		t.Fatalf("UsageHistory(%+v): %v", q, err)
	}
	return got
}

var cmpBuckets = []cmp.Option{equateTimes, cmpopts.EquateEmpty()}

func minuteCount(acct int64, at time.Time, key, channel, model string, images, requests, rejected, refunded int64) sluice.UsageCount {
	return sluice.UsageCount{Granularity: sluice.GranularityMinute, Start: at, AccountID: acct, KeyID: key,
		Channel: channel, Model: model, Images: images, Requests: requests, Rejected: rejected, Refunded: refunded}
}

func testUsageHistory(t *testing.T, s sluice.UsageStore) {
	m := func(min int) time.Time { return usageT0.Add(time.Duration(min) * time.Minute) }
	addUsage(t, s,
		minuteCount(1, m(0), "k1", sluice.ChannelAPI, "sketch", 3, 3, 1, 0),
		minuteCount(1, m(1), "k1", sluice.ChannelAPI, "sketch", 2, 2, 0, 1),
		minuteCount(1, m(1), "k2", sluice.ChannelAPI, "sketch", 4, 1, 0, 0),
		minuteCount(2, m(1), "k3", sluice.ChannelAPI, "sketch", 9, 9, 0, 0),
		sluice.UsageCount{Granularity: sluice.GranularityHour, Start: usageT0, AccountID: 1, KeyID: "k1",
			Channel: sluice.ChannelAPI, Model: "sketch", Images: 5, Requests: 5, Rejected: 3, Refunded: 1, Shadow: 2, RejectedHour: 1, RejectedDay: 2},
	)
	// Adding again adds.
	addUsage(t, s, minuteCount(1, m(0), "k1", sluice.ChannelAPI, "sketch", 1, 1, 2, 0))

	q := sluice.UsageQuery{AccountID: 1, Granularity: sluice.GranularityMinute, From: m(0), To: m(60)}
	want := []sluice.UsageBucket{
		{Start: m(0), Images: 4, Requests: 4, Rejected: 3},
		{Start: m(1), Images: 5, Requests: 3, Refunded: 1},
	}
	if diff := cmp.Diff(want, history(t, s, q), cmpBuckets...); diff != "" {
		t.Errorf("minutes (-want +got):\n%s", diff)
	}
	// [From, To): a bucket starting at To is out, one starting at From in.
	q.From, q.To = m(1), m(1)
	if got := history(t, s, q); len(got) != 0 {
		t.Errorf("empty range: %+v", got)
	}
	q.From, q.To = m(0).Add(time.Second), m(2)
	if diff := cmp.Diff(want[1:], history(t, s, q), cmpBuckets...); diff != "" {
		t.Errorf("from inside the first minute (-want +got):\n%s", diff)
	}
	q = sluice.UsageQuery{AccountID: 1, Granularity: sluice.GranularityHour, From: usageT0.Add(-time.Hour), To: usageT0.Add(time.Hour)}
	if diff := cmp.Diff([]sluice.UsageBucket{{Start: usageT0, Images: 4, Requests: 5, Rejected: 3, Refunded: 1, Shadow: 2, RejectedHour: 1, RejectedDay: 2}},
		history(t, s, q), cmpBuckets...); diff != "" {
		t.Errorf("hours (-want +got):\n%s", diff)
	}
	q = sluice.UsageQuery{AccountID: 3, Granularity: sluice.GranularityMinute, From: m(0), To: m(60)}
	if got := history(t, s, q); len(got) != 0 {
		t.Errorf("another account's history: %+v", got)
	}
}

func testUsageGroupBy(t *testing.T, s sluice.UsageStore) {
	h := func(n int) time.Time { return usageT0.Add(time.Duration(n) * time.Hour) }
	c := func(at time.Time, key, channel, model string, images int64) sluice.UsageCount {
		return sluice.UsageCount{Granularity: sluice.GranularityHour, Start: at, AccountID: 7, KeyID: key,
			Channel: channel, Model: model, Images: images, Requests: images}
	}
	addUsage(t, s,
		c(h(0), "kb", sluice.ChannelAPI, "m1", 1),
		c(h(0), "ka", sluice.ChannelAPI, "m2", 2),
		c(h(0), sluice.UsageKeyTelegram, sluice.ChannelTelegram, "m1", 4),
		c(h(1), "ka", sluice.ChannelAPI, "m1", 8),
	)
	q := sluice.UsageQuery{AccountID: 7, Granularity: sluice.GranularityHour, From: h(0), To: h(2)}
	for _, tc := range []struct {
		by   string
		want []sluice.UsageBucket
	}{
		{"", []sluice.UsageBucket{{Start: h(0), Images: 7, Requests: 7}, {Start: h(1), Images: 8, Requests: 8}}},
		{sluice.GroupByKey, []sluice.UsageBucket{
			{Start: h(0), Group: "ka", Images: 2, Requests: 2},
			{Start: h(0), Group: "kb", Images: 1, Requests: 1},
			{Start: h(0), Group: "telegram", Images: 4, Requests: 4},
			{Start: h(1), Group: "ka", Images: 8, Requests: 8},
		}},
		{sluice.GroupByChannel, []sluice.UsageBucket{
			{Start: h(0), Group: "api", Images: 3, Requests: 3},
			{Start: h(0), Group: "telegram", Images: 4, Requests: 4},
			{Start: h(1), Group: "api", Images: 8, Requests: 8},
		}},
		{sluice.GroupByModel, []sluice.UsageBucket{
			{Start: h(0), Group: "m1", Images: 5, Requests: 5},
			{Start: h(0), Group: "m2", Images: 2, Requests: 2},
			{Start: h(1), Group: "m1", Images: 8, Requests: 8},
		}},
	} {
		q.GroupBy = tc.by
		if diff := cmp.Diff(tc.want, history(t, s, q), cmpBuckets...); diff != "" {
			t.Errorf("group_by %q (-want +got):\n%s", tc.by, diff)
		}
	}
}

func testUsageTop(t *testing.T, s sluice.UsageStore) {
	// Each granularity holds different figures, so that the test sees
	// which one TopUsage read.
	at := usageT0.Add(30 * time.Minute)
	var cs []sluice.UsageCount
	for g, scale := range map[string]int64{sluice.GranularityMinute: 1, sluice.GranularityHour: 10, sluice.GranularityDay: 100} {
		d, _ := sluice.UsageGranularity(g)
		for acct, n := range map[int64]int64{1: 3, 2: 5, 3: 1, 4: 0} {
			cs = append(cs, sluice.UsageCount{Granularity: g, Start: at.Truncate(d), AccountID: acct, KeyID: "k",
				Channel: sluice.ChannelAPI, Model: "m", Images: n * scale, Requests: n, Refunded: 0})
		}
	}
	cs = append(cs, sluice.UsageCount{Granularity: sluice.GranularityMinute, Start: at, AccountID: 1, KeyID: "k2",
		Channel: sluice.ChannelAPI, Model: "m", Images: 3, Refunded: 1})
	addUsage(t, s, cs...)
	for _, tc := range []struct {
		name     string
		from, to time.Time
		limit    int
		want     []sluice.UsageTotal
	}{
		{"minutes, ties by account", at, at.Add(time.Minute), 10, []sluice.UsageTotal{{AccountID: 1, Images: 5}, {AccountID: 2, Images: 5}, {AccountID: 3, Images: 1}}},
		{"limit", at, at.Add(time.Minute), 1, []sluice.UsageTotal{{AccountID: 1, Images: 5}}},
		{"hours", usageT0, usageT0.Add(time.Hour), 10, []sluice.UsageTotal{{AccountID: 2, Images: 50}, {AccountID: 1, Images: 30}, {AccountID: 3, Images: 10}}},
		{"days", usageT0, usageT0.Add(24 * time.Hour), 2, []sluice.UsageTotal{{AccountID: 2, Images: 500}, {AccountID: 1, Images: 300}}},
		{"nothing", usageT0.Add(time.Hour), usageT0.Add(2 * time.Hour), 10, nil},
	} {
		got, err := s.TopUsage(t.Context(), tc.from, tc.to, tc.limit)
		if err != nil {
			t.Fatalf("%s: TopUsage: %v", tc.name, err)
		}
		if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

func testUsagePurge(t *testing.T, s sluice.UsageStore) {
	var cs []sluice.UsageCount
	for _, g := range []string{sluice.GranularityMinute, sluice.GranularityHour, sluice.GranularityDay} {
		for i := range 3 {
			d, _ := sluice.UsageGranularity(g)
			cs = append(cs, sluice.UsageCount{Granularity: g, Start: usageT0.Add(time.Duration(i) * d), AccountID: 1,
				KeyID: "k", Channel: sluice.ChannelAPI, Model: "m", Images: 1, Requests: 1})
		}
	}
	addUsage(t, s, cs...)
	n, err := s.PurgeUsage(t.Context(), sluice.GranularityMinute, usageT0.Add(2*time.Minute))
	if err != nil || n != 2 {
		t.Fatalf("PurgeUsage(minute) = %d, %v; want 2", n, err)
	}
	if n, err := s.PurgeUsage(t.Context(), sluice.GranularityMinute, usageT0.Add(2*time.Minute)); err != nil || n != 0 {
		t.Fatalf("PurgeUsage(minute) again = %d, %v; want 0", n, err)
	}
	q := sluice.UsageQuery{AccountID: 1, Granularity: sluice.GranularityMinute, From: usageT0, To: usageT0.Add(time.Hour)}
	if diff := cmp.Diff([]sluice.UsageBucket{{Start: usageT0.Add(2 * time.Minute), Images: 1, Requests: 1}}, history(t, s, q), cmpBuckets...); diff != "" {
		t.Errorf("minutes after purge (-want +got):\n%s", diff)
	}
	q = sluice.UsageQuery{AccountID: 1, Granularity: sluice.GranularityHour, From: usageT0, To: usageT0.Add(24 * time.Hour)}
	if got := history(t, s, q); len(got) != 3 {
		t.Errorf("hours after purging minutes: %d buckets, want 3", len(got))
	}
}

func testUsageConcurrent(t *testing.T, s sluice.UsageStore) {
	// Racers add to the same rows, in the same sorted order as the
	// recorder sends them: the sums are exact and nobody deadlocks.
	const adds = 10
	var wg sync.WaitGroup
	errs := make(chan error, racers)
	for range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range adds {
				var cs []sluice.UsageCount
				for _, g := range []string{sluice.GranularityDay, sluice.GranularityHour, sluice.GranularityMinute} {
					for acct := int64(1); acct <= 3; acct++ {
						cs = append(cs, sluice.UsageCount{Granularity: g, Start: usageT0, AccountID: acct, KeyID: "k",
							Channel: sluice.ChannelAPI, Model: "m", Images: 2, Requests: 1, Rejected: 1})
					}
				}
				if err := s.AddUsage(t.Context(), cs); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("AddUsage: %v", err)
	}
	for _, g := range []string{sluice.GranularityMinute, sluice.GranularityHour, sluice.GranularityDay} {
		q := sluice.UsageQuery{AccountID: 2, Granularity: g, From: usageT0, To: usageT0.Add(time.Minute)}
		want := []sluice.UsageBucket{{Start: usageT0, Images: 2 * racers * adds, Requests: racers * adds, Rejected: racers * adds}}
		if diff := cmp.Diff(want, history(t, s, q), cmpBuckets...); diff != "" {
			t.Errorf("%s (-want +got):\n%s", g, diff)
		}
	}
}

func testUsageInvalid(t *testing.T, s sluice.UsageStore) {
	ctx := t.Context()
	_, err := s.UsageHistory(ctx, sluice.UsageQuery{AccountID: 1, Granularity: "week", From: usageT0, To: usageT0.Add(time.Hour)})
	wantCode(t, "UsageHistory(week)", err, sluice.EINVALID)
	_, err = s.UsageHistory(ctx, sluice.UsageQuery{AccountID: 1, Granularity: sluice.GranularityHour, GroupBy: "plan", From: usageT0, To: usageT0.Add(time.Hour)})
	wantCode(t, "UsageHistory(group_by plan)", err, sluice.EINVALID)
	_, err = s.PurgeUsage(ctx, "week", usageT0)
	wantCode(t, "PurgeUsage(week)", err, sluice.EINVALID)
	err = s.AddUsage(ctx, []sluice.UsageCount{{Granularity: "week", Start: usageT0, AccountID: 1}})
	wantCode(t, "AddUsage(week)", err, sluice.EINVALID)
}
