package http_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice"
	sluicehttp "github.com/sluicehq/sluice/http"
	"github.com/sluicehq/sluice/quota"
)

// TestTraces: with a Tracer, an image request makes a server span named
// after its route, child of the incoming traceparent, with the account id
// (never the key), and three children: the account lookup, the quota
// decision (store, outcome, windows) and the upstream call, whose context
// the generator receives. A rejected request's decision says so.
func TestTraces(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	var upstreamSpan trace.SpanContext
	h := newHarness(t, func(h *harness, _ *quota.Limiter) {
		h.S.Tracer = tp.Tracer("test")
		h.S.QuotaStore = "embedded"
		h.Gen.GenerateFn = func(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
			upstreamSpan = trace.SpanContextFromContext(ctx)
			return okImages(req.N), nil
		}
	})
	id, key := h.account("tiny") // 2 an hour
	rec.Reset()                  // the admin calls of account()

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	hdr := http.Header{"Traceparent": {parent}}
	body := `{"model":"sluice-sketch","prompt":"a lighthouse","n":2}`
	wantStatus(t, h.doHeader("POST", "/v1/images/generations", key, body, hdr), 200)
	wantStatus(t, h.doHeader("POST", "/v1/images/generations", key, body, hdr), 429)

	spans := rec.Ended()
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	reqs := byName["POST /v1/images/generations"]
	if len(reqs) != 2 || len(byName["account.lookup"]) != 2 || len(byName["quota.take"]) != 2 || len(byName["upstream.generate"]) != 1 {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name())
		}
		t.Fatalf("spans %q", names)
	}
	for i, req := range reqs {
		if got := req.Parent().SpanID().String(); got != "00f067aa0ba902b7" || req.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("request %d: parent %s, trace %s: not the incoming traceparent", i, got, req.SpanContext().TraceID())
		}
		if req.SpanKind() != trace.SpanKindServer {
			t.Errorf("request %d: kind %v", i, req.SpanKind())
		}
		attrs := attrMap(req.Attributes())
		if attrs["sluice.account_id"] != attribute.Int64Value(id) || attrs["http.route"].AsString() != "/v1/images/generations" {
			t.Errorf("request %d: attributes %v", i, attrs)
		}
		for _, kv := range req.Attributes() {
			if strings.Contains(kv.Value.Emit(), key) || strings.Contains(kv.Value.Emit(), "slk_") {
				t.Errorf("request %d: attribute %s shows the key", i, kv.Key)
			}
		}
	}
	wantStatusCode := []int64{200, 429}
	for i, req := range reqs {
		if got := attrMap(req.Attributes())["http.response.status_code"].AsInt64(); got != wantStatusCode[i] {
			t.Errorf("request %d: status %d", i, got)
		}
	}
	// Children, under the request of their own.
	childOf := func(s sdktrace.ReadOnlySpan, req sdktrace.ReadOnlySpan) bool {
		return s.Parent().SpanID() == req.SpanContext().SpanID()
	}
	for i, name := range []string{"account.lookup", "quota.take"} {
		for j, s := range byName[name] {
			if !childOf(s, reqs[j]) {
				t.Errorf("%s %d (%d): not a child of its request", name, j, i)
			}
		}
	}
	up := byName["upstream.generate"][0]
	if !childOf(up, reqs[0]) || up.SpanKind() != trace.SpanKindClient {
		t.Errorf("upstream.generate: parent %s, kind %v", up.Parent().SpanID(), up.SpanKind())
	}
	if upstreamSpan.SpanID() != up.SpanContext().SpanID() {
		t.Errorf("the generator got span %s, want the upstream span %s", upstreamSpan.SpanID(), up.SpanContext().SpanID())
	}
	for i, want := range []struct {
		outcome string
		windows []string
	}{
		{"admitted", []string{"hour 2/2", "day 2/3"}},
		{"rejected", []string{"hour 2/2", "day 2/3"}},
	} {
		a := attrMap(byName["quota.take"][i].Attributes())
		if a["sluice.quota.outcome"].AsString() != want.outcome || a["sluice.quota.store"].AsString() != "embedded" ||
			strings.Join(a["sluice.quota.windows"].AsStringSlice(), ",") != strings.Join(want.windows, ",") {
			t.Errorf("quota.take %d: %v, want %s %q", i, a, want.outcome, want.windows)
		}
	}
}

func attrMap(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// BenchmarkGenerateTracing is BenchmarkGenerate's mem case without a Tracer
// (off: the default), and with one that records every span to a processor
// that drops them (on: the cost of making the spans, not of exporting
// them).
func BenchmarkGenerateTracing(b *testing.B) {
	body := []byte(`{"model":"sluice-sketch","prompt":"a lighthouse at dusk","n":1,"size":"512x512"}`)
	for _, tc := range []struct {
		name   string
		tracer trace.Tracer
	}{
		{"off", nil},
		{"on", sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(discardProcessor{})).Tracer("bench")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h, key := benchServer(b, "mem", func(s *sluicehttp.Server) { s.Tracer = tc.tracer })
			r, _ := http.NewRequest("POST", "http://sluice/v1/images/generations", nil)
			r.Header.Set("Authorization", "Bearer "+key)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				r.Body = io.NopCloser(bytes.NewReader(body))
				clear(w.h)
				w.status = 0
				h.ServeHTTP(w, r)
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}

// discardProcessor ends spans into nothing.
type discardProcessor struct{}

func (discardProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discardProcessor) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discardProcessor) Shutdown(context.Context) error                  { return nil }
func (discardProcessor) ForceFlush(context.Context) error                { return nil }
