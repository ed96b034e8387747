package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// SLUICE_TEST_CLOCK_OFFSET (for scripts/accuracy only) moves the clock both
// limiters read; a bad value stops the start.
func TestClockOffset(t *testing.T) {
	for _, tc := range []struct {
		value   string
		offset  time.Duration
		wantErr string
	}{
		{value: "", offset: 0},
		{value: "10m", offset: 10 * time.Minute},
		{value: "-10m", offset: -10 * time.Minute},
		{value: "soon", wantErr: "SLUICE_TEST_CLOCK_OFFSET"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			env := map[string]string{"SLUICE_ADMIN_TOKEN": "test-admin-token", testClockOffsetEnv: tc.value}
			var out bytes.Buffer
			m := NewMain(&out, &out)
			m.Getenv = func(k string) string { return env[k] }
			if err := m.ParseFlags([]string{"--addr", "127.0.0.1:0", "--data", t.TempDir()}); err != nil {
				t.Fatal(err)
			}
			err := m.Run(context.Background())
			defer m.Close()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Run: %v, want an error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, l := range map[string]func() time.Time{"Quota": m.Quota.Now, "AuthQuota": m.AuthQuota.Now} {
				if tc.offset == 0 {
					if l != nil {
						t.Errorf("%s.Now set without an offset", name)
					}
					continue
				}
				before := time.Now().Add(tc.offset)
				got := l()
				after := time.Now().Add(tc.offset)
				if got.Before(before) || got.After(after) {
					t.Errorf("%s.Now() = %v, want within [%v, %v]", name, got, before, after)
				}
			}
		})
	}
}
