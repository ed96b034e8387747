package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to Load as a file: it must never panic, and
// whatever it accepts must be valid.
func FuzzLoad(f *testing.F) {
	// Small seeds: the fuzzer minimizes every input that finds new
	// coverage, which takes minutes for a file the size of the example.
	// So the example goes in one section at a time, without comments.
	example, err := os.ReadFile("sluice.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range sections(string(example)) {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		"",
		"~",
		"server: {addr: ':1', trusted_proxies: '10.0.0.0/8, ::1'}",
		"plans: [{id: starter, name: S, hour: null, day: 20, models: all}]",
		"plans:\n  - &p {id: starter, name: S, hour: 1, day: 2, models: starter}\nmodels: [*p]",
		"limits: {windows: {hour: 1.5s, day: 7d}, auth: {login: 10/m}}",
		"quota: {store: redis}\nredis: {url: 'redis://:x@h:1'}",
		"telegram: {token: '1:x', webhook_url: 'https://h/x', webhook_secret: s}",
		"telegram: {upgrade_url: 'https://e.com/p', outbox: {chat_messages: 3, chat_bytes: 1MiB, messages: 9, bytes: 2MiB}}",
		"mail: {smtp_host: h, smtp_port: 25, from: a@b.c}",
		"server: [a]",
		"a: &a [*a]",
		"? [a]\n: b",
		"server: {}\n---\nlog: {}",
	} {
		f.Add([]byte(s))
	}
	path := filepath.Join(f.TempDir(), "sluice.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path, nil)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted a config that Validate rejects: %v", err)
		}
		_ = c.Redacted()
	})
}

// sections splits a YAML file into its top-level sections, dropping
// comments and blank lines.
func sections(src string) []string {
	var out []string
	var cur strings.Builder
	for line := range strings.Lines(src) {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if line[0] != ' ' && line[0] != '-' && cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
		cur.WriteString(line)
	}
	return append(out, cur.String())
}
