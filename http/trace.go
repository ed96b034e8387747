package http

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice"
)

// Traces (OpenTelemetry), when Server.Tracer is set: a server span per
// request, named after its route, with the account id once it is known
// (never the key or the token), and child spans for the account lookup
// (account.lookup), the quota decision (quota.take: store, outcome,
// windows) and the image generator (upstream.generate, whose context the
// upstream client carries on as a W3C traceparent). An incoming
// traceparent makes the request's span its child.
//
// Without a Tracer each point costs one nil check: no span, no context,
// no allocation.

// traceContext reads and writes the W3C traceparent and tracestate.
var traceContext = propagation.TraceContext{}

// startRequestSpan starts the span of a request; s.Tracer is set.
func (s *Server) startRequestSpan(r *http.Request) (*http.Request, trace.Span) {
	ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := s.Tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("url.path", r.URL.Path),
		))
	return r.WithContext(ctx), span
}

// endRequestSpan names the span after the route that answered and records
// the answer.
func endRequestSpan(span trace.Span, r *http.Request, st *reqState) {
	route := st.route
	if route == "" {
		route = r.Method
	}
	span.SetName(route)
	if _, path, ok := strings.Cut(route, " "); ok {
		span.SetAttributes(attribute.String("http.route", path))
	}
	span.SetAttributes(
		attribute.Int("http.response.status_code", st.status),
		attribute.String("sluice.request_id", st.id),
	)
	if st.accountID != 0 {
		span.SetAttributes(attribute.Int64("sluice.account_id", st.accountID))
	}
	if st.errCode != "" {
		span.SetAttributes(attribute.String("sluice.error", st.errCode))
	}
	if st.status >= 500 {
		span.SetStatus(otelcodes.Error, strconv.Itoa(st.status))
	}
	span.End()
}

// startSpan starts a child span of ctx's, or returns ctx and nil without
// a Tracer.
func (s *Server) startSpan(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	if s.Tracer == nil {
		return ctx, nil
	}
	return s.Tracer.Start(ctx, name, trace.WithSpanKind(kind))
}

// endSpan ends span (nil: none), recording err.
func endSpan(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.SetAttributes(attribute.String("sluice.error", sluice.ErrorCode(err)))
		span.SetStatus(otelcodes.Error, sluice.ErrorCode(err))
	}
	span.End()
}

// decisionAttributes describes a quota decision on its span: the store,
// the outcome and each window as "hour 3/100".
func (s *Server) decisionAttributes(span trace.Span, d *sluice.Decision, n int64) {
	outcome := "admitted"
	switch {
	case d.Shadow:
		outcome = "shadow"
	case !d.Allowed:
		outcome = "rejected"
	}
	windows := make([]string, 0, d.N)
	for _, w := range d.Statuses() {
		if w.Limit.IsUnlimited() {
			windows = append(windows, w.Name+" unlimited")
			continue
		}
		windows = append(windows, w.Name+" "+strconv.FormatInt(int64(w.Limit)-w.Remaining, 10)+"/"+strconv.FormatInt(int64(w.Limit), 10))
	}
	span.SetAttributes(
		attribute.String("sluice.quota.store", s.QuotaStore),
		attribute.String("sluice.quota.outcome", outcome),
		attribute.Int64("sluice.quota.n", n),
		attribute.StringSlice("sluice.quota.windows", windows),
	)
}
