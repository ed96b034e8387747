package quota_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/quota"
)

// TestSetMode: a Limiter in use switches between enforce and shadow for
// the next decisions (a configuration reload), counting all along.
func TestSetMode(t *testing.T) {
	s := inmem.New(inmem.Options{})
	defer s.Close()
	l := &quota.Limiter{Store: s, Mode: quota.Enforce}
	p := &sluice.Policy{Algorithm: sluice.Sliding, Windows: []sluice.Window{{Name: "hour", Length: time.Hour, Limit: 1}}}
	ctx := context.Background()
	for i, step := range []struct {
		set     *quota.Mode
		allowed bool
	}{
		{nil, true},                 // 1 of 1
		{nil, false},                // enforce: over
		{ptr(quota.Shadow), true},   // shadow: over, admitted
		{ptr(quota.Enforce), false}, // enforce again
	} {
		if step.set != nil {
			l.SetMode(*step.set)
		}
		d, err := l.Take(ctx, "k", p, 1)
		if err != nil || d.Allowed != step.allowed {
			t.Fatalf("step %d: allowed %v, %v; want %v", i, d.Allowed, err, step.allowed)
		}
	}
}

func ptr[T any](v T) *T { return &v }
