// Package doctor is `sluice doctor`: it checks a configuration and reaches
// every store and service it names (the SQLite file or PostgreSQL, the
// embedded counters' file or Redis, the SMTP server, the Bot API, the
// upstream), so that a misconfigured deployment is found before its first
// failing request.
//
// Each check is bounded by a timeout and gives one line: "ok" when it passed,
// "warn" for something to know that does not stop the gateway (migrations
// that the next start applies, a Redis clock that differs from this
// machine's), "FAIL" for what would make requests fail (a Redis older than
// the quota script needs, redis.MinVersion). Secrets never appear
// in a line: URLs are shown without their credentials, and errors that
// could carry a URL (with a token in its path) are reduced to their cause.
package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/mail"
	"github.com/sluicehq/sluice/postgres"
	"github.com/sluicehq/sluice/redis"
	"github.com/sluicehq/sluice/sqlite"
)

// DefaultTimeout bounds each check.
const DefaultTimeout = 5 * time.Second

// MaxClockSkew is the difference between Redis's clock and this machine's
// above which the Redis check warns.
const MaxClockSkew = time.Second

// Status is the outcome of a check.
type Status string

// Statuses, in the order of their gravity.
const (
	OK   Status = "ok"
	Warn Status = "warn" // worth knowing; the gateway works
	Fail Status = "FAIL" // requests would fail, or the gateway would not start
)

// Result is the outcome of one check: one line of the report.
type Result struct {
	Check  string // "config", "data", "sqlite", "postgres", "quota", "redis", "smtp", "telegram", "upstream"
	Status Status
	Detail string // never holds a secret
}

func (r Result) String() string { return fmt.Sprintf("%-4s  %s: %s", r.Status, r.Check, r.Detail) }

// Doctor runs the checks of one configuration. The zero value of each
// optional field has a default.
type Doctor struct {
	Config config.Config
	// Timeout bounds each check; 0 means DefaultTimeout.
	Timeout time.Duration
	// HTTPClient reaches the Bot API and the upstream; nil means a client
	// of its own.
	HTTPClient *http.Client
	// Now is this machine's clock, compared with Redis's; nil means
	// time.Now.
	Now func() time.Time
}

// Run runs every check that the configuration calls for, one after the
// other, and returns their results in that order.
func (d *Doctor) Run(ctx context.Context) []Result {
	c := &d.Config
	var rs []Result
	add := func(name string, check func(ctx context.Context) Result) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(ctx, d.timeout())
		defer cancel()
		r := check(ctx)
		r.Check = name
		// A connection's deadline may fire a moment before the context's.
		timedOut := ctx.Err() != nil || time.Since(start) >= d.timeout()
		if r.Status == Fail && timedOut && !strings.Contains(r.Detail, "timed out after") {
			r.Detail += fmt.Sprintf(" (timed out after %v)", d.timeout())
		}
		rs = append(rs, r)
	}
	add("data", d.checkData)
	if c.Database.URL == "" {
		add("sqlite", d.checkSQLite)
	} else {
		add("postgres", d.checkPostgres)
	}
	if c.Quota.Store == config.StoreRedis {
		add("redis", d.checkRedis)
	} else {
		add("quota", d.checkQuotaFile)
	}
	if c.Mail.SMTPHost != "" {
		add("smtp", d.checkSMTP)
	}
	if c.Telegram.Token != "" {
		add("telegram", d.checkTelegram)
	}
	if c.Upstream.URL != "" {
		add("upstream", d.checkUpstream)
	}
	return rs
}

func (d *Doctor) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return DefaultTimeout
}

func (d *Doctor) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Doctor) client() *http.Client {
	if d.HTTPClient != nil {
		return d.HTTPClient
	}
	return &http.Client{}
}

func (d *Doctor) checkData(ctx context.Context) Result {
	dir := d.Config.Server.Data
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Result{Status: OK, Detail: fmt.Sprintf("%s does not exist yet; the first start creates it", dir)}
	case err != nil:
		return Result{Status: Fail, Detail: err.Error()}
	case !st.IsDir():
		return Result{Status: Fail, Detail: fmt.Sprintf("%s is not a directory", dir)}
	}
	f, err := os.CreateTemp(dir, ".doctor-*")
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s is not writable: %v", dir, err)}
	}
	f.Close()
	os.Remove(f.Name())
	return Result{Status: OK, Detail: fmt.Sprintf("%s is a writable directory", dir)}
}

