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
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "quota.lock")
	l, err := Acquire(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(os.Getpid())
	// A second lock, even in this process, fails at once without a busy
	// that waits, naming the holder.
	var holders []Holder
	_, err = Acquire(ctx, path, func(h Holder) bool { holders = append(holders, h); return false })
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "(process "+pid+")") {
		t.Fatalf("second Acquire: %v, want ErrBusy naming process %s", err, pid)
	}
	if len(holders) != 1 || holders[0] != (Holder{PID: pid}) {
		t.Errorf("busy called with %+v, want once with pid %s", holders, pid)
	}
	// One that waits sees the holder's note, fails when its context ends,
	// and gets the lock once it is released.
	if err := l.Note("stopping"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	wait := func(h Holder) bool { return h.Note == "stopping" }
	if _, err := Acquire(short, path, wait); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "(process "+pid+", stopping)") {
		t.Fatalf("Acquire until the context ends: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		l2, err := Acquire(ctx, path, wait)
		if err == nil {
			err = l2.Unlock()
		}
		done <- err
	}()
	time.Sleep(150 * time.Millisecond)
	if err := l.Unlock(); err != nil {
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
		if _, err := Acquire(context.Background(), path, nil); err != nil {
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
	_, err = Acquire(context.Background(), path, nil)
	if want := "(process " + strconv.Itoa(cmd.Process.Pid) + ")"; !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Acquire while held: %v, want ErrBusy naming %s", err, want)
	}
	cmd.Process.Kill()
	cmd.Wait()
	l, err := Acquire(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("Acquire after the holder was killed: %v", err)
	}
	l.Unlock()
}

// FuzzReadHolder: whatever the lock's file holds, reading it never fails
// but names no holder, and what a holder writes reads back as written.
func FuzzReadHolder(f *testing.F) {
	f.Add([]byte("4512\n"), "4512", "stopping")
	f.Add([]byte("4512 stopping\n"), "1", "")
	f.Add([]byte("\x00\xff"), "x", "a b\nc")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content []byte, pid, note string) {
		path := filepath.Join(dir, "lock")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		file, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		if h := readHolder(file); h.PID != "" {
			if _, err := strconv.Atoi(h.PID); err != nil {
				t.Fatalf("holder %+v from %q", h, content)
			}
		}
		if _, err := strconv.Atoi(pid); err != nil || strings.ContainsAny(pid, " \n") || strings.Contains(note, "\n") || len(pid)+len(note) > 200 {
			return // not what a holder writes
		}
		l := &Lock{f: file, pid: pid}
		if err := l.Note(note); err != nil {
			t.Fatal(err)
		}
		if h := readHolder(file); h != (Holder{PID: pid, Note: note}) {
			t.Fatalf("wrote %q %q, read %+v", pid, note, h)
		}
	})
}
