package inmem_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/inmem"
)

// TestCrash kills a process that is charging a key with SIGKILL, reopens its
// data, and checks the durability bound: every charge made before the last
// flush interval (plus the time a flush takes) is there, and nothing that
// was not made. With a flush interval of 0, every charge that returned is.
func TestCrash(t *testing.T) {
	if path := os.Getenv("SLUICE_CRASH_CHILD"); path != "" {
		crashChild(path)
		return
	}
	if testing.Short() {
		t.Skip("starts child processes")
	}
	for _, tc := range []struct {
		every time.Duration
		run   time.Duration
	}{{0, 500 * time.Millisecond}, {200 * time.Millisecond, 1500 * time.Millisecond}} {
		t.Run(tc.every.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "quota.db")
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$")
			cmd.Env = append(os.Environ(), "SLUICE_CRASH_CHILD="+path, "SLUICE_CRASH_EVERY="+tc.every.String())
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := bufio.NewScanner(out)
			var acked []time.Time // when each charge returned, by the child
			var killed time.Time
			deadline := time.Now().Add(tc.run)
			for lines.Scan() {
				ns, err := strconv.ParseInt(lines.Text(), 10, 64)
				if err != nil {
					t.Fatalf("child said %q", lines.Text())
				}
				acked = append(acked, time.Unix(0, ns))
				if killed.IsZero() && time.Now().After(deadline) {
					killed = time.Now()
					cmd.Process.Kill() // SIGKILL: no flush, no Close
				}
			}
			cmd.Wait()
			if killed.IsZero() {
				t.Fatal("the child stopped before it was killed")
			}
			s, err := inmem.Open(context.Background(), path, tc.every, inmem.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			d, _ := s.Peek(context.Background(), "acct", &benchPolicy, time.Now())
			used := d.Windows[0].Used()
			if d.Windows[1].Used() != used {
				t.Fatalf("windows disagree: %d and %d", used, d.Windows[1].Used())
			}
			// Lines still in the pipe at the kill were acked too; at most
			// one charge was made but not printed.
			if used > int64(len(acked))+1 {
				t.Fatalf("%d units counted, but only %d charges were made", used, len(acked))
			}
			// What must have survived: every charge that returned before
			// the kill, less the flush interval and a flush's own time.
			const flushTime = 300 * time.Millisecond
			var durable int64
			for _, at := range acked {
				if tc.every == 0 || at.Before(killed.Add(-tc.every-flushTime)) {
					durable++
				}
			}
			if tc.every == 0 {
				durable = int64(len(acked))
			}
			t.Logf("%d charges acked, %d had to survive, %d did", len(acked), durable, used)
			if used < durable || durable == 0 {
				t.Fatalf("lost charges: %d counted, %d had to survive", used, durable)
			}
		})
	}
}

func crashChild(path string) {
	every, _ := time.ParseDuration(os.Getenv("SLUICE_CRASH_EVERY"))
	s, err := inmem.Open(context.Background(), path, every, inmem.Options{})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	for i := 0; i < 1_000_000; i++ {
		d, err := s.Take(context.Background(), "acct", &benchPolicy, 1, time.Now())
		if err != nil || !d.Allowed {
			fmt.Println("take failed:", err)
			os.Exit(1)
		}
		fmt.Println(time.Now().UnixNano())
		time.Sleep(time.Millisecond)
	}
	os.Exit(1)
}
