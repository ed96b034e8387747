package http

import (
	"context"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice"
)

const (
	// resetQueueSize bounds the password resets waiting for the resetter;
	// more are dropped (and logged). The per-IP limit of forgot-password
	// keeps a queue this long empty in practice.
	resetQueueSize = 256
	// resetJobTimeout bounds the work of one reset (lookups, the token).
	resetJobTimeout = 10 * time.Second
)

// resetter does the part of POST /auth/forgot-password that depends on
// whether the account exists, in one goroutine off the request path: the
// per-email limit, the lookup, the token and the mail. Requests only hand
// it the email without waiting. It is safe for concurrent use.
type resetter struct {
	s    *Server
	jobs chan string

	mu     sync.RWMutex // guards closed against enqueue racing close
	closed bool

	ctx    context.Context // canceled when close gives up waiting
	cancel context.CancelFunc
	done   chan struct{}
}

func newResetter(s *Server) *resetter {
	ctx, cancel := context.WithCancel(context.Background())
	rs := &resetter{s: s, jobs: make(chan string, resetQueueSize), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go rs.loop()
	return rs
}

// enqueue hands the email to the resetter without blocking; if the queue
// is full or closed, the reset is dropped and logged.
func (rs *resetter) enqueue(ctx context.Context, email string) {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	if !rs.closed {
		select {
		case rs.jobs <- email:
			return
		default:
		}
	}
	rs.s.logger().LogAttrs(ctx, slog.LevelError, "password reset dropped: the reset queue is full or closed")
}

func (rs *resetter) loop() {
	defer close(rs.done)
	for email := range rs.jobs {
		if rs.ctx.Err() != nil {
			rs.s.logger().LogAttrs(context.Background(), slog.LevelError, "password reset dropped: shutting down")
			continue
		}
		ctx, cancel := context.WithTimeout(rs.ctx, resetJobTimeout)
		rs.s.sendReset(ctx, email)
		cancel()
	}
}

// close stops taking resets and finishes the queued ones, or drops them
// once ctx ends.
func (rs *resetter) close(ctx context.Context) {
	rs.mu.Lock()
	if !rs.closed {
		rs.closed = true
		close(rs.jobs)
	}
	rs.mu.Unlock()
	select {
	case <-rs.done:
	case <-ctx.Done():
		rs.cancel()
		<-rs.done
	}
	rs.cancel()
}

// sendReset mails a reset token to the account with the email, if there is
// one and the address has not had ForgotPasswordEmail mails already. The
// per-email limit counts unknown addresses too, and the request was
// answered 202 whatever happens here.
func (s *Server) sendReset(ctx context.Context, email string) {
	log := s.logger()
	if l := s.auth.forgotEmail.rule.Load(); !l.off {
		d, err := s.authQuota().Take(ctx, l.prefix+emailKey(email)+"}", &l.policy, 1)
		if err != nil {
			log.LogAttrs(ctx, slog.LevelWarn, "password reset not sent: the per-email limit could not be decided",
				slog.String("error", err.Error()))
			return
		}
		if !d.Allowed {
			log.LogAttrs(ctx, slog.LevelInfo, "password reset not sent: per-email limit reached",
				slog.Int64("retry_after", d.RetryAfterSeconds()))
			return
		}
	}
	a, err := s.Accounts.FindAccountByEmail(ctx, email)
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		log.LogAttrs(ctx, slog.LevelDebug, "password reset not sent: no account has the email")
		return
	} else if err != nil {
		log.LogAttrs(ctx, slog.LevelError, "password reset not sent", slog.String("error", err.Error()))
		return
	}
	if s.Mailer == nil {
		log.LogAttrs(ctx, slog.LevelWarn, "password reset not sent: no mailer configured", slog.Int64("account_id", a.ID))
		return
	}
	token := resetPrefix + sluice.RandomString(tokenLen)
	if err := s.Accounts.CreateToken(ctx, sluice.TokenPasswordReset, sluice.HashToken(token), a.ID, s.now().Add(ResetTokenTTL)); err != nil {
		log.LogAttrs(ctx, slog.LevelError, "password reset not sent", slog.Int64("account_id", a.ID), slog.String("error", err.Error()))
		return
	}
	// The mailer logs a message it cannot take.
	if err := s.Mailer.Send(resetMail(a.Email, token, s.ResetURL)); err == nil {
		log.LogAttrs(ctx, slog.LevelInfo, "password reset mail queued", slog.Int64("account_id", a.ID))
	}
}

// ResetMailSubject is the subject of password-reset mails.
const ResetMailSubject = "Reset your sluice password"

// resetMail is the password-reset mail for the token. With a reset URL it
// links to that page with the token in the query ("token"); the token is
// in the text either way, with the API call that uses it.
func resetMail(to, token, resetURL string) *sluice.Email {
	var b strings.Builder
	b.WriteString("Hello,\n\nsomeone asked to reset the password of the sluice account ")
	b.WriteString(to)
	b.WriteString(".\nIf it was you, ")
	if resetURL != "" {
		sep := "?"
		if strings.Contains(resetURL, "?") {
			sep = "&"
		}
		b.WriteString("choose a new password here:\n\n  ")
		b.WriteString(resetURL + sep + "token=" + url.QueryEscape(token))
		b.WriteString("\n\nor ")
	}
	b.WriteString("send this reset token with your new password to\nPOST /auth/reset-password:\n\n  ")
	b.WriteString(token)
	b.WriteString("\n\n  {\"token\":\"")
	b.WriteString(token)
	b.WriteString("\",\"password\":\"<new password>\"}\n\n")
	b.WriteString("The token works once, for one hour. Setting a new password logs out every\nsession of the account.\n\n")
	b.WriteString("If you did not ask for this, ignore this mail: your password stays as it is.\n")
	return &sluice.Email{To: to, Subject: ResetMailSubject, Text: b.String()}
}
