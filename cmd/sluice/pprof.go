//go:build pprof

// Built with -tags pprof, sluice serves net/http/pprof on the address in
// SLUICE_PPROF_ADDR (say 127.0.0.1:6060), apart from the gateway, for
// profiling under load (README "Performance"):
//
//	go build -tags pprof -o /tmp/sluice-pprof ./cmd/sluice
//	SLUICE_PPROF_ADDR=127.0.0.1:6060 /tmp/sluice-pprof serve ...
//	go tool pprof -top 'http://127.0.0.1:6060/debug/pprof/profile?seconds=10'
//
// A release build has none of it.
package main

import (
	"fmt"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"
)

func init() {
	addr := os.Getenv("SLUICE_PPROF_ADDR")
	if addr == "" {
		return
	}
	go func() {
		err := http.ListenAndServe(addr, nil)
		fmt.Fprintln(os.Stderr, "sluice: pprof:", err)
	}()
}
