package http_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/history"
	sluicehttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/quota"
)

// withHistory records the gateway's decisions into the harness's SQLite
// database; the test flushes by hand.
func withHistory(r **history.Recorder) harnessOpt {
	return func(h *harness, l *quota.Limiter) {
		rec := history.New(h.DB, history.Options{FlushInterval: time.Hour, PurgeInterval: -1, Logger: slog.New(slog.DiscardHandler)})
		h.t.(*testing.T).Cleanup(func() { rec.Close(context.Background()) })
		h.S.Usage, h.S.History = rec, h.DB
		*r = rec
	}
}

type historyBody struct {
	Granularity string `json:"granularity"`
	From, To    int64
	Buckets     []struct {
		Start                                int64
		Group                                *string
		Images, Requests, Rejected, Refunded int64
	}
}

func decodeHistory(t *testing.T, res *response) historyBody {
	t.Helper()
	wantStatus(t, res, http.StatusOK)
	var b historyBody
	if err := json.Unmarshal(res.Body, &b); err != nil {
		t.Fatalf("history body %s: %v", res.Body, err)
	}
	return b
}

// TestHistoryRecordsDecisions: every decision of the image endpoint is in
// the history, by key, with refunds netted and 400s left out; the three
// endpoints read it back in JSON and CSV.
func TestHistoryRecordsDecisions(t *testing.T) {
	var rec *history.Recorder
	h := newHarness(t, withHistory(&rec))
	acct, key1 := h.account("tiny") // 2/hour, 3/day
	key2 := h.key(acct)
	other, otherKey := h.account("vip")

	wantStatus(t, h.generate(key1, 1), 200)
	h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
		return nil, errors.New("boom")
	}
	wantStatus(t, h.generate(key2, 1), 502) // refunded
	h.Gen.GenerateFn = nil
	h.Clock.Add(time.Minute)
	wantStatus(t, h.generate(key2, 1), 200)
	wantStatus(t, h.generate(key1, 1), 429) // hour
	wantStatus(t, h.generate(key1, 3), 400) // more than the limit: not a decision
	h.Clock.Add(time.Hour)
	wantStatus(t, h.generate(key1, 1), 200)
	wantStatus(t, h.generate(key2, 1), 429) // day
	wantStatus(t, h.generate(otherKey, 4), 200)
	if err := rec.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.Recorded(), [4]int64{5, 2, 1, 0}; got != want {
		t.Errorf("recorded %v, want %v (admitted, rejected, refunded, shadow)", got, want)
	}

	span := fmt.Sprintf("from=%d&to=%d", T0.Add(-24*time.Hour).Unix(), T0.Add(3*time.Hour).Unix())
	b := decodeHistory(t, h.do("GET", "/v1/usage/history?granularity=minute&"+span, key1, ""))
	type bucket struct{ Start, Images, Requests, Rejected, Refunded int64 }
	var got []bucket
	for _, x := range b.Buckets {
		if x.Group != nil {
			t.Errorf("a group without group_by: %q", *x.Group)
		}
		got = append(got, bucket{x.Start, x.Images, x.Requests, x.Rejected, x.Refunded})
	}
	m0 := T0.Unix() / 60 * 60
	want := []bucket{
		{m0, 1, 2, 0, 1},
		{m0 + 60, 1, 1, 1, 0},
		{m0 + 3660, 1, 1, 1, 0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("minutes (-want +got):\n%s", diff)
	}
	if b.Granularity != "minute" || b.From != T0.Add(-24*time.Hour).Unix() || b.To != T0.Add(3*time.Hour).Unix() {
		t.Errorf("granularity %q from %d to %d", b.Granularity, b.From, b.To)
	}

	// Grouped by key, with a session token, by day.
	sess := h.session(acct)
	b = decodeHistory(t, h.do("GET", "/v1/usage/history?granularity=day&group_by=key&"+span, sess, ""))
	groups := map[string][3]int64{}
	for _, x := range b.Buckets {
		groups[*x.Group] = [3]int64{x.Images, x.Requests, x.Rejected}
	}
	id1, id2 := keyID(key1), keyID(key2)
	if diff := cmp.Diff(map[string][3]int64{id1: {2, 2, 1}, id2: {1, 2, 1}}, groups); diff != "" {
		t.Errorf("by key (-want +got):\n%s", diff)
	}

	// The admin sees any account; CSV parses.
	res := h.doHeader("GET", fmt.Sprintf("/admin/usage/history?account=%d&granularity=hour&%s", acct, span), adminToken, "",
		http.Header{"Accept": {"text/csv"}})
	wantStatus(t, res, 200)
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Errorf("Content-Type %q", ct)
	}
	records, err := csv.NewReader(strings.NewReader(string(res.Body))).ReadAll()
	if err != nil {
		t.Fatalf("CSV %q: %v", res.Body, err)
	}
	h0 := T0.Unix() / 3600 * 3600
	wantCSV := [][]string{
		{"start", "time", "images", "requests", "rejected", "refunded"},
		{fmt.Sprint(h0), time.Unix(h0, 0).UTC().Format(time.RFC3339), "2", "3", "1", "1"},
		{fmt.Sprint(h0 + 3600), time.Unix(h0+3600, 0).UTC().Format(time.RFC3339), "1", "1", "1", "0"},
	}
	if diff := cmp.Diff(wantCSV, records); diff != "" {
		t.Errorf("CSV (-want +got):\n%s", diff)
	}
	res = h.do("GET", fmt.Sprintf("/admin/usage/history?account=%d&format=csv&group_by=model&%s", other, span), adminToken, "")
	records, err = csv.NewReader(strings.NewReader(string(res.Body))).ReadAll()
	if err != nil || len(records) != 2 || records[0][2] != "group" || records[1][2] != "sluice-sketch" || records[1][3] != "4" {
		t.Errorf("CSV by model: %q, %v", records, err)
	}

	// Top: the VIP account's 4 images, then the Tiny one's 3.
	var top struct {
		Accounts []struct {
			AccountID int64 `json:"account_id"`
			Email     *string
			Plan      string
			Images    int64
		}
	}
	res = h.do("GET", "/admin/usage/top?window=day&limit=5", adminToken, "")
	wantStatus(t, res, 200)
	if err := json.Unmarshal(res.Body, &top); err != nil {
		t.Fatal(err)
	}
	if len(top.Accounts) != 2 || top.Accounts[0].AccountID != other || top.Accounts[0].Images != 4 ||
		top.Accounts[0].Plan != "vip" || top.Accounts[0].Email == nil ||
		top.Accounts[1].AccountID != acct || top.Accounts[1].Images != 3 {
		t.Errorf("top: %s", res.Body)
	}
	// The last hour holds only the requests after the clock moved on.
	res = h.do("GET", "/admin/usage/top?window=hour", adminToken, "")
	if err := json.Unmarshal(res.Body, &top); err != nil || len(top.Accounts) != 2 || top.Accounts[1].Images != 1 {
		t.Errorf("top of the hour: %s", res.Body)
	}
}

