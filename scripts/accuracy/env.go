package main

// The processes and services of a run: the sluice binary, gateways, private
// redis-servers, the machine's Redis and PostgreSQL. Everything made here is
// undone by env.close.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"
)

const (
	adminToken  = "accuracy-admin-token"
	redisAddr   = "127.0.0.1:6379"
	postgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

type env struct {
	log    *log.Logger
	dir    string
	bin    string
	prefix string // of the machine's Redis keys
	schema string // of the PostgreSQL schema
	dbURL  string
	rdb    *goredis.Client

	mu      sync.Mutex
	servers []*redisServer // private ones
	cluster []*redisServer
}

func newEnv(ctx context.Context, lg *log.Logger) (*env, error) {
	e := &env{log: lg}
	var err error
	if e.dir, err = os.MkdirTemp("", "sluice-accuracy"); err != nil {
		return nil, err
	}
	e.bin = filepath.Join(e.dir, "sluice")
	lg.Printf("building sluice into %s", e.bin)
	build := exec.CommandContext(ctx, "go", "build", "-o", e.bin, "github.com/sluicehq/sluice/cmd/sluice")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		e.close()
		return nil, fmt.Errorf("build sluice (from inside the module): %w", err)
	}
	tag := fmt.Sprintf("%d_%d", os.Getpid(), time.Now().Unix())
	e.prefix = "accuracy:" + tag + ":"
	e.rdb = goredis.NewClient(&goredis.Options{Addr: redisAddr})
	if err := e.rdb.Ping(ctx).Err(); err != nil {
		e.close()
		return nil, fmt.Errorf("Redis at %s: %w", redisAddr, err)
	}
	e.schema = "accuracy_" + tag
	conn, err := pgx.Connect(ctx, postgresURL)
	if err != nil {
		e.close()
		return nil, fmt.Errorf("PostgreSQL: %w", err)
	}
	_, err = conn.Exec(ctx, "CREATE SCHEMA "+e.schema)
	conn.Close(ctx)
	if err != nil {
		e.schema = ""
		e.close()
		return nil, fmt.Errorf("create schema: %w", err)
	}
	u, _ := url.Parse(postgresURL)
	q := u.Query()
	q.Set("search_path", e.schema)
	u.RawQuery = q.Encode()
	e.dbURL = u.String()
	return e, nil
}

// close stops the private redis-servers, deletes the keys under the prefix,
// drops the schema and removes the temporary directory.
func (e *env) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.mu.Lock()
	for _, s := range append(e.servers, e.cluster...) {
		s.kill()
	}
	e.mu.Unlock()
	if e.rdb != nil {
		n := 0
		iter := e.rdb.Scan(ctx, 0, e.prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			e.rdb.Del(ctx, iter.Val())
			n++
		}
		e.rdb.Close()
		e.log.Printf("deleted %d Redis keys under %s", n, e.prefix)
	}
	if e.schema != "" {
		if conn, err := pgx.Connect(ctx, postgresURL); err == nil {
			if _, err := conn.Exec(ctx, "DROP SCHEMA "+e.schema+" CASCADE"); err != nil {
				e.log.Printf("drop schema %s: %v", e.schema, err)
			}
			conn.Close(ctx)
		}
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// redisServer is a private redis-server that can be killed and restarted
// on the same port and directory.
type redisServer struct {
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
}

func (s *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *redisServer) start() error {
	args := append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(s.port), "--dir", s.dir, "--save", ""}, s.args...)
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	for range 250 {
		if c, err := net.Dial("tcp", s.addr()); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s did not start", s.addr())
}

func (s *redisServer) kill() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// privateRedis starts a redis-server that keeps every write (appendfsync
// always), so that a restart loses no counter.
func (e *env) privateRedis() (*redisServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(e.dir, "redis")
	if err != nil {
		return nil, err
	}
	s := &redisServer{port: port, dir: dir, args: []string{"--appendonly", "yes", "--appendfsync", "always"}}
	e.mu.Lock()
	e.servers = append(e.servers, s)
	e.mu.Unlock()
	return s, s.start()
}

