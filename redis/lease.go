package redis

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/sluicehq/sluice"
)

var _ sluice.LeaseService = (*Store)(nil)

// A lease is two keys in one hash slot (so that the scripts run on Redis
// Cluster): Prefix+"{lease:NAME}" holds the fencing token of its holder,
// with the lease's TTL as the key's PX expiry; Prefix+"{lease:NAME}:fence"
// is the counter the tokens come from (INCR), never expiring, so that a
// token is never given twice.
//
// Why a Redis lease and not a PostgreSQL advisory lock: a session lock
// lives as long as its connection, and a paused process (SIGSTOP, a VM
// frozen, a GC pause of minutes) keeps its connection open, so nobody could
// take over; the lease expires on Redis's clock whatever the holder does,
// and the holder, which counts the TTL from before its call, stops acting
// before the expiry on its own clock.
var (
	acquireScript = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], fence, 'PX', ARGV[1])
return fence`)
	renewScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`)
	releaseScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
)

func (s *Store) leaseKey(name string) string { return s.prefix + "{lease:" + name + "}" }

// AcquireLease implements sluice.LeaseService.
func (s *Store) AcquireLease(ctx context.Context, name string, ttl time.Duration) (int64, error) {
	c, err := s.conn(ctx)
	if err != nil {
		return 0, err
	}
	k := s.leaseKey(name)
	fence, err := acquireScript.Exec(ctx, c, []string{k, k + ":fence"}, []string{strconv.FormatInt(ttl.Milliseconds(), 10)}).AsInt64()
	if err != nil {
		return 0, fmt.Errorf("redis: acquire lease %s: %w", name, err)
	}
	return fence, nil
}

// RenewLease implements sluice.LeaseService.
func (s *Store) RenewLease(ctx context.Context, name string, fence int64, ttl time.Duration) (bool, error) {
	c, err := s.conn(ctx)
	if err != nil {
		return false, err
	}
	ok, err := renewScript.Exec(ctx, c, []string{s.leaseKey(name)},
		[]string{strconv.FormatInt(fence, 10), strconv.FormatInt(ttl.Milliseconds(), 10)}).AsInt64()
	if err != nil {
		return false, fmt.Errorf("redis: renew lease %s: %w", name, err)
	}
	return ok == 1, nil
}

// ReleaseLease implements sluice.LeaseService.
func (s *Store) ReleaseLease(ctx context.Context, name string, fence int64) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	if err := releaseScript.Exec(ctx, c, []string{s.leaseKey(name)}, []string{strconv.FormatInt(fence, 10)}).Error(); err != nil {
		return fmt.Errorf("redis: release lease %s: %w", name, err)
	}
	return nil
}
