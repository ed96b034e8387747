package http

import (
	"errors"
	"net/http"
	"strconv"
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
			Help: "Image requests sent with an Idempotency-Key, by outcome: kept (a 200 kept for a replay), oversize (kept without its body), abandoned (not a 200: a retry is a new attempt), replayed, in_progress (409), reused (422).",
		}, []string{"outcome"})),
	}
	for _, o := range []string{"kept", "oversize", "abandoned", "replayed", "in_progress", "reused"} {
		m.idem.WithLabelValues(o)
	}
	for _, reason := range []string{"upstream_error", "relay_error", "panic"} {
		m.refunds.WithLabelValues(reason) // at zero from the start, for rate()
	}
	m.take = m.store.WithLabelValues("take")
	m.peek = m.store.WithLabelValues("peek")
	m.refund = m.store.WithLabelValues("refund")
	m.reset = m.store.WithLabelValues("reset")
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
	m.requests.WithLabelValues(route, statusCode(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
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
