// Command accuracy runs sluice gateways against the reference model of its
// rules and writes the accuracy matrix, docs/accuracy.md: for combinations
// of quota store (embedded, Redis, a Redis Cluster of three masters),
// algorithm, number of gateway instances, concurrent clients, fault and
// clock skew, how many requests were admitted against the most the rules
// allow, over-admissions, false refusals, the error of retry_after and
// double charges of requests retried with their Idempotency-Key.
//
//	go run ./scripts/accuracy [-short] [-run 8s] [-out docs/accuracy.md]
//
// Run it from the repository root. It builds sluice into a temporary
// directory and starts every process on 127.0.0.1: gateways (`sluice
// serve`), a private redis-server for the Redis restarts and three for the
// cluster. It uses the machine's Redis (127.0.0.1:6379, under a key prefix of
// its own) and PostgreSQL (127.0.0.1:5432, database test, in a schema of its
// own), and removes all it made when it ends. -short runs the small subset
// that the package's test runs.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"time"
)

func main() {
	short := flag.Bool("short", false, "run the small subset (as the test does)")
	runFor := flag.Duration("run", 0, "load of each row (default 8s, 3s with -short)")
	out := flag.String("out", "docs/accuracy.md", "where to write the matrix (- for stdout only)")
	only := flag.String("only", "", "run only the rows whose name contains this")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	o := options{short: *short, runFor: *runFor, only: *only, log: log.New(os.Stderr, "", log.Ltime)}
	begin := time.Now()
	rows, err := run(ctx, o)
	if err != nil {
		log.Fatal(err)
	}
	cmd := "go run ./scripts/accuracy " + strings.Join(os.Args[1:], " ")
	doc := render(rows, o, strings.TrimSpace(cmd), begin, time.Since(begin), runtime.Version())
	if *out == "-" {
		fmt.Print(doc)
		return
	}
	if err := os.WriteFile(*out, []byte(doc), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "wrote %s (%d rows in %s)\n", *out, len(rows), time.Since(begin).Round(time.Second))
}
