package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The rules every row runs under: short windows, so that they slide and
// refill many times in a run.
var (
	hourWindow = window{name: "hour", length: 2, limit: 10}
	dayWindow  = window{name: "day", length: 6, limit: 20}
	windows    = []window{hourWindow, dayWindow}
)

// offeredRate is the rate, in requests a second, that the clients of a row
// offer together (closed loops with random pauses), well above what the
// limits admit (5 a second at most), and after a start where every client
// sends at once.
const offeredRate = 250

// retryShare is the share of admitted requests sent again with the same
// Idempotency-Key, to another instance when there are several.
const retryShare = 0.1

type options struct {
	short  bool
	runFor time.Duration
	only   string
	log    *log.Logger
}

// spec is one row of the matrix.
type spec struct {
	store     string // embedded, redis, cluster
	algo      algorithm
	instances int
	clients   int
	fault     string // none, sigkill, redis-restart
	policy    string // quota.on_store_error
	skew      bool   // gateways' clocks ±10 min
}

func (s spec) name() string {
	skew := "0"
	if s.skew {
		skew = "±10m"
		if s.instances == 1 {
			skew = "+10m"
		}
	}
	return fmt.Sprintf("%s %s %d×%d %s/%s skew=%s", s.store, s.algo, s.instances, s.clients, s.fault, s.policy, skew)
}

// matrix returns the rows to run. The full cross product (540 rows) would
// take hours; this covers every value of every axis, each axis crossed
// with the algorithms, and the store × instances × concurrency product in
// full for Redis.
func matrix(short bool) []spec {
	algos := []algorithm{sliding, calendar, tokenBucket}
	if short {
		return []spec{
			{store: "embedded", algo: sliding, instances: 1, clients: 64, fault: "none", policy: "closed"},
			{store: "redis", algo: tokenBucket, instances: 3, clients: 64, fault: "none", policy: "closed", skew: true},
			{store: "redis", algo: calendar, instances: 1, clients: 1, fault: "none", policy: "closed"},
		}
	}
	var m []spec
	for _, a := range algos {
		for _, c := range []int{1, 64, 300} {
			m = append(m, spec{store: "embedded", algo: a, instances: 1, clients: c, fault: "none", policy: "closed"})
		}
		m = append(m, spec{store: "embedded", algo: a, instances: 1, clients: 64, fault: "none", policy: "closed", skew: true})
		for _, n := range []int{1, 3} {
			for _, c := range []int{1, 64, 300} {
				m = append(m, spec{store: "redis", algo: a, instances: n, clients: c, fault: "none", policy: "closed"})
			}
		}
		m = append(m, spec{store: "redis", algo: a, instances: 3, clients: 64, fault: "none", policy: "closed", skew: true})
		for _, c := range []int{64, 300} {
			m = append(m, spec{store: "cluster", algo: a, instances: 3, clients: c, fault: "none", policy: "closed"})
		}
		m = append(m, spec{store: "cluster", algo: a, instances: 3, clients: 64, fault: "none", policy: "closed", skew: true})
		m = append(m, spec{store: "redis", algo: a, instances: 3, clients: 64, fault: "sigkill", policy: "closed"})
		for _, p := range []string{"closed", "open", "local"} {
			m = append(m, spec{store: "redis", algo: a, instances: 3, clients: 64, fault: "redis-restart", policy: p})
		}
	}
	return m
}

// event is one HTTP request of a row.
type event struct {
	key        string
	retry      bool  // a second request with the key
	send, recv int64 // µs on the deciding clock
	status     int   // 0: no answer
	replayed   bool
	retryAfter int64 // seconds; -1 when not told
	gateway    int
}

func (e event) span() span { return span{e.send, e.recv} }

// result is a row of the matrix.
type result struct {
	spec
	requests      int // first requests, not retries
	admitted      int // charged 200s
	allowed       int // the model's
	over          int64
	falseRefusals int
	refusals      int
	retryErr      float64 // s; -1 when no refusal told one
	worstRetry    string  // the refusal of retryErr, when not 0
	firstFalse    string  // the first false refusal, if any
	retries       int
	double        int // keys charged twice
	maybeDouble   int // keys whose first try went unanswered and whose retry was charged
	statuses      string
	p50, p99      time.Duration
	warnings      []string
	err           error
}

