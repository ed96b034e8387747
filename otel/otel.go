// Package otel turns on OpenTelemetry tracing from the standard OTEL_*
// environment variables (CONTRACT.md §12), and carries the W3C trace
// context to the upstream.
//
// Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT,
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_EXPORTER is set (and
// OTEL_SDK_DISABLED is not "true", and OTEL_TRACES_EXPORTER is not "none").
// Off, Setup returns a nil Tracer and the gateway makes no span, no context
// and no allocation for tracing. On, spans go to the OTLP exporter over
// HTTP (protobuf), which reads its own OTEL_EXPORTER_OTLP_* variables
// (endpoint, headers, timeout, compression, certificates); the sampler
// follows OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default:
// parentbased_always_on), the batching OTEL_BSP_*, the resource
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (default service.name
// "sluice").
package otel

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of sluice's spans.
const ScopeName = "github.com/sluicehq/sluice"

// Enabled reports whether the environment asks for traces.
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))
	if exp == "none" {
		return false
	}
	return exp != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup returns the Tracer of the gateway and the function that flushes
// and stops it, or a nil Tracer and a no-op when tracing is off. version is
// the service.version of the resource.
func Setup(ctx context.Context, getenv func(string) string, version string) (trace.Tracer, func(context.Context) error, error) {
	off := func(context.Context) error { return nil }
	if !Enabled(getenv) {
		return nil, off, nil
	}
	if exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp != "" && exp != "otlp" {
		return nil, off, fmt.Errorf("OTEL_TRACES_EXPORTER: %q is not supported; use otlp (or none)", exp)
	}
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if proto != "" && proto != "http/protobuf" {
		return nil, off, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not supported; use http/protobuf (port 4318)", proto)
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, off, fmt.Errorf("otel: %w", err)
	}
	res, err := resource.Merge(
		resource.NewSchemaless(semconv.ServiceName("sluice"), semconv.ServiceVersion(version)),
		resource.Environment(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		return nil, off, fmt.Errorf("otel: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp.Tracer(ScopeName), tp.Shutdown, nil
}

// propagator writes and reads the W3C traceparent and tracestate headers.
var propagator = propagation.TraceContext{}

// Transport returns base with the trace context of each request's context
// added to its headers (W3C traceparent), so that the upstream's spans join
// the gateway's trace. A request without a span goes as it is.
func Transport(base http.RoundTripper) http.RoundTripper {
	return &transport{base: base}
}

type transport struct{ base http.RoundTripper }

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if trace.SpanContextFromContext(r.Context()).IsValid() {
		r = r.Clone(r.Context()) // a RoundTripper must not change its request
		propagator.Inject(r.Context(), propagation.HeaderCarrier(r.Header))
	}
	return t.base.RoundTrip(r)
}

// CloseIdleConnections closes the idle connections of the base transport,
// if it keeps any.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Extract returns ctx with the remote span context of the headers h (an
// incoming traceparent), if any.
func Extract(ctx context.Context, h http.Header) context.Context {
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}
