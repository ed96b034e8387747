package http

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHandlers: extra handlers are mounted at their patterns, behind the
// middleware, and their paths answer 405 to other methods.
func TestHandlers(t *testing.T) {
	s := &Server{Handlers: map[string]http.Handler{
		"POST /telegram/hook": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusAccepted)
		}),
	}}
	t.Cleanup(func() { s.Close(context.Background()) })
	h := s.Handler()
	for _, tc := range []struct {
		method string
		status int
		allow  string
	}{
		{"POST", http.StatusAccepted, ""},
		{"GET", http.StatusMethodNotAllowed, "POST"},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tc.method, "/telegram/hook", nil))
		if w.Code != tc.status || w.Header().Get("Allow") != tc.allow {
			t.Errorf("%s: %d, Allow %q; want %d, %q", tc.method, w.Code, w.Header().Get("Allow"), tc.status, tc.allow)
		}
		if w.Header().Get("X-Request-Id") == "" {
			t.Errorf("%s: no X-Request-Id: the handler is not behind the middleware", tc.method)
		}
	}
}
