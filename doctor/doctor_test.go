package doctor

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/rueidis"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/postgres"
	"github.com/sluicehq/sluice/sqlite"
	"github.com/sluicehq/sluice/telegram/telegramtest"
)

const (
	botToken    = "123456:doctor-secret-token"
	upstreamKey = "sk-doctor-secret-key"
)

// closedPort returns a local address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// fakeSMTP answers a greeting, EHLO and QUIT on a loopback port (where a
// session without STARTTLS is allowed).
func fakeSMTP(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprint(c, "220 fake ESMTP\r\n")
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch strings.ToUpper(strings.Fields(line + " x")[0]) {
					case "EHLO", "HELO":
						fmt.Fprint(c, "250 fake\r\n")
					case "QUIT":
						fmt.Fprint(c, "221 bye\r\n")
						return
					default:
						fmt.Fprint(c, "502 no\r\n")
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// fakeUpstream answers GET /v1/models for upstreamKey, 401 otherwise.
func fakeUpstream(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+upstreamKey {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/v1/models" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, `{"data":[]}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1"
}

// pgSchema is a connection URL on a schema of the test's own.
func pgSchema(t *testing.T) string {
	url, _ := testenv.PostgresSchema(t)
	return url
}

// TestDoctor runs the checks against healthy and broken setups: each case
// changes a healthy configuration and names the status of every check.
func TestDoctor(t *testing.T) {
	redisAddr := testenv.RedisAddr(t)
	bot := telegramtest.NewServer(t, botToken)
	upstream := fakeUpstream(t)
	smtpPort := fakeSMTP(t)

	healthy := func(t *testing.T) config.Config {
		c := config.Default()
		c.Server.Data = t.TempDir()
		c.Quota.Store = config.StoreRedis
		c.Redis.URL = "redis://" + redisAddr
		c.Mail.SMTPHost, c.Mail.SMTPPort = "127.0.0.1", smtpPort
		c.Telegram.Token, c.Telegram.APIURL = botToken, bot.URL
		c.Upstream.URL, c.Upstream.APIKey = upstream, upstreamKey
		return c
	}
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, c *config.Config)
		want   map[string]Status
		detail map[string]string // a piece of the check's line
	}{
		{
			name: "healthy, no database file yet",
			want: map[string]Status{"data": OK, "sqlite": OK, "redis": OK, "smtp": OK, "telegram": OK, "upstream": OK},
			detail: map[string]string{"sqlite": "does not exist yet", "redis": "this machine's", "telegram": "@sluice_bot",
				"upstream": "200 OK"},
		},
		{
			name: "redis user without INFO",
			change: func(t *testing.T, c *config.Config) {
				c.Redis.URL = "redis://" + noInfoUser(t, redisAddr) + ":wrong-secret@" + redisAddr
			},
			want:   map[string]Status{"data": OK, "sqlite": OK, "redis": Warn, "smtp": OK, "telegram": OK, "upstream": OK},
			detail: map[string]string{"redis": "cannot read its version"},
		},
		{
			name: "sqlite up to date",
			change: func(t *testing.T, c *config.Config) {
				db, err := sqlite.Open(context.Background(), filepath.Join(c.Server.Data, "sluice.db"))
				if err != nil {
					t.Fatal(err)
				}
				db.Close()
			},
			want:   map[string]Status{"data": OK, "sqlite": OK, "redis": OK, "smtp": OK, "telegram": OK, "upstream": OK},
			detail: map[string]string{"sqlite": "(up to date)"},
		},
		{
			name: "postgres empty schema: pending migrations",
			change: func(t *testing.T, c *config.Config) {
				c.Database.URL = pgSchema(t)
			},
			want:   map[string]Status{"data": OK, "postgres": Warn, "redis": OK, "smtp": OK, "telegram": OK, "upstream": OK},
			detail: map[string]string{"postgres": "schema version 0 of "},
		},
		{
			name: "postgres migrated",
			change: func(t *testing.T, c *config.Config) {
				c.Database.URL = pgSchema(t)
				db, err := postgres.Open(context.Background(), c.Database.URL)
				if err != nil {
					t.Fatal(err)
				}
				db.Close()
			},
			want:   map[string]Status{"data": OK, "postgres": OK, "redis": OK, "smtp": OK, "telegram": OK, "upstream": OK},
			detail: map[string]string{"postgres": "(up to date)"},
		},
		{
			name: "postgres unknown database",
			change: func(t *testing.T, c *config.Config) {
				c.Database.URL = "postgres://postgres:hunter2@127.0.0.1:5432/no_such_db_doctor?sslmode=disable"
			},
			want:   map[string]Status{"data": OK, "postgres": Fail, "redis": OK, "smtp": OK, "telegram": OK, "upstream": OK},
			detail: map[string]string{"postgres": "no_such_db_doctor"},
		},
		{
			name: "postgres unknown role",
			change: func(t *testing.T, c *config.Config) {
				c.Database.URL = "postgres://nobody_doctor:hunter2@127.0.0.1:5432/test?sslmode=disable"
			},
			want:   map[string]Status{"data": OK, "postgres": Fail, "redis": OK, "smtp": OK, "telegram": OK, "upstream": OK},
			detail: map[string]string{"postgres": "nobody_doctor"},
		},
		{
			name: "redis down",
			change: func(t *testing.T, c *config.Config) {
				c.Redis.URL = "redis://:hunter2@" + closedPort(t)
			},
			want: map[string]Status{"data": OK, "sqlite": OK, "redis": Fail, "smtp": OK, "telegram": OK, "upstream": OK},
		},
		{
			name: "smtp unreachable",
			change: func(t *testing.T, c *config.Config) {
				_, port, _ := net.SplitHostPort(closedPort(t))
				fmt.Sscan(port, &c.Mail.SMTPPort)
			},
			want: map[string]Status{"data": OK, "sqlite": OK, "redis": OK, "smtp": Fail, "telegram": OK, "upstream": OK},
		},
		{
			name: "wrong bot token, wrong upstream key",
			change: func(t *testing.T, c *config.Config) {
				c.Telegram.Token = "999:wrong-secret-token"
				c.Upstream.APIKey = "sk-wrong-secret"
			},
			want:   map[string]Status{"data": OK, "sqlite": OK, "redis": OK, "smtp": OK, "telegram": Fail, "upstream": Fail},
			detail: map[string]string{"telegram": "telegram.token", "upstream": "upstream.api_key"},
		},
		{
			name: "bot api and upstream unreachable",
			change: func(t *testing.T, c *config.Config) {
				c.Telegram.APIURL = "http://" + closedPort(t)
				c.Upstream.URL = "http://" + closedPort(t) + "/v1"
			},
			want:   map[string]Status{"data": OK, "sqlite": OK, "redis": OK, "smtp": OK, "telegram": Fail, "upstream": Fail},
			detail: map[string]string{"telegram": "connection refused", "upstream": "connection refused"},
		},
		{
			name: "data directory is a file",
			change: func(t *testing.T, c *config.Config) {
				c.Server.Data = filepath.Join(t.TempDir(), "file")
				os.WriteFile(c.Server.Data, nil, 0o600)
			},
			want: map[string]Status{"data": Fail, "sqlite": Fail, "redis": OK, "smtp": OK, "telegram": OK, "upstream": OK},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := healthy(t)
			if tc.change != nil {
				tc.change(t, &c)
			}
			d := &Doctor{Config: c, Timeout: 10 * time.Second}
			rs := d.Run(context.Background())
			got := map[string]Status{}
			var out bytes.Buffer
			Write(&out, rs)
			for _, r := range rs {
				got[r.Check] = r.Status
				if want := tc.detail[r.Check]; want != "" && !strings.Contains(r.Detail, want) {
					t.Errorf("%s: %q lacks %q", r.Check, r.Detail, want)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("statuses (-want +got):\n%s\n%s", diff, out.String())
			}
			for _, secret := range []string{botToken, upstreamKey, "hunter2", "wrong-secret"} {
				if strings.Contains(out.String(), secret) {
					t.Errorf("the report shows a secret %q:\n%s", secret, out.String())
				}
			}
			t.Logf("\n%s", out.String())
		})
	}
}

// TestDoctorQuotaFile: with embedded storage the doctor reads the file of
// counters as a start would load it, while a store may be serving from it.
func TestDoctorQuotaFile(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	policy := &sluice.Policy{Windows: []sluice.Window{{Name: "hour", Length: time.Hour, Limit: 5}}}
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T, path string)
		status Status
		detail string
	}{
		{"no file yet", func(t *testing.T, path string) {}, OK, "does not exist yet"},
		{"counters, the store serving", func(t *testing.T, path string) {
			s, err := inmem.Open(ctx, path, time.Hour, inmem.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			for _, k := range []string{"a", "b"} {
				s.Take(ctx, k, policy, 1, now)
			}
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
		}, OK, "reachable, 2 keys counting"},
		{"an unreadable row", func(t *testing.T, path string) {
			s, err := inmem.Open(ctx, path, time.Hour, inmem.Options{})
			if err != nil {
				t.Fatal(err)
			}
			s.Take(ctx, "a", policy, 1, now)
			s.Close()
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`INSERT INTO quota_state (key, alg, state, expires) VALUES ('b', 0, x'ff', ?)`, now.Add(time.Hour).Unix()); err != nil {
				t.Fatal(err)
			}
		}, Warn, "1 key counting, and 1 row that cannot be read"},
		{"not a database", func(t *testing.T, path string) {
			if err := os.WriteFile(path, bytes.Repeat([]byte("not sqlite "), 100), 0o600); err != nil {
				t.Fatal(err)
			}
		}, Fail, "quota.db: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Default()
			c.Server.Data = t.TempDir()
			tc.setup(t, filepath.Join(c.Server.Data, "quota.db"))
			d := &Doctor{Config: c, Now: func() time.Time { return now }}
			var got *Result
			for _, r := range d.Run(ctx) {
				if r.Check == "quota" {
					got = &r
				}
			}
			if got == nil {
				t.Fatal("no quota check with embedded storage")
			}
			if got.Status != tc.status || !strings.Contains(got.Detail, tc.detail) {
				t.Errorf("quota: %s %q, want %s with %q", got.Status, got.Detail, tc.status, tc.detail)
			}
		})
	}
}

