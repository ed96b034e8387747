package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/internal/config"
)

// TestFlushIntervalZero: quota.flush_interval 0 is accepted, and serve runs
// the embedded store in synchronous mode: a charge is on disk when Take
// returns, before any flush or Close.
func TestFlushIntervalZero(t *testing.T) {
	data := t.TempDir()
	g := startMain(t, data, map[string]string{"SLUICE_QUOTA_FLUSH_INTERVAL": "0"})
	s, ok := g.m.Quota.Store.(*inmem.Store)
	if !ok || !s.Synchronous() {
		t.Fatalf("quota store %T, synchronous %v; want a synchronous *inmem.Store", g.m.Quota.Store, ok && s.Synchronous())
	}
	ctx := context.Background()
	p := sluice.WindowConfig{}.AccountPolicy(10, 100)
	if d, err := g.m.Quota.Take(ctx, "k", &p, 3); err != nil || !d.Allowed {
		t.Fatalf("take: %+v, %v", d, err)
	}
	// Another store on the same file sees the charge at once.
	other, err := inmem.Open(ctx, filepath.Join(data, "quota.db"), time.Hour, inmem.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if d, err := other.Peek(ctx, "k", &p, g.clock.Now()); err != nil || d.Windows[0].Remaining != 7 {
		t.Fatalf("on disk: %+v, %v; want 7 remaining", d.Windows[0], err)
	}
	// Every charge is on disk at once: an idempotency claim records its
	// charge at once too.
	if d := g.m.Server.Idempotency.ChargeDelay; d != 0 {
		t.Errorf("Idempotency.ChargeDelay = %v, want 0", d)
	}
}

// TestChargeDelay: a keyed request's claim records its charge once the
// embedded counters hold it whatever happens (a flush interval and a
// second), at once where every charge is written at once or on Redis.
func TestChargeDelay(t *testing.T) {
	g := startMain(t, t.TempDir(), map[string]string{"SLUICE_QUOTA_FLUSH_INTERVAL": "3s"})
	if d := g.m.Server.Idempotency.ChargeDelay; d != 4*time.Second {
		t.Errorf("embedded, flush 3s: ChargeDelay = %v, want 4s", d)
	}
	var cfg config.Config
	cfg.Quota.Store, cfg.Quota.FlushInterval = config.StoreRedis, time.Second
	if d := chargeDelay(&cfg); d != 0 {
		t.Errorf("redis: ChargeDelay = %v, want 0", d)
	}
}
