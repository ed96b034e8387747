package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/inmem"
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
	wantOnDisk(t, g, data, "k", &p, 7)
}

// TestQuotaSync: serve's quota service syncs a key's counters to disk at
// once (sluice.QuotaSyncer), whatever the flush interval, as an idempotency
// claim and a journaled Telegram prompt need before recording a charge.
func TestQuotaSync(t *testing.T) {
	data := t.TempDir()
	g := startMain(t, data, map[string]string{"SLUICE_QUOTA_FLUSH_INTERVAL": "1h"})
	ctx := context.Background()
	p := sluice.WindowConfig{}.AccountPolicy(10, 100)
	if d, err := g.m.Quota.Take(ctx, "k", &p, 3); err != nil || !d.Allowed {
		t.Fatalf("take: %+v, %v", d, err)
	}
	if err := sluice.SyncQuota(ctx, g.m.Quota, "k"); err != nil {
		t.Fatal(err)
	}
	wantOnDisk(t, g, data, "k", &p, 7)
}

// wantOnDisk checks that the counters in data's quota.db leave remaining
// units of key's first window under p.
func wantOnDisk(t *testing.T, g *gateway, data, key string, p *sluice.Policy, remaining int64) {
	t.Helper()
	ctx := context.Background()
	other, err := inmem.Open(ctx, filepath.Join(data, "quota.db"), time.Hour, inmem.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if d, err := other.Peek(ctx, key, p, g.clock.Now()); err != nil || d.Windows[0].Remaining != remaining {
		t.Fatalf("on disk: %+v, %v; want %d remaining", d.Windows[0], err, remaining)
	}
}
