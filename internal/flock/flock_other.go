//go:build !unix

package flock

import "os"

// Without flock no lock is taken: one gateway per data directory is then
// the operator's to ensure.
func tryLock(f *os.File) (bool, error) { return true, nil }

func unlockFile(f *os.File) error { return nil }
