package redis_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/internal/storetest"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/quota"
	"github.com/sluicehq/sluice/redis"
)

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// server is a private redis-server on a free port.
type server struct {
	t    testing.TB
	bin  string
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
}

func startServer(t testing.TB, args ...string) *server {
	s := &server{t: t, bin: testenv.RedisServer(t), port: freePort(t), dir: t.TempDir(), args: args}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *server) start() {
	args := append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(s.port), "--save", "", "--appendonly", "no", "--dir", s.dir}, s.args...)
	s.cmd = exec.Command(s.bin, args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	for range 100 {
		if c, err := net.Dial("tcp", s.addr()); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("redis-server on %s did not start", s.addr())
}

func (s *server) stop() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// TestFaults kills a private Redis in the middle of a load and restarts it,
// under each failure policy: closed answers EUNAVAILABLE, open admits,
// local decides in the process; no call outlives the timeout by much;
// decisions come from Redis again after the restart; no goroutine leaks.
func TestFaults(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, name := range []string{"closed", "open", "local"} {
		policy, _ := quota.ParseFailurePolicy(name)
		t.Run(name, func(t *testing.T) { testFaults(t, policy) })
	}
}

func testFaults(t *testing.T, policy quota.FailurePolicy) {
	ctx := context.Background()
	srv := startServer(t)
	client := goredis.NewClient(&goredis.Options{Addr: srv.addr(), MaxRetries: -1, DialTimeout: 50 * time.Millisecond})
	defer client.Close()
	o, err := redis.ParseURL("redis://" + srv.addr() + "?dial_timeout=50ms&max_retries=-1")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rueidis.NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	local := inmem.New(inmem.Options{})
	defer local.Close()
	const timeout = 100 * time.Millisecond
	l := &quota.Limiter{Store: redis.New(rc, redis.Options{Prefix: "f:"}), OnError: policy, Fallback: local,
		Timeout: timeout, BreakerCooldown: 100 * time.Millisecond, RejectionCacheSize: quota.DefaultRejectionCacheSize}
	p := sluice.Policy{Windows: []sluice.Window{{Name: "hour", Length: time.Hour, Limit: 1000}, {Name: "day", Length: 24 * time.Hour, Limit: 5000}}}

	var unavailable, admitted, slow atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				start := time.Now()
				d, err := l.Take(ctx, fmt.Sprintf("{acct:%d}", g), &p, 1)
				if el := time.Since(start); el > timeout+200*time.Millisecond {
					slow.Add(1)
				}
				switch {
				case sluice.ErrorCode(err) == sluice.EUNAVAILABLE:
					unavailable.Add(1)
				case err != nil:
					t.Errorf("take: %v", err)
				case d.Allowed:
					admitted.Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	srv.stop()
	time.Sleep(500 * time.Millisecond)
	down := unavailable.Load()
	srv.start()
	// Recovery without a restart: within a few cool-downs, Redis decides.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _ := client.Exists(ctx, "f:{acct:0}").Result()
		if n == 1 && !l.BreakerOpen() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Redis did not take decisions again after its restart")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if slow.Load() > 0 {
		t.Errorf("%d calls took longer than the timeout plus 200ms", slow.Load())
	}
	switch policy {
	case quota.FailClosed:
		if down == 0 {
			t.Error("closed: no request was refused while Redis was down")
		}
	case quota.FailOpen, quota.FailLocal:
		if unavailable.Load() != 0 {
			t.Errorf("%v: %d requests refused", policy, unavailable.Load())
		}
	}
	if policy == quota.FailLocal {
		if d, _ := local.Peek(ctx, "{acct:0}", &p, time.Now()); d.Windows[0].Remaining == 1000 {
			t.Error("local: the in-process store decided nothing while Redis was down")
		}
	}
	t.Logf("%v: admitted %d, refused %d", policy, admitted.Load(), unavailable.Load())
}

// TestCluster runs the conformance suite on a local Redis Cluster of three
// masters.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		testenv.Missing(t, "redis-cli is not installed")
	}
	var addrs []string
	for range 3 {
		s := startServer(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "15000") // no failover wanted: a node slow on a loaded machine must not take the cluster down
		addrs = append(addrs, s.addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	ctx := context.Background()
	// Every node must say the cluster is ok: one that has not yet heard of
	// the others' slots answers CLUSTERDOWN to the keys it would redirect.
	deadline := time.Now().Add(20 * time.Second)
	for _, addr := range addrs {
		c := goredis.NewClient(&goredis.Options{Addr: addr})
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("cluster not ok on %s: %v %v", addr, info, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.Close()
	}
	// Also through the URL form the configuration takes.
	u := "redis+cluster://" + addrs[0] + "," + addrs[1] + "," + addrs[2]
	s, err := redis.Open(ctx, u, redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	storetest.RunQuotaStore(t, func(t *testing.T) sluice.QuotaStore {
		return redis.New(rc, redis.Options{Prefix: testenv.Unique(t) + ":", CallerClock: true})
	})
}

// TestOpenBeforeRedis: a store opened while its Redis is down fails its
// calls, and decides once Redis is up, without being opened again.
func TestOpenBeforeRedis(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	srv := &server{t: t, bin: testenv.RedisServer(t), port: freePort(t), dir: t.TempDir()}
	s, err := redis.Open(ctx, "redis://"+srv.addr()+"?dial_timeout=100ms", redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := sluice.Policy{Windows: []sluice.Window{{Name: "hour", Length: time.Hour, Limit: 10}}}
	if _, err := s.Take(ctx, "{acct:1}", &p, 1, time.Now()); err == nil {
		t.Fatal("a take succeeded with Redis down")
	}
	srv.start()
	defer srv.stop()
	d, err := s.Take(ctx, "{acct:1}", &p, 1, time.Now())
	if err != nil || !d.Allowed || d.Windows[0].Remaining != 9 {
		t.Fatalf("take after Redis started: %+v, %v", d, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
