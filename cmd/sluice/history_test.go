package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/history"
	"github.com/sluicehq/sluice/telegram/telegramtest"
)

// onePixel is a PNG of one pixel, base64.
const onePixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

// failingUpstream is an OpenAI-compatible generator that fails every
// prompt containing "fail" and draws one pixel for any other.
func failingUpstream(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Prompt string
			N      int
		}
		json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(req.Prompt, "fail") {
			w.WriteHeader(500)
			w.Write([]byte(`{"error":{"message":"boom","type":"server_error"}}`))
			return
		}
		data := strings.Repeat(`{"b64_json":"`+onePixel+`"},`, max(req.N, 1))
		fmt.Fprintf(w, `{"created":1,"data":[%s]}`, strings.TrimSuffix(data, ","))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// tally is what the test saw the gateway do for one account.
type tally struct{ images, requests, rejected, refunded int64 }

type historyAnswer struct {
	Buckets []struct {
		Start                                int64
		Group                                string
		Images, Requests, Rejected, Refunded int64
	}
}

// sums returns the history's sums by group (the channel, key or model).
func (g *gateway) historySums(path, token string) map[string]tally {
	g.t.Helper()
	r := g.do("GET", path, token, "")
	if r.status != 200 {
		g.t.Fatalf("GET %s: %d %s", path, r.status, r.body)
	}
	var h historyAnswer
	if err := json.Unmarshal(r.body, &h); err != nil {
		g.t.Fatal(err)
	}
	out := map[string]tally{}
	for _, b := range h.Buckets {
		s := out[b.Group]
		out[b.Group] = tally{s.images + b.Images, s.requests + b.Requests, s.rejected + b.Rejected, s.refunded + b.Refunded}
	}
	return out
}

// TestMainHistory: over a run on both channels and several keys, the usage
// history holds exactly what the gateway admitted, rejected and refunded,
// on SQLite and on PostgreSQL.
func TestMainHistory(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			api := telegramtest.NewServer(t, botToken)
			env := map[string]string{
				"SLUICE_TELEGRAM_TOKEN":   botToken,
				"SLUICE_TELEGRAM_API_URL": api.URL,
				"SLUICE_UPSTREAM_URL":     failingUpstream(t),
			}
			if db == "postgres" {
				env["SLUICE_DATABASE_URL"] = sharedBackend(t).dbURL
			}
			g := startBotMain(t, telegramConfig, env)
			testHistoryRun(t, g, api)
		})
	}
}

