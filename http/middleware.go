package http

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice"
)

// reqState is what the middleware knows about one request: it is the
// request's http.ResponseWriter (recording the status) and travels in the
// request's context so that handlers can add the route and the account. One
// allocation carries both.
type reqState struct {
	http.ResponseWriter
	status  int   // 0 until the header is written
	written int64 // body bytes

	id        string // X-Request-Id
	route     string // the mux pattern; empty if none matched
	accountID int64  // 0 until a key or session resolved
	errCode   string // the code of an error answer
	cfg       *live  // the configuration of the whole request (live.go)
}

type stateKey struct{}

// stateOf returns the request's state, or nil for a request that did not
// pass through Server.Handler (tests of single functions).
func stateOf(r *http.Request) *reqState {
	st, _ := r.Context().Value(stateKey{}).(*reqState)
	return st
}

func requestID(r *http.Request) string {
	if st := stateOf(r); st != nil {
		return st.id
	}
	return ""
}

func routeOf(r *http.Request) string {
	if st := stateOf(r); st != nil {
		return st.route
	}
	return ""
}

// isOpenAI reports whether r gets errors in OpenAI's shape.
func isOpenAI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/openai/") }

func (st *reqState) WriteHeader(code int) {
	if st.status == 0 && code >= 200 {
		st.status = code
	}
	st.ResponseWriter.WriteHeader(code)
}

func (st *reqState) Write(b []byte) (int, error) {
	if st.status == 0 {
		st.status = http.StatusOK
	}
	n, err := st.ResponseWriter.Write(b)
	st.written += int64(n)
	return n, err
}

// Flush sends buffered data to the client, if the connection can.
func (st *reqState) Flush() {
	if st.status == 0 {
		st.status = http.StatusOK
	}
	http.NewResponseController(st.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (st *reqState) Unwrap() http.ResponseWriter { return st.ResponseWriter }

// serveHTTP is the outermost middleware: request id, recovery, access log
// and request metrics around the mux.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := &reqState{ResponseWriter: w, id: incomingRequestID(r.Header.Get("X-Request-Id")), cfg: s.cur.Load()}
	if st.id == "" {
		st.id = newRequestID()
	}
	w.Header()["X-Request-Id"] = []string{st.id}
	r = r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
	if s.Tracer != nil {
		var span trace.Span
		r, span = s.startRequestSpan(r)
		defer endRequestSpan(span, r, st) // after the recovery below
	}

	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				// A deliberate abort (a broken relay): no answer to give.
				s.observe(r, st, start)
				panic(v)
			}
			s.logger().LogAttrs(r.Context(), slog.LevelError, "panic",
				slog.String("request_id", st.id),
				slog.String("method", r.Method),
				slog.String("route", st.route),
				slog.Any("panic", v),
				slog.String("stack", string(debug.Stack())))
			if st.status == 0 {
				s.writeError(st, r, &apiError{Code: sluice.EINTERNAL, Message: sluice.ErrorMessage(nil)})
			} else {
				// Part of an answer is out: break the connection so that
				// the client cannot take it for a whole one.
				s.observe(r, st, start)
				panic(http.ErrAbortHandler)
			}
		}
		s.observe(r, st, start)
	}()

	if !cleanPath(r.URL.Path) {
		// The mux would redirect to the clean path with an HTML body.
		s.notFound(st, r)
		return
	}
	s.mux.ServeHTTP(st, r)
}

// cleanPath reports whether p is absolute and has no empty, "." or ".."
// segments (a trailing slash is allowed).
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 1; i < len(p); {
		j := strings.IndexByte(p[i:], '/')
		if j < 0 {
			j = len(p) - i
		}
		seg := p[i : i+j]
		last := i+j == len(p)
		if seg == "." || seg == ".." || (seg == "" && !last) {
			return false
		}
		i += j + 1
	}
	return true
}

// observe records the request's metrics and writes its access log line. The
// Authorization header is never logged.
func (s *Server) observe(r *http.Request, st *reqState, start time.Time) {
	d := time.Since(start)
	status := st.status
	if status == 0 {
		status = http.StatusOK // nothing written: net/http answers 200
	}
	route := st.route
	if route == "" {
		route = "unmatched"
	}
	s.metrics.request(route, status, d)

	ctx := r.Context()
	log := s.logger()
	if !log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	var buf [9]slog.Attr
	attrs := append(buf[:0],
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Duration("duration", d),
		slog.Int64("bytes", st.written),
		slog.String("request_id", st.id))
	if st.accountID != 0 {
		attrs = append(attrs, slog.Int64("account_id", st.accountID))
	}
	if st.errCode != "" {
		attrs = append(attrs, slog.String("error", st.errCode))
	}
	log.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
}

// incomingRequestID returns a client's X-Request-Id if it is sane (1 to 64
// characters of [A-Za-z0-9_-]), else "".
func incomingRequestID(v string) string {
	if len(v) == 0 || len(v) > 64 {
		return ""
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return ""
		}
	}
	return v
}

var (
	// requestIDPrefix tells this process's ids from other instances'.
	requestIDPrefix = sluice.RandomString(10)
	requestIDSeq    atomic.Uint64
)

// newRequestID returns a unique id without reading crypto/rand per request:
// a random per-process prefix and a counter.
func newRequestID() string {
	var b [32]byte
	out := append(b[:0], requestIDPrefix...)
	out = append(out, '-')
	out = strconv.AppendUint(out, requestIDSeq.Add(1), 36)
	return string(out)
}
