package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer for a logger that writes from several
// goroutines while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// reloadConfig is a configuration whose pro plan has hour images an hour.
func reloadConfig(hour int, extra string) string {
	return fmt.Sprintf(`
plans:
  - {id: starter, name: Starter, hour: 5, day: 20, models: starter, api: true}
  - {id: pro, name: Pro, hour: %d, day: 100000, models: all, api: true}
alerts: {thresholds: [80, 100]}
%s`, hour, extra)
}

// startReloadMain runs the real Main on a configuration file that the test
// rewrites; it returns the gateway, the file and the log.
func startReloadMain(t *testing.T, yaml string) (*gateway, string, *lockedBuffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"SLUICE_ADMIN_TOKEN": "test-admin-token"}
	var out bytes.Buffer
	logs := &lockedBuffer{}
	m := NewMain(&out, logs)
	m.Getenv = func(k string) string { return env[k] }
	if err := m.ParseFlags([]string{"--config", path, "--addr", "127.0.0.1:0", "--data", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	g := &gateway{t: t, m: m, url: m.Server.URL(), admin: env["SLUICE_ADMIN_TOKEN"], out: &out}
	t.Cleanup(func() {
		if m.closers != nil {
			if err := m.Close(); err != nil {
				t.Error(err)
			}
		}
	})
	return g, path, logs
}

// hourLimit makes a small image request and returns its status and its
// X-RateLimit-Limit-Hour. It may run in any goroutine.
func hourLimit(url, key string) (int, string, error) {
	req, _ := http.NewRequest("POST", url+"/v1/images/generations",
		strings.NewReader(`{"model":"sluice-sketch","prompt":"a lighthouse","size":"64x64"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-RateLimit-Limit-Hour"), nil
}

// TestReloadUnderLoad: requests run without a pause while the pro plan's
// hourly limit changes back and forth (between numbers the loops cannot
// reach, however fast the machine), by Reload, by POST /admin/reload
// and by SIGHUP. No request fails, every answer carries one of the two
// limits (never anything else), and the first request after each reload
// carries the new one.
func TestReloadUnderLoad(t *testing.T) {
	g, path, _ := startReloadMain(t, reloadConfig(50000, ""))
	g.realClock()
	_, key := g.account("load@example.com", "pro")

	hup := make(chan os.Signal, 1)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go g.m.reloadOnHUP(ctx, hup)

	var requests, failures atomic.Int64
	var mu sync.Mutex
	var odd []string
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				status, limit, err := hourLimit(g.url, key)
				requests.Add(1)
				if err != nil || status != 200 || (limit != "50000" && limit != "60000") {
					failures.Add(1)
					mu.Lock()
					odd = append(odd, fmt.Sprintf("%d %q %v", status, limit, err))
					mu.Unlock()
				}
			}
		}()
	}
	reloads := []struct {
		how  string
		hour int
	}{{"Reload", 60000}, {"POST", 50000}, {"SIGHUP", 60000}, {"Reload", 50000}, {"POST", 60000}, {"SIGHUP", 50000}}
	for i, r := range reloads {
		time.Sleep(50 * time.Millisecond) // some requests under the old numbers
		if err := os.WriteFile(path, []byte(reloadConfig(r.hour, "")), 0o600); err != nil {
			t.Fatal(err)
		}
		switch r.how {
		case "Reload":
			if _, err := g.m.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
		case "POST":
			if res := g.do("POST", "/admin/reload", g.admin, ""); res.status != 200 || !strings.Contains(string(res.body), `"changed":["plans"]`) {
				t.Fatalf("POST /admin/reload: %d %s", res.status, res.body)
			}
		case "SIGHUP":
			hup <- syscall.SIGHUP
			// The signal is handled in the background: wait for the
			// counter of reloads.
			deadline := time.Now().Add(10 * time.Second)
			for g.reloadCount("ok") < i+1 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
		status, limit, err := hourLimit(g.url, key)
		if err != nil || status != 200 || limit != fmt.Sprint(r.hour) {
			t.Fatalf("reload %d (%s): the next request got %d, limit %q, %v; want 200 and %d", i, r.how, status, limit, err, r.hour)
		}
	}
	close(done)
	wg.Wait()
	if n := g.reloadCount("ok"); n != len(reloads) {
		t.Errorf("sluice_config_reloads_total{result=\"ok\"} = %d, want %d", n, len(reloads))
	}
	t.Logf("%d requests during %d reloads, %d failed", requests.Load(), len(reloads), failures.Load())
	if failures.Load() > 0 {
		t.Fatalf("%d of %d requests failed or carried another limit: %q", failures.Load(), requests.Load(), odd[:min(len(odd), 10)])
	}
}

// reloadCount reads sluice_config_reloads_total{result} from /metrics.
func (g *gateway) reloadCount(result string) int {
	g.t.Helper()
	body := string(g.do("GET", "/metrics", "", "").body)
	prefix := `sluice_config_reloads_total{result="` + result + `"} `
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			var n int
			fmt.Sscan(v, &n)
			return n
		}
	}
	return -1
}

// TestReloadInvalid: a file that fails validation changes nothing; the log
// and the 400 name the field, and the counter counts the error.
func TestReloadInvalid(t *testing.T) {
	g, path, logs := startReloadMain(t, reloadConfig(1000, ""))
	_, key := g.account("bad@example.com", "pro")
	for _, tc := range []struct {
		yaml  string
		field string
	}{
		{reloadConfig(1000, "limits: {mode: loose}"), "limits.mode"},
		{strings.Replace(reloadConfig(1000, ""), "hour: 1000", "hour: -1", 1), "plans[1].hour"},
		{reloadConfig(1000, "limits: {windows: {hour: 0s}}"), "limits.windows.hour"},
		{"plans: [{id: pro, name: Pro, hour: 3}", ""}, // not YAML
	} {
		os.WriteFile(path, []byte(tc.yaml), 0o600)
		res := g.do("POST", "/admin/reload", g.admin, "")
		body := res.json(t)
		if res.status != 400 || body["error"] != "invalid_request" || !strings.Contains(fmt.Sprint(body["message"]), "not reloaded") {
			t.Fatalf("%q: %d %s", tc.yaml, res.status, res.body)
		}
		if tc.field != "" && (body["field"] != tc.field || !strings.Contains(logs.String(), tc.field)) {
			t.Errorf("%q: field %v, want %s; log:\n%s", tc.yaml, body["field"], tc.field, logs.String())
		}
		if status, limit, err := hourLimit(g.url, key); err != nil || status != 200 || limit != "1000" {
			t.Fatalf("after a refused reload: %d %q %v", status, limit, err)
		}
	}
	if !strings.Contains(logs.String(), "configuration reload refused; the running configuration stays") {
		t.Errorf("no log line of the refusal:\n%s", logs.String())
	}
	if n := g.reloadCount("error"); n != 4 {
		t.Errorf("errors counted: %d, want 4", n)
	}
	if n := g.reloadCount("ok"); n != 0 {
		t.Errorf("ok counted: %d, want 0", n)
	}
}

// TestReloadRestartKeys: keys that need a restart are reported and keep
// their running values, while the live keys beside them apply; models,
// max_n, the mode and the thresholds change for the next request.
func TestReloadRestartKeys(t *testing.T) {
	g, path, logs := startReloadMain(t, reloadConfig(1000, ""))
	g.realClock()
	_, key := g.account("keys@example.com", "pro")
	addr := g.m.Server.Addr().String()
	os.WriteFile(path, []byte(reloadConfig(3, `
server: {max_body: 1MiB, read_timeout: 5s}
limits: {algorithm: calendar, max_n: 2, mode: shadow, windows: {hour: 30m}}
quota: {store: redis}
redis: {url: "redis://:secret-pass@127.0.0.1:1"}
database: {url: "postgres://u:secret-pass@127.0.0.1:1/db"}
upstream: {timeout: 5s}
`)), 0o600)
	rep, err := g.m.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"server", "limits.algorithm", "quota", "redis", "database"} {
		if !slices.Contains(rep.RestartRequired, k) {
			t.Errorf("restart_required %q lacks %q", rep.RestartRequired, k)
		}
	}
	for _, k := range []string{"plans", "limits.windows", "limits.max_n", "limits.mode", "upstream"} {
		if !slices.Contains(rep.Changed, k) {
			t.Errorf("changed %q lacks %q", rep.Changed, k)
		}
	}
	if strings.Contains(logs.String(), "secret-pass") {
		t.Errorf("the log shows a password:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "take effect only after a restart") {
		t.Errorf("no log line of the restart keys:\n%s", logs.String())
	}
	// Still on the same listener, the same store, the same algorithm.
	if got := g.m.Server.Addr().String(); got != addr {
		t.Errorf("address %s, want %s", got, addr)
	}
	// max_n 2: n=3 is refused.
	if r := g.do("POST", "/v1/images/generations", key, `{"model":"sluice-sketch","prompt":"x","n":3,"size":"64x64"}`); r.status != 400 {
		t.Errorf("n=3 with max_n 2: %d %s", r.status, r.body)
	}
	// Shadow, hour 3 over a 30-minute window: the 4th image is over the
	// limit and admitted.
	for i := range 4 {
		status, limit, err := hourLimit(g.url, key)
		if err != nil || status != 200 || limit != "3" {
			t.Fatalf("image %d in shadow: %d %q %v", i+1, status, limit, err)
		}
	}
	res := g.do("GET", "/v1/usage", key, "")
	if reset := res.header.Get("X-RateLimit-Reset-Hour"); reset == "" {
		t.Errorf("no hour reset header")
	} else {
		var at int64
		fmt.Sscan(reset, &at)
		if in := at - time.Now().Unix(); in > 30*60+5 {
			t.Errorf("hour window resets in %ds, more than the 30m window", in)
		}
	}
}
