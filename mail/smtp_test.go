package mail

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"math/big"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

// testTLS returns a server certificate for 127.0.0.1, localhost and
// mail.example.com, and a client config that trusts it.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fake smtp"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost", "mail.example.com"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		&tls.Config{RootCAs: pool}
}

// received is a message the fake server accepted.
type received struct {
	from, to string
	data     []byte
	tls      bool   // the session was encrypted when DATA came
	user     string // the AUTH PLAIN identity, if any
}

// fakeSMTP is a tiny SMTP server on 127.0.0.1: EHLO, STARTTLS (when tls is
// set), AUTH PLAIN (when user is set), MAIL, RCPT, DATA, RSET, NOOP, QUIT.
type fakeSMTP struct {
	t    *testing.T
	ln   net.Listener
	tls  *tls.Config // nil: STARTTLS is not offered
	user string      // "": AUTH is not offered
	pass string
	// reply answers the end of the n-th DATA (from 1); nil means "250 OK".
	reply func(n int) string
	// hang: accept connections but never say anything.
	hang bool

	mu    sync.Mutex
	n     int // DATA commands seen
	msgs  []received
	conns sync.WaitGroup
}

func newFakeSMTP(t *testing.T, f *fakeSMTP) *fakeSMTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.t, f.ln = t, ln
	var open sync.Map
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			open.Store(c, true)
			f.conns.Add(1)
			go func() {
				defer f.conns.Done()
				defer open.Delete(c)
				f.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		open.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		f.conns.Wait()
	})
	return f
}

func (f *fakeSMTP) port() int { return f.ln.Addr().(*net.TCPAddr).Port }

func (f *fakeSMTP) messages() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]received(nil), f.msgs...)
}

func (f *fakeSMTP) dataCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *fakeSMTP) serve(conn net.Conn) {
	defer conn.Close()
	if f.hang {
		io.Copy(io.Discard, conn)
		return
	}
	tp := textproto.NewConn(conn)
	tp.PrintfLine("220 fake.example.com ESMTP")
	var (
		cur     received
		secured bool
		user    string
	)
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO":
			lines := []string{"fake.example.com"}
			if f.tls != nil && !secured {
				lines = append(lines, "STARTTLS")
			}
			if f.user != "" {
				lines = append(lines, "AUTH PLAIN")
			}
			lines = append(lines, "8BITMIME")
			for i, l := range lines {
				sep := "-"
				if i == len(lines)-1 {
					sep = " "
				}
				tp.PrintfLine("250%s%s", sep, l)
			}
		case "STARTTLS":
			if f.tls == nil || secured {
				tp.PrintfLine("502 no")
				continue
			}
			tp.PrintfLine("220 go ahead")
			tc := tls.Server(conn, f.tls)
			if err := tc.Handshake(); err != nil {
				return
			}
			conn, tp, secured = tc, textproto.NewConn(tc), true
		case "AUTH":
			mech, resp, _ := strings.Cut(arg, " ")
			b, err := base64.StdEncoding.DecodeString(resp)
			parts := strings.Split(string(b), "\x00")
			if !strings.EqualFold(mech, "PLAIN") || err != nil || len(parts) != 3 || parts[1] != f.user || parts[2] != f.pass {
				tp.PrintfLine("535 5.7.8 bad credentials")
				continue
			}
			user = parts[1]
			tp.PrintfLine("235 2.7.0 ok")
		case "MAIL":
			if f.user != "" && user == "" {
				tp.PrintfLine("530 5.7.0 authentication required")
				continue
			}
			cur = received{from: pathOf(arg)}
			tp.PrintfLine("250 ok")
		case "RCPT":
			cur.to = pathOf(arg)
			tp.PrintfLine("250 ok")
		case "DATA":
			tp.PrintfLine("354 go ahead")
			data, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.n++
			n := f.n
			f.mu.Unlock()
			reply := "250 2.0.0 queued"
			if f.reply != nil {
				reply = f.reply(n)
			}
			if strings.HasPrefix(reply, "250") {
				cur.data, cur.tls, cur.user = data, secured, user
				f.mu.Lock()
				f.msgs = append(f.msgs, cur)
				f.mu.Unlock()
			}
			tp.PrintfLine("%s", reply)
		case "RSET", "NOOP":
			tp.PrintfLine("250 ok")
		case "QUIT":
			tp.PrintfLine("221 bye")
			return
		default:
			tp.PrintfLine("502 unknown command")
		}
	}
}

