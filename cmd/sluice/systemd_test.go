package main

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/config"
)

// TestSystemdUnit keeps docs/systemd/sluice.service in step with serve: its
// command line parses, and systemd waits for a stop longer than a gateway
// drains for by default.
func TestSystemdUnit(t *testing.T) {
	f, err := os.Open("../../docs/systemd/sluice.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string]string{}
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && !strings.HasPrefix(k, "#") {
			keys[k] = v
		}
	}
	args := strings.Fields(keys["ExecStart"])
	if len(args) < 2 || args[1] != "serve" {
		t.Fatalf("ExecStart=%q, want sluice serve …", keys["ExecStart"])
	}
	m := NewMain(nil, nil)
	m.Getenv = func(string) string { return "" }
	// The unit's --config file is not here; the flags are what matter.
	if err := m.ParseFlags(append(args[2:len(args):len(args)], "--config", "")); err != nil {
		t.Errorf("ExecStart's flags: %v", err)
	}
	if m.Config.Server.Data != "/var/lib/sluice" {
		t.Errorf("--data %q, want the StateDirectory /var/lib/sluice", m.Config.Server.Data)
	}
	stop, err := time.ParseDuration(keys["TimeoutStopSec"])
	if drain := config.Default().Server.ShutdownTimeout; err != nil || stop < drain+10*time.Second {
		t.Errorf("TimeoutStopSec=%s, want at least server.shutdown_timeout (%v) plus 10s to write the counters", keys["TimeoutStopSec"], drain)
	}
}
