// Command loadtest measures what sluice costs in front of an image
// generator: the throughput of POST /v1/images/generations through sluice
// against a plain httputil.ReverseProxy and nginx's proxy_pass to the same
// trivial upstream, and the latency sluice adds at half of the plain proxy's
// saturation throughput. A second sluice with usage.record false, run in
// the same rounds, gives the cost of the usage history.
//
//	go run ./scripts/loadtest [-duration 10s] [-connections 32,64] [-rounds 3] [-rate 0] [-env GOGC=400] [-trace DIR]
//
//	-duration     length of each wrk run (and of the open-loop latency runs)
//	-connections  wrk connections; a comma-separated list runs the rounds
//	              once per count; "" runs the latency rounds only
//	-rounds       rounds per connection count; each round runs every target
//	              once, starting with the next one each round; as many
//	              rounds of the latency runs
//	-rate         requests/s of the open-loop latency runs; 0 means half of
//	              the plain proxy's best throughput at the last count
//	-env          environment of the sluice gateways (only), comma-separated
//	              NAME=VALUE pairs: GOGC=400 measures a less frequent GC
//	-trace        a directory: sluice is built with -tags pprof and each
//	              latency run through sluice is traced (runtime/trace) into
//	              DIR/sluice-round-N.trace, to see what a slow request
//	              waited for; the run prints when its GC cycles began, on
//	              the clock of the slowest requests' spans (below)
//
// For each wrk run it prints the throughput and the CPU time the server's
// processes used per request (from /proc: a figure that the other load on
// a shared machine disturbs less than the throughput), and for each count
// the ratios of sluice to each peer per round (throughput, and CPU time per
// request), min–max and median. The latency runs send requests at a fixed
// rate whatever the answers' latency, to the upstream directly, through the
// proxy, through sluice and through sluice without history, and give what
// sluice adds to the p50 and p99.
// Each latency run starts with a second of the same traffic that is not
// counted, so that the client's and the servers' connections are open and
// warm: the figures are the steady state's, not a first second of dials.
// For each latency run it also prints when its slowest 1 % of requests were
// sent (seconds from the first counted one, grouped where they were sent
// within 50 ms of each other): a stall shows as one short span holding
// most of them, a diffuse tail as many spread across the run.
//
// It needs wrk (apt-get install wrk); nginx (apt-get install nginx) is
// measured when it is installed. Every server runs on 127.0.0.1 in a
// process of its own: the upstream and the proxy are this program re-run
// with a role, sluice is built from the repository, nginx runs on a
// configuration written into a temporary directory. The proxy's transport
// is sluice's own (imagegen.NewTransport: 256 idle connections per host),
// so that both reach the upstream alike. All traffic stays on the loopback
// interface and every run is bounded in time.
package main

