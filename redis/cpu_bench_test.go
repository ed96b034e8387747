package redis_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/redis"
)

// BenchmarkRedisCPU reports what a decision costs Redis itself, on a private
// redis-server (so that resetting its statistics disturbs nobody):
//
//   - redis-us/op: the microseconds INFO commandstats counts for the quota
//     script (EVALSHA, EVAL, FCALL) divided by its calls: the script's CPU,
//     the commands it calls included, load-independent but for the caches;
//   - proc-us/op: the CPU time of the redis-server process per decision
//     (/proc schedstat of its threads), which adds reading, parsing and
//     answering the call.
//
// Cases: two sliding windows (hour, day) over 10,000 accounts, each charged
// once before the run, so that their states hold a charge or two; one busy account whose windows hold a charge in
// each of the last 2,000 seconds; calendar and token bucket, two windows over
// 10,000 accounts. Decisions run at the server's clock but for the busy
// account, whose history is written at passed instants. The case "floor" is
// no decision but the least any such script does: TIME, a GET and a SET
// (KEEPTTL) of a value the size of a two-window sliding state, over the
// same 10,000 keys: what a decision would cost were its logic free.
//
// With SLUICE_BENCH_CALLGRIND=1 the server runs under valgrind's callgrind,
// which counts the instructions of the script commands (redis-Ir/op): a
// figure that does not move with the machine's load, as the two above do.
// SLUICE_BENCH_CALLGRIND_OUT=dir keeps its dumps (out.1, out.2, … one a
// case) in dir, for callgrind_annotate.
//
//	go test -run '^$' -bench RedisCPU -benchtime 20000x -count 5 ./redis/
//	SLUICE_BENCH_CALLGRIND=1 go test -run '^$' -bench RedisCPU -benchtime 1000x ./redis/
func BenchmarkRedisCPU(b *testing.B) {
	var srv *server
	var cg *callgrind
	if os.Getenv("SLUICE_BENCH_CALLGRIND") == "1" {
		srv, cg = startCallgrind(b)
	} else {
		srv = startServer(b)
	}
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.addr()}, DisableCache: true})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	hourDay := []sluice.Window{
		{Name: "hour", Length: time.Hour, Limit: 1_000_000},
		{Name: "day", Length: 24 * time.Hour, Limit: 10_000_000},
	}
	bucketWindows := []sluice.Window{ // the store refuses buckets it cannot count exactly
		{Name: "hour", Length: time.Hour, Limit: 10_000},
		{Name: "day", Length: 24 * time.Hour, Limit: 50_000},
	}
	// an unlimited plan (Elite): every window counts, none limits
	unlimited := []sluice.Window{
		{Name: "hour", Length: time.Hour, Limit: sluice.Unlimited},
		{Name: "day", Length: 24 * time.Hour, Limit: sluice.Unlimited},
	}
	cases := []struct {
		name     string
		alg      sluice.Algorithm
		windows  []sluice.Window
		accounts int
		history  int  // charges per window, one a second, before the run
		floor    bool // the floor script instead of decisions
	}{
		{"sliding-2-windows/keys=10000", sluice.Sliding, hourDay, 10_000, 0, false},
		{"sliding-2-windows/busy=2000", sluice.Sliding, hourDay, 1, 2000, false},
		{"calendar-2-windows/keys=10000", sluice.Calendar, hourDay, 10_000, 0, false},
		{"bucket-2-windows/keys=10000", sluice.TokenBucket, bucketWindows, 10_000, 0, false},
		{"calendar-unlimited/keys=10000", sluice.Calendar, unlimited, 10_000, 0, false},
		{"bucket-unlimited/keys=10000", sluice.TokenBucket, unlimited, 10_000, 0, false},
		{"floor/keys=10000", sluice.Sliding, hourDay, 10_000, 0, true},
	}
	floor := rueidis.NewLuaScript(`local t = redis.call('TIME')
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return v`)
	state := strings.Repeat("s", 52) // ">BB", per window ">BI4I4I4", the totals and the expiry: 2+2*13+3*8
	for ci, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			p := sluice.Policy{Algorithm: tc.alg, Windows: tc.windows}
			prefix := "cpu" + strconv.Itoa(ci) + ":" + strconv.Itoa(b.N) + ":"
			s := redis.New(c, redis.Options{Prefix: prefix})
			key := func(i int) string { return "{acct:" + strconv.Itoa(i%tc.accounts) + "}" }
			take := func(i int) error {
				if tc.floor {
					return floor.Exec(ctx, c, []string{prefix + key(i)}, []string{state}).NonRedisError()
				}
				_, err := s.Take(ctx, key(i), &p, 1, time.Now())
				return err
			}
			if tc.history > 0 {
				past := redis.New(c, redis.Options{Prefix: prefix, CallerClock: true})
				now := time.Now()
				for i := range tc.history {
					if _, err := past.Take(ctx, key(0), &p, 1, now.Add(time.Duration(i-tc.history)*time.Second)); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				// Every account has a state of a charge or two.
				var wg sync.WaitGroup
				for g := range 16 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := g; i < tc.accounts; i += 16 {
							if err := take(i); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			}
			if err := c.Do(ctx, c.B().ConfigResetstat().Build()).Error(); err != nil {
				b.Fatal(err)
			}
			cpu0 := serverCPU(b, srv)
			cg.zero(b)
			var next atomic.Int64
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(next.Add(1))
					if err := take(i * 7919); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			cpu := serverCPU(b, srv) - cpu0
			ir := cg.dump(b)
			info, err := c.Do(ctx, c.B().Info().Section("commandstats").Build()).ToString()
			if err != nil {
				b.Fatal(err)
			}
			calls, usec := scriptStats(info)
			if calls < int64(b.N) {
				b.Fatalf("commandstats counts %d script calls for %d decisions:\n%s", calls, b.N, info)
			}
			b.ReportMetric(usec/float64(calls), "redis-us/op")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "proc-us/op")
			if cg != nil {
				b.ReportMetric(float64(ir)/float64(calls), "redis-Ir/op")
			}
		})
	}
}

