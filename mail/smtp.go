package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"strconv"
	"time"

	"github.com/sluicehq/sluice"
)

// DefaultSMTPPort is the submission port, where STARTTLS is expected.
const DefaultSMTPPort = 587

// SMTP is a Transport that submits each message to a mail server in a
// connection of its own.
//
// Encryption: on port 465 the connection is TLS from the start; on any other
// port the session is upgraded with STARTTLS, and a server that does not
// offer STARTTLS is refused unless it is on a loopback address (a local
// relay), so that neither the password nor the reset token ever crosses a
// network in the clear. Credentials, when Username is set, are sent with
// AUTH PLAIN over the encrypted session.
//
// The zero value is not usable: set Host and From. An SMTP is safe for
// concurrent use.
type SMTP struct {
	Host     string
	Port     int // 0 means DefaultSMTPPort
	Username string
	Password string
	From     string // "Sluice <noreply@example.com>"
	// TLSConfig verifies the server; nil means the system's roots with
	// Host as the server name.
	TLSConfig *tls.Config
	// LocalName is the name sent in EHLO; empty means "localhost".
	LocalName string
	// Now dates messages; nil means time.Now.
	Now func() time.Time

	// dial replaces net.Dialer in tests, to reach a fake server under a
	// name that is not a loopback address.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

var _ Transport = (*SMTP)(nil)

// Deliver submits m within ctx. 5xx replies and configuration problems are
// Permanent; everything else (connection failures, timeouts, 4xx replies)
// may be retried.
func (s *SMTP) Deliver(ctx context.Context, m *sluice.Email) error {
	if err := s.deliver(ctx, m); err != nil {
		var tp *textproto.Error
		if errors.As(err, &tp) && tp.Code >= 500 && tp.Code < 600 {
			err = Permanent(err)
		}
		return err
	}
	return nil
}

func (s *SMTP) deliver(ctx context.Context, m *sluice.Email) error {
	from, err := parseFrom(s.From)
	if err != nil {
		return Permanent(fmt.Errorf("smtp: %w", err))
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	msg, err := format(from, m, now())
	if err != nil {
		return Permanent(fmt.Errorf("smtp: %w", err))
	}
	c, done, err := s.session(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := c.Mail(from.Address); err != nil {
		return fmt.Errorf("smtp: MAIL FROM: %w", err)
	}
	if err := c.Rcpt(m.To); err != nil {
		return fmt.Errorf("smtp: RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp: DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("smtp: DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp: DATA: %w", err)
	}
	// The message is accepted; a failing QUIT changes nothing.
	c.Quit()
	return nil
}

// Check opens a session as Deliver does (connection, greeting, EHLO, TLS,
// AUTH when a Username is set) and ends it with QUIT without sending
// anything: `sluice doctor` uses it to find a wrong host, port, certificate
// or password before the first mail does.
func (s *SMTP) Check(ctx context.Context) error {
	c, done, err := s.session(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := c.Quit(); err != nil {
		return fmt.Errorf("smtp: QUIT: %w", err)
	}
	return nil
}

// session connects, greets, encrypts and authenticates; done closes the
// connection.
func (s *SMTP) session(ctx context.Context) (c *smtp.Client, done func(), err error) {
	port := s.Port
	if port == 0 {
		port = DefaultSMTPPort
	}
	addr := net.JoinHostPort(s.Host, strconv.Itoa(port))

	dial := (&net.Dialer{}).DialContext
	if s.dial != nil {
		dial = s.dial
	}
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("smtp: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	// Every read and write of the session ends with ctx: by its deadline,
	// or at once when it is canceled.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !ok {
			stop()
		}
	}()

	tlsConfig := s.tlsConfig()
	implicitTLS := port == 465
	if implicitTLS {
		tc := tls.Client(conn, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, nil, fmt.Errorf("smtp: tls: %w", err)
		}
		conn = tc
	}
	c, err = smtp.NewClient(conn, s.Host)
	if err != nil {
		return nil, nil, fmt.Errorf("smtp: greeting of %s: %w", addr, err)
	}
	local := s.LocalName
	if local == "" {
		local = "localhost"
	}
	if err := c.Hello(local); err != nil {
		return nil, nil, fmt.Errorf("smtp: EHLO: %w", err)
	}
	if !implicitTLS {
		if ok, _ := c.Extension("STARTTLS"); ok {
			if err := c.StartTLS(tlsConfig); err != nil {
				return nil, nil, fmt.Errorf("smtp: STARTTLS: %w", err)
			}
		} else if !isLoopback(s.Host) {
			return nil, nil, Permanent(fmt.Errorf("smtp: %s does not offer STARTTLS; refusing to send mail in the clear", addr))
		}
	}
	if s.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return nil, nil, Permanent(fmt.Errorf("smtp: %s does not offer AUTH, but a username is configured", addr))
		}
		if err := c.Auth(smtp.PlainAuth("", s.Username, s.Password, s.Host)); err != nil {
			return nil, nil, fmt.Errorf("smtp: AUTH: %w", err)
		}
	}
	ok = true
	return c, func() { stop(); c.Close() }, nil
}

func (s *SMTP) tlsConfig() *tls.Config {
	if s.TLSConfig != nil {
		c := s.TLSConfig.Clone()
		if c.ServerName == "" {
			c.ServerName = s.Host
		}
		return c
	}
	return &tls.Config{ServerName: s.Host, MinVersion: tls.VersionTLS12}
}

// isLoopback reports whether host is "localhost" or a loopback IP.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
