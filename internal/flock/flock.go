// Package flock keeps a second process off a file that only one may write:
// the embedded store's counters, which each gateway holds in memory and
// writes back, so that two gateways on one file would each admit a whole
// plan and overwrite each other's counts.
//
// The lock is an advisory lock (flock) on a file beside the one it guards,
// holding its holder's process id and a note of what the holder is doing
// ("stopping"), for those who wait. The kernel releases it when its holder
// exits, however it exits, so a crash leaves no stale lock. On systems
// without flock (not Unix) Acquire takes no lock.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// retry is how often Acquire tries again while another process holds the
// lock.
const retry = 100 * time.Millisecond

// ErrBusy is the error of Acquire when another process holds the lock.
var ErrBusy = errors.New("locked by another process")

// Holder is what the lock's file says of the process that holds it.
type Holder struct {
	PID  string // "" if unknown
	Note string // the holder's last Note
}

func (h Holder) String() string {
	s := "process " + h.PID
	if h.PID == "" {
		s = "a process"
	}
	if h.Note != "" {
		s += ", " + h.Note
	}
	return s
}

// A Lock is held until Unlock, or until its process exits.
type Lock struct {
	f   *os.File
	pid string
}

// Acquire takes the lock of the file at path (created if need be, mode
// 0600) and writes this process's id into it. While another process holds
// it, Acquire calls busy with what the file says of the holder, and if busy
// returns true (a nil busy never does) tries again 100 ms later, until ctx
// ends. The error of a lock it did not get wraps ErrBusy and names the
// holder.
func Acquire(ctx context.Context, path string, busy func(Holder) (wait bool)) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if ok {
			break
		}
		h := readHolder(f)
		if busy == nil || !busy(h) {
			f.Close()
			return nil, fmt.Errorf("%s: %w (%v)", path, ErrBusy, h)
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("%s: %w (%v)", path, ErrBusy, h)
		case <-t.C:
		}
	}
	l := &Lock{f: f, pid: strconv.Itoa(os.Getpid())}
	l.write("")
	return l, nil
}

// Note records what the holder is doing, for those who wait for the lock:
// "stopping" tells them it will be free soon.
func (l *Lock) Note(note string) error { return l.write(note) }

func (l *Lock) write(note string) error {
	s := l.pid
	if note != "" {
		s += " " + note
	}
	// Truncate after the write, not before, so that a reader never finds
	// the file empty.
	if _, err := l.f.WriteAt([]byte(s+"\n"), 0); err != nil {
		return err
	}
	return l.f.Truncate(int64(len(s) + 1))
}

// Unlock releases the lock. The file stays, naming no holder.
func (l *Lock) Unlock() error {
	l.f.Truncate(0)
	return errors.Join(unlockFile(l.f), l.f.Close())
}

// readHolder returns what f says of its holder: "PID[ NOTE]\n".
func readHolder(f *os.File) Holder {
	b := make([]byte, 256)
	n, _ := f.ReadAt(b, 0)
	line, _, _ := strings.Cut(string(b[:n]), "\n")
	pid, note, _ := strings.Cut(line, " ")
	if _, err := strconv.Atoi(pid); err != nil {
		return Holder{}
	}
	return Holder{PID: pid, Note: note}
}
