package main

import (
	"bufio"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/telegram/telegramtest"
)

// dashboardFile is the Grafana dashboard of the README.
const dashboardFile = "../../docs/grafana/sluice.json"

// metricName finds the metric names in a PromQL expression: the gateway's
// and the Go and process collectors'. Label values and legends ({{route}})
// do not match: they are not followed by a selector or a range.
var metricName = regexp.MustCompile(`\b((?:sluice|go|process)_[a-z0-9_]+)\b`)

// dashboardMetrics returns the metric names the dashboard's queries use.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string
		Panels []struct {
			Title   string
			Type    string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var names []string
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllStringSubmatch(tg.Expr, -1) {
				names = append(names, m[1])
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// TestDashboardMetrics: every metric that a query of the Grafana dashboard
// uses is in the real gateway's /metrics after a little traffic (an image
// admitted, one rejected, a quota alert, a history flush, a bot), so that
// no panel of docs/grafana/sluice.json stays empty for a typo or a renamed
// metric. Histograms are queried as _bucket and _count, which are the
// series' names in the exposition.
func TestDashboardMetrics(t *testing.T) {
	names := dashboardMetrics(t)
	if len(names) < 15 {
		t.Fatalf("only %d metrics in the dashboard: %q", len(names), names)
	}
	api := telegramtest.NewServer(t, botToken)
	g := startMain(t, "", map[string]string{
		"SLUICE_TELEGRAM_TOKEN":       botToken,
		"SLUICE_TELEGRAM_API_URL":     api.URL,
		"SLUICE_USAGE_FLUSH_INTERVAL": "50ms",
	}).realClock()
	id, key := g.account("dash@example.com", "vip")
	g.limits(id, 2, 100)
	for i, want := range []int{200, 200, 429} {
		if r := g.generate(key, 1); r.status != want {
			t.Fatalf("request %d: %d, want %d: %s", i, r.status, want, r.body)
		}
	}
	var missing []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		have := map[string]bool{}
		sc := bufio.NewScanner(strings.NewReader(string(g.do("GET", "/metrics", "", "").body)))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if line == "" || line[0] == '#' {
				continue
			}
			name, _, _ := strings.Cut(line, "{")
			name, _, _ = strings.Cut(name, " ")
			have[name] = true
		}
		missing = missing[:0]
		for _, n := range names {
			if !have[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the alert and the flush are asynchronous
	}
	if len(missing) > 0 {
		t.Fatalf("the dashboard queries metrics that /metrics lacks: %q", missing)
	}
	t.Logf("%d metrics of the dashboard, all in /metrics: %q", len(names), names)
}