// schema words the versions of a database's schema.
func schema(what string, have, want int) Result {
	switch {
	case have > want:
		return Result{Status: Fail, Detail: fmt.Sprintf("%s has schema version %d, newer than this build's %d: run the newer sluice", what, have, want)}
	case have < want:
		return Result{Status: Warn, Detail: fmt.Sprintf("%s has schema version %d of %d: %d pending migrations, applied at the next start", what, have, want, want-have)}
	}
	return Result{Status: OK, Detail: fmt.Sprintf("%s reachable, schema version %d (up to date)", what, have)}
}

func (d *Doctor) checkSQLite(ctx context.Context) Result {
	path := filepath.Join(d.Config.Server.Data, "sluice.db")
	have, want, err := sqlite.SchemaVersion(ctx, path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Result{Status: OK, Detail: fmt.Sprintf("%s does not exist yet; the first start creates it with schema version %d", path, want)}
	case err != nil:
		return Result{Status: Fail, Detail: fmt.Sprintf("%s: %v", path, err)}
	}
	return schema(path, have, want)
}

// checkQuotaFile reads the embedded store's file of counters as a start
// would load it: a file that cannot be read stops the start, and rows that
// cannot be read are skipped, their keys' counters starting from zero.
func (d *Doctor) checkQuotaFile(ctx context.Context) Result {
	path := filepath.Join(d.Config.Server.Data, "quota.db")
	in, err := inmem.Inspect(ctx, path, d.now())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Result{Status: OK, Detail: fmt.Sprintf("%s does not exist yet; the first start creates it", path)}
	case err != nil:
		return Result{Status: Fail, Detail: fmt.Sprintf("%s: %v", path, err)}
	case in.Unreadable > 0:
		return Result{Status: Warn, Detail: fmt.Sprintf("%s: %s counting, and %s that cannot be read: a start skips them, and their keys' counters start from zero", path, count(in.Keys, "key"), count(in.Unreadable, "row"))}
	}
	return Result{Status: OK, Detail: fmt.Sprintf("%s reachable, %s counting", path, count(in.Keys, "key"))}
}

// count is "1 key", "2 keys".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func (d *Doctor) checkPostgres(ctx context.Context) Result {
	where := redactURL(d.Config.Database.URL)
	have, want, err := postgres.SchemaVersion(ctx, d.Config.Database.URL)
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s: %v", where, err)}
	}
	return schema(where, have, want)
}

func (d *Doctor) checkRedis(ctx context.Context) Result {
	where := redactURL(d.Config.Redis.URL)
	s, err := redis.Open(ctx, d.Config.Redis.URL, redis.Options{})
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s: %v", where, err)}
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s: %v", where, err)}
	}
	before := d.now()
	theirs, err := s.Time(ctx)
	after := d.now()
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s: %v", where, err)}
	}
	// Redis read its clock somewhere in the round trip: compare with the
	// middle of it.
	rtt := after.Sub(before)
	skew := theirs.Sub(before.Add(rtt / 2))
	// A user whose ACL denies INFO still runs the script: without a
	// version, say so and go on.
	version, err := s.Version(ctx)
	if err != nil {
		version = "of unknown version"
	}
	detail := fmt.Sprintf("%s reachable (Redis %s); its clock is %s this machine's (±%v)", where, version, signed(skew), rtt/2)
	switch ok, known := redis.Supported(version); {
	case err != nil:
		return Result{Status: Warn, Detail: detail + fmt.Sprintf(": cannot read its version (%v); the quota script needs %s or later", err, redis.MinVersion)}
	case !known:
		return Result{Status: Warn, Detail: detail + fmt.Sprintf(": cannot tell whether version %q is %s or later, which the quota script needs", version, redis.MinVersion)}
	case !ok:
		return Result{Status: Fail, Detail: detail + fmt.Sprintf(": the quota script needs Redis %s or later (SET … PXAT)", redis.MinVersion)}
	}
	if skew > MaxClockSkew || skew < -MaxClockSkew {
		return Result{Status: Warn, Detail: detail + fmt.Sprintf(": more than %v apart; quota windows follow Redis's clock, check NTP", MaxClockSkew)}
	}
	return Result{Status: OK, Detail: detail}
}

// signed words a clock difference: "3ms ahead of", "2ms behind".
func signed(d time.Duration) string {
	d = d.Round(time.Millisecond)
	switch {
	case d > 0:
		return d.String() + " ahead of"
	case d < 0:
		return (-d).String() + " behind"
	}
	return "within 1ms of"
}

func (d *Doctor) checkSMTP(ctx context.Context) Result {
	m := d.Config.Mail
	s := &mail.SMTP{Host: m.SMTPHost, Port: m.SMTPPort, Username: m.Username, Password: m.Password, From: m.From}
	where := fmt.Sprintf("%s:%d", m.SMTPHost, m.SMTPPort)
	if err := s.Check(ctx); err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s: %v", where, err)}
	}
	what := "greeting, EHLO and TLS"
	if m.Username != "" {
		what += " and AUTH"
	}
	return Result{Status: OK, Detail: fmt.Sprintf("%s: %s passed", where, what)}
}

