package main

// Scale-out end-to-end tests: several gateways on one Redis (counters) and
// one PostgreSQL (accounts). TestScaleOut runs three gateway processes;
// TestScaleOutSkew runs two in-process gateways whose clocks disagree. Both
// need the machine's services (internal/testenv): they skip when Redis or
// PostgreSQL is down, or fail with SLUICE_TEST_REQUIRE_SERVICES=1.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/cache"
	"github.com/sluicehq/sluice/internal/testenv"
)

// execMainEnv makes the test binary run `sluice serve` instead of the
// tests: startProc starts gateway processes by re-executing it, so that no
// build step or Go toolchain is needed (and under -race the gateways are
// race-checked too).
const execMainEnv = "SLUICE_TEST_EXEC_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(execMainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// freshnessBound is the documented bound on how late a change made through
// one instance (or straight in the database) is seen by the others:
// cache.DefaultTTL, plus slack for the polling and a loaded machine.
const freshnessBound = cache.DefaultTTL + 500*time.Millisecond

// backend is a test's share of the machine's Redis and PostgreSQL: a key
// prefix of its own (its keys deleted when the test ends) and a schema of its
// own (dropped when the test ends), empty: the first gateways to start
// migrate it.
type backend struct {
	redisURL string
	prefix   string
	dbURL    string
	rdb      *goredis.Client
}

func sharedBackend(t *testing.T) *backend {
	t.Helper()
	ctx := context.Background()
	name := testenv.Unique(t)

	addr := testenv.RedisAddr(t)
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(ctx).Err(); err != nil {
		testenv.Missing(t, "Redis at %s does not answer: %v", addr, err)
	}
	prefix := "sluicetest:" + name + ":"
	t.Cleanup(func() {
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})

	dbURL, _ := testenv.PostgresSchema(t)
	return &backend{redisURL: "redis://" + addr + "/0", prefix: prefix, dbURL: dbURL, rdb: rdb}
}

// env is the configuration of a gateway on the backend.
func (b *backend) env() map[string]string {
	return map[string]string{
		"SLUICE_ADMIN_TOKEN":  "test-admin-token",
		"SLUICE_QUOTA_STORE":  "redis",
		"SLUICE_REDIS_URL":    b.redisURL,
		"SLUICE_REDIS_PREFIX": b.prefix,
		"SLUICE_DATABASE_URL": b.dbURL,
	}
}

// redisTime is Redis's clock, which decides in the default (TIME) mode.
func (b *backend) redisTime(t *testing.T) time.Time {
	t.Helper()
	tm, err := b.rdb.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// syncBuffer is a bytes.Buffer safe for a process's output and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var runningAt = regexp.MustCompile(`is running at (http://127\.0\.0\.1:\d+)`)

// startProcs starts n gateway processes on the backend, each with its own
// data directory and port, all at once (so that they also race to migrate
// the schema), and returns their base URLs. They are stopped with SIGTERM
// when the test ends; one that does not exit cleanly (a data race under
// -race, a failed drain) fails the test with its output.
func startProcs(t *testing.T, b *backend, n int, extra map[string]string) []string {
	t.Helper()
	env := b.env()
	for k, v := range extra {
		env[k] = v
	}
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") {
			base = append(base, kv)
		}
	}
	base = append(base, execMainEnv+"=1")
	for k, v := range env {
		base = append(base, k+"="+v)
	}

	type proc struct {
		cmd  *exec.Cmd
		out  *syncBuffer
		done chan struct{}
		err  error
	}
	procs := make([]*proc, n)
	for i := range procs {
		p := &proc{out: &syncBuffer{}, done: make(chan struct{})}
		p.cmd = exec.Command(os.Args[0], "serve", "--addr", "127.0.0.1:0", "--data", t.TempDir())
		p.cmd.Env = base
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.err = p.cmd.Wait(); close(p.done) }()
		procs[i] = p
		t.Cleanup(func() {
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				p.cmd.Process.Kill()
				<-p.done
				t.Errorf("gateway %d did not stop within 30s of SIGTERM", i)
			}
			switch out := p.out.String(); {
			case p.err != nil:
				t.Errorf("gateway %d: %v; its output:\n%s", i, p.err, out)
			case t.Failed():
				t.Logf("gateway %d's warnings and errors:\n%s", i, warnings(out, 20))
			}
		})
	}
	urls := make([]string, n)
	deadline := time.Now().Add(60 * time.Second)
	for i, p := range procs {
		for urls[i] == "" {
			if m := runningAt.FindStringSubmatch(p.out.String()); m != nil {
				urls[i] = m[1]
				break
			}
			select {
			case <-p.done:
				t.Fatalf("gateway %d exited at start: %v\n%s", i, p.err, p.out)
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateway %d did not start within 60s:\n%s", i, p.out)
			}
		}
	}
	return urls
}

