package quota_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/quota"
)

// TestUnlimitedCounts: a policy without limits goes to the store, which
// counts it; when the store fails, the take is admitted uncounted (fail
// closed applies to limits, and there are none) and its refund does
// nothing.
func TestUnlimitedCounts(t *testing.T) {
	ctx := context.Background()
	f := newFlaky(t)
	now := time.Unix(1_900_000_000, 0)
	l := &quota.Limiter{Store: f, OnError: quota.FailClosed, Now: func() time.Time { return now }}
	p := sluice.WindowConfig{}.AccountPolicy(sluice.Unlimited, sluice.Unlimited)
	for range 3 {
		if d, err := l.Take(ctx, "elite", &p, 2); err != nil || !d.Allowed {
			t.Fatalf("take: %+v, %v", d, err)
		}
	}
	d, err := l.Peek(ctx, "elite", &p)
	if err != nil || d.Windows[sluice.HourWindow].Used() != 6 || d.Windows[sluice.DayWindow].Used() != 6 {
		t.Fatalf("peek: %+v, %v; want 6 used in both windows", d.Windows[:d.N], err)
	}
	f.down.Store(true)
	d, err = l.Take(ctx, "elite", &p, 2)
	if err != nil || !d.Allowed {
		t.Fatalf("take with the store down: %+v, %v; want admitted", d, err)
	}
	if err := l.Refund(ctx, "elite", &p, 2, d); err != nil {
		t.Fatalf("refund of an uncounted take: %v", err)
	}
	f.down.Store(false)
	if d, _ := l.Peek(ctx, "elite", &p); d.Windows[sluice.HourWindow].Used() != 6 {
		t.Fatalf("after the outage: used %d, want 6", d.Windows[sluice.HourWindow].Used())
	}
}
