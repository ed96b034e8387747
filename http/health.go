package http

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
)

// handleHealthz handles GET /healthz: the process is alive.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, r, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyChecks() []ReadyCheck {
	if s.Ready != nil {
		return s.Ready
	}
	return []ReadyCheck{{"accounts", s.Accounts.Ping}, {"quota", s.Quota.Ping}}
}

// handleReadyz handles GET /readyz: 200 {"status":"ready","checks":{…}} if
// every check passes within readyTimeout, else 503
// {"status":"unavailable","checks":{"quota":"failed",…}}. The checks run
// concurrently; why one failed is logged, not shown.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	checks := s.readyChecks()
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			done := make(chan error, 1)
			go func() { done <- c.Ping(ctx) }()
			select {
			case errs[i] = <-done:
			case <-ctx.Done():
				errs[i] = ctx.Err()
			}
		})
	}
	wg.Wait()
	status, code := "ready", http.StatusOK
	results := make(map[string]string, len(checks))
	for i, c := range checks {
		results[c.Name] = "ok"
		if errs[i] != nil {
			results[c.Name] = "failed"
			status, code = "unavailable", http.StatusServiceUnavailable
			s.logger().LogAttrs(r.Context(), slog.LevelWarn, "readiness check failed",
				slog.String("check", c.Name), slog.String("error", errs[i].Error()))
		}
	}
	s.writeJSON(w, r, code, map[string]any{"status": status, "checks": results})
}