func run(ctx context.Context, o options) ([]result, error) {
	if o.runFor == 0 {
		o.runFor = 8 * time.Second
		if o.short {
			o.runFor = 3 * time.Second
		}
	}
	e, err := newEnv(ctx, o.log)
	if err != nil {
		return nil, err
	}
	defer e.close()
	var rows []result
	for i, s := range matrix(o.short) {
		if o.only != "" && !strings.Contains(s.name(), o.only) {
			continue
		}
		if ctx.Err() != nil {
			return rows, ctx.Err()
		}
		r := runRow(ctx, e, o, i, s)
		if r.err != nil {
			o.log.Printf("%-52s ERROR %v", s.name(), r.err)
		} else {
			o.log.Printf("%-52s req %5d adm %4d allow %4d over %d false %d/%d ra±%.1fs dbl %d/%d %s", s.name(), r.requests, r.admitted,
				r.allowed, r.over, r.falseRefusals, r.refusals, r.retryErr, r.double, r.retries, r.statuses)
			for _, w := range r.warnings {
				o.log.Printf("  gateway: %s", w)
			}
			if r.worstRetry != "" {
				o.log.Printf("  worst retry_after: %s", r.worstRetry)
			}
			if r.firstFalse != "" {
				o.log.Printf("  first false refusal: %s", r.firstFalse)
			}
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func runRow(ctx context.Context, e *env, o options, idx int, s spec) result {
	res := result{spec: s}
	vars := map[string]string{
		"SLUICE_ADMIN_TOKEN":          adminToken,
		"SLUICE_LOG_LEVEL":            "warn",
		"SLUICE_LIMITS_ALGORITHM":     string(s.algo),
		"SLUICE_LIMITS_WINDOWS_HOUR":  strconv.FormatInt(hourWindow.length, 10) + "s",
		"SLUICE_LIMITS_WINDOWS_DAY":   strconv.FormatInt(dayWindow.length, 10) + "s",
		"SLUICE_QUOTA_ON_STORE_ERROR": s.policy,
		"SLUICE_USAGE_RECORD":         "false",
	}
	var private *redisServer
	switch s.store {
	case "redis":
		vars["SLUICE_QUOTA_STORE"] = "redis"
		vars["SLUICE_REDIS_URL"] = "redis://" + redisAddr + "/0"
		vars["SLUICE_REDIS_PREFIX"] = e.prefix + strconv.Itoa(idx) + ":"
		if s.fault == "redis-restart" {
			var err error
			if private, err = e.privateRedis(); err != nil {
				res.err = err
				return res
			}
			defer private.kill()
			vars["SLUICE_REDIS_URL"] = "redis://" + private.addr() + "/0"
			vars["SLUICE_QUOTA_TIMEOUT"] = "500ms"
		}
	case "cluster":
		u, err := e.clusterURL(ctx)
		if err != nil {
			res.err = err
			return res
		}
		vars["SLUICE_QUOTA_STORE"] = "redis"
		vars["SLUICE_REDIS_URL"] = u
		vars["SLUICE_REDIS_PREFIX"] = e.prefix + strconv.Itoa(idx) + ":"
	}
	if s.instances > 1 || s.store != "embedded" {
		vars["SLUICE_DATABASE_URL"] = e.dbURL
	}
	offsets := make([]time.Duration, s.instances)
	if s.skew {
		if s.instances == 1 {
			offsets[0] = 10 * time.Minute
		} else {
			offsets[0], offsets[len(offsets)-1] = -10*time.Minute, 10*time.Minute
		}
	}
	gws, err := e.startGateways(ctx, vars, offsets)
	defer stopGateways(gws)
	if err != nil {
		res.err = err
		return res
	}
	key, err := account(ctx, gws[0].url, fmt.Sprintf("row%d@example.com", idx), hourWindow.limit, dayWindow.limit)
	if err != nil {
		res.err = err
		return res
	}
	// The deciding clock: Redis's (this machine's), or the embedded
	// gateway's with its offset.
	var clockOffset int64
	if s.store == "embedded" {
		clockOffset = offsets[0].Microseconds()
	}
	events := load(ctx, e, o, s, gws, key, private, clockOffset, idx)
	for _, g := range gws {
		res.warnings = append(res.warnings, g.warnings(3)...)
	}
	analyze(&res, events)
	return res
}

// load runs the row's clients against the gateways for o.runFor, with the
// row's fault in the middle, and returns every request made.
func load(ctx context.Context, e *env, o options, s spec, gws []*gateway, key string, private *redisServer, clockOffset int64, idx int) []event {
	tr := &http.Transport{MaxIdleConns: 1000, MaxIdleConnsPerHost: 400}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var (
		mu     sync.Mutex
		events []event
		dead   = make([]bool, len(gws))
	)
	alive := func(i int) int {
		mu.Lock()
		defer mu.Unlock()
		for j := range gws {
			if k := (i + j) % len(gws); !dead[k] {
				return k
			}
		}
		return 0
	}
	send := func(g int, ikey string, retry bool) event {
		body := `{"model":"sluice-sketch","prompt":"accuracy","n":1,"size":"64x64"}`
		req, _ := http.NewRequestWithContext(ctx, "POST", gws[g].url+"/v1/images/generations", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", ikey)
		ev := event{key: ikey, retry: retry, retryAfter: -1, gateway: g}
		ev.send = time.Now().UnixMicro() + clockOffset
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		ev.recv = time.Now().UnixMicro() + clockOffset
		if err == nil {
			ev.status = resp.StatusCode
			ev.replayed = resp.Header.Get("Idempotent-Replayed") == "true"
			if v, err := strconv.ParseInt(resp.Header.Get("Retry-After"), 10, 64); err == nil && resp.StatusCode == 429 {
				ev.retryAfter = v
			}
		}
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
		return ev
	}

	begin := time.Now()
	end := begin.Add(o.runFor)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for c := range s.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(idx), uint64(c)))
			pause := time.Duration(float64(s.clients) / offeredRate * float64(time.Second))
			<-start
			for seq := 0; time.Now().Before(end) && ctx.Err() == nil; seq++ {
				g := alive(c + seq)
				ikey := fmt.Sprintf("r%d-c%d-%d", idx, c, seq)
				ev := send(g, ikey, false)
				// An answer lost (a killed gateway) or a request still
				// in progress: try again with the key elsewhere; an
				// admitted one, sometimes, to check it is not charged
				// twice.
				for try := 0; try < 4 && (ev.status == 0 || ev.status == 409 || ev.status == 502); try++ {
					time.Sleep(200 * time.Millisecond)
					ev = send(alive(g+1), ikey, true)
				}
				if ev.status == 200 && rng.Float64() < retryShare {
					send(alive(g+1), ikey, true)
				}
				time.Sleep(time.Duration(rng.Int64N(int64(2*pause) + 1)))
			}
		}()
	}
	faultDone := make(chan struct{})
	go func() {
		defer close(faultDone)
		select {
		case <-time.After(o.runFor / 2):
		case <-ctx.Done():
			return
		}
		switch s.fault {
		case "sigkill":
			k := len(gws) - 1
			mu.Lock()
			dead[k] = true
			mu.Unlock()
			gws[k].cmd.Process.Signal(syscall.SIGKILL)
			o.log.Printf("  killed gateway %d (SIGKILL)", k)
		case "redis-restart":
			private.kill()
			o.log.Printf("  killed the private Redis")
			time.Sleep(1500 * time.Millisecond)
			if err := private.start(); err != nil {
				o.log.Printf("  restart Redis: %v", err)
			} else {
				o.log.Printf("  restarted the private Redis")
			}
		}
	}()
	close(start)
	wg.Wait()
	<-faultDone
	return events
}

