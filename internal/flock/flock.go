// Package flock keeps a second process off a file that only one may write:
// the embedded store's counters, which each gateway holds in memory and
// writes back, so that two gateways on one file would each admit a whole
// plan and overwrite each other's counts.
//
// The lock is an advisory lock (flock) on a file beside the one it guards,
// holding the process id of its holder. The kernel releases it when its
// holder exits, however it exits, so a crash leaves no stale lock. On
// systems without flock (not Unix) Lock takes no lock.
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

// retry is how often Lock tries again while another process holds the lock.
const retry = 100 * time.Millisecond

// ErrBusy is the error of Lock when another process held the lock until ctx
// ended.
var ErrBusy = errors.New("locked by another process")

// Lock takes the lock of the file at path (created if need be, mode 0600)
// and writes this process's id into it. While another process holds it,
// Lock tries again every 100 ms until ctx ends; the first time it finds the
// lock taken it calls busy, if not nil, with the holder's process id as
// the file gives it ("" if unknown). The error of a lock held until ctx
// ends wraps ErrBusy and names the holder. Unlock releases the lock.
func Lock(ctx context.Context, path string, busy func(holder string)) (unlock func() error, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for first := true; ; first = false {
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if ok {
			break
		}
		holder := readHolder(f)
		if first && busy != nil {
			busy(holder)
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			if holder == "" {
				return nil, fmt.Errorf("%s: %w", path, ErrBusy)
			}
			return nil, fmt.Errorf("%s: %w (process %s)", path, ErrBusy, holder)
		case <-t.C:
		}
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() error {
		f.Truncate(0) // the file may stay; it names no holder
		return errors.Join(unlockFile(f), f.Close())
	}, nil
}

// readHolder returns the process id written in f, or "".
func readHolder(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	s := strings.TrimSpace(string(b[:n]))
	if _, err := strconv.Atoi(s); err != nil {
		return ""
	}
	return s
}