// warnings returns the first n lines of a gateway's output that are log
// records at level WARN or ERROR or messages of the command.
func warnings(out string, n int) string {
	return firstLines(out, n, func(line string) bool {
		return strings.HasPrefix(line, "sluice:") || strings.Contains(line, " level=WARN ") || strings.Contains(line, " level=ERROR ")
	})
}

// firstLines returns the first n lines of out that keep accepts.
func firstLines(out string, n int, keep func(line string) bool) string {
	var b strings.Builder
	for line := range strings.Lines(out) {
		if n > 0 && keep(line) {
			b.WriteString(line)
			n--
		}
	}
	return b.String()
}

// client is an HTTP client that keeps enough connections for the bursts.
func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConns: 400, MaxIdleConnsPerHost: 200}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// call sends a request; it is safe to use from any goroutine.
func call(c *http.Client, method, url, token, body string) (response, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{resp.StatusCode, resp.Header, b}, nil
}

func mustCall(t *testing.T, c *http.Client, method, url, token, body string, want int) response {
	t.Helper()
	r, err := call(c, method, url, token, body)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, r.status, r.body, want)
	}
	return r
}

// newAccount creates an account on the plan through the gateway at base and
// returns its id and a key. Everything that follows about the
// account is written through the same gateway, whose own cache such writes
// empty: the others have not looked the account up yet.
func newAccount(t *testing.T, c *http.Client, base, email, plan string) (id int64, key string) {
	t.Helper()
	r := mustCall(t, c, "POST", base+"/admin/accounts", "test-admin-token", fmt.Sprintf(`{"email":%q,"plan":%q}`, email, plan), 201)
	id = int64(r.json(t)["user_id"].(float64))
	r = mustCall(t, c, "POST", fmt.Sprintf("%s/admin/accounts/%d/keys", base, id), "test-admin-token", `{"name":"scale-out"}`, 201)
	return id, r.json(t)["key"].(string)
}

// burstResult sums up a burst of concurrent requests.
type burstResult struct {
	admitted, rejected int
	images             int     // images in the 200s' bodies
	remaining          []int64 // the admitted requests' Remaining of the window
	perInstance        []int   // admitted, by gateway
}

