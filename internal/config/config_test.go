package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice"
)

// TestDefault checks Default against CONTRACT.md §2, §6 and §8, number by
// number rather than against the constructors it calls.
func TestDefault(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"server.addr", c.Server.Addr, ":8080"},
		{"server.data", c.Server.Data, "./sluice-data"},
		{"server.max_body", c.Server.MaxBody, Size(64 * 1024)},
		{"server.trusted_proxies", len(c.Server.TrustedProxies), 0},
		{"server.read_timeout", c.Server.ReadTimeout, 10 * time.Second},
		{"server.write_timeout", c.Server.WriteTimeout, 90 * time.Second},
		{"server.idle_timeout", c.Server.IdleTimeout, 120 * time.Second},
		{"server.shutdown_timeout", c.Server.ShutdownTimeout, 30 * time.Second},
		{"limits.algorithm", c.Limits.Algorithm, sluice.Sliding},
		{"limits.windows.hour", c.Limits.Windows.Hour, 3600 * time.Second},
		{"limits.windows.day", c.Limits.Windows.Day, 86400 * time.Second},
		{"limits.timezone", c.Limits.Timezone.String(), "UTC"},
		{"limits.mode", c.Limits.Mode, "enforce"},
		{"limits.max_n", c.Limits.MaxN, 4},
		{"limits.auth.login", c.Limits.Auth.Login, Rate{10, time.Minute}},
		{"limits.auth.register", c.Limits.Auth.Register, Rate{10, time.Minute}},
		{"limits.auth.forgot_password", c.Limits.Auth.ForgotPassword, Rate{3, time.Hour}},
		{"limits.auth.forgot_password_email", c.Limits.Auth.ForgotPasswordEmail, Rate{3, time.Hour}},
		{"limits.auth.mode", c.Limits.Auth.Mode, "enforce"},
		{"limits.idempotency_ttl", c.Limits.IdempotencyTTL, 24 * time.Hour},
		{"limits.idempotency_max_body", c.Limits.IdempotencyMaxBody, 32 * MiB},
		{"models", c.Models, sluice.DefaultModels()},
		{"upstream.url", c.Upstream.URL, ""},
		{"upstream.api_key", c.Upstream.APIKey, ""},
		{"upstream.timeout", c.Upstream.Timeout, 60 * time.Second},
		{"quota.store", c.Quota.Store, "embedded"},
		{"quota.flush_interval", c.Quota.FlushInterval, time.Second},
		{"quota.on_store_error", c.Quota.OnStoreError, "closed"},
		{"quota.on_store_error_auth", c.Quota.OnStoreErrorAuth, "closed"},
		{"quota.timeout", c.Quota.Timeout, 2 * time.Second},
		{"redis.url", c.Redis.URL, ""},
		{"database.url", c.Database.URL, ""},
		{"usage.record", c.Usage.Record, true},
		{"usage.flush_interval", c.Usage.FlushInterval, 10 * time.Second},
		{"usage.retention.minute", c.Usage.Retention.Minute, 48 * time.Hour},
		{"usage.retention.hour", c.Usage.Retention.Hour, 90 * 24 * time.Hour},
		{"usage.retention.day", c.Usage.Retention.Day, 2 * 365 * 24 * time.Hour},
		{"telegram.token", c.Telegram.Token, ""},
		{"telegram.api_url", c.Telegram.APIURL, "https://api.telegram.org"},
		{"telegram.webhook_url", c.Telegram.WebhookURL, ""},
		{"telegram.upgrade_url", c.Telegram.UpgradeURL, ""},
		{"telegram.outbox.chat_messages", c.Telegram.Outbox.ChatMessages, 20},
		{"telegram.outbox.chat_bytes", c.Telegram.Outbox.ChatBytes, 8 * MiB},
		{"telegram.outbox.messages", c.Telegram.Outbox.Messages, 2000},
		{"telegram.outbox.bytes", c.Telegram.Outbox.Bytes, 64 * MiB},
		{"mail.smtp_host", c.Mail.SMTPHost, ""},
		{"log.level", c.Log.Level, slog.LevelInfo},
		{"log.format", c.Log.Format, "text"},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}

	// CONTRACT.md §2; -1 is unlimited.
	plans := []struct {
		id, name  string
		hour, day sluice.Limit
		models    string
		api       bool
	}{
		{"starter", "Starter", 5, 20, "starter", false},
		{"basic", "Basic", 30, 200, "all", false},
		{"pro", "Pro", 60, 500, "all", false},
		{"vip", "VIP", 100, 1000, "all", true},
		{"elite", "Elite", -1, -1, "all", true},
	}
	if len(c.Plans) != len(plans) {
		t.Fatalf("%d plans, want %d", len(c.Plans), len(plans))
	}
	for i, w := range plans {
		g := c.Plans[i]
		if g.ID != w.id || g.Name != w.name || g.Hour != w.hour || g.Day != w.day || g.Models != w.models || g.API != w.api {
			t.Errorf("plans[%d] = %+v, want %+v", i, g, w)
		}
	}
	if _, ok := c.PlanByID(sluice.DefaultPlan); !ok {
		t.Errorf("no plan %q", sluice.DefaultPlan)
	}
}

