package http

import (
	"bytes"
	"context"
	"crypto/sha256"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
)

// Idempotency of image requests (CONTRACT.md §9). Decisions the contract
// leaves open:
//
//   - The fingerprint of a request is its method, its route and the SHA-256
//     of its body, byte for byte (two bodies that differ only in spacing are
//     different requests). /v1/images/generations and
//     /openai/v1/images/generations are one route: their 200 answers are the
//     same bytes, so a retry through the other family is replayed too.
//   - The key is checked (1 to 255 printable ASCII characters, one header)
//     right after the API key, so a bad key is a 400 naming the field
//     "Idempotency-Key" before the body is read.
//   - The claim is taken after the body and the model are checked and
//     before the quota: requests refused for those reasons keep nothing.
//     It is a lease of Idempotency.Lease, renewed every third of it while
//     the request is served, so a request is never taken over however long
//     it runs (unless the store cannot be reached for a whole lease).
//   - Once the quota is taken, the claim records the charge (units and
//     instant), off the request's path, once the quota's counters hold it
//     whatever happens (sluice.SyncQuota: the embedded store writes the
//     account's counters first). If the instance serving it stops
//     (a crash, a kill), a retry of the same request after the lease takes
//     the claim over and inherits the charge: it is served without a new
//     charge, and a failure refunds the inherited one. A retry with another
//     body gets 422 while the charge holds (Idempotency.TTL). Left open: a
//     crash between the counters' write (the quota's take; with the
//     embedded store, the sync) and that record (one write to the account
//     store), after which the retry is charged again; and a
//     charge that an instance took from its local fallback during an
//     outage of the shared quota store, whose refund by another instance
//     goes to the shared store.
//   - A refund abandons the claim first, so that no retry inherits a
//     charge given back; a crash between the two leaves the charge
//     counted and the retry charged anew.
//   - A 200 whose body is over Idempotency.MaxBody is kept without its body:
//     a retry is answered 422 idempotency_key_reused saying so, and is not
//     charged again (sluice cannot know whether the first answer arrived;
//     the user decides whether to pay for a new request with a new key).
//   - If the store cannot be reached when the claim is taken, the request
//     fails (500) rather than risk a second charge.

// Defaults of the Idempotency fields.
const (
	// DefaultIdempotencyLease is how long the claim of a crashed instance
	// holds a key; a claim being served is renewed every third of it.
	DefaultIdempotencyLease = 15 * time.Second
	// idempotencyStoreTimeout bounds Complete and Abandon, which run even
	// when the client has gone away.
	idempotencyStoreTimeout = 10 * time.Second
)

// Idempotency configures the Idempotency-Key of image requests.
type Idempotency struct {
	// Store keeps the claims and answers; nil: the header is ignored.
	Store sluice.IdempotencyStore
	// TTL is how long a 200 is replayed; 0 means
	// sluice.DefaultIdempotencyTTL.
	TTL time.Duration
	// MaxBody bounds the body kept; 0 means
	// sluice.DefaultIdempotencyMaxBody.
	MaxBody int64
	// Lease is how long a claim is in flight, unless renewed, before
	// another attempt may take it over; 0 means DefaultIdempotencyLease.
	// The request that holds it renews it every Lease/3; should the
	// store be unreachable for a whole Lease, the request may be served
	// twice.
	Lease time.Duration
}

func (c *Idempotency) ttl() time.Duration   { return cmpOr(c.TTL, sluice.DefaultIdempotencyTTL) }
func (c *Idempotency) maxBody() int64       { return cmpOr(c.MaxBody, sluice.DefaultIdempotencyMaxBody) }
func (c *Idempotency) lease() time.Duration { return cmpOr(c.Lease, DefaultIdempotencyLease) }
func cmpOr[T int64 | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// idemRequest is a keyed request whose body is being hashed as it is read.
type idemRequest struct {
	key  string
	body hash.Hash
}

// hashedBody is a request body that feeds what is read of it to a hash.
type hashedBody struct {
	io.Reader
	io.Closer
}

// parseIdempotencyKey returns the Idempotency-Key of h: "" if there is none,
// an EINVALID error naming the header if it is not one value of 1 to
// sluice.MaxIdempotencyKey printable ASCII characters.
func parseIdempotencyKey(h http.Header) (string, error) {
	vs := h.Values("Idempotency-Key")
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", sluice.FieldError("Idempotency-Key", "Send one Idempotency-Key header, not %d.", len(vs))
	case !sluice.ValidIdempotencyKey(vs[0]):
		return "", sluice.FieldError("Idempotency-Key", "Idempotency-Key must be 1 to %d printable ASCII characters.", sluice.MaxIdempotencyKey)
	}
	return vs[0], nil
}