// burst sends total concurrent generation requests of one image with key,
// spread round-robin over the gateways, all released at once. remaining
// names the X-RateLimit-Remaining-* header of the limiting window.
func burst(t *testing.T, c *http.Client, urls []string, key string, total int, remaining string) burstResult {
	t.Helper()
	for _, u := range urls { // every gateway has the key and account cached: a fair race
		mustCall(t, c, "GET", u+"/v1/usage", key, "", 200)
	}
	res := burstResult{perInstance: make([]int, len(urls))}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []string
	)
	start := make(chan struct{})
	for i := range total {
		wg.Go(func() {
			<-start
			r, err := call(c, "POST", urls[i%len(urls)]+"/v1/images/generations", key,
				`{"model":"sluice-sketch","prompt":"a lighthouse","n":1,"size":"64x64"}`)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, err.Error())
			case r.status == 200:
				var body struct{ Data []json.RawMessage }
				if err := json.Unmarshal(r.body, &body); err != nil {
					errs = append(errs, fmt.Sprintf("200 body %q: %v", r.body, err))
				}
				res.admitted++
				res.perInstance[i%len(urls)]++
				res.images += len(body.Data)
				rem, err := strconv.ParseInt(r.header.Get(remaining), 10, 64)
				if err != nil {
					errs = append(errs, fmt.Sprintf("200 without %s: %v", remaining, r.header))
				}
				res.remaining = append(res.remaining, rem)
			case r.status == 429:
				res.rejected++
				var body struct {
					Error      string `json:"error"`
					RetryAfter int64  `json:"retry_after"`
				}
				if err := json.Unmarshal(r.body, &body); err != nil || body.Error != "rate_limit_exceeded" || body.RetryAfter < 1 {
					errs = append(errs, fmt.Sprintf("429 body %q", r.body))
				}
			default:
				errs = append(errs, fmt.Sprintf("%d %s", r.status, r.body))
			}
		})
	}
	close(start)
	wg.Wait()
	for i, e := range errs {
		if i == 5 {
			t.Errorf("… and %d more", len(errs)-5)
			break
		}
		t.Error(e)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	slices.Sort(res.remaining)
	return res
}

// wantExactly checks that a burst admitted exactly limit requests, each
// leaving a different Remaining (0 … limit-1): no unit was given twice.
func wantExactly(t *testing.T, res burstResult, total, limit int) {
	t.Helper()
	if res.admitted != limit || res.rejected != total-limit || res.images != limit {
		t.Errorf("admitted %d (images %d), rejected %d; want %d admitted, %d rejected",
			res.admitted, res.images, res.rejected, limit, total-limit)
	}
	for i, r := range res.remaining {
		if r != int64(i) {
			t.Errorf("Remaining of the admitted requests, sorted: %v; want 0 … %d once each", res.remaining, limit-1)
			break
		}
	}
}

