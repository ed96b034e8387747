// Package mail delivers the gateway's email (password-reset messages) in
// the background: a Queue implements sluice.Mailer over a Transport, which
// is SMTP when the deployment configures a mail server and the Outbox (the
// log plus one file per message in a directory) otherwise.
//
// A request never waits for mail. Queue.Send puts the message on a bounded
// queue and returns; one worker goroutine delivers the queue in order, each
// attempt bounded by a timeout, retrying a failed delivery with doubling
// waits unless the failure is permanent (an SMTP 5xx reply, a malformed
// address). What cannot be delivered is logged and dropped:
//
//   - a message sent while the queue is full is dropped at once, with an
//     error in the log (Send returns ErrQueueFull);
//   - a message whose attempts all failed is dropped, with an error in the
//     log;
//   - Close stops accepting messages and delivers what is queued; if its
//     context ends first, the delivery in progress is canceled and every
//     message still queued is logged as dropped.
//
// Nothing is persisted: messages queued when the process dies are lost.
// For password resets that is harmless (the user asks again).
package mail

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice"
)

// Transport delivers one message, synchronously, within ctx. An error
// wrapped by Permanent is not retried.
type Transport interface {
	Deliver(ctx context.Context, m *sluice.Email) error
}

// Defaults of Options.
const (
	DefaultQueueSize = 256
	DefaultTimeout   = 30 * time.Second
	DefaultAttempts  = 4
	DefaultBackoff   = 2 * time.Second
)

// Options tune a Queue; zero fields take the defaults.
type Options struct {
	Size     int           // messages waiting at most; more are dropped
	Timeout  time.Duration // bound of one delivery attempt
	Attempts int           // attempts per message, the first included
	Backoff  time.Duration // wait before the first retry; doubled before each next
	Logger   *slog.Logger  // nil: slog.Default()
}

// Errors of Send.
var (
	ErrQueueFull = errors.New("mail: queue full; message dropped")
	ErrClosed    = errors.New("mail: mailer closed; message dropped")
)

// Queue is a sluice.Mailer that delivers through a Transport in a
// background goroutine. It is safe for concurrent use. Close it to deliver
// what is queued and stop the goroutine.
type Queue struct {
	t   Transport
	o   Options
	log *slog.Logger

	mu     sync.RWMutex // guards closed against Send racing Close
	closed bool
	ch     chan *sluice.Email

	// ctx is canceled when Close gives up waiting: the delivery in
	// progress stops and the rest is dropped.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

var _ sluice.Mailer = (*Queue)(nil)

// New returns a Queue over t and starts its worker.
func New(t Transport, o Options) *Queue {
	if o.Size <= 0 {
		o.Size = DefaultQueueSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultAttempts
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	q := &Queue{t: t, o: o, log: log, ch: make(chan *sluice.Email, o.Size), ctx: ctx, cancel: cancel,
		done: make(chan struct{})}
	go q.loop()
	return q
}

// Send queues a copy of m and returns at once, without waiting for any
// part of the delivery. If the queue is full or closed the message is
// dropped and the error logged.
func (q *Queue) Send(m *sluice.Email) error {
	c := *m
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		q.drop(&c, ErrClosed)
		return ErrClosed
	}
	select {
	case q.ch <- &c:
		return nil
	default:
		q.drop(&c, ErrQueueFull)
		return ErrQueueFull
	}
}

// Close stops accepting messages and waits until the queued ones are
// delivered or ctx ends; then it cancels the delivery in progress, drops
// (and logs) the rest, and returns ctx's error. Close may be called more
// than once.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	select {
	case <-q.done:
		q.cancel()
		return nil
	case <-ctx.Done():
		q.cancel()
		<-q.done
		return ctx.Err()
	}
}

func (q *Queue) loop() {
	defer close(q.done)
	for m := range q.ch {
		if q.ctx.Err() != nil {
			q.drop(m, errors.New("mailer closed before the message was delivered"))
			continue
		}
		q.deliver(m)
	}
}

// deliver tries m up to Attempts times.
func (q *Queue) deliver(m *sluice.Email) {
	wait := q.o.Backoff
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(q.ctx, q.o.Timeout)
		err := q.t.Deliver(ctx, m)
		cancel()
		switch {
		case err == nil:
			q.log.LogAttrs(q.ctx, slog.LevelInfo, "mail delivered",
				slog.String("to", m.To), slog.String("subject", m.Subject), slog.Int("attempt", attempt))
			return
		case q.ctx.Err() != nil:
			q.drop(m, fmt.Errorf("mailer closed during delivery: %w", err))
			return
		case IsPermanent(err):
			q.drop(m, err)
			return
		case attempt >= q.o.Attempts:
			q.drop(m, fmt.Errorf("%d attempts failed, the last with: %w", attempt, err))
			return
		}
		q.log.LogAttrs(q.ctx, slog.LevelWarn, "mail delivery failed; will retry",
			slog.String("to", m.To), slog.String("subject", m.Subject), slog.Int("attempt", attempt),
			slog.Duration("retry_in", wait), slog.String("error", err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-q.ctx.Done():
			t.Stop()
			q.drop(m, fmt.Errorf("mailer closed while waiting to retry: %w", err))
			return
		}
		wait *= 2
	}
}

func (q *Queue) drop(m *sluice.Email, err error) {
	q.log.LogAttrs(context.Background(), slog.LevelError, "mail dropped",
		slog.String("to", m.To), slog.String("subject", m.Subject), slog.String("error", err.Error()))
}

// permanentError is a delivery failure that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as a failure that a retry would repeat, so that the
// Queue drops the message at once. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err is (or wraps) an error from Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// DefaultFrom is the sender of the Outbox's messages when none is set.
const DefaultFrom = "sluice <noreply@localhost>"

// format returns m as an RFC 5322 message from from, dated date, with CRLF
// line endings: UTF-8 plain text in quoted-printable, so that any body
// survives any mail server. The recipient must be a bare address; header
// values cannot carry line breaks (the subject is encoded as needed).
func format(from *mail.Address, m *sluice.Email, date time.Time) ([]byte, error) {
	to, err := mail.ParseAddress(m.To)
	if err != nil || to.Name != "" || to.Address != m.To {
		return nil, fmt.Errorf("invalid recipient %q", m.To)
	}
	var b bytes.Buffer
	header := func(k, v string) {
		b.WriteString(k)
		b.WriteString(": ")
		b.WriteString(v)
		b.WriteString("\r\n")
	}
	header("From", from.String())
	header("To", to.String())
	header("Subject", mime.QEncoding.Encode("utf-8", m.Subject))
	header("Date", date.Format(time.RFC1123Z))
	header("Message-ID", "<"+randomHex(16)+"@"+domainOf(from.Address)+">")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	w := quotedprintable.NewWriter(&b)
	if _, err := w.Write([]byte(m.Text)); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	return b.Bytes(), nil
}

// parseFrom parses a sender like "Sluice <noreply@example.com>".
func parseFrom(s string) (*mail.Address, error) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("invalid sender %q: %w", s, err)
	}
	return a, nil
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 && i+1 < len(addr) {
		return addr[i+1:]
	}
	return "localhost"
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}
