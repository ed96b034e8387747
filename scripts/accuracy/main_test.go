package main

import (
	"context"
	"log"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestShort runs the -short subset of the matrix against the real gateways
// and services: no over-admission, no double charge, and every row runs.
// False refusals and the retry_after error are reported, not asserted: they
// are conservative, but a row on a loaded machine is timing.
func TestShort(t *testing.T) {
	if testing.Short() {
		t.Skip("builds sluice and runs gateways")
	}
	testenv.RedisAddr(t)
	testenv.PostgresURL(t)
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command to build sluice")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var logs strings.Builder
	rows, err := run(ctx, options{short: true, log: log.New(&logs, "", 0)})
	t.Log(logs.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(matrix(true)) {
		t.Fatalf("ran %d rows, want %d", len(rows), len(matrix(true)))
	}
	for _, r := range rows {
		switch {
		case r.err != nil:
			t.Errorf("%s: %v", r.name(), r.err)
		case r.admitted == 0 || r.refusals == 0:
			t.Errorf("%s: %d admitted, %d refused; want both (the load must reach the limits)", r.name(), r.admitted, r.refusals)
		case r.over != 0:
			t.Errorf("%s: over-admitted by %d", r.name(), r.over)
		case r.double != 0:
			t.Errorf("%s: %d keys charged twice", r.name(), r.double)
		}
	}
	t.Log("\n" + render(rows, options{short: true}, "go test ./scripts/accuracy", time.Now(), 0, "test"))
}
