// Command loadtest measures what sluice costs in front of an image
// generator: the throughput of POST /v1/images/generations through sluice
// against a plain httputil.ReverseProxy to the same trivial upstream, and the
// latency sluice adds at half of its maximum throughput. A second sluice
// with usage.record false, run in the same rounds, gives the cost of the
// usage history.
//
//	go run ./scripts/loadtest [-duration 10s] [-connections 64] [-rounds 2]
//
// It needs wrk (apt-get install wrk). Every server runs on 127.0.0.1 in a
// process of its own: the upstream and the proxy are this program re-run
// with a role, sluice is built from the repository. All traffic stays on the
// loopback interface and every run is bounded in time.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// upstreamBody is what the trivial upstream answers: a 1x1 PNG.
const upstreamBody = `{"created":1700000000,"data":[{"b64_json":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}]}`

const requestBody = `{"model":"sluice-sketch","prompt":"a lighthouse at dusk","n":1}`

func main() {
	if len(os.Args) > 2 {
		switch os.Args[1] {
		case "upstream":
			serveUpstream(os.Args[2])
			return
		case "proxy":
			serveProxy(os.Args[2], os.Args[3])
			return
		}
	}
	duration := flag.Duration("duration", 10*time.Second, "length of each wrk run")
	conns := flag.Int("connections", 64, "wrk connections")
	rounds := flag.Int("rounds", 2, "alternating rounds of proxy and sluice")
	rate := flag.Float64("rate", 0, "requests/s of the latency run; 0: half of sluice's best throughput")
	flag.Parse()
	if _, err := exec.LookPath("wrk"); err != nil {
		log.Fatal("wrk not found: apt-get install wrk")
	}
	if err := run(*duration, *conns, *rounds, *rate); err != nil {
		log.Fatal(err)
	}
}

func serveUpstream(addr string) {
	body := []byte(upstreamBody)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	log.Fatal(http.ListenAndServe(addr, h))
}

// serveProxy is the baseline: a plain reverse proxy that maps the gateway's
// path to the upstream's, as sluice does, and nothing else.
func serveProxy(addr, upstream string) {
	u, _ := url.Parse(upstream)
	p := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.URL.Path = "/images/generations"
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 256},
	}
	log.Fatal(http.ListenAndServe(addr, p))
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(name string, env []string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	return cmd, cmd.Start()
}

func waitUp(url string) error {
	for range 100 {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not come up", url)
}

func run(duration time.Duration, conns, rounds int, rate float64) error {
	dir, err := os.MkdirTemp("", "sluice-loadtest")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	self, _ := os.Executable()
	upAddr, proxyAddr, sluiceAddr, bareAddr := freeAddr(), freeAddr(), freeAddr(), freeAddr()

	bin := filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-o", bin, "./cmd/sluice")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build sluice (run from the repository root): %w", err)
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			p.Process.Signal(os.Interrupt)
			p.Wait()
		}
	}()
	for _, args := range [][]string{{"upstream", upAddr}, {"proxy", proxyAddr, "http://" + upAddr}} {
		p, err := start(self, nil, args...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	const admin = "loadtest-admin"
	// Two gateways, the same but for the usage history, each with a data
	// directory (and so a key) of its own.
	keys := map[string]string{}
	for _, g := range []struct{ addr, record string }{{sluiceAddr, "true"}, {bareAddr, "false"}} {
		p, err := start(bin, []string{"SLUICE_ADMIN_TOKEN=" + admin, "SLUICE_UPSTREAM_URL=http://" + upAddr, "SLUICE_LOG_LEVEL=warn",
			"SLUICE_USAGE_RECORD=" + g.record}, "serve", "--addr", g.addr, "--data", filepath.Join(dir, "data-"+g.record))
		if err != nil {
			return err
		}
		procs = append(procs, p)
		if err := waitUp("http://" + g.addr + "/healthz"); err != nil {
			return err
		}
		if keys[g.addr], err = vipKey("http://"+g.addr, admin); err != nil {
			return err
		}
	}
	if err := waitUp("http://" + upAddr + "/"); err != nil {
		return err
	}
	key := keys[sluiceAddr]
	scriptFor := func(name, key string) string {
		path := filepath.Join(dir, name+".lua")
		os.WriteFile(path, []byte(fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer %s\"\n", requestBody, key)), 0o600)
		return path
	}

	targets := []struct{ name, url, script string }{
		{"reverse proxy", "http://" + proxyAddr + "/v1/images/generations", scriptFor("proxy", key)},
		{"sluice", "http://" + sluiceAddr + "/v1/images/generations", scriptFor("sluice", key)},
		{"sluice, no history", "http://" + bareAddr + "/v1/images/generations", scriptFor("bare", keys[bareAddr])},
	}
	best := map[string]float64{}
	for r := range rounds {
		// Each round starts with the next target, so that none always
		// runs first (or right after the same neighbour).
		for i := range targets {
			tg := targets[(r+i)%len(targets)]
			rps, lat, err := wrk(tg.script, tg.url, conns, duration)
			if err != nil {
				return err
			}
			fmt.Printf("round %d  %-18s %9.0f req/s   (wrk latency %s)\n", r+1, tg.name, rps, lat)
			best[tg.name] = max(best[tg.name], rps)
		}
	}
	fmt.Printf("\nthroughput: sluice %.0f req/s, reverse proxy %.0f req/s: %.2fx\n",
		best["sluice"], best["reverse proxy"], best["sluice"]/best["reverse proxy"])
	fmt.Printf("usage history: sluice %.0f req/s with it, %.0f req/s without: %.2fx (cost %.1f%%)\n",
		best["sluice"], best["sluice, no history"], best["sluice"]/best["sluice, no history"],
		100*(1-best["sluice"]/best["sluice, no history"]))

	// Latency at half of sluice's best throughput, open loop, against the
	// upstream directly and through sluice.
	if rate == 0 {
		rate = best["sluice"] / 2
	}
	n := int(rate * duration.Seconds())
	direct, err := openLoop("http://"+upAddr+"/images/generations", "", rate, n)
	if err != nil {
		return err
	}
	proxied, err := openLoop(targets[0].url, key, rate, n)
	if err != nil {
		return err
	}
	through, err := openLoop(targets[1].url, key, rate, n)
	if err != nil {
		return err
	}
	fmt.Printf("\nlatency at %.0f req/s (%d requests each, open loop):\n", rate, n)
	fmt.Printf("  upstream direct      p50 %8v  p99 %8v\n", pct(direct, 50), pct(direct, 99))
	fmt.Printf("  through the proxy    p50 %8v  p99 %8v\n", pct(proxied, 50), pct(proxied, 99))
	fmt.Printf("  through sluice       p50 %8v  p99 %8v\n", pct(through, 50), pct(through, 99))
	fmt.Printf("  added by sluice      p50 %8v  p99 %8v  (vs direct)\n", pct(through, 50)-pct(direct, 50), pct(through, 99)-pct(direct, 99))
	fmt.Printf("  sluice vs the proxy  p50 %8v  p99 %8v\n", pct(through, 50)-pct(proxied, 50), pct(through, 99)-pct(proxied, 99))
	return nil
}