import (
	"bytes"
	"cmp"
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

	"github.com/sluicehq/sluice/imagegen"
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
	connsFlag := flag.String("connections", "32,64", "wrk connections, a comma-separated list")
	rounds := flag.Int("rounds", 3, "rounds per connection count, each running every target once")
	rate := flag.Float64("rate", 0, "requests/s of the latency runs; 0: half of the plain proxy's best throughput")
	envFlag := flag.String("env", "", "environment of the sluice gateways only, comma-separated NAME=VALUE pairs (GOGC=400)")
	traceDir := flag.String("trace", "", "a directory to write a runtime trace of each latency run through sluice into")
	flag.Parse()
	var conns []int
	for _, c := range strings.FieldsFunc(*connsFlag, func(r rune) bool { return r == ',' }) {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			log.Fatalf("-connections: %q is not a positive number", c)
		}
		conns = append(conns, n)
	}
	if len(conns) == 0 && *rate == 0 {
		log.Fatal("-connections '' (latency only) needs a -rate")
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		log.Fatal("wrk not found: apt-get install wrk")
	}
	var env []string
	for _, kv := range strings.FieldsFunc(*envFlag, func(r rune) bool { return r == ',' }) {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			log.Fatalf("-env: %q is not NAME=VALUE", kv)
		}
		env = append(env, strings.TrimSpace(kv))
	}
	if *traceDir != "" {
		if err := os.MkdirAll(*traceDir, 0o755); err != nil {
			log.Fatal(err)
		}
	}
	if err := run(*duration, conns, *rounds, *rate, env, *traceDir); err != nil {
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
		Transport: imagegen.NewTransport(),
		ErrorLog:  log.New(io.Discard, "", 0), // wrk's closing connections at the end of a run
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

func run(duration time.Duration, connsList []int, rounds int, rate float64, env []string, traceDir string) error {
	dir, err := os.MkdirTemp("", "sluice-loadtest")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	self, _ := os.Executable()
	upAddr, proxyAddr, sluiceAddr, bareAddr := freeAddr(), freeAddr(), freeAddr(), freeAddr()

	bin := filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-o", bin, "./cmd/sluice")
	pprofAddr := ""
	if traceDir != "" {
		build = exec.Command("go", "build", "-tags", "pprof", "-o", bin, "./cmd/sluice")
		pprofAddr = freeAddr()
	}
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
	pids := map[string]int{}
	for _, args := range [][]string{{"upstream", upAddr}, {"proxy", proxyAddr, "http://" + upAddr}} {
		p, err := start(self, nil, args...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		pids[args[0]] = p.Process.Pid
	}
	const admin = "loadtest-admin"
	// Two gateways, the same but for the usage history, each with a data
	// directory (and so a key) of its own.
	keys := map[string]string{}
	for _, g := range []struct{ addr, record, pprof string }{{sluiceAddr, "true", pprofAddr}, {bareAddr, "false", ""}} {
		p, err := start(bin, append([]string{"SLUICE_ADMIN_TOKEN=" + admin, "SLUICE_UPSTREAM_URL=http://" + upAddr, "SLUICE_LOG_LEVEL=error",
			"SLUICE_USAGE_RECORD=" + g.record, "SLUICE_PPROF_ADDR=" + g.pprof}, env...), "serve", "--addr", g.addr, "--data", filepath.Join(dir, "data-"+g.record))
		if err != nil {
			return err
		}
		procs = append(procs, p)
		pids[g.addr] = p.Process.Pid
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

	targets := []target{
		{name: "reverse proxy", url: "http://" + proxyAddr + "/v1/images/generations", script: scriptFor("proxy", key), pid: pids["proxy"]},
		{name: "sluice", url: "http://" + sluiceAddr + "/v1/images/generations", script: scriptFor("sluice", key), pid: pids[sluiceAddr]},
		{name: "sluice, no history", url: "http://" + bareAddr + "/v1/images/generations", script: scriptFor("bare", keys[bareAddr]), pid: pids[bareAddr]},
	}
	if _, err := exec.LookPath("nginx"); err != nil {
		fmt.Println("nginx not found (apt-get install nginx): measuring without it")
	} else {
		nginxAddr := freeAddr()
		p, err := startNginx(filepath.Join(dir, "nginx"), nginxAddr, upAddr)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		if err := waitUp("http://" + nginxAddr + "/"); err != nil {
			return err
		}
		targets = append(targets, target{name: "nginx", url: "http://" + nginxAddr + "/v1/images/generations", script: scriptFor("nginx", key), pid: p.Process.Pid})
	}

	var best map[string]float64
	for _, conns := range connsList {
		best = map[string]float64{}
		ratios := map[string][]float64{}
		cpuRatios := map[string][]float64{}
		fmt.Printf("\n%d connections, %d rounds of %v (CPU: of the server's processes, per request)\n", conns, rounds, duration)
		for r := range rounds {
			// Each round starts with the next target, so that none always
			// runs first (or right after the same neighbour).
			got, cpuPer := map[string]float64{}, map[string]float64{}
			for i := range targets {
				tg := targets[(r+i)%len(targets)]
				cpu0 := cpuTime(tg.pid)
				res, err := wrk(tg.script, tg.url, conns, duration)
				if err != nil {
					return err
				}
				cpu := cpuTime(tg.pid) - cpu0
				cpuPer[tg.name] = float64(cpu.Microseconds()) / float64(max(res.requests, 1))
				fmt.Printf("round %d  %-18s %9.0f req/s   CPU %5.1f µs/req   (wrk latency %s)\n", r+1, tg.name, res.rps,
					cpuPer[tg.name], res.latency)
				got[tg.name] = res.rps
				best[tg.name] = max(best[tg.name], res.rps)
			}
			for _, peer := range []string{"reverse proxy", "nginx", "sluice, no history"} {
				if got[peer] > 0 {
					ratios[peer] = append(ratios[peer], got["sluice"]/got[peer])
					if cpuPer["sluice"] > 0 {
						cpuRatios[peer] = append(cpuRatios[peer], cpuPer[peer]/cpuPer["sluice"])
					}
				}
			}
		}
		fmt.Printf("throughput, sluice / peer, per round: min–max, median (rounds)\n")
		fmt.Printf("  / reverse proxy            %s\n", spread(ratios["reverse proxy"]))
		if len(ratios["nginx"]) > 0 {
			fmt.Printf("  / nginx                    %s\n", spread(ratios["nginx"]))
		}
		fmt.Printf("  / sluice without history   %s\n", spread(ratios["sluice, no history"]))
		fmt.Printf("CPU per request, peer / sluice (above 1: sluice costs less), per round\n")
		fmt.Printf("  reverse proxy /            %s\n", spread(cpuRatios["reverse proxy"]))
		if len(cpuRatios["nginx"]) > 0 {
			fmt.Printf("  nginx /                    %s\n", spread(cpuRatios["nginx"]))
		}
		fmt.Printf("best: sluice %.0f req/s, reverse proxy %.0f req/s, nginx %.0f req/s, sluice without history %.0f req/s\n",
			best["sluice"], best["reverse proxy"], best["nginx"], best["sluice, no history"])
	}

	// Latency at half of the plain proxy's best throughput (of the last
	// connection count), open loop, against the upstream directly,
	// through the proxy and through sluice, in rounds whose order rotates
	// like the throughput's.
	if rate == 0 {
		rate = best["reverse proxy"] / 2
	}
	n, warm := int(rate*duration.Seconds()), int(rate)
	fmt.Printf("\nlatency at %.0f req/s (%d requests each after %d to warm up, open loop):\n", rate, n, warm)
	paths := []struct{ name, url, key string }{
		{"upstream direct", "http://" + upAddr + "/images/generations", ""},
		{"through the proxy", targets[0].url, key},
		{"through sluice", targets[1].url, key},
		{"sluice, no history", targets[2].url, keys[bareAddr]},
	}
	var added50, added99, vsProxy99 []float64
	for r := range rounds {
		p50, p99 := map[string]time.Duration{}, map[string]time.Duration{}
		for i := range paths {
			p := paths[(r+i)%len(paths)]
			var traced chan error
			if traceDir != "" && p.name == "through sluice" {
				traced = make(chan error, 1)
				file := filepath.Join(traceDir, fmt.Sprintf("sluice-round-%d.trace", r+1))
				secs := int(duration.Seconds()) + 2 // the warm-up second and the rounding
				go func() {
					traced <- fetchTo(file, fmt.Sprintf("http://%s/debug/pprof/trace?seconds=%d", pprofAddr, secs))
				}()
			}
			lat, sent, err := openLoop(p.url, p.key, rate, warm, n)
			if err != nil {
				return err
			}
			p50[p.name], p99[p.name] = pct(lat, 50), pct(lat, 99)
			fmt.Printf("round %d  %-18s slowest 1%% sent at (s): %s\n", r+1, p.name, slowest(lat, sent))
			if traced != nil {
				if err := <-traced; err != nil {
					return err
				}
				// The trace began with the warm-up: shift its times onto
				// the same clock as the spans above.
				fmt.Printf("round %d  %-18s GC cycles began at (s): %s\n", r+1, p.name,
					gcStarts(filepath.Join(traceDir, fmt.Sprintf("sluice-round-%d.trace", r+1)), time.Duration(warm)*time.Duration(float64(time.Second)/rate)))
			}
		}
		for _, p := range paths {
			fmt.Printf("round %d  %-18s p50 %8v  p99 %8v\n", r+1, p.name, p50[p.name], p99[p.name])
		}
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		added50 = append(added50, ms(p50["through sluice"]-p50["upstream direct"]))
		added99 = append(added99, ms(p99["through sluice"]-p99["upstream direct"]))
		vsProxy99 = append(vsProxy99, ms(p99["through sluice"]-p99["through the proxy"]))
	}
	fmt.Printf("added by sluice vs direct, ms, per round: p50 %s\n", spreadOf(added50, "%.3f", ""))
	fmt.Printf("                                          p99 %s\n", spreadOf(added99, "%.3f", ""))
	fmt.Printf("sluice vs the proxy, p99, ms, per round:      %s\n", spreadOf(vsProxy99, "%.3f", ""))
	return nil
}

// A target is a server under test: its URL, the wrk script that posts to
// it and the process whose CPU time it uses (with its children: nginx's
// workers).
type target struct {
	name, url, script string
	pid               int
}

// spread formats per-round ratios as "min–max, median m (a, b, ...)".
func spread(r []float64) string { return spreadOf(r, "%.2f", "x") }

func spreadOf(r []float64, format, unit string) string {
	if len(r) == 0 {
		return "-"
	}
	parts := make([]string, len(r))
	for i, v := range r {
		parts[i] = fmt.Sprintf(format, v)
	}
	s := slices.Sorted(slices.Values(r))
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	f := func(v float64) string { return fmt.Sprintf(format, v) }
	return fmt.Sprintf("%s–%s%s, median %s%s (%s)", f(s[0]), f(s[len(s)-1]), unit, f(med), unit, strings.Join(parts, ", "))
}

// nginxConf is the configuration of the nginx target: a plain proxy_pass
// to the upstream over kept-alive connections, as sluice's and the plain
// proxy's transports keep them. worker_processes auto is one worker per
// core, the parallelism the Go servers get (GOMAXPROCS), and what Debian's
// own nginx.conf sets; the master process stays on, as nginx runs in
// production (it only supervises). Keep-alive requests are not capped, as
// Go's servers do not cap them, and nothing is logged per request.
const nginxConf = `daemon off;
master_process on;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s/client_body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	keepalive_requests 1000000;
	upstream up {
		server %[3]s;
		keepalive 64;
		keepalive_requests 1000000;
	}
	server {
		listen %[2]s;
		location = /v1/images/generations {
			proxy_pass http://up/images/generations;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
		location / { return 200; }
	}
}
`

// startNginx writes nginxConf into dir and runs nginx on it.
func startNginx(dir, addr, upstream string) (*exec.Cmd, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, addr, upstream)), 0o644); err != nil {
		return nil, err
	}
	return start("nginx", nil, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf)
}

