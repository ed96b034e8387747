//go:build unix

package flock

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "quota.lock")
	unlock, err := Lock(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A second lock, even in this process, waits and then fails, naming
	// the holder.
	var holders []string
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	if _, err := Lock(ctx, path, func(h string) { holders = append(holders, h) }); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Lock: %v, want ErrBusy", err)
	} else if pid := strconv.Itoa(os.Getpid()); len(holders) != 1 || holders[0] != pid {
		t.Errorf("busy called with %q, want once with %q", holders, pid)
	}
	// A lock released while another waits is taken by the waiter.
	done := make(chan error, 1)
	go func() {
		u, err := Lock(context.Background(), path, nil)
		if err == nil {
			err = u()
		}
		done <- err
	}()
	time.Sleep(150 * time.Millisecond)
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter did not get the lock once released")
	}
}

// TestLockHolderKilled: the lock of a process killed with SIGKILL is free at
// once; its pid, left in the file, named it while it lived.
func TestLockHolderKilled(t *testing.T) {
	if path := os.Getenv("FLOCK_TEST_HOLD"); path != "" {
		if _, err := Lock(context.Background(), path, nil); err != nil {
			os.Exit(1)
		}
		os.Stdout.WriteString("locked\n")
		time.Sleep(time.Hour) // not select{}: with nothing else to run, the runtime would end the process
	}
	path := filepath.Join(t.TempDir(), "quota.lock")
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHolderKilled$")
	cmd.Env = append(os.Environ(), "FLOCK_TEST_HOLD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "locked\n" {
		t.Fatalf("holder said %q", line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	_, err = Lock(ctx, path, nil)
	if want := "(process " + strconv.Itoa(cmd.Process.Pid) + ")"; !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Lock while held: %v, want ErrBusy naming %s", err, want)
	}
	cmd.Process.Kill()
	cmd.Wait()
	ctx, cancel = context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	unlock, err := Lock(ctx, path, nil)
	if err != nil {
		t.Fatalf("Lock after the holder was killed: %v", err)
	}
	unlock()
}