// idempotencyKey reads and checks the request's Idempotency-Key and starts
// hashing its body. It returns nil if the request has no key or the Server
// keeps no answers; on a bad key it has answered the request (ok false).
func (s *Server) idempotencyKey(w http.ResponseWriter, r *http.Request, q *quotaCtx) (ir *idemRequest, ok bool) {
	if s.Idempotency.Store == nil {
		return nil, true
	}
	key, err := parseIdempotencyKey(r.Header)
	if err != nil {
		s.failWithUsage(w, r, q, err)
		return nil, false
	}
	if key == "" {
		return nil, true
	}
	ir = &idemRequest{key: key, body: sha256.New()}
	r.Body = hashedBody{io.TeeReader(r.Body, ir.body), r.Body}
	return ir, true
}

// idemClaim is the claim of a keyed request being served. Its methods do
// nothing on a nil claim (a request without a key). Not safe for concurrent
// use: one handler goroutine owns it.
type idemClaim struct {
	s       *Server
	r       *http.Request
	rec     *sluice.IdempotencyRecord
	buf     bytes.Buffer // the relayed body, while it fits
	over    bool         // the relayed body did not fit
	settled bool         // completed or abandoned
	// stop ends the renewal of the lease, which closes done when it has
	// returned; charges carries the charge to record to it.
	stop, done chan struct{}
	charges    chan chargeMark
}

// chargeMark is a charge for the claim to record: units at an instant,
// of the quota key key.
type chargeMark struct {
	key   string
	units int64
	at    time.Time
}

// begin claims the key for the request, whose body has been read whole. If
// the key holds a kept answer, an answer in flight, or another request, it
// answers the request (replay, 409, 422) and returns ok false.
func (ir *idemRequest) begin(s *Server, w http.ResponseWriter, r *http.Request, q *quotaCtx) (c *idemClaim, ok bool) {
	if ir == nil {
		return nil, true
	}
	var sum [sha256.Size]byte
	ir.body.Sum(sum[:0])
	now := s.now()
	rec := &sluice.IdempotencyRecord{
		AccountID:   q.account.ID,
		Key:         ir.key,
		Fingerprint: sluice.NewFingerprint(r.Method, strings.TrimPrefix(r.URL.Path, "/openai"), sum),
		Token:       sluice.RandomString(22),
		ExpiresAt:   now.Add(s.Idempotency.lease()),
	}
	got, claimed, err := s.Idempotency.Store.Begin(r.Context(), rec, now)
	if err != nil {
		s.failWithUsage(w, r, q, err)
		return nil, false
	}
	if claimed {
		c := &idemClaim{s: s, r: r, rec: got}
		c.renew()
		return c, true
	}
	outcome := "replayed"
	switch {
	case got.Fingerprint != rec.Fingerprint:
		outcome = "reused"
		s.peekHeaders(w, r, q)
		s.writeError(w, r, &apiError{Code: sluice.EIDEMREUSED,
			Message: "This Idempotency-Key was used with a different request; use a new key for a new request."})
	case !got.Done:
		outcome = "in_progress"
		s.peekHeaders(w, r, q)
		s.writeError(w, r, &apiError{Code: sluice.EIDEMINFLIGHT,
			Message: "A request with this Idempotency-Key is still being served; retry in a second."})
	case got.Oversize:
		outcome = "reused"
		s.peekHeaders(w, r, q)
		s.writeError(w, r, &apiError{Code: sluice.EIDEMREUSED,
			Message: "The request with this Idempotency-Key was served and charged, but its answer was too large to keep for a replay; send a new Idempotency-Key to generate again."})
	default:
		s.replay(w, r, q, got)
	}
	s.metrics.idem.WithLabelValues(outcome).Inc()
	return nil, false
}

// replay answers with a kept answer: its status, Content-Type and body as
// they were, Idempotent-Replayed: true, and the account's quota headers as
// they are now. It charges nothing.
func (s *Server) replay(w http.ResponseWriter, r *http.Request, q *quotaCtx, rec *sluice.IdempotencyRecord) {
	s.peekHeaders(w, r, q)
	h := w.Header()
	if rec.ContentType != "" {
		h["Content-Type"] = []string{rec.ContentType}
	}
	h["Idempotent-Replayed"] = []string{"true"}
	w.WriteHeader(rec.Status)
	w.Write(rec.Body)
}

