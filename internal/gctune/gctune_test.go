package gctune_test

import (
	"os"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/gctune"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, floor uint64
		want        int
	}{
		{8 * mib, 64 * mib, 800},   // the heap may grow by 64 MiB
		{7 * mib, 64 * mib, 914},   // rounded down: a little less than the floor
		{64 * mib, 64 * mib, 100},  // Go's default from the floor on
		{900 * mib, 64 * mib, 100}, // a big heap grows by as much as is live
		{0, 64 * mib, 100},         // nothing known yet: Go's default
		{1 * mib, 64 * mib, 1625},  // Go's minimum heap, 4 MiB × 16.25, is 65 MiB
		{100, 64 * mib, 1600},      // a tiny heap: the same bound
		{1 << 62, 1<<63 - 1, 200},  // no overflow near the top
		{63 * mib, 64 * mib, 101},  // just under
		{1, 1, 100},                // floor reached
		{3 * mib, 1 * mib, 100},    // a floor under the minimum heap: Go's default
		{1 * mib, 2 * mib, 100},    // 300 would let the minimum heap, 12 MiB, exceed live+floor
	} {
		if got := gctune.Percent(c.live, c.floor); got != c.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", c.live, c.floor, got, c.want)
		}
	}
}

func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// TestStart: in this test's small heap, GOGC rises after a collection, and
// falls back to 100 when the tuner stops.
func TestStart(t *testing.T) {
	t.Setenv("GOGC", "") // records GOGC, which the test's cleanup restores
	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}
	stop := gctune.Start(64 << 20)
	runtime.GC()
	deadline := time.Now().Add(5 * time.Second)
	for gogc() <= 100 {
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("GOGC is %d after a collection, want more than 100 in a small heap", gogc())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if got := gogc(); got != 100 {
		t.Fatalf("GOGC is %d after stop, want 100", got)
	}
}

// TestStartLeavesGOGC: with GOGC in the environment, Start changes nothing.
func TestStartLeavesGOGC(t *testing.T) {
	t.Setenv("GOGC", "100")
	before := gogc()
	stop := gctune.Start(64 << 20)
	defer stop()
	runtime.GC()
	time.Sleep(50 * time.Millisecond)
	if got := gogc(); got != before {
		t.Fatalf("GOGC went from %d to %d though the environment sets it", before, got)
	}
}
