package http

import (
	"errors"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gateway's Prometheus metrics. Labels are bounded: route is
// a mux pattern (or "unmatched"), never a raw path.
type metrics struct {
	requests  *prometheus.CounterVec   // route, code
	duration  *prometheus.HistogramVec // route
	decisions *prometheus.CounterVec   // plan, outcome
	upstream  *prometheus.HistogramVec // outcome
	store     *prometheus.HistogramVec // op
	refunds   *prometheus.CounterVec   // reason
	idem      *prometheus.CounterVec   // outcome

	take, peek, refund, reset prometheus.Observer
	upstreamOK                prometheus.Observer

	// The children of the vectors that every image request updates,
	// cached (see children).
	requestsOf  children[routeCode, prometheus.Counter]
	durationOf  children[string, prometheus.Observer]
	decisionsOf children[planOutcome, prometheus.Counter]
}

type routeCode struct {
	route string
	code  int
}

type planOutcome struct{ plan, outcome string }

// children caches the children of a metric vector by a comparable key. A
// vector's WithLabelValues checks that each value is valid UTF-8, hashes the
// values and takes the vector's read lock, on every call; get is one lookup
// in a map that is never written, without a lock or an allocation. A new
// key copies the map: the keys are bounded (routes, codes, plans), so that
// happens a few dozen times in a process's life. The zero value is ready
// for use once newChild is set; it is safe for concurrent use.
type children[K comparable, M any] struct {
	cur      atomic.Pointer[map[K]M]
	mu       sync.Mutex // serializes adding keys
	newChild func(K) M
}

func (c *children[K, M]) get(k K) M {
	if m := c.cur.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.cur.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	m := map[K]M{}
	if old != nil {
		m = maps.Clone(*old)
	}
	v := c.newChild(k)
	m[k] = v
	c.cur.Store(&m)
	return v
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_http_requests_total",
			Help: "HTTP requests by route (mux pattern) and status code.",
		}, []string{"route", "code"})),
		duration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"})),
		decisions: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_quota_decisions_total",
			Help: "Quota decisions of image requests by plan and outcome (admitted, rejected, shadow).",
		}, []string{"plan", "outcome"})),
		upstream: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_upstream_duration_seconds",
			Help:    "Time the image generator took, relaying its answer included, by outcome (ok, error, timeout, canceled).",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120},
		}, []string{"outcome"})),
		store: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_quota_store_duration_seconds",
			Help:    "Time of calls to the quota service, by operation (take, peek, refund, reset).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"op"})),
		refunds: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_refunds_total",
			Help: "Units refunded because nothing was delivered, by reason (upstream_error, relay_error, panic).",
		}, []string{"reason"})),
		idem: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_idempotency_total",
			Help: "Image requests sent with an Idempotency-Key, by outcome: kept (a 200 kept for a replay), oversize (kept without its body), abandoned (not a 200: a retry is a new attempt), replayed, in_progress (409), reused (422), inherited (a retry taking over the claim of a stopped instance, served on its charge).",
		}, []string{"outcome"})),
	}
	for _, o := range []string{"kept", "oversize", "abandoned", "replayed", "in_progress", "reused", "inherited"} {
		m.idem.WithLabelValues(o)
	}
	for _, reason := range []string{"upstream_error", "relay_error", "panic"} {
		m.refunds.WithLabelValues(reason) // at zero from the start, for rate()
	}
	m.take = m.store.WithLabelValues("take")
	m.peek = m.store.WithLabelValues("peek")
	m.refund = m.store.WithLabelValues("refund")
	m.reset = m.store.WithLabelValues("reset")
	m.upstreamOK = m.upstream.WithLabelValues("ok")
	m.requestsOf.newChild = func(k routeCode) prometheus.Counter {
		return m.requests.WithLabelValues(k.route, statusCode(k.code))
	}
	m.durationOf.newChild = func(route string) prometheus.Observer { return m.duration.WithLabelValues(route) }
	m.decisionsOf.newChild = func(k planOutcome) prometheus.Counter {
		return m.decisions.WithLabelValues(k.plan, k.outcome)
	}
	return m
}

// register registers c, or returns the equal collector already registered
// (two Servers sharing a registry share their metrics).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a programming error: conflicting metric definitions
	}
	return c
}

// request records one answered request.
func (m *metrics) request(route string, status int, d time.Duration) {
	m.requestsOf.get(routeCode{route, status}).Inc()
	m.durationOf.get(route).Observe(d.Seconds())
}

// decision counts one quota decision of an image request.
func (m *metrics) decision(plan, outcome string) {
	m.decisionsOf.get(planOutcome{plan, outcome}).Inc()
}

// statusCodes holds the decimal form of every status, so that labelling a
// request does not allocate.
var statusCodes = func() (s [600]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

func statusCode(status int) string {
	if 0 <= status && status < len(statusCodes) {
		return statusCodes[status]
	}
	return strconv.Itoa(status)
}

func (s *Server) handleMetrics() http.HandlerFunc {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}).ServeHTTP
}
