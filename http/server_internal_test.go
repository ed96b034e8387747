package http

import (
	"context"
	"testing"
	"time"
)

// TestOpenTimeouts: the Server's timeouts reach the http.Server as they
// are; 0 means none, as server.write_timeout: 0 promises, and never a
// default that would cut a long generation.
func TestOpenTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name                string
		read, write, idle   time.Duration
		wantR, wantW, wantI time.Duration
	}{
		{"zero means none", 0, 0, 0, 0, 0, 0},
		{"set", time.Second, 2 * time.Second, 3 * time.Second, time.Second, 2 * time.Second, 3 * time.Second},
		{"only write none", 10 * time.Second, 0, time.Minute, 10 * time.Second, 0, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{ReadTimeout: tc.read, WriteTimeout: tc.write, IdleTimeout: tc.idle}
			if err := s.Open("127.0.0.1:0"); err != nil {
				t.Fatal(err)
			}
			defer s.Close(context.Background())
			s.mu.Lock()
			got := s.srv
			s.mu.Unlock()
			if got.ReadTimeout != tc.wantR || got.WriteTimeout != tc.wantW || got.IdleTimeout != tc.wantI {
				t.Errorf("http.Server timeouts: read %v, write %v, idle %v; want %v, %v, %v",
					got.ReadTimeout, got.WriteTimeout, got.IdleTimeout, tc.wantR, tc.wantW, tc.wantI)
			}
			if got.ReadHeaderTimeout != DefaultReadHeaderTimeout {
				t.Errorf("ReadHeaderTimeout %v, want %v", got.ReadHeaderTimeout, DefaultReadHeaderTimeout)
			}
		})
	}
}