// untilAll polls every gateway every 20 ms with probe until it reports the
// change, and returns how long after since each one first did (within 5 s;
// -1 for a gateway that never did).
func untilAll(t *testing.T, urls []string, since time.Time, probe func(base string) (bool, error)) []time.Duration {
	t.Helper()
	seen := make([]time.Duration, len(urls))
	for i := range seen {
		seen[i] = -1
	}
	for left := len(urls); left > 0 && time.Since(since) < 5*time.Second; {
		for i, u := range urls {
			if seen[i] >= 0 {
				continue
			}
			ok, err := probe(u)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				seen[i] = time.Since(since)
				left--
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return seen
}

// writerFirst wraps a probe of untilAll: the gateway through which the
// change was made (writer) must report it on its first probe, since the
// write emptied its own cache.
func writerFirst(t *testing.T, writer string, probe func(base string) (bool, error)) func(string) (bool, error) {
	first := true
	return func(base string) (bool, error) {
		ok, err := probe(base)
		if base == writer && first && err == nil && !ok {
			t.Errorf("%s, through which the change was made, does not apply it at once", writer)
		}
		if base == writer {
			first = false
		}
		return ok, err
	}
}

// wantFresh checks the measured delays against freshnessBound and logs them.
func wantFresh(t *testing.T, what string, seen []time.Duration) {
	t.Helper()
	worst := slices.Max(seen)
	t.Logf("%s seen by the gateways after %v (worst %v; bound %v)", what, seen, worst, freshnessBound)
	if slices.Min(seen) < 0 {
		t.Errorf("%s not seen by every gateway within 5s: %v", what, seen)
	} else if worst > freshnessBound {
		t.Errorf("%s seen after %v, beyond the documented %v", what, worst, freshnessBound)
	}
}

// TestScaleOut runs three gateway processes on one Redis and one PostgreSQL:
// they admit exactly an account's limit between them under concurrent load,
// and a revoked key or a changed plan applies on all of them within the
// cache's TTL.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three gateway processes")
	}
	b := sharedBackend(t)
	// The default quota.timeout: a decision under this load (three
	// gateways, Redis and 300 clients on two CPUs) must fit in it.
	urls := startProcs(t, b, 3, nil)
	c := newClient(t)
	for _, u := range urls {
		mustCall(t, c, "GET", u+"/readyz", "", "", 200)
	}

	t.Run("hour", func(t *testing.T) {
		// VIP: 100 an hour, 1,000 a day; 300 requests over the three.
		_, key := newAccount(t, c, urls[0], "hour@example.com", "vip")
		defer func() {
			t.Logf("quota decisions (take) during the burst, by gateway, cumulative: %s", takeLatency(c, urls))
		}()
		res := burst(t, c, urls, key, 300, "X-Ratelimit-Remaining-Hour")
		t.Logf("300 concurrent requests: %d admitted (by gateway %v), %d rejected", res.admitted, res.perInstance, res.rejected)
		wantExactly(t, res, 300, 100)
		for i, u := range urls {
			r := mustCall(t, c, "GET", u+"/v1/usage", key, "", 200)
			v := r.json(t)
			if h, d := v["hour"].(map[string]any), v["day"].(map[string]any); h["used"] != 100.0 || d["used"] != 100.0 {
				t.Errorf("gateway %d: usage %s, want 100 used of the hour and of the day", i, r.body)
			}
		}
	})

	t.Run("day", func(t *testing.T) {
		// An override with no hourly limit and 50 a day: the day decides.
		id, key := newAccount(t, c, urls[0], "day@example.com", "vip")
		mustCall(t, c, "PUT", fmt.Sprintf("%s/admin/accounts/%d/limits", urls[0], id), "test-admin-token", `{"hour":null,"day":50}`, 200)
		res := burst(t, c, urls, key, 150, "X-Ratelimit-Remaining-Day")
		t.Logf("150 concurrent requests: %d admitted (by gateway %v), %d rejected", res.admitted, res.perInstance, res.rejected)
		wantExactly(t, res, 150, 50)
	})

	t.Run("revocation", func(t *testing.T) {
		// The key's owner revokes it through gateway 0's DELETE
		// /v1/keys/{id}, with a session opened there.
		r := mustCall(t, c, "POST", urls[0]+"/admin/accounts", "test-admin-token",
			`{"email":"revoke@example.com","plan":"vip","password":"correct horse battery"}`, 201)
		id := int64(r.json(t)["user_id"].(float64))
		r = mustCall(t, c, "POST", fmt.Sprintf("%s/admin/accounts/%d/keys", urls[0], id), "test-admin-token", `{"name":"doomed"}`, 201)
		key, keyID := r.json(t)["key"].(string), r.json(t)["id"].(string)
		r = mustCall(t, c, "POST", urls[0]+"/auth/login", "", `{"email":"revoke@example.com","password":"correct horse battery"}`, 200)
		session := r.json(t)["token"].(string)
		for _, u := range urls { // every gateway has the key cached
			mustCall(t, c, "GET", u+"/v1/usage", key, "", 200)
		}
		since := time.Now()
		mustCall(t, c, "DELETE", urls[0]+"/v1/keys/"+keyID, session, "", 204)
		seen := untilAll(t, urls, since, writerFirst(t, urls[0], func(base string) (bool, error) {
			r, err := call(c, "GET", base+"/v1/usage", key, "")
			if err != nil || r.status == 200 {
				return false, err
			}
			if r.status != 401 || !strings.Contains(string(r.body), "revoked") {
				return false, fmt.Errorf("revoked key: %d %s", r.status, r.body)
			}
			return true, nil
		}))
		wantFresh(t, "key revocation", seen)
	})

	t.Run("reset", func(t *testing.T) {
		// Freshness of a usage reset: an account exhausted through gateway
		// 0, rejected by gateway 1 (which caches the rejection), reset
		// through gateway 0: how long until gateway 1 admits, over runs.
		id, key := newAccount(t, c, urls[0], "reset@example.com", "vip")
		mustCall(t, c, "PUT", fmt.Sprintf("%s/admin/accounts/%d/limits", urls[0], id), "test-admin-token", `{"hour":2,"day":null}`, 200)
		generate := func(base string) int {
			r, err := call(c, "POST", base+"/v1/images/generations", key, `{"model":"sluice-sketch","prompt":"a lighthouse","n":1,"size":"64x64"}`)
			if err != nil {
				t.Fatal(err)
			}
			if r.status != 200 && r.status != 429 {
				t.Fatalf("generation: %d %s", r.status, r.body)
			}
			return r.status
		}
		const runs = 20
		var took []time.Duration
		for run := range runs {
			for generate(urls[0]) == 200 { // exhaust through 0
			}
			for range 2 { // 1 rejects: from Redis, then from its cache
				if st := generate(urls[1]); st != 429 {
					t.Fatalf("run %d: gateway 1 answers %d to an exhausted account, want 429", run, st)
				}
			}
			since := time.Now()
			mustCall(t, c, "DELETE", fmt.Sprintf("%s/admin/accounts/%d/usage", urls[0], id), "test-admin-token", "", 204)
			for generate(urls[1]) != 200 {
				if time.Since(since) > 5*time.Second {
					t.Fatalf("run %d: gateway 1 still rejects 5s after the reset", run)
				}
				time.Sleep(2 * time.Millisecond)
			}
			took = append(took, time.Since(since))
		}
		slices.Sort(took)
		t.Logf("reset through gateway 0 -> admitted by gateway 1, over %d runs: min %v, median %v, max %v (bound %v)",
			runs, took[0], took[runs/2], took[runs-1], freshnessBound)
		if took[runs-1] > freshnessBound {
			t.Errorf("a reset was seen after %v, beyond the documented %v", took[runs-1], freshnessBound)
		}
	})

	t.Run("plan", func(t *testing.T) {
		// Starter has no API access (403); the move to VIP is made through
		// gateway 0's admin API and must open the API on all three.
		id, key := newAccount(t, c, urls[0], "plan@example.com", "starter")
		for _, u := range urls {
			mustCall(t, c, "GET", u+"/v1/usage", key, "", 403)
		}
		since := time.Now()
		mustCall(t, c, "PUT", fmt.Sprintf("%s/admin/accounts/%d/plan", urls[0], id), "test-admin-token", `{"plan":"vip"}`, 200)
		seen := untilAll(t, urls, since, writerFirst(t, urls[0], func(base string) (bool, error) {
			r, err := call(c, "GET", base+"/v1/usage", key, "")
			if err != nil {
				return false, err
			}
			switch r.status {
			case 200:
				return true, nil
			case 403:
				return false, nil
			}
			return false, fmt.Errorf("plan change: %d %s", r.status, r.body)
		}))
		wantFresh(t, "plan change", seen)
	})
}