// pathOf returns the address of "FROM:<a@b> BODY=8BITMIME".
func pathOf(arg string) string {
	_, rest, _ := strings.Cut(arg, "<")
	addr, _, _ := strings.Cut(rest, ">")
	return addr
}

var testMail = &sluice.Email{
	To:      "ada@example.com",
	Subject: "Reset your sluice password",
	Text:    "Your token:\n\n  slr_0123456789abcdefghijABCDEFGHIJ0123456789\n\nA long line that goes on and on beyond seventy-six characters, so that quoted-printable must wrap it = and an equals sign.\nUnicode: é漢字\n.\n..a line starting with dots\n",
}

// checkMessage parses an RFC 5322 message and compares what a reader sees
// with the Email.
func checkMessage(t *testing.T, data []byte, m *sluice.Email, from string) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("message does not parse: %v\n%s", err, data)
	}
	dec := new(mime.WordDecoder)
	subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
	if err != nil || subject != m.Subject {
		t.Errorf("Subject = %q (%v), want %q", subject, err, m.Subject)
	}
	if got := msg.Header.Get("From"); got != from {
		t.Errorf("From = %q, want %q", got, from)
	}
	if got, err := msg.Header.AddressList("To"); err != nil || len(got) != 1 || got[0].Address != m.To {
		t.Errorf("To = %v (%v), want %s", got, err, m.To)
	}
	if _, err := msg.Header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	if msg.Header.Get("Message-Id") == "" || msg.Header.Get("Content-Transfer-Encoding") != "quoted-printable" {
		t.Errorf("headers: %v", msg.Header)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.ReplaceAll(string(body), "\r\n", "\n"); got != m.Text {
		t.Errorf("body\n got %q\nwant %q", got, m.Text)
	}
	for i, line := range strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n") {
		if len(line) > 78 {
			t.Errorf("line %d is %d bytes long", i, len(line))
		}
	}
}

// TestSMTPStartTLS: the session is upgraded with STARTTLS, the credentials
// go over it, and the message arrives whole, dots and all.
func TestSMTPStartTLS(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	f := newFakeSMTP(t, &fakeSMTP{tls: srvTLS, user: "mailer", pass: "hunter2"})
	s := &SMTP{Host: "127.0.0.1", Port: f.port(), Username: "mailer", Password: "hunter2",
		From: "Sluice <noreply@example.com>", TLSConfig: cliTLS}
	if err := s.Deliver(context.Background(), testMail); err != nil {
		t.Fatal(err)
	}
	msgs := f.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	got := msgs[0]
	if !got.tls || got.user != "mailer" || got.from != "noreply@example.com" || got.to != "ada@example.com" {
		t.Fatalf("received %+v", got)
	}
	checkMessage(t, got.data, testMail, `"Sluice" <noreply@example.com>`)
}

// TestSMTPRemoteNeedsTLS: a server that is not on a loopback address and
// does not offer STARTTLS gets nothing, and the error is permanent.
func TestSMTPRemoteNeedsTLS(t *testing.T) {
	f := newFakeSMTP(t, &fakeSMTP{})
	s := &SMTP{Host: "mail.example.com", Port: 587, From: "noreply@example.com",
		dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, f.ln.Addr().String())
		}}
	err := s.Deliver(context.Background(), testMail)
	if err == nil || !IsPermanent(err) || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("Deliver = %v, want a permanent STARTTLS error", err)
	}
	if f.dataCount() != 0 {
		t.Fatal("the message was sent in the clear")
	}

	// The same name with STARTTLS: verified against the name, delivered.
	srvTLS, cliTLS := testTLS(t)
	f2 := newFakeSMTP(t, &fakeSMTP{tls: srvTLS})
	s.TLSConfig = cliTLS
	s.dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, f2.ln.Addr().String())
	}
	if err := s.Deliver(context.Background(), testMail); err != nil {
		t.Fatal(err)
	}
	if m := f2.messages(); len(m) != 1 || !m[0].tls {
		t.Fatalf("received %+v", m)
	}

	// An untrusted certificate fails the handshake (retryable: it may be
	// a passing misconfiguration) and sends nothing.
	s.TLSConfig = nil
	if err := s.Deliver(context.Background(), testMail); err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("with an untrusted certificate: %v", err)
	}
	if len(f2.messages()) != 1 {
		t.Fatal("a message went to a server whose certificate is not trusted")
	}
}