func testHistoryRun(t *testing.T, g *gateway, api *telegramtest.Server) {
	ctx := context.Background()
	want := map[string]tally{} // by channel, of the Starter account
	byKey := map[string]tally{}
	count := func(ch, key string, status int, n int64) {
		w, k := want[ch], byKey[key]
		for _, s := range []*tally{&w, &k} {
			switch status {
			case 200:
				s.images, s.requests = s.images+n, s.requests+1
			case 429:
				s.rejected++
			case 502:
				s.requests, s.refunded = s.requests+1, s.refunded+n
			}
		}
		want[ch], byKey[key] = w, k
	}

	// A Starter account (5/hour, 20/day): two images in the bot, then two
	// keys through the API, one failure refunded, until both channels are
	// refused.
	const alice = 701
	api.Say(alice, "a red kite")
	wantBotPhoto(t, api.WaitSentTo(alice, 1)[0], "4 of 5 left this hour")
	count("telegram", "telegram", 200, 1)
	api.Say(alice, "please fail")
	wantBotText(t, api.WaitSentTo(alice, 2)[1], "nothing was charged")
	count("telegram", "telegram", 502, 1)
	acct, err := g.m.Accounts.FindAccountByTelegram(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := g.key(acct.ID), g.key(acct.ID)
	gen := func(key, prompt string, n int, status int) {
		t.Helper()
		r := g.do("POST", "/v1/images/generations", key, fmt.Sprintf(`{"model":"sluice-sketch","prompt":%q,"n":%d}`, prompt, n))
		if r.status != status {
			t.Fatalf("%s: %d %s, want %d", prompt, r.status, r.body, status)
		}
		count("api", key, status, int64(n))
	}
	gen(k1, "one", 2, 200)
	gen(k2, "fail twice", 2, 502)
	gen(k2, "two", 1, 200)
	g.clock.Add(10 * time.Second)
	api.Say(alice, "a blue kite")
	wantBotPhoto(t, api.WaitSentTo(alice, 3)[2], "0 of 5 left this hour")
	count("telegram", "telegram", 200, 1)
	gen(k1, "three", 1, 429)
	gen(k2, "four", 1, 429)
	api.Say(alice, "a green kite")
	wantBotText(t, api.WaitSentTo(alice, 4)[3], "Hourly limit reached")
	count("telegram", "telegram", 429, 1)
	// A minute later (the test's hour), again.
	g.clock.Add(time.Minute)
	gen(k2, "five", 2, 200)

	// A VIP account beside it, which must not mix in.
	vip, vk := g.account("vip@example.com", "vip")
	r := g.generate(vk, 3)
	if r.status != 200 {
		t.Fatalf("vip: %d %s", r.status, r.body)
	}

	if err := g.m.History.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	now := g.clock.Now()
	span := fmt.Sprintf("from=%d&to=%d", now.Add(-48*time.Hour).Unix(), now.Add(time.Hour).Unix())
	for _, gran := range []string{"minute", "hour", "day"} {
		got := g.historySums(fmt.Sprintf("/admin/usage/history?account=%d&granularity=%s&group_by=channel&%s", acct.ID, gran, span), g.admin)
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(tally{})); diff != "" {
			t.Errorf("%s by channel (-want +got):\n%s", gran, diff)
		}
	}
	got := g.historySums("/v1/usage/history?granularity=hour&group_by=key&"+span, k1)
	wantKeys := map[string]tally{}
	for key, s := range byKey {
		id := key
		if key != "telegram" {
			id, _, _ = sluice.ParseAPIKey(key)
		}
		wantKeys[id] = s
	}
	if diff := cmp.Diff(wantKeys, got, cmp.AllowUnexported(tally{})); diff != "" {
		t.Errorf("by key (-want +got):\n%s", diff)
	}
	got = g.historySums(fmt.Sprintf("/admin/usage/history?account=%d&granularity=day&%s", vip, span), g.admin)
	if diff := cmp.Diff(map[string]tally{"": {3, 1, 0, 0}}, got, cmp.AllowUnexported(tally{})); diff != "" {
		t.Errorf("VIP account (-want +got):\n%s", diff)
	}
}

// TestMainHistoryTwoInstances: two gateways on one Redis and one
// PostgreSQL record into the same history; its sums are exact, and the
// first gateway's graceful stop flushes what it held.
func TestMainHistoryTwoInstances(t *testing.T) {
	b := sharedBackend(t)
	gws := []*gateway{startShared(t, b, 0), startShared(t, b, 0)}
	acct, k1 := gws[0].account("two@example.com", "vip")
	k2 := gws[1].key(acct)
	const each = 30
	for i := range each {
		for j, g := range gws {
			key := []string{k1, k2}[(i+j)%2]
			if r := g.generate(key, 1+j); r.status != 200 {
				t.Fatalf("request %d on gateway %d: %d %s", i, j, r.status, r.body)
			}
		}
	}
	// A graceful stop flushes.
	if err := gws[0].m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gws[1].m.History.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	got := gws[1].historySums(fmt.Sprintf("/admin/usage/history?account=%d&granularity=day&from=%d&to=%d",
		acct, now.Add(-48*time.Hour).Unix(), now.Add(time.Hour).Unix()), gws[1].admin)
	if diff := cmp.Diff(map[string]tally{"": {each * 3, each * 2, 0, 0}}, got, cmp.AllowUnexported(tally{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestMainHistoryOff: with usage.record false no decision reaches a
// history recorder, the alerts still watch them, and the gateway serves as
// usual.
func TestMainHistoryOff(t *testing.T) {
	g := startMain(t, "", map[string]string{"SLUICE_USAGE_RECORD": "false"})
	if g.m.History != nil {
		t.Fatal("usage.record false: a history recorder was started")
	}
	for _, r := range g.m.usage {
		if _, ok := r.(*history.Recorder); ok {
			t.Fatalf("usage.record false: decisions go to %T", r)
		}
	}
	if g.m.Alerts == nil || len(g.m.usage) != 1 {
		t.Fatalf("the alerts should still watch the decisions: %v", g.m.usage)
	}
	_, key := g.account("off@example.com", "vip")
	if r := g.generate(key, 1); r.status != 200 {
		t.Fatalf("generate: %d %s", r.status, r.body)
	}
}
