package http

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsChildren checks that the cached children are the vectors'
// own: what goroutines count through the cache, concurrently and while
// keys are being added, is what the registry shows.
func TestMetricsChildren(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	routes := []string{"POST /v1/images/generations", "GET /v1/usage", "unmatched"}
	codes := []int{200, 429, 999}
	const goroutines, perKey = 4, 50
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range perKey {
				for _, r := range routes {
					for _, c := range codes {
						m.request(r, c, time.Millisecond)
					}
				}
				m.decision("vip", "admitted")
			}
		})
	}
	wg.Wait()

	// Every series of the three vectors, by its labels.
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range s.GetLabel() {
				name += " " + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case s.GetCounter() != nil:
				got[name] = s.GetCounter().GetValue()
			case s.GetHistogram() != nil:
				got[name] = float64(s.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{"sluice_quota_decisions_total outcome=admitted plan=vip": goroutines * perKey}
	for _, r := range routes {
		for _, c := range codes {
			want["sluice_http_requests_total code="+statusCode(c)+" route="+r] = goroutines * perKey
		}
		want["sluice_http_request_duration_seconds route="+r] = goroutines * perKey * float64(len(codes))
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %v, want %v", name, got[name], w)
		}
	}
	if a, b := m.requestsOf.get(routeCode{routes[0], 200}), m.requests.WithLabelValues(routes[0], "200"); a != b {
		t.Errorf("cached child %p is not the vector's %p", a, b)
	}
}