// TestDoctorPendingMigrations: a database behind this build's schema is a
// warning (the next start migrates it), one ahead of it a failure.
func TestDoctorPendingMigrations(t *testing.T) {
	for _, tc := range []struct {
		have, want int
		status     Status
		detail     string
	}{
		{3, 5, Warn, "2 pending migrations"},
		{5, 5, OK, "up to date"},
		{6, 5, Fail, "newer than this build's"},
	} {
		r := schema("db", tc.have, tc.want)
		if r.Status != tc.status || !strings.Contains(r.Detail, tc.detail) {
			t.Errorf("schema(%d, %d) = %+v, want %s with %q", tc.have, tc.want, r, tc.status, tc.detail)
		}
	}
}

// TestMain exercises `sluice doctor` as the command runs it: a bad
// configuration gives one FAIL line per field and exit 1; a good one an ok
// line per check and exit 0; bad arguments exit 2.
func TestMainCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("limits:\n  mode: loose\n  max_n: 0\n"), 0o600)
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("server:\n  data: "+filepath.Join(dir, "data")+"\n"), 0o600)
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"--config", bad}, 1, []string{"FAIL  config: ", "limits.mode", "limits.max_n"}},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, 1, []string{"FAIL  config: ", "missing.yaml"}},
		{[]string{"--config", good}, 0, []string{"ok    config: " + good, "ok    data: ", "ok    sqlite: ", "ok    quota: "}},
		// --data wins over server.data, as for sluice serve.
		{[]string{"--config", good, "--data", filepath.Join(dir, "other")}, 0, []string{"ok    data: " + filepath.Join(dir, "other") + " does not exist yet"}},
		{[]string{"extra"}, 2, nil},
		{[]string{"--bogus"}, 2, nil},
	} {
		var stdout, stderr bytes.Buffer
		code := Main(context.Background(), tc.args, func(string) string { return "" }, &stdout, &stderr)
		if code != tc.code {
			t.Errorf("%q: exit %d, want %d\n%s%s", tc.args, code, tc.code, stdout.String(), stderr.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(stdout.String(), w) {
				t.Errorf("%q: output lacks %q:\n%s", tc.args, w, stdout.String())
			}
		}
		if tc.code == 1 && strings.Count(stdout.String(), "FAIL") < 1 {
			t.Errorf("%q: no FAIL line", tc.args)
		}
	}
}

