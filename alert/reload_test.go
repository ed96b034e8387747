package alert_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

// TestReload: new thresholds and plan names apply to the decisions
// recorded after Reload; a threshold out of 1..100 is refused and changes
// nothing.
func TestReload(t *testing.T) {
	e := newEnv(t, sluice.Sliding, nil, nil)
	a := e.account(sluice.Account{Email: "vip@example.com", Plan: "vip"})
	t0 := time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC)
	e.take(a, 40, t0) // 40 %: no alert under 80, 100
	if err := e.n.Reload([]int{0, 50}, nil); err == nil {
		t.Fatal("threshold 0 accepted")
	}
	plans := sluice.DefaultPlans()
	for i := range plans {
		if plans[i].ID == "vip" {
			plans[i].Name = "Very Important"
		}
	}
	if err := e.n.Reload([]int{50}, plans); err != nil {
		t.Fatal(err)
	}
	e.take(a, 15, t0.Add(time.Second))   // 55 %: crosses the new 50
	e.take(a, 30, t0.Add(2*time.Second)) // 85 %: 80 is no longer a threshold
	e.settle()
	got := e.mail.texts()
	if len(got) != 1 || !strings.Contains(got[0], "55 of 100 images this hour on the Very Important plan") {
		t.Fatalf("mails %q, want one at 50%% naming the new plan name", got)
	}
}