func (d *Doctor) checkTelegram(ctx context.Context) Result {
	base := strings.TrimRight(d.Config.Telegram.APIURL, "/")
	where := redactURL(base)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/bot"+d.Config.Telegram.Token+"/getMe", nil)
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s: the Bot API URL is not usable", where)}
	}
	resp, err := d.client().Do(req)
	if err != nil {
		// A *url.Error names the URL, which holds the token.
		return Result{Status: Fail, Detail: fmt.Sprintf("%s: getMe: %v", where, cause(err))}
	}
	defer resp.Body.Close()
	var a struct {
		OK     bool `json:"ok"`
		Result struct {
			Username string `json:"username"`
		} `json:"result"`
		Description string `json:"description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&a); err != nil || !a.OK {
		detail := fmt.Sprintf("%s: getMe answered %s", where, resp.Status)
		if a.Description != "" {
			detail += ": " + a.Description
		}
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusNotFound {
			detail += " (is telegram.token right?)"
		}
		return Result{Status: Fail, Detail: detail}
	}
	return Result{Status: OK, Detail: fmt.Sprintf("%s: the token is @%s's", where, a.Result.Username)}
}

func (d *Doctor) checkUpstream(ctx context.Context) Result {
	base := strings.TrimRight(d.Config.Upstream.URL, "/")
	where := redactURL(base)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/models", nil)
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s: the upstream URL is not usable", where)}
	}
	if d.Config.Upstream.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+d.Config.Upstream.APIKey)
	}
	resp, err := d.client().Do(req)
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s/models: %v", where, cause(err))}
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return Result{Status: Fail, Detail: fmt.Sprintf("%s/models answered %s: is upstream.api_key right?", where, resp.Status)}
	case resp.StatusCode >= 300:
		return Result{Status: Fail, Detail: fmt.Sprintf("%s/models answered %s", where, resp.Status)}
	}
	return Result{Status: OK, Detail: fmt.Sprintf("%s/models answered %s", where, resp.Status)}
}

// cause is err without the *url.Error around it, which names the URL.
func cause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redactURL is a URL without its credentials, for a line of the report.
func redactURL(s string) string {
	var c config.Config
	c.Redis.URL = s
	return c.Redacted().Redis.URL
}

// Write writes one line per result and reports whether none failed.
func Write(w io.Writer, rs []Result) (ok bool) {
	ok = true
	for _, r := range rs {
		fmt.Fprintln(w, r)
		if r.Status == Fail {
			ok = false
		}
	}
	return ok
}

const usage = `Usage: sluice doctor [--config FILE] [--data DIR] [--timeout D]

Checks the configuration (the file, then the SLUICE_* variables, then
--data, as "sluice serve" reads them) and reaches every store and service it
names: the data directory, the SQLite file or PostgreSQL (with their schema
versions), the embedded counters' file or Redis (its version, 6.2 or later,
and its clock's difference to this machine's), the SMTP server, the Telegram
Bot API and the upstream. One line per check; exit status 0 only if none
failed.

`

// Main is `sluice doctor` with its arguments; it returns the exit status:
// 0 if every check passed (warnings included), 1 if one failed, 2 for bad
// arguments.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("sluice doctor", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {
		fmt.Fprint(stderr, usage)
		fset.PrintDefaults()
	}
	path := fset.String("config", "", "YAML configuration `file`")
	data := fset.String("data", "", "data `directory`, as given to sluice serve (default ./sluice-data, or server.data)")
	timeout := fset.Duration("timeout", DefaultTimeout, "bound of each check")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice doctor: unexpected argument %q\n", fset.Arg(0))
		return 2
	}
	cfg, err := config.Load(*path, getenv)
	if err != nil {
		var rs []Result
		for _, e := range split(err) {
			rs = append(rs, Result{Check: "config", Status: Fail, Detail: e.Error()})
		}
		Write(stdout, rs)
		return 1
	}
	if *data != "" {
		cfg.Server.Data = *data
	}
	source := "defaults"
	if *path != "" {
		source = *path
	}
	rs := []Result{{Check: "config", Status: OK, Detail: source + " (and SLUICE_* variables) is valid"}}
	d := &Doctor{Config: cfg, Timeout: *timeout}
	rs = append(rs, d.Run(ctx)...)
	if !Write(stdout, rs) {
		return 1
	}
	return 0
}

// split returns the errors joined in err (config.Load joins one per field).
func split(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, split(e)...)
		}
		return out
	}
	return []error{err}
}