// TestDoctorTimeout: a server that accepts and never answers costs one
// check its timeout, and the line says so.
func TestDoctorTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent until the test ends
		}
	}()
	c := config.Default()
	c.Server.Data = t.TempDir()
	c.Mail.SMTPHost = "127.0.0.1"
	c.Mail.SMTPPort = ln.Addr().(*net.TCPAddr).Port
	c.Upstream.URL = "http://" + ln.Addr().String() + "/v1"
	d := &Doctor{Config: c, Timeout: 200 * time.Millisecond}
	start := time.Now()
	rs := d.Run(context.Background())
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("took %v", el)
	}
	got := map[string]Result{}
	for _, r := range rs {
		got[r.Check] = r
	}
	for _, name := range []string{"smtp", "upstream"} {
		if r := got[name]; r.Status != Fail || !strings.Contains(r.Detail, "timed out after 200ms") {
			t.Errorf("%s: %+v, want a FAIL that says it timed out", name, r)
		}
	}
}

// noInfoUser adds to the Redis at addr an ACL user (password
// "wrong-secret") who may run everything but INFO, as some managed Redis
// services set users up, and returns its name; the test's cleanup deletes
// it.
func noInfoUser(t *testing.T, addr string) string {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := context.Background()
	name := "sluicetest-" + testenv.Unique(t)
	cmd := c.B().Arbitrary("ACL", "SETUSER").Args(name, "on", ">wrong-secret", "~*", "&*", "+@all", "-info").Build()
	if err := c.Do(ctx, cmd).Error(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Do(ctx, c.B().Arbitrary("ACL", "DELUSER").Args(name).Build()) })
	return name
}
