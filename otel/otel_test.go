package otel

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestEnabled: tracing is on only when an OTLP endpoint or an exporter is
// named, and OTEL_SDK_DISABLED or the "none" exporter turn it off.
func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_SERVICE_NAME": "x"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false},
		{map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false},
	} {
		if got := Enabled(env(tc.env)); got != tc.want {
			t.Errorf("Enabled(%v) = %v, want %v", tc.env, got, tc.want)
		}
	}
}

// TestSetup: off gives a nil Tracer; unsupported exporters and protocols
// are errors that name the variable; otlp gives a Tracer.
func TestSetup(t *testing.T) {
	ctx := context.Background()
	tr, stop, err := Setup(ctx, env(nil), "test")
	if tr != nil || err != nil || stop(ctx) != nil {
		t.Fatalf("off: %v, %v", tr, err)
	}
	for _, tc := range []struct {
		env map[string]string
		err string
	}{
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
	} {
		if _, _, err := Setup(ctx, env(tc.env), "test"); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Setup(%v): %v, want an error naming %s", tc.env, err, tc.err)
		}
	}
	tr, stop, err = Setup(ctx, env(map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}), "test")
	if tr == nil || err != nil {
		t.Fatalf("otlp: %v, %v", tr, err)
	}
	stop(ctx)
}

// TestTransport: a request made under a span carries its traceparent; one
// without a span goes unchanged; the caller's request is not modified.
func TestTransport(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Traceparent"))
	}))
	defer srv.Close()
	c := &http.Client{Transport: Transport(http.DefaultTransport)}
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	if _, err := c.Do(req); err != nil {
		t.Fatal(err)
	}
	span.End()
	if req.Header.Get("Traceparent") != "" {
		t.Error("the caller's request was modified")
	}
	req, _ = http.NewRequest("GET", srv.URL, nil)
	if _, err := c.Do(req); err != nil {
		t.Fatal(err)
	}
	want := "00-" + span.SpanContext().TraceID().String() + "-" + span.SpanContext().SpanID().String() + "-01"
	if len(got) != 2 || got[0] != want || got[1] != "" {
		t.Fatalf("traceparents %q, want [%q \"\"]", got, want)
	}
}

// closer is a RoundTripper that counts its CloseIdleConnections calls.
type closer struct {
	http.RoundTripper
	closed int
}

func (c *closer) CloseIdleConnections() { c.closed++ }

// TestTransportCloseIdle: the traced transport passes CloseIdleConnections
// on, so that a reload still closes the old upstream's idle connections.
func TestTransportCloseIdle(t *testing.T) {
	base := &closer{RoundTripper: http.DefaultTransport}
	c, ok := Transport(base).(interface{ CloseIdleConnections() })
	if !ok {
		t.Fatal("Transport's result has no CloseIdleConnections")
	}
	c.CloseIdleConnections()
	if base.closed != 1 {
		t.Errorf("base closed %d times, want 1", base.closed)
	}
}