// TestSMTPLoopbackPlain: a local relay without STARTTLS is fine.
func TestSMTPLoopbackPlain(t *testing.T) {
	f := newFakeSMTP(t, &fakeSMTP{})
	s := &SMTP{Host: "127.0.0.1", Port: f.port(), From: "noreply@example.com"}
	if err := s.Deliver(context.Background(), testMail); err != nil {
		t.Fatal(err)
	}
	if m := f.messages(); len(m) != 1 || m[0].tls {
		t.Fatalf("received %+v", m)
	}
}

// TestSMTPReplies: 5xx replies are permanent, 4xx are not.
func TestSMTPReplies(t *testing.T) {
	for _, tc := range []struct {
		reply     string
		permanent bool
	}{{"451 4.3.0 try again later", false}, {"550 5.1.1 no such user", true}} {
		f := newFakeSMTP(t, &fakeSMTP{reply: func(int) string { return tc.reply }})
		s := &SMTP{Host: "127.0.0.1", Port: f.port(), From: "noreply@example.com"}
		err := s.Deliver(context.Background(), testMail)
		if err == nil || IsPermanent(err) != tc.permanent {
			t.Errorf("reply %q: Deliver = %v, permanent %v", tc.reply, err, IsPermanent(err))
		}
	}
	// Wrong credentials: the server's 535 is permanent.
	srvTLS, cliTLS := testTLS(t)
	f := newFakeSMTP(t, &fakeSMTP{tls: srvTLS, user: "mailer", pass: "hunter2"})
	s := &SMTP{Host: "127.0.0.1", Port: f.port(), Username: "mailer", Password: "wrong",
		From: "noreply@example.com", TLSConfig: cliTLS}
	if err := s.Deliver(context.Background(), testMail); !IsPermanent(err) {
		t.Errorf("wrong password: %v", err)
	}
}

// TestSMTPHangingServer: a server that never answers costs one attempt's
// timeout, not forever.
func TestSMTPHangingServer(t *testing.T) {
	f := newFakeSMTP(t, &fakeSMTP{hang: true})
	s := &SMTP{Host: "127.0.0.1", Port: f.port(), From: "noreply@example.com"}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := s.Deliver(ctx, testMail)
	var ne net.Error
	if err == nil || IsPermanent(err) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Deliver = %v, want a timeout", err)
	}

	// Canceling (rather than a deadline) ends the session too.
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Deliver(ctx, testMail) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-done; err == nil {
		t.Fatal("Deliver succeeded against a silent server")
	}
}

// TestSMTPBadConfig: a malformed sender or recipient is permanent and
// connects to nothing.
func TestSMTPBadConfig(t *testing.T) {
	s := &SMTP{Host: "127.0.0.1", Port: 1, From: "not an address"}
	if err := s.Deliver(context.Background(), testMail); !IsPermanent(err) {
		t.Fatalf("bad From: %v", err)
	}
	s.From = "noreply@example.com"
	for _, to := range []string{"", "Ada <ada@example.com>", "ada@example.com\r\nBcc: eve@example.com", " ada@example.com"} {
		if err := s.Deliver(context.Background(), &sluice.Email{To: to, Subject: "x", Text: "y"}); !IsPermanent(err) {
			t.Errorf("To %q: %v", to, err)
		}
	}
}

// TestFormatHeaders: a subject cannot inject headers; the body cannot end
// the DATA section early (dot-stuffing is net/smtp's, checked above).
func TestFormatHeaders(t *testing.T) {
	from, _ := mail.ParseAddress("noreply@example.com")
	b, err := format(from, &sluice.Email{To: "a@example.com", Subject: "hi\r\nBcc: eve@example.com", Text: "x"}, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get("Bcc") != "" {
		t.Fatalf("header injected:\n%s", b)
	}
}

// TestSMTPCheck: Check opens and ends a session, authenticated when a
// username is set, and sends no message; a wrong password and a closed
// port fail.
func TestSMTPCheck(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	f := newFakeSMTP(t, &fakeSMTP{tls: srvTLS, user: "mailer", pass: "hunter2"})
	ok := &SMTP{Host: "127.0.0.1", Port: f.port(), Username: "mailer", Password: "hunter2", TLSConfig: cliTLS}
	if err := ok.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if m := f.messages(); len(m) != 0 {
		t.Fatalf("Check sent %d messages", len(m))
	}
	bad := *ok
	bad.Password = "wrong"
	if err := bad.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "AUTH") {
		t.Fatalf("wrong password: %v", err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	closed := &SMTP{Host: "127.0.0.1", Port: port}
	if err := closed.Check(context.Background()); err == nil {
		t.Fatal("Check on a closed port succeeded")
	}
}
