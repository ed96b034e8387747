// Package testenv finds the services that integration tests need: the Redis
// on 127.0.0.1:6379 and the PostgreSQL on 127.0.0.1:5432 of the machine.
// A test that needs one skips, with a message that says why, when it is not
// reachable; with SLUICE_TEST_REQUIRE_SERVICES=1 (CI) it fails instead.
package testenv

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Addresses of the machine's services. SLUICE_TEST_REDIS_ADDR and
// SLUICE_TEST_POSTGRES_URL override them.
const (
	DefaultRedisAddr   = "127.0.0.1:6379"
	DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

// Required reports whether tests must fail rather than skip when a service
// is missing.
func Required() bool { return os.Getenv("SLUICE_TEST_REQUIRE_SERVICES") == "1" }

// Missing skips t, or fails it when services are required, saying what is
// missing.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf("SLUICE_TEST_REQUIRE_SERVICES=1: "+format, args...)
	}
	t.Skipf(format+" (set SLUICE_TEST_REQUIRE_SERVICES=1 to fail instead)", args...)
}

// RedisAddr returns the address of the shared Redis, or skips t.
func RedisAddr(t testing.TB) string {
	t.Helper()
	addr := env("SLUICE_TEST_REDIS_ADDR", DefaultRedisAddr)
	if !reachable(addr) {
		Missing(t, "Redis is not reachable at %s", addr)
	}
	return addr
}

// PostgresURL returns the URL of the shared PostgreSQL, or skips t.
func PostgresURL(t testing.TB) string {
	t.Helper()
	u := env("SLUICE_TEST_POSTGRES_URL", DefaultPostgresURL)
	if !reachable("127.0.0.1:5432") && u == DefaultPostgresURL {
		Missing(t, "PostgreSQL is not reachable at 127.0.0.1:5432")
	}
	return u
}

// PostgresSchema creates a PostgreSQL schema of t's own, empty, named
// "sluicetest_"+Unique(t), and returns a connection string for the shared
// PostgreSQL (PostgresURL, in its URL or key=value form) whose search_path is
// that schema alone, with the schema's name. Every connection opened with it
// (postgres.Open, a gateway's SLUICE_DATABASE_URL) creates and finds its
// tables in the schema, so two opens on it are two instances of one
// deployment, and two schemas are two deployments that share nothing. The
// schema is dropped, with all it holds, when t ends: after the cleanups
// registered later, such as closing what was opened on it; a failed drop
// fails t. It skips t (or fails it under SLUICE_TEST_REQUIRE_SERVICES=1)
// when PostgreSQL does not answer.
func PostgresSchema(t testing.TB) (url, schema string) {
	t.Helper()
	ctx := context.Background()
	base := PostgresURL(t)
	schema = "sluicetest_" + Unique(t)
	ident := pgx.Identifier{schema}.Sanitize()
	url, err := withSearchPath(base, schema)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		Missing(t, "PostgreSQL at %s does not answer: %v", base, err)
	}
	_, err = conn.Exec(ctx, `CREATE SCHEMA `+ident)
	conn.Close(ctx)
	if err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err == nil {
			_, err = conn.Exec(ctx, `DROP SCHEMA `+ident+` CASCADE`)
			conn.Close(ctx)
		}
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return url, schema
}

// withSearchPath puts schema (an identifier that needs no quoting) in the
// search_path of connection string s, a URL or key=value pairs: pgx passes
// the parameters it does not know to the server as run-time parameters.
func withSearchPath(s, schema string) (string, error) {
	if !strings.HasPrefix(s, "postgres://") && !strings.HasPrefix(s, "postgresql://") {
		return s + " search_path=" + schema, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// RedisServer returns the path of the redis-server binary, or skips t.
func RedisServer(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("redis-server")
	if err != nil {
		Missing(t, "redis-server is not installed")
	}
	return p
}

// Unique returns a name of the test's own for keys, prefixes and schemas:
// lowercase letters, digits and underscores.
func Unique(t testing.TB) string {
	var b strings.Builder
	for _, c := range strings.ToLower(t.Name()) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 30 {
		s = s[:30]
	}
	return s + "_" + strings.ToLower(strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")) + "_" + itoa(os.Getpid())
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for n > 0 || i == len(b) {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func reachable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Chromium returns the path of a Chromium or Chrome binary for browser
// tests, or skips t. SLUICE_TEST_CHROMIUM overrides the search.
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SLUICE_TEST_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	Missing(t, "Chromium is not installed (apt-get install -y chromium)")
	return ""
}