// cpuTime returns the CPU time (user and system) that the process pid and
// its children have used, from /proc; 0 where there is no /proc.
func cpuTime(pid int) time.Duration {
	var ticks int64
	var walk func(pid int)
	walk = func(pid int) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// The fields after the command name, which is in parentheses:
		// state is field 3, utime 14, stime 15.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
		children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		for _, c := range strings.Fields(string(children)) {
			if id, err := strconv.Atoi(c); err == nil {
				walk(id)
			}
		}
	}
	walk(pid)
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ is 100 on Linux
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

var (
	rpsRe      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	latRe      = regexp.MustCompile(`Latency\s+(\S+)`)
	requestsRe = regexp.MustCompile(`(\d+) requests in`)
)

type wrkResult struct {
	rps      float64
	requests int
	latency  string // wrk's mean
}

func wrk(script, url string, conns int, d time.Duration) (wrkResult, error) {
	var res wrkResult
	out, err := exec.Command("wrk", "-t2", "-c"+strconv.Itoa(conns), "-d"+d.String(), "-s", script, url).CombinedOutput()
	if err != nil {
		return res, fmt.Errorf("wrk: %v: %s", err, out)
	}
	if bytes.Contains(out, []byte("Non-2xx")) {
		return res, fmt.Errorf("wrk saw errors:\n%s", out)
	}
	m := rpsRe.FindSubmatch(out)
	if m == nil {
		return res, fmt.Errorf("wrk output:\n%s", out)
	}
	res.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := requestsRe.FindSubmatch(out); m != nil {
		res.requests, _ = strconv.Atoi(string(m[1]))
	}
	if l := latRe.FindSubmatch(out); l != nil {
		res.latency = string(l[1])
	}
	return res, nil
}

