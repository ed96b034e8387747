package redis_test

import (
	"context"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/redis"
)

// silent is a TCP server that accepts connections and never answers: a
// Redis that hangs, where a dial blocks until its own timeout.
func silent(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestDialBoundedByCaller: while the store's dial to a hanging Redis is in
// flight (its own timeout 30s), concurrent calls each give up when their
// context ends, instead of queueing behind the dial.
func TestDialBoundedByCaller(t *testing.T) {
	addr := silent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	s, err := redis.Open(ctx, "redis://"+addr+"?dial_timeout=30s&read_timeout=30s&write_timeout=30s", redis.Options{})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := sluice.Policy{Windows: []sluice.Window{{Name: "hour", Length: time.Hour, Limit: 10}}}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := s.Take(ctx, "{acct:1}", &p, 1, time.Now())
			// Generous: the point is not 30s (the dial's own timeout).
			if el := time.Since(start); err == nil || el > 5*time.Second {
				t.Errorf("take with a 100ms context during a hung dial: %v after %v", err, el)
			}
		})
	}
	wg.Wait()
}

// TestHungRedisBounded: calls to a connected Redis that stops answering
// (SIGSTOP) each end with their context, and decide again once it
// resumes.
func TestHungRedisBounded(t *testing.T) {
	srv := startServer(t)
	ctx := context.Background()
	s, err := redis.Open(ctx, "redis://"+srv.addr()+"?read_timeout=30s&write_timeout=30s", redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := sluice.Policy{Windows: []sluice.Window{{Name: "hour", Length: time.Hour, Limit: 100}}}
	if _, err := s.Take(ctx, "{acct:1}", &p, 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	srv.cmd.Process.Signal(syscall.SIGSTOP)
	resumed := false
	defer func() {
		if !resumed {
			srv.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := s.Take(ctx, "{acct:1}", &p, 1, time.Now())
			if el := time.Since(start); err == nil || el > 5*time.Second {
				t.Errorf("take with a 100ms context on a hung Redis: %v after %v", err, el)
			}
		})
	}
	wg.Wait()
	srv.cmd.Process.Signal(syscall.SIGCONT)
	resumed = true
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := s.Take(ctx, "{acct:1}", &p, 1, time.Now())
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no decision 10s after Redis resumed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