// scriptStats sums the calls and microseconds of the script commands in an
// INFO commandstats answer.
func scriptStats(info string) (calls int64, usec float64) {
	for _, line := range strings.Split(info, "\n") {
		name, fields, ok := strings.Cut(strings.TrimSpace(line), ":")
		switch name {
		case "cmdstat_evalsha", "cmdstat_eval", "cmdstat_evalsha_ro", "cmdstat_eval_ro", "cmdstat_fcall", "cmdstat_fcall_ro":
		default:
			continue
		}
		if !ok {
			continue
		}
		for _, f := range strings.Split(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "calls":
				n, _ := strconv.ParseInt(v, 10, 64)
				calls += n
			case "usec":
				x, _ := strconv.ParseFloat(v, 64)
				usec += x
			}
		}
	}
	return calls, usec
}

// serverCPU returns the CPU time the threads of the private server have run
// for (the first field of /proc/PID/task/TID/schedstat, in nanoseconds).
func serverCPU(b *testing.B, srv *server) time.Duration {
	b.Helper()
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(srv.cmd.Process.Pid) + "/task/*/schedstat")
	if err != nil || len(tasks) == 0 {
		b.Fatalf("no schedstat for redis-server: %v", err)
	}
	var ns int64
	for _, f := range tasks {
		v, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that ended
		}
		x, _ := strconv.ParseInt(strings.Fields(string(v))[0], 10, 64)
		ns += x
	}
	return time.Duration(ns)
}

// callgrind is a private redis-server run by valgrind's callgrind, counting
// only inside the script commands.
type callgrind struct {
	pid   int
	dir   string
	dumps int
}

func startCallgrind(b *testing.B) (*server, *callgrind) {
	vg, err := exec.LookPath("valgrind")
	if err != nil {
		b.Skip("valgrind is not installed")
	}
	s := &server{t: b, bin: testenv.RedisServer(b), port: freePort(b), dir: b.TempDir()}
	cg := &callgrind{dir: os.Getenv("SLUICE_BENCH_CALLGRIND_OUT")}
	if cg.dir == "" {
		cg.dir = b.TempDir()
	}
	s.cmd = exec.Command(vg, "--tool=callgrind", "--collect-atstart=no",
		"--toggle-collect=evalCommand", "--toggle-collect=evalShaCommand", "--toggle-collect=fcallCommand",
		"--callgrind-out-file="+filepath.Join(cg.dir, "out"),
		s.bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(s.port), "--save", "", "--appendonly", "no", "--dir", s.dir)
	if err := s.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.stop)
	cg.pid = s.cmd.Process.Pid
	for range 300 {
		if c, err := net.Dial("tcp", s.addr()); err == nil {
			c.Close()
			return s, cg
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatalf("redis-server under callgrind on %s did not start", s.addr())
	return nil, nil
}

// zero resets the counters; a nil callgrind does nothing.
func (cg *callgrind) zero(b *testing.B) {
	if cg == nil {
		return
	}
	if out, err := exec.Command("callgrind_control", "-z", strconv.Itoa(cg.pid)).CombinedOutput(); err != nil {
		b.Fatalf("callgrind_control -z: %v\n%s", err, out)
	}
}

// dump returns the instructions counted since zero.
func (cg *callgrind) dump(b *testing.B) int64 {
	if cg == nil {
		return 0
	}
	if out, err := exec.Command("callgrind_control", "-d", strconv.Itoa(cg.pid)).CombinedOutput(); err != nil {
		b.Fatalf("callgrind_control -d: %v\n%s", err, out)
	}
	cg.dumps++
	v, err := os.ReadFile(filepath.Join(cg.dir, "out."+strconv.Itoa(cg.dumps)))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(v), "\n") {
		if x, ok := strings.CutPrefix(line, "totals: "); ok {
			n, _ := strconv.ParseInt(strings.Fields(x)[0], 10, 64)
			return n
		}
	}
	b.Fatalf("no totals in callgrind dump %d", cg.dumps)
	return 0
}