// clusterURL starts, once, a Redis Cluster of three masters and returns its
// URL for sluice.
func (e *env) clusterURL(ctx context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.cluster) == 0 {
		var addrs []string
		for range 3 {
			port, err := freePort()
			if err != nil {
				return "", err
			}
			dir, _ := os.MkdirTemp(e.dir, "cluster")
			// A generous node timeout: a node slow on a loaded machine
			// must not be taken for dead.
			s := &redisServer{port: port, dir: dir, args: []string{"--appendonly", "no", "--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "15000"}}
			e.cluster = append(e.cluster, s)
			if err := s.start(); err != nil {
				return "", err
			}
			addrs = append(addrs, s.addr())
		}
		args := append([]string{"--cluster", "create"}, addrs...)
		args = append(args, "--cluster-replicas", "0", "--cluster-yes")
		if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
		}
		c := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs})
		defer c.Close()
		deadline := time.Now().Add(60 * time.Second)
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				return "", fmt.Errorf("cluster not ok: %v %v", info, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		e.log.Printf("Redis Cluster up on %s", strings.Join(addrs, ","))
	}
	return "redis+cluster://" + e.cluster[0].addr() + "," + e.cluster[1].addr() + "," + e.cluster[2].addr(), nil
}

// gateway is one `sluice serve` process.
type gateway struct {
	url    string
	cmd    *exec.Cmd
	out    *lockedBuffer // stderr
	done   chan struct{}
	offset time.Duration
	dead   bool
}

// startGateways starts len(offsets) gateways with the environment vars, the
// i-th with its clock offset by offsets[i], and waits until they answer.
func (e *env) startGateways(ctx context.Context, vars map[string]string, offsets []time.Duration) ([]*gateway, error) {
	var gws []*gateway
	for i, off := range offsets {
		port, err := freePort()
		if err != nil {
			return gws, err
		}
		data, _ := os.MkdirTemp(e.dir, "data")
		g := &gateway{url: "http://127.0.0.1:" + strconv.Itoa(port), out: &lockedBuffer{}, done: make(chan struct{}), offset: off}
		g.cmd = exec.Command(e.bin, "serve", "--addr", "127.0.0.1:"+strconv.Itoa(port), "--data", data)
		var environ []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "SLUICE_") {
				environ = append(environ, kv)
			}
		}
		for k, v := range vars {
			environ = append(environ, k+"="+v)
		}
		if off != 0 {
			environ = append(environ, "SLUICE_TEST_CLOCK_OFFSET="+off.String())
		}
		g.cmd.Env = environ
		g.cmd.Stdout, g.cmd.Stderr = io.Discard, g.out
		if err := g.cmd.Start(); err != nil {
			return gws, err
		}
		go func() { g.cmd.Wait(); close(g.done) }()
		gws = append(gws, g)
		_ = i
	}
	for i, g := range gws {
		deadline := time.Now().Add(60 * time.Second)
		for {
			resp, err := http.Get(g.url + "/healthz")
			if err == nil {
				resp.Body.Close()
				break
			}
			select {
			case <-g.done:
				return gws, fmt.Errorf("gateway %d exited at start:\n%s", i, g.out.bytes())
			case <-ctx.Done():
				return gws, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return gws, fmt.Errorf("gateway %d did not start within 60s", i)
			}
		}
	}
	return gws, nil
}

// stopGateways stops the gateways: SIGTERM, then SIGKILL after 20s.
func stopGateways(gws []*gateway) {
	for _, g := range gws {
		g.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, g := range gws {
		select {
		case <-g.done:
		case <-time.After(20 * time.Second):
			g.cmd.Process.Kill()
			<-g.done
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for a process's output and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// warnings returns the first n WARN or ERROR lines of a gateway's output.
func (g *gateway) warnings(n int) []string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(g.out.bytes()))
	for sc.Scan() && len(lines) < n {
		if l := sc.Text(); strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			lines = append(lines, l)
		}
	}
	return lines
}

// account creates an account on the VIP plan with the given limits through
// the admin API of base and returns an API key of it.
func account(ctx context.Context, base, email string, hour, day int64) (string, error) {
	do := func(method, path, body string) (map[string]any, error) {
		req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		var v map[string]any
		json.Unmarshal(b, &v)
		return v, nil
	}
	a, err := do("POST", "/admin/accounts", fmt.Sprintf(`{"email":%q,"plan":"vip"}`, email))
	if err != nil {
		return "", err
	}
	id := strconv.Itoa(int(a["user_id"].(float64)))
	if _, err := do("PUT", "/admin/accounts/"+id+"/limits", fmt.Sprintf(`{"hour":%d,"day":%d}`, hour, day)); err != nil {
		return "", err
	}
	k, err := do("POST", "/admin/accounts/"+id+"/keys", `{"name":"accuracy"}`)
	if err != nil {
		return "", err
	}
	return k["key"].(string), nil
}
