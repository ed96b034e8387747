package storetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/sluicehq/sluice"
)

// SyncingQuota is a quota store with a Sync (sluice.QuotaSyncer), as the
// embedded store that flushes periodically has: it records the keys it
// synced, and fails while Fail is set. Tests put it under a quota.Limiter
// to check that a charge is recorded only once its counters were synced.
type SyncingQuota struct {
	sluice.QuotaStore
	Fail atomic.Bool

	mu     sync.Mutex
	synced []string
	calls  int
}

// Sync records key, or fails while Fail is set.
func (s *SyncingQuota) Sync(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.Fail.Load() {
		return errors.New("injected sync failure")
	}
	s.synced = append(s.synced, key)
	return nil
}

// Synced reports whether a Sync of key succeeded.
func (s *SyncingQuota) Synced(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.synced, key)
}

// Calls returns the number of calls of Sync, failed ones included.
func (s *SyncingQuota) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}