// analyze fills the figures of r from the row's events.
func analyze(r *result, events []event) {
	sort.Slice(events, func(i, j int) bool { return events[i].send < events[j].send })
	status := map[string]int{}
	var (
		charges  []span  // definite: a 200 that was not a replay
		possible []event // charged or perhaps charged (no answer, 5xx)
		attempts []span  // requests that reached a decision
		lat      []time.Duration
		perKey   = map[string]int{}
		lost     = map[string]bool{}
	)
	for _, e := range events {
		if e.retry {
			r.retries++
		} else {
			r.requests++
		}
		lat = append(lat, time.Duration(e.recv-e.send)*time.Microsecond)
		label := strconv.Itoa(e.status)
		if e.status == 0 {
			label = "no answer"
		}
		if e.replayed {
			label = "200 replayed"
		}
		status[label]++
		charged := e.status == 200 && !e.replayed
		if charged {
			charges = append(charges, e.span())
			if perKey[e.key]++; perKey[e.key] == 2 {
				r.double++
			} else if lost[e.key] {
				r.maybeDouble++
			}
		}
		if e.status == 0 || e.status >= 500 {
			lost[e.key] = true
		}
		if charged || e.status == 0 || e.status >= 500 {
			possible = append(possible, e)
		}
		if charged || e.status == 429 || e.status == 0 || e.status >= 500 {
			attempts = append(attempts, e.span())
		}
	}
	r.admitted = len(charges)
	// The most the rules allow: the model's greedy replay with every
	// request decided at its send, at the middle of its interval, at its
	// answer; the most of the three.
	for _, at := range []func(span) int64{
		func(s span) int64 { return s.lo },
		func(s span) int64 { return (s.lo + s.hi) / 2 },
		func(s span) int64 { return s.hi },
	} {
		var times []int64
		for _, a := range attempts {
			times = append(times, at(a))
		}
		r.allowed = max(r.allowed, greedy(r.algo, windows, times))
	}
	for _, w := range windows {
		r.over = max(r.over, overAdmission(r.algo, w, charges))
	}
	r.retryErr = -1
	for _, e := range events {
		if e.status != 429 {
			continue
		}
		r.refusals++
		// Perhaps-before charges at their latest instants: the most
		// that can have counted against e.
		var hi []int64
		for _, p := range possible {
			if p.send <= e.recv {
				hi = append(hi, min(p.recv, e.send))
			}
		}
		if fitsAtAll(r.algo, windows, hi, e.send, 1) == e.send {
			r.falseRefusals++
			if r.firstFalse == "" {
				r.firstFalse = describeRefusal(e, possible, windows)
			}
		}
		if e.retryAfter < 0 {
			continue
		}
		// When the model says e would have fitted: no earlier than with
		// the surely-before charges at their earliest, no later than
		// with the perhaps-before ones at their latest.
		var lo []int64
		for _, c := range charges {
			if c.hi <= e.send {
				lo = append(lo, c.lo)
			}
		}
		hi = hi[:0]
		for _, p := range possible {
			if p.send <= e.recv {
				hi = append(hi, min(p.recv, e.recv))
			}
		}
		tLo := fitsAtAll(r.algo, windows, lo, e.send, 1)
		tHi := fitsAtAll(r.algo, windows, hi, e.recv, 1)
		// retry_after is whole seconds rounded up: the instant it tells
		// is in [send + (s-1), recv + s].
		toldLo, toldHi := e.send+(e.retryAfter-1)*second, e.recv+e.retryAfter*second
		gap := max(0, tLo-toldHi, toldLo-tHi)
		if g := float64(gap) / float64(second); g > r.retryErr {
			r.retryErr = g
			if g > 0 {
				dir := "told early"
				if toldLo-tHi > tLo-toldHi {
					dir = "told late"
				}
				r.worstRetry = fmt.Sprintf("%s by %.3fs: gateway %d, Retry-After %d, answered in %dµs, fits in [%.3f, %.3f]s after send",
					dir, g, e.gateway, e.retryAfter, e.recv-e.send, float64(tLo-e.send)/1e6, float64(tHi-e.send)/1e6)
			}
		}
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		r.p50, r.p99 = lat[len(lat)/2], lat[(len(lat)-1)*99/100]
	}
	var keys []string
	for k := range status {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, status[k]))
	}
	r.statuses = strings.Join(parts, ", ")
}

// describeRefusal tells where a refusal the model calls false stood: how
// long after a multiple of each window's length it was sent (a calendar
// window's start), and the requests that may have been charged within the
// longest window before it, those answered 200 and those without an answer
// or with a 5xx (a killed gateway's, whose charge, if Redis ran it, may
// even come after the client saw the connection close).
func describeRefusal(e event, possible []event, windows []window) string {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway %d, answered in %dµs", e.gateway, e.recv-e.send)
	longest := int64(0)
	for _, w := range windows {
		longest = max(longest, w.length)
		fmt.Fprintf(&b, "; %.3fs into a %ds window", float64(e.send%(w.length*second))/1e6, w.length)
	}
	var charged, lost int
	last := int64(-1)
	for _, p := range possible {
		if p.send > e.recv || p.recv < e.send-longest*second {
			continue
		}
		if p.status == 200 {
			charged++
			continue
		}
		lost++
		last = max(last, p.recv)
	}
	fmt.Fprintf(&b, "; within %ds before it %d charged and %d unanswered", longest, charged, lost)
	if last >= 0 {
		fmt.Fprintf(&b, " (the last of those closed %.3fs after its send)", float64(last-e.send)/1e6)
	}
	return b.String()
}
