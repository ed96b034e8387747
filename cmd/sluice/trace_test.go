package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestMainTraces runs the real Main with OTEL_EXPORTER_OTLP_ENDPOINT set
// to a fake collector and an upstream that records the traceparent it
// receives: one image request exports the request's span and its children
// over OTLP/HTTP when Main closes, and the upstream's traceparent names the
// trace and the upstream.generate span.
func TestMainTraces(t *testing.T) {
	var mu sync.Mutex
	var traceparents []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		traceparents = append(traceparents, r.Header.Get("Traceparent"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"created":1,"data":[{"b64_json":%q}]}`, base64.StdEncoding.EncodeToString([]byte("png")))
	}))
	defer upstream.Close()

	type span struct{ name, trace, id, parent string }
	var spans []span
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, &req) != nil {
			t.Errorf("collector: %s, %d bytes not an export request", r.URL.Path, len(b))
			w.WriteHeader(400)
			return
		}
		mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					spans = append(spans, span{s.Name, fmt.Sprintf("%x", s.TraceId), fmt.Sprintf("%x", s.SpanId), fmt.Sprintf("%x", s.ParentSpanId)})
				}
			}
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()

	// The exporter reads the process's environment; Main's Getenv decides
	// whether tracing is on.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	g := startMain(t, "", map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL,
		"SLUICE_UPSTREAM_URL":         upstream.URL,
	})
	if g.m.Server.Tracer == nil {
		t.Fatal("tracing is off with OTEL_EXPORTER_OTLP_ENDPOINT set")
	}
	_, key := g.account("traced@example.com", "vip")
	if r := g.generate(key, 1); r.status != 200 {
		t.Fatalf("generate: %d %s", r.status, r.body)
	}
	if err := g.m.Close(); err != nil { // flushes the spans
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	byName := map[string]span{}
	for _, s := range spans {
		if _, ok := byName[s.name]; !ok {
			byName[s.name] = s
		}
	}
	req, up := byName["POST /v1/images/generations"], byName["upstream.generate"]
	for _, name := range []string{"POST /v1/images/generations", "account.lookup", "quota.take", "upstream.generate"} {
		s, ok := byName[name]
		switch {
		case !ok:
			t.Errorf("no %s span among %v", name, spans)
		case name != req.name && (s.parent != req.id || s.trace != req.trace):
			t.Errorf("%s: parent %s in trace %s, want %s in %s", name, s.parent, s.trace, req.id, req.trace)
		}
	}
	if len(traceparents) != 1 || traceparents[0] != "00-"+up.trace+"-"+up.id+"-01" {
		t.Errorf("the upstream got traceparent %q, want the upstream.generate span 00-%s-%s-01", traceparents, up.trace, up.id)
	}
	if strings.Contains(fmt.Sprint(spans), key) {
		t.Errorf("a span shows the key")
	}
}

// TestMainTracesOff: without OTEL_* variables Main makes no Tracer.
func TestMainTracesOff(t *testing.T) {
	g := startMain(t, "", map[string]string{})
	if g.m.Server.Tracer != nil {
		t.Fatal("tracing is on without OTEL_* variables")
	}
}