// startShared runs the real Main in this process on the backend, with the
// quota limiter's clock off by skew from the machine's.
func startShared(t *testing.T, b *backend, skew time.Duration) *gateway {
	t.Helper()
	env := b.env()
	var out bytes.Buffer
	m := NewMain(&out, &syncBuffer{})
	m.Getenv = func(k string) string { return env[k] }
	if err := m.ParseFlags([]string{"--addr", "127.0.0.1:0", "--data", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.Quota.Now = func() time.Time { return time.Now().Add(skew) }
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return &gateway{t: t, m: m, url: m.Server.URL(), admin: env["SLUICE_ADMIN_TOKEN"], out: &out}
}

var ratelimitField = regexp.MustCompile(`^"hour";r=(\d+);t=(\d+), "day";r=(\d+);t=(\d+)$`)

// TestScaleOutSkew: two gateways whose clocks are ten minutes apart, on one
// Redis in its default mode (Redis's TIME decides), answer an account's
// requests, alternately, as one gateway would: Remaining counts down across
// both, Reset is the same second on both, and the 429s' retry_after count
// down to it by Redis's clock.
func TestScaleOutSkew(t *testing.T) {
	b := sharedBackend(t)
	gws := []*gateway{startShared(t, b, -5*time.Minute), startShared(t, b, 5*time.Minute)}
	_, key := gws[0].account("skew@example.com", "vip")

	var resetH, resetD int64 // the same for every response
	for i := range 110 {
		g := gws[i%2]
		before := b.redisTime(t)
		r := g.generate(key, 1)
		after := b.redisTime(t)
		lo, hi := before.Unix(), after.Unix() // the decision's second is in [lo, hi]
		h := func(k string) int64 {
			v, err := strconv.ParseInt(r.header.Get(k), 10, 64)
			if err != nil {
				t.Fatalf("request %d (gateway %d): %s = %q: %v", i+1, i%2, k, r.header.Get(k), err)
			}
			return v
		}
		if i == 0 {
			resetH, resetD = h("X-Ratelimit-Reset-Hour"), h("X-Ratelimit-Reset-Day")
			if resetH < lo+3600 || resetH > hi+3600 || resetD != resetH-3600+86400 {
				t.Fatalf("first request: reset hour %d, day %d; want Redis's second (%d…%d) + 3600 and + 86400", resetH, resetD, lo, hi)
			}
		}
		admitted := i < 100
		wantStatus, remH, remD := 429, int64(0), int64(900)
		if admitted {
			wantStatus, remH, remD = 200, int64(99-i), int64(999-i)
		}
		if r.status != wantStatus {
			t.Fatalf("request %d (gateway %d): %d %s, want %d", i+1, i%2, r.status, r.body, wantStatus)
		}
		got := [...]int64{h("X-Ratelimit-Limit-Hour"), h("X-Ratelimit-Remaining-Hour"), h("X-Ratelimit-Reset-Hour"),
			h("X-Ratelimit-Limit-Day"), h("X-Ratelimit-Remaining-Day"), h("X-Ratelimit-Reset-Day")}
		if want := [...]int64{100, remH, resetH, 1000, remD, resetD}; got != want {
			t.Fatalf("request %d (gateway %d): limit, remaining, reset of hour and day %v, want %v", i+1, i%2, got, want)
		}
		// RateLimit's t is Reset less the decision's second: Redis's.
		m := ratelimitField.FindStringSubmatch(r.header.Get("Ratelimit"))
		if m == nil {
			t.Fatalf("request %d (gateway %d): RateLimit %q", i+1, i%2, r.header.Get("Ratelimit"))
		}
		tH, _ := strconv.ParseInt(m[2], 10, 64)
		tD, _ := strconv.ParseInt(m[4], 10, 64)
		if m[1] != strconv.FormatInt(remH, 10) || m[3] != strconv.FormatInt(remD, 10) ||
			tH < resetH-hi || tH > resetH-lo || tD != tH-3600+86400 {
			t.Fatalf("request %d (gateway %d): RateLimit %q; want t = %d - Redis's second (%d…%d)", i+1, i%2, r.header.Get("Ratelimit"), resetH, lo, hi)
		}
		if admitted {
			continue
		}
		// retry_after: whole seconds, rounded up, until resetH by Redis's
		// clock. A rejection cached by the gateway counts down by the
		// gateway's clock from when Redis decided, which can round one
		// second lower.
		body := r.json(t)
		ra := int64(body["retry_after"].(float64))
		if r.header.Get("Retry-After") != strconv.FormatInt(ra, 10) || body["error"] != "rate_limit_exceeded" {
			t.Fatalf("request %d (gateway %d): Retry-After %q, body %s", i+1, i%2, r.header.Get("Retry-After"), r.body)
		}
		lowest := int64(math.Ceil(time.Unix(resetH, 0).Sub(after).Seconds())) - 1
		highest := int64(math.Ceil(time.Unix(resetH, 0).Sub(before).Seconds()))
		if ra < lowest || ra > highest {
			t.Fatalf("request %d (gateway %d): retry_after %d, want %d…%d (until %d by Redis's clock)", i+1, i%2, ra, lowest, highest, resetH)
		}
	}
	t.Logf("gateways %v apart: 100 admitted and 10 rejected alternately, with one sequence of headers (Reset-Hour %d)",
		10*time.Minute, resetH)
}

var takeBucket = regexp.MustCompile(`^sluice_quota_store_duration_seconds_bucket\{op="take",le="([^"]+)"\} (\d+)$`)

// takeLatency sums up the gateways' histograms of quota decisions (the
// time a Take took, as quota.timeout bounds it): for a few bounds, the
// share of decisions that took at most that long.
func takeLatency(c *http.Client, urls []string) string {
	var parts []string
	for _, u := range urls {
		r, err := call(c, "GET", u+"/metrics", "test-admin-token", "")
		if err != nil {
			parts = append(parts, err.Error())
			continue
		}
		counts := map[string]float64{}
		for line := range strings.Lines(string(r.body)) {
			if m := takeBucket.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
				counts[m[1]], _ = strconv.ParseFloat(m[2], 64)
			}
		}
		total := counts["+Inf"]
		if total == 0 {
			parts = append(parts, "no decisions")
			continue
		}
		var b strings.Builder
		for _, le := range []string{"0.001", "0.01", "0.05", "0.1", "0.25", "0.5", "1"} {
			fmt.Fprintf(&b, "<=%ss %.0f%% ", le, 100*counts[le]/total)
		}
		fmt.Fprintf(&b, "(of %.0f)", total)
		parts = append(parts, b.String())
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// TestScaleOutDatabaseOnly: two gateway processes that share only
// PostgreSQL (embedded counters) hear of a plan change and a revoked key
// made through the other at once, over LISTEN/NOTIFY.
func TestScaleOutDatabaseOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two gateway processes")
	}
	b := sharedBackend(t)
	urls := startProcs(t, b, 2, map[string]string{"SLUICE_QUOTA_STORE": "embedded"})
	c := newClient(t)
	id, key := newAccount(t, c, urls[0], "dbonly@example.com", "starter")
	for _, u := range urls {
		mustCall(t, c, "GET", u+"/v1/usage", key, "", 403) // cached: starter has no API access
	}
	since := time.Now()
	mustCall(t, c, "PUT", fmt.Sprintf("%s/admin/accounts/%d/plan", urls[0], id), "test-admin-token", `{"plan":"vip"}`, 200)
	seen := untilAll(t, urls, since, writerFirst(t, urls[0], func(base string) (bool, error) {
		r, err := call(c, "GET", base+"/v1/usage", key, "")
		if err != nil || r.status == 403 {
			return false, err
		}
		if r.status != 200 {
			return false, fmt.Errorf("plan change: %d %s", r.status, r.body)
		}
		return true, nil
	}))
	wantFresh(t, "plan change", seen)

	r := mustCall(t, c, "GET", fmt.Sprintf("%s/admin/accounts/%d/keys", urls[0], id), "test-admin-token", "", 200)
	var keys struct {
		Keys []struct{ ID string } `json:"keys"`
	}
	if err := json.Unmarshal(r.body, &keys); err != nil || len(keys.Keys) != 1 {
		t.Fatalf("keys: %s (%v)", r.body, err)
	}
	since = time.Now()
	mustCall(t, c, "DELETE", fmt.Sprintf("%s/admin/accounts/%d/keys/%s", urls[0], id, keys.Keys[0].ID), "test-admin-token", "", 204)
	seen = untilAll(t, urls, since, writerFirst(t, urls[0], func(base string) (bool, error) {
		r, err := call(c, "GET", base+"/v1/usage", key, "")
		if err != nil || r.status == 200 {
			return false, err
		}
		if r.status != 401 {
			return false, fmt.Errorf("revoked key: %d %s", r.status, r.body)
		}
		return true, nil
	}))
	wantFresh(t, "key revocation", seen)
}
