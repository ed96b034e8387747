// Command sluice is the sluice quota gateway: `sluice serve` runs it,
// `sluice batch` generates images in bulk through it, `sluice doctor` checks
// a configuration and the services it names, `sluice version` says which
// build it is.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicehq/sluice/batch"
	"github.com/sluicehq/sluice/doctor"
	"github.com/sluicehq/sluice/internal/gctune"
)

// gcFloor is how far the heap may grow between two garbage collections
// at least, where Go's default (GOGC=100) lets it grow by as much as is
// live: a gateway keeps a few megabytes live, and collected ten times a
// second under load (internal/gctune).
const gcFloor = 64 << 20

// Version is the build's version, set with -ldflags "-X main.Version=…".
var Version = "dev"

const usage = `sluice: a quota gateway for paid image-generation APIs

Usage:
  sluice serve [--config FILE] [--addr ADDR] [--data DIR]   run the gateway
  sluice batch --url URL --key KEY --model ID [--out DIR] [--concurrency N] FILE
                                                           generate images in bulk
  sluice doctor [--config FILE] [--data DIR]               check the configuration and reach
                                                           every store and service it names
  sluice version

Run "sluice serve -h" for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, so that it can be tested.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "serve":
		m := NewMain(stdout, stderr)
		if err := m.ParseFlags(args[1:]); err != nil {
			if errors.Is(err, errHelp) {
				return 0
			}
			fmt.Fprintln(stderr, err)
			return 2
		}
		// Fewer collections of a small heap (README "Performance"),
		// unless GOGC is set.
		defer gctune.Start(gcFloor)()
		if err := m.Run(ctx); err != nil {
			fmt.Fprintln(stderr, "sluice:", err)
			m.Close()
			return 1
		}
		// SIGHUP reloads the configuration (README "Reloading the
		// configuration").
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go m.reloadOnHUP(ctx, hup)
		<-ctx.Done()
		stop() // a second signal kills at once
		fmt.Fprintln(stderr, "sluice: shutting down; draining requests and flushing counters")
		if err := m.Close(); err != nil {
			fmt.Fprintln(stderr, "sluice:", err)
			return 1
		}
		return 0
	case "batch":
		context.AfterFunc(ctx, stop) // a second signal kills at once
		return batch.Main(ctx, args[1:], os.Stdin, stdout, stderr)
	case "doctor":
		return doctor.Main(ctx, args[1:], os.Getenv, stdout, stderr)
	case "version", "-v", "--version":
		fmt.Fprintln(stdout, "sluice", Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", args[0], usage)
	return 2
}