// keyID is the lookup ID of a full API key.
func keyID(key string) string {
	id, _, ok := sluice.ParseAPIKey(key)
	if !ok {
		panic("bad key " + key)
	}
	return id
}

// session logs the account in by creating a session in the store, and
// returns its token.
func (h *harness) session(acct int64) string {
	h.t.Helper()
	tok := sluice.RandomString(32)
	if err := h.DB.CreateSession(context.Background(), &sluice.Session{TokenHash: sluice.HashToken(tok), AccountID: acct,
		ExpiresAt: h.Clock.Now().Add(time.Hour)}); err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// TestHistoryShadow: a shadow admission counts as a request and its
// images, and as shadow.
func TestHistoryShadow(t *testing.T) {
	var rec *history.Recorder
	h := newHarness(t, withHistory(&rec), func(h *harness, l *quota.Limiter) { l.Mode = quota.Shadow })
	acct, key := h.account("tiny")
	for range 3 {
		wantStatus(t, h.generate(key, 1), 200)
	}
	if err := rec.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err := h.DB.UsageHistory(t.Context(), sluice.UsageQuery{AccountID: acct, Granularity: sluice.GranularityDay,
		From: T0.Add(-24 * time.Hour), To: T0.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	want := []sluice.UsageBucket{{Start: T0.Truncate(24 * time.Hour), Images: 3, Requests: 3, Shadow: 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestHistoryBadParams: every bad parameter is a 400 invalid_request
// naming it.
func TestHistoryBadParams(t *testing.T) {
	var rec *history.Recorder
	h := newHarness(t, withHistory(&rec))
	acct, key := h.account("vip")
	for _, tc := range []struct {
		path, field string
	}{
		{"/v1/usage/history?granularity=week", "granularity"},
		{"/v1/usage/history?from=yesterday", "from"},
		{"/v1/usage/history?to=2026-13-01T00:00:00Z", "to"},
		{"/v1/usage/history?from=-5", "from"},
		{"/v1/usage/history?from=99999999999999", "from"},
		{"/v1/usage/history?from=1709990000&to=1709900000", "from"},
		{"/v1/usage/history?granularity=minute&from=0&to=1709900000", "from"},
		{"/v1/usage/history?granularity=minute&from=0&to=600001", "from"},
		{"/v1/usage/history?group_by=plan", "group_by"},
		{"/v1/usage/history?format=xml", "format"},
		{"/admin/usage/history?granularity=hour", "account"},
		{"/admin/usage/history?account=abc", "account"},
		{fmt.Sprintf("/admin/usage/history?account=%d&granularity=second", acct), "granularity"},
		{"/admin/usage/top?window=week", "window"},
		{"/admin/usage/top?limit=0", "limit"},
		{"/admin/usage/top?limit=101", "limit"},
	} {
		tok := key
		if strings.HasPrefix(tc.path, "/admin/") {
			tok = adminToken
		}
		res := h.do("GET", tc.path, tok, "")
		var e struct{ Error, Message, Field string }
		if err := json.Unmarshal(res.Body, &e); err != nil || res.Status != 400 || e.Error != "invalid_request" || e.Field != tc.field {
			t.Errorf("%s: %d %s, want 400 invalid_request naming %q", tc.path, res.Status, res.Body, tc.field)
		}
	}
	// Exactly 10,000 buckets is fine.
	wantStatus(t, h.do("GET", "/v1/usage/history?granularity=minute&from=0&to=600000", key, ""), 200)
	wantStatus(t, h.do("GET", "/admin/usage/history?account=999999", adminToken, ""), 404)
	wantStatus(t, h.do("GET", "/admin/usage/top", "", ""), 401)
	wantStatus(t, h.do("GET", "/v1/usage/history", "", ""), 401)
}

// TestHistoryDisabled: without a History the endpoints are 404.
func TestHistoryDisabled(t *testing.T) {
	h := newHarness(t, withServer(func(s *sluicehttp.Server) { s.Usage, s.History = nil, nil }))
	_, key := h.account("vip")
	wantStatus(t, h.do("GET", "/v1/usage/history", key, ""), 404)
	wantStatus(t, h.do("GET", "/admin/usage/top", adminToken, ""), 404)
	wantStatus(t, h.generate(key, 1), 200)
}

// TestHistoryEmpty: no buckets is an empty list, not null.
func TestHistoryEmpty(t *testing.T) {
	var rec *history.Recorder
	h := newHarness(t, withHistory(&rec))
	_, key := h.account("vip")
	res := h.do("GET", "/v1/usage/history", key, "")
	wantStatus(t, res, 200)
	if !strings.Contains(string(res.Body), `"buckets":[]`) {
		t.Errorf("body %s", res.Body)
	}
	var b historyBody
	json.Unmarshal(res.Body, &b)
	if b.Granularity != "hour" || b.To-b.From != 24*3600 || b.To < h.Clock.Now().Unix() {
		t.Errorf("defaults: %+v at %d", b, h.Clock.Now().Unix())
	}
}

// hangingStore is a usage store whose writes block until the test ends,
// ignoring their context, as a database that hangs would.
type hangingStore struct {
	sluice.UsageStore
	release chan struct{}
}

func (s hangingStore) AddUsage(ctx context.Context, cs []sluice.UsageCount) error {
	<-s.release
	return ctx.Err()
}

// TestHistoryHungDatabase: with the history's database hung, image
// requests are answered as usual; what does not fit in memory is dropped
// and counted in sluice_usage_dropped_total. (How fast the requests are is
// for BenchmarkGenerateHistoryPaired/store=hung to measure.)
func TestHistoryHungDatabase(t *testing.T) {
	store := hangingStore{release: make(chan struct{})}
	t.Cleanup(func() { close(store.release) })
	var rec *history.Recorder
	h := newHarness(t, func(h *harness, l *quota.Limiter) {
		h.S.Registry = prometheus.NewRegistry()
		rec = history.New(store, history.Options{FlushInterval: time.Millisecond, FlushTimeout: time.Millisecond,
			PurgeInterval: -1, MaxRows: 4, Logger: slog.New(slog.DiscardHandler), Registerer: h.S.Registry})
		h.S.Usage = rec
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := rec.Close(ctx); err == nil {
			t.Error("Close flushed into a hung database")
		}
	})
	_, key := h.account("vip")
	const requests = 20
	for range requests {
		// A minute apart: each needs a row of its own.
		h.Clock.Add(time.Minute)
		wantStatus(t, h.generate(key, 1), 200)
	}
	// Room for 4 rows, and at most 4 more in the batch the hung flush took.
	if d := rec.Dropped(); d < requests-8 {
		t.Errorf("dropped %d of %d events", d, requests)
	}
	res := h.do("GET", "/metrics", "", "")
	if want := fmt.Sprintf("sluice_usage_dropped_total %d", rec.Dropped()); !strings.Contains(string(res.Body), want) {
		t.Errorf("/metrics lacks %q", want)
	}
}