// openLoop sends warm+n requests at a fixed rate whatever the answers'
// latency (so that a slow answer does not hide the queueing it causes) and
// returns the latencies of the last n, and when each was sent (from the
// first of them): the first warm open the connections (a first burst of
// dials is seconds of queueing that no steady state has).
func openLoop(url, key string, rate float64, warm, n int) (lat, sent []time.Duration, err error) {
	// Enough connections that the generator is never the bottleneck at these
	// rates, few enough that a stall queues requests rather than opening
	// thousands of sockets.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}, Timeout: 10 * time.Second}
	lat, sent = make([]time.Duration, warm+n), make([]time.Duration, warm+n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	interval := time.Duration(float64(time.Second) / rate)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(warm+n)*interval+30*time.Second)
	defer cancel()
	begin := time.Now()
	for i := range warm + n {
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
			resp, rerr := client.Do(req)
			if rerr == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					rerr = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			lat[i], sent[i] = time.Since(t), t.Sub(begin)-time.Duration(warm)*interval
			if rerr != nil {
				mu.Lock()
				err = cmpOr(err, rerr)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return lat[warm:], sent[warm:], err
}

// slowest tells when the slowest 1 % of the requests were sent: spans of
// sends less than 50 ms apart, each with its count, the largest first,
// at most five.
func slowest(lat, sent []time.Duration) string {
	idx := make([]int, len(lat))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(lat[b], lat[a]) })
	idx = idx[:max(len(idx)/100, 1)]
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(sent[a], sent[b]) })
	type span struct {
		from, to time.Duration
		n        int
	}
	var spans []span
	for _, i := range idx {
		if k := len(spans) - 1; k >= 0 && sent[i]-spans[k].to < 50*time.Millisecond {
			spans[k].to, spans[k].n = sent[i], spans[k].n+1
			continue
		}
		spans = append(spans, span{sent[i], sent[i], 1})
	}
	slices.SortStableFunc(spans, func(a, b span) int { return cmp.Compare(b.n, a.n) })
	var b strings.Builder
	for k, sp := range spans {
		if k == 5 {
			fmt.Fprintf(&b, " and %d more spans", len(spans)-k)
			break
		}
		fmt.Fprintf(&b, " %.2f–%.2f (%d)", sp.from.Seconds(), sp.to.Seconds(), sp.n)
	}
	return fmt.Sprintf("%d in %d spans:%s", len(idx), len(spans), b.String())
}

// gcStarts lists when the GC cycles of a runtime trace began, in seconds
// from shift after its start, read from go tool trace's dump of its events.
func gcStarts(file string, shift time.Duration) string {
	out, err := exec.Command("go", "tool", "trace", "-d=parsed", file).Output()
	if err != nil {
		return "(go tool trace: " + err.Error() + ")"
	}
	timeRe := regexp.MustCompile(`\bTime=(\d+)`)
	var t0 int64
	var starts []string
	for line := range strings.Lines(string(out)) {
		m := timeRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		t, _ := strconv.ParseInt(m[1], 10, 64)
		if t0 == 0 {
			t0 = t
		}
		if strings.Contains(line, "RangeBegin") && strings.Contains(line, `Name="GC concurrent mark phase"`) {
			starts = append(starts, fmt.Sprintf("%.3f", (time.Duration(t-t0)-shift).Seconds()))
		}
	}
	return strings.Join(starts, " ")
}

// fetchTo writes the body of a GET of url to file.
func fetchTo(file, url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
