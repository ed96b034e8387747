package mail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

// logBuffer collects a logger's output, safe for concurrent writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) count(s string) int { return strings.Count(b.String(), s) }

func testLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// fakeTransport is a Transport whose behaviour a test sets.
type fakeTransport struct {
	DeliverFn func(ctx context.Context, m *sluice.Email) error
}

func (f *fakeTransport) Deliver(ctx context.Context, m *sluice.Email) error {
	return f.DeliverFn(ctx, m)
}

// TestQueueRetries: 4xx replies are retried with backoff until one is
// accepted; the message arrives once.
func TestQueueRetries(t *testing.T) {
	f := newFakeSMTP(t, &fakeSMTP{reply: func(n int) string {
		if n <= 2 {
			return "451 4.3.0 try again later"
		}
		return "250 ok"
	}})
	log, logs := testLogger()
	q := New(&SMTP{Host: "127.0.0.1", Port: f.port(), From: "noreply@example.com"},
		Options{Backoff: time.Millisecond, Attempts: 3, Logger: log})
	if err := q.Send(testMail); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, m := f.dataCount(), len(f.messages()); n != 3 || m != 1 {
		t.Fatalf("%d attempts, %d messages; want 3 and 1\n%s", n, m, logs)
	}
	if logs.count("will retry") != 2 || logs.count("mail delivered") != 1 || logs.count("mail dropped") != 0 {
		t.Fatalf("log:\n%s", logs)
	}
}

// TestQueueGivesUp: a permanent failure is tried once; a temporary one
// Attempts times; both are dropped with an error in the log.
func TestQueueGivesUp(t *testing.T) {
	for _, tc := range []struct {
		reply    string
		attempts int
	}{{"550 5.1.1 no such user", 1}, {"421 4.3.2 shutting down", 3}} {
		f := newFakeSMTP(t, &fakeSMTP{reply: func(int) string { return tc.reply }})
		log, logs := testLogger()
		q := New(&SMTP{Host: "127.0.0.1", Port: f.port(), From: "noreply@example.com"},
			Options{Backoff: time.Millisecond, Attempts: 3, Logger: log})
		q.Send(testMail)
		q.Close(context.Background())
		if n := f.dataCount(); n != tc.attempts {
			t.Errorf("%q: %d attempts, want %d", tc.reply, n, tc.attempts)
		}
		if logs.count("level=ERROR msg=\"mail dropped\"") != 1 || !strings.Contains(logs.String(), tc.reply[4:]) {
			t.Errorf("%q: log:\n%s", tc.reply, logs)
		}
	}
}

// TestQueueNeverBlocks: Send returns at once whatever the transport does;
// a full queue drops with an error; Close with a deadline cancels the
// delivery in progress and drops the rest.
func TestQueueNeverBlocks(t *testing.T) {
	started := make(chan struct{}, 1)
	stuck := &fakeTransport{DeliverFn: func(ctx context.Context, m *sluice.Email) error {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done() // a mail server that never answers
		return ctx.Err()
	}}
	log, logs := testLogger()
	q := New(stuck, Options{Size: 2, Timeout: time.Hour, Logger: log})
	for i := range 3 {
		// One message in the worker (once it started), two queued.
		if err := q.Send(&sluice.Email{To: fmt.Sprintf("u%d@example.com", i), Subject: "s"}); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if i == 0 {
			<-started
		}
	}
	if err := q.Send(&sluice.Email{To: "late@example.com", Subject: "s"}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Send to a full queue = %v, want ErrQueueFull", err)
	}
	if !strings.Contains(logs.String(), "to=late@example.com") {
		t.Fatalf("the dropped message is not logged:\n%s", logs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := q.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want DeadlineExceeded", err)
	}
	if n := logs.count(`msg="mail dropped"`); n != 4 {
		t.Fatalf("%d messages logged as dropped, want 4 (1 full, 1 in progress, 2 queued):\n%s", n, logs)
	}
	if err := q.Send(testMail); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close = %v, want ErrClosed", err)
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestQueueHangingServer: a real SMTP connection to a server that never
// speaks ends with the attempt's timeout, and Close then returns promptly.
func TestQueueHangingServer(t *testing.T) {
	f := newFakeSMTP(t, &fakeSMTP{hang: true})
	log, logs := testLogger()
	q := New(&SMTP{Host: "127.0.0.1", Port: f.port(), From: "noreply@example.com"},
		Options{Timeout: 20 * time.Millisecond, Attempts: 2, Backoff: time.Millisecond, Logger: log})
	if err := q.Send(testMail); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if logs.count("will retry") != 1 || logs.count(`msg="mail dropped"`) != 1 {
		t.Fatalf("log:\n%s", logs)
	}
}

// TestQueueDrains: Close delivers everything queued, in order.
func TestQueueDrains(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	log, _ := testLogger()
	q := New(&Outbox{Dir: dir, Logger: log}, Options{Logger: log})
	var want []string
	for i := range 20 {
		to := fmt.Sprintf("user%02d@example.com", i)
		want = append(want, to)
		if err := q.Send(&sluice.Email{To: to, Subject: "hello", Text: "hi\n"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	var got []string
	for _, n := range names {
		b, _ := os.ReadFile(n)
		for _, line := range strings.Split(string(b), "\r\n") {
			if to, ok := strings.CutPrefix(line, "To: <"); ok {
				got = append(got, strings.TrimSuffix(to, ">"))
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("outbox holds %v, want %v", got, want)
	}
}

// TestOutbox: one private file per message, a log line with the text,
// nothing half-written.
func TestOutbox(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "outbox")
	log, logs := testLogger()
	o := &Outbox{Dir: dir, Logger: log, Now: func() time.Time { return time.Date(2026, 3, 1, 10, 15, 0, 123456789, time.UTC) }}
	if err := o.Deliver(context.Background(), testMail); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("outbox directory: %v %v", fi, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("outbox: %v %v", entries, err)
	}
	name := entries[0].Name()
	if !strings.HasPrefix(name, "20260301T101500.123456789Z-") || !strings.HasSuffix(name, ".eml") {
		t.Fatalf("file name %q", name)
	}
	info, _ := entries[0].Info()
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, want 0600", info.Mode().Perm())
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	checkMessage(t, b, testMail, `"sluice" <noreply@localhost>`)
	if !strings.Contains(logs.String(), "slr_0123456789abcdefghijABCDEFGHIJ0123456789") || !strings.Contains(logs.String(), name) {
		t.Fatalf("log lacks the text or the file:\n%s", logs)
	}

	// A directory that cannot be created is an error the queue retries.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	o.Dir = filepath.Join(file, "outbox")
	if err := o.Deliver(context.Background(), testMail); err == nil || IsPermanent(err) {
		t.Fatalf("Deliver into a file = %v, want a retryable error", err)
	}
}