// vipKey creates a VIP account whose limits are never reached (so that
// every request is decided and charged, and none rejected) and returns a key.
func vipKey(base, admin string) (string, error) {
	post := func(method, path, body string) (map[string]any, error) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var v map[string]any
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		json.Unmarshal(b, &v)
		return v, nil
	}
	a, err := post("POST", "/admin/accounts", `{"email":"load@example.com","plan":"vip"}`)
	if err != nil {
		return "", err
	}
	id := strconv.Itoa(int(a["user_id"].(float64)))
	if _, err := post("PUT", "/admin/accounts/"+id+"/limits", `{"hour":10000000,"day":10000000}`); err != nil {
		return "", err
	}
	k, err := post("POST", "/admin/accounts/"+id+"/keys", `{"name":"load"}`)
	if err != nil {
		return "", err
	}
	return k["key"].(string), nil
}

var rpsRe = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
var latRe = regexp.MustCompile(`Latency\s+(\S+)`)

func wrk(script, url string, conns int, d time.Duration) (float64, string, error) {
	out, err := exec.Command("wrk", "-t2", "-c"+strconv.Itoa(conns), "-d"+d.String(), "-s", script, url).CombinedOutput()
	if err != nil {
		return 0, "", fmt.Errorf("wrk: %v: %s", err, out)
	}
	if bytes.Contains(out, []byte("Non-2xx")) {
		return 0, "", fmt.Errorf("wrk saw errors:\n%s", out)
	}
	m := rpsRe.FindSubmatch(out)
	if m == nil {
		return 0, "", fmt.Errorf("wrk output:\n%s", out)
	}
	rps, _ := strconv.ParseFloat(string(m[1]), 64)
	lat := ""
	if l := latRe.FindSubmatch(out); l != nil {
		lat = string(l[1])
	}
	return rps, lat, nil
}

// openLoop sends n requests at a fixed rate whatever the answers' latency
// (so that a slow answer does not hide the queueing it causes) and returns
// their latencies.
func openLoop(url, key string, rate float64, n int) ([]time.Duration, error) {
	// Enough connections that the generator is never the bottleneck at these
	// rates, few enough that a stall queues requests rather than opening
	// thousands of sockets.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}, Timeout: 10 * time.Second}
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	interval := time.Duration(float64(time.Second) / rate)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n)*interval+30*time.Second)
	defer cancel()
	begin := time.Now()
	for i := range n {
		time.Sleep(time.Until(begin.Add(time.Duration(i) * interval)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(requestBody))
			req.Header.Set("Content-Type", "application/json")
			if key != "" {
				req.Header.Set("Authorization", "Bearer "+key)
			}
			t := time.Now()
			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			lat[i] = time.Since(t)
			if err != nil {
				mu.Lock()
				firstErr = cmpOr(firstErr, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return lat, firstErr
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100].Round(time.Microsecond)
}
