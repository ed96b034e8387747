package http

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

// touchLog is an account store that records TouchAPIKey calls.
type touchLog struct {
	sluice.AccountService
	mu    sync.Mutex
	calls []string
}

func (l *touchLog) TouchAPIKey(ctx context.Context, id string, t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, id+"@"+t.UTC().Format("15:04:05"))
	return nil
}

func (l *touchLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.calls
	l.calls = nil
	return c
}

// TestToucher checks that last uses are written at most once per key per
// touchGap, that the latest use is the one written, and that idle keys are
// forgotten.
func TestToucher(t *testing.T) {
	store := &touchLog{}
	tc := newToucher(store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	t0 := time.Date(2024, 3, 8, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	check := func(step string, want ...string) {
		t.Helper()
		got := store.take()
		if len(got) != len(want) {
			t.Fatalf("%s: TouchAPIKey calls %v, want %v", step, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: TouchAPIKey calls %v, want %v", step, got, want)
			}
		}
	}

	tc.record("a", at(0))
	tc.record("a", at(0)) // within a second: no store at all
	tc.record("a", at(5))
	tc.flush(ctx, at(10), false)
	check("first flush", "a@12:00:05")
	tc.record("a", at(20))
	tc.flush(ctx, at(30), false)
	check("within the gap")
	tc.flush(ctx, at(70), false)
	check("after the gap", "a@12:00:20")
	tc.flush(ctx, at(200), false)
	check("nothing new")
	if _, ok := tc.keys.Load("a"); ok {
		t.Errorf("idle key still held")
	}
	tc.record("b", at(300))
	tc.close(ctx, at(301))
	check("close writes what is pending", "b@12:05:00")
}
