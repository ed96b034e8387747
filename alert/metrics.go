package alert

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	alerts  *prometheus.CounterVec // by result: new, duplicate, mark_error
	sent    *prometheus.CounterVec // by channel and result
	dropped *prometheus.CounterVec // by queue
	retries prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_alerts_total",
			Help: "Threshold crossings handled by the alert worker, by result: new (this instance stored the mark and sent), duplicate (already sent in the period), mark_error (the mark could not be stored; not sent).",
		}, []string{"result"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_alerts_sent_total",
			Help: "Alerts handed to a channel (mail, telegram, webhook), by result: ok, error (not accepted), failed (webhook: every attempt failed), canceled (webhook: still pending at shutdown).",
		}, []string{"channel", "result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_alerts_dropped_total",
			Help: "Alerts dropped because a bounded queue was full: alerts (waiting for the worker) or webhook (waiting for delivery or a retry).",
		}, []string{"queue"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_alert_webhook_retries_total",
			Help: "Webhook deliveries retried after a failed attempt.",
		}),
	}
	// Series at zero from the start, for rate() and the dashboard.
	m.dropped.WithLabelValues("alerts")
	m.dropped.WithLabelValues("webhook")
	if reg != nil {
		reg.MustRegister(m.alerts, m.sent, m.dropped, m.retries)
	}
	return m
}