// renew starts renewing the claim's lease every third of it, until
// stopRenewing, and records the charge that charged hands it. A call that
// finds the claim gone (taken over after the store was unreachable for a
// whole lease) stops it; other failures are logged and tried again at the
// next tick.
func (c *idemClaim) renew() {
	c.stop, c.done, c.charges = make(chan struct{}), make(chan struct{}), make(chan chargeMark, 1)
	s, lease := c.s, c.s.Idempotency.lease()
	// failed logs a failure of op and reports whether the claim is gone.
	failed := func(op string, err error) bool {
		if err == nil {
			return false
		}
		s.logger().LogAttrs(context.Background(), slog.LevelWarn, op+" the claim of an idempotent request failed",
			slog.String("request_id", requestID(c.r)), slog.Int64("account_id", c.rec.AccountID),
			slog.String("error", err.Error()))
		return sluice.ErrorCode(err) == sluice.ENOTFOUND
	}
	go func() {
		defer close(c.done)
		t := time.NewTicker(lease / 3)
		defer t.Stop()
		var pending *chargeMark // a charge not recorded yet
		for {
			select {
			case <-c.stop:
				return
			case m := <-c.charges:
				pending = &m
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), lease/3)
				err := s.Idempotency.Store.Extend(ctx, c.rec.AccountID, c.rec.Key, c.rec.Token, s.now().Add(lease))
				cancel()
				if failed("renewing", err) {
					return
				}
			}
			if pending != nil {
				// The counters first: a charge that a crash took from
				// them must not be inherited (served free).
				ctx, cancel := context.WithTimeout(context.Background(), lease/3)
				op, err := "syncing the counters for", sluice.SyncQuota(ctx, s.Quota, pending.key)
				if err == nil {
					op, err = "recording the charge of", s.Idempotency.Store.Charge(ctx, c.rec.AccountID, c.rec.Key, c.rec.Token, pending.units, pending.at, pending.at.Add(s.Idempotency.ttl()))
				}
				cancel()
				if err == nil {
					pending = nil
				} else if failed(op, err) {
					return
				}
			}
		}
	}()
}

// charged has the claim record that its request took n units of the quota
// key key at the instant at, off the request's path (by the renewal's
// goroutine).
func (c *idemClaim) charged(key string, n int64, at time.Time) {
	if c == nil || c.charges == nil {
		return
	}
	select {
	case c.charges <- chargeMark{key, n, at}:
	default: // one charge a request: never blocks
	}
}

// inherited reports the charge that the claim took over from an attempt
// whose instance stopped serving the same request: units at the instant at.
func (c *idemClaim) inherited() (units int64, at time.Time, ok bool) {
	if c == nil || c.rec.Charged <= 0 {
		return 0, time.Time{}, false
	}
	return c.rec.Charged, c.rec.ChargedAt, true
}

// stopRenewing stops the renewal of the lease and waits for it.
func (c *idemClaim) stopRenewing() {
	if c.stop != nil {
		close(c.stop)
		<-c.done
		c.stop = nil
	}
}

// tee returns w, and on a claim a writer that also keeps what is written,
// up to Idempotency.MaxBody.
func (c *idemClaim) tee(w io.Writer) io.Writer {
	if c == nil {
		return w
	}
	return teeWriter{w, c}
}

type teeWriter struct {
	w io.Writer
	c *idemClaim
}

func (t teeWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	c := t.c
	if !c.over {
		if int64(c.buf.Len()+n) > c.s.Idempotency.maxBody() {
			c.over = true
			c.buf = bytes.Buffer{} // let it go
		} else {
			c.buf.Write(p[:n])
		}
	}
	return n, err
}

// complete keeps the answer that was relayed whole: status, content type and
// the body the tee kept (or, over the bound, the mark that it was not
// kept), for Idempotency.TTL. A failure is logged; the claim then ends
// with its lease.
func (c *idemClaim) complete(status int, contentType string) {
	if c == nil || c.settled {
		return
	}
	c.settled = true
	c.stopRenewing()
	s := c.s
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.r.Context()), idempotencyStoreTimeout)
	defer cancel()
	d := *c.rec
	d.Done, d.Status, d.ContentType, d.Oversize = true, status, contentType, c.over
	d.Body = c.buf.Bytes()
	d.ExpiresAt = s.now().Add(s.Idempotency.ttl())
	if err := s.Idempotency.Store.Complete(ctx, &d); err != nil {
		s.logger().LogAttrs(ctx, slog.LevelWarn, "keeping the answer of an idempotent request failed",
			slog.String("request_id", requestID(c.r)), slog.Int64("account_id", d.AccountID),
			slog.String("error", err.Error()))
	}
	outcome := "kept"
	if c.over {
		outcome = "oversize"
	}
	s.metrics.idem.WithLabelValues(outcome).Inc()
	if c.over {
		s.logger().LogAttrs(ctx, slog.LevelWarn, "answer of an idempotent request too large to keep; a retry gets 422",
			slog.String("request_id", requestID(c.r)), slog.Int64("account_id", d.AccountID),
			slog.Int64("max_body", s.Idempotency.maxBody()))
	}
}

// abandon deletes the claim unless it was completed, so that a retry is a
// new attempt. It is deferred by the handler: every way out that does not
// complete (a 429, a 503, a refunded failure, a panic) abandons.
func (c *idemClaim) abandon() {
	if c == nil || c.settled {
		return
	}
	c.settled = true
	c.stopRenewing()
	c.s.metrics.idem.WithLabelValues("abandoned").Inc()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.r.Context()), idempotencyStoreTimeout)
	defer cancel()
	if err := c.s.Idempotency.Store.Abandon(ctx, c.rec.AccountID, c.rec.Key, c.rec.Token); err != nil {
		c.s.logger().LogAttrs(ctx, slog.LevelWarn, "abandoning the claim of an idempotent request failed; it ends with its lease",
			slog.String("request_id", requestID(c.r)), slog.Int64("account_id", c.rec.AccountID),
			slog.String("error", err.Error()))
	}
}