// TestExample checks that sluice.example.yaml loads to exactly Default and
// sets every key, so that the documentation cannot drift.
func TestExample(t *testing.T) {
	const path = "sluice.example.yaml"
	c, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(c, want) {
		t.Errorf("example differs from Default:\n%s", diff(c, want))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := yamlKeys(t, data), allKeys(); !slices.Equal(got, want) {
		t.Errorf("example keys:\n%v\nwant every key:\n%v", got, want)
	}
}

// allKeys returns the path of every key of a Config, in order, with plans
// and models as one key each.
func allKeys() []string {
	var keys []string
	c := Default()
	eachLeaf(reflect.ValueOf(&c).Elem(), "", func(path string, _ reflect.Value, _ string) error {
		keys = append(keys, path)
		return nil
	})
	keys = append(keys, "plans", "models")
	slices.Sort(keys)
	return keys
}

// yamlKeys returns the paths of the keys a YAML file sets, with lists as one
// key each, sorted.
func yamlKeys(t *testing.T, data []byte) []string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var keys []string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if n.Kind != yaml.MappingNode {
			keys = append(keys, path)
			return
		}
		for i := 0; i < len(n.Content); i += 2 {
			walk(n.Content[i+1], joinPath(path, n.Content[i].Value))
		}
	}
	walk(doc.Content[0], "")
	slices.Sort(keys)
	return keys
}

// leafValues returns the formatted value of every scalar key of c.
func leafValues(c *Config) map[string]string {
	m := make(map[string]string)
	eachLeaf(reflect.ValueOf(c).Elem(), "", func(path string, v reflect.Value, _ string) error {
		m[path] = formatLeaf(v)
		return nil
	})
	return m
}

// formatLeaf formats a scalar value as the file and the environment take it.
func formatLeaf(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	case bool:
		return strconv.FormatBool(x)
	case time.Duration:
		return formatDuration(x)
	case []netip.Prefix:
		s := make([]string, len(x))
		for i, p := range x {
			s[i] = p.String()
		}
		return strings.Join(s, ",")
	case fmt.Stringer: // Size, Rate, Algorithm, slog.Level, *time.Location
		return x.String()
	}
	panic("no format for " + v.Type().String())
}

// diff lists the keys whose values differ between a and b.
func diff(a, b Config) string {
	var s strings.Builder
	va, vb := leafValues(&a), leafValues(&b)
	for _, k := range allKeys() {
		if va[k] != vb[k] {
			fmt.Fprintf(&s, "%s: %q != %q\n", k, va[k], vb[k])
		}
	}
	if !reflect.DeepEqual(a.Plans, b.Plans) {
		fmt.Fprintf(&s, "plans: %+v != %+v\n", a.Plans, b.Plans)
	}
	if !reflect.DeepEqual(a.Models, b.Models) {
		fmt.Fprintf(&s, "models: %+v != %+v\n", a.Models, b.Models)
	}
	return s.String()
}

func TestPlanAndModelByID(t *testing.T) {
	c := Default()
	p, ok := c.PlanByID("vip")
	if !ok || p.Name != "VIP" || p.Hour != 100 {
		t.Fatalf("PlanByID(vip) = %+v, %v", p, ok)
	}
	p.Hour = 7 // points into c
	if c.Plans[3].Hour != 7 {
		t.Errorf("PlanByID returned a copy")
	}
	if p, ok := c.PlanByID("gold"); ok || p != nil {
		t.Errorf("PlanByID(gold) = %v, %v", p, ok)
	}
	m, ok := c.ModelByID("sluice-ultra")
	if !ok || m.Tier != sluice.TierStandard {
		t.Fatalf("ModelByID(sluice-ultra) = %+v, %v", m, ok)
	}
	if m, ok := c.ModelByID("dall-e-3"); ok || m != nil {
		t.Errorf("ModelByID(dall-e-3) = %v, %v", m, ok)
	}
}

func TestRedacted(t *testing.T) {
	c := Default()
	c.Upstream.URL = "https://user:hunter2@api.example.com/v1?api-key=hunter2&x=1"
	c.Upstream.APIKey = "sk-hunter2"
	c.Redis.URL = "rediss://:hunter2@redis.example.com:6380/0"
	c.Database.URL = "postgres://app:hunter2@db.example.com/sluice?sslmode=require&password=hunter2"
	c.Telegram.Token = "123:hunter2"
	c.Telegram.WebhookURL = "https://hunter2@bot.example.com/hook#hunter2"
	c.Telegram.WebhookSecret = "hunter2"
	c.Mail.Password = "hunter2"
	c.Mail.Username = "mailer"
	c.Alerts.WebhookURL = "https://ops.example.com/hook?token=hunter2"
	c.Alerts.WebhookSecret = "whsec_hunter2"
	orig := c

	r := c.Redacted()
	if !reflect.DeepEqual(c, orig) {
		t.Errorf("Redacted changed its receiver")
	}
	for k, v := range leafValues(&r) {
		if strings.Contains(v, "hunter2") {
			t.Errorf("Redacted %s = %q", k, v)
		}
	}
	for _, tc := range []struct{ got, want string }{
		{r.Upstream.URL, "https://user:REDACTED@api.example.com/v1?api-key=REDACTED&x=1"},
		{r.Upstream.APIKey, "REDACTED"},
		{r.Redis.URL, "rediss://:REDACTED@redis.example.com:6380/0"},
		{r.Database.URL, "postgres://app:REDACTED@db.example.com/sluice?sslmode=require&password=REDACTED"},
		{r.Telegram.APIURL, "https://api.telegram.org"},
		{r.Mail.Username, "mailer"},
		{r.Mail.From, ""},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	for _, s := range []string{"host=db password=hunter2", "postgres:hunter2@db", "::hunter2"} {
		if got := redactURL(s); got != redacted {
			t.Errorf("redactURL(%q) = %q, want %q", s, got, redacted)
		}
	}
}

// TestSecretTags checks that only string keys are marked secret and that
// the keys that hold credentials are.
func TestSecretTags(t *testing.T) {
	c := Default()
	var secrets []string
	eachLeaf(reflect.ValueOf(&c).Elem(), "", func(path string, v reflect.Value, secret string) error {
		if secret != "" {
			secrets = append(secrets, path)
			if v.Kind() != reflect.String {
				t.Errorf("%s is secret but a %s", path, v.Type())
			}
		}
		return nil
	})
	want := []string{
		"upstream.url", "upstream.api_key", "redis.url", "database.url",
		"telegram.token", "telegram.api_url", "telegram.webhook_url", "telegram.webhook_secret",
		"mail.password", "alerts.webhook_url", "alerts.webhook_secret",
	}
	if !slices.Equal(secrets, want) {
		t.Errorf("secret keys = %v, want %v", secrets, want)
	}
}

// loadYAML loads the YAML text src as a file, with the environment env.
func loadYAML(t *testing.T, src string, env map[string]string) (Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path, func(k string) string { return env[k] })
}

// errFields returns the Field of every *Error in err.
func errFields(err error) []string {
	var fields []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var e *Error
		if errors.As(err, &e) {
			fields = append(fields, e.Field)
		}
	}
	walk(err)
	return fields
}
