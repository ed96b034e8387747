package http

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice"
)

// Bounds of an image request.
const (
	MaxPrompt   = 4000 // characters
	MinSide     = 64   // pixels
	MaxSide     = 2048 // pixels
	DefaultSize = "512x512"
)

// imageRequest is the body of POST /v1/images/generations as an OpenAI SDK
// sends it. Besides the fields sluice uses it accepts the optional
// parameters of OpenAI's API that do not change the shape of the answer
// (quality, style, user, background, moderation, output_format,
// output_compression, and stream when false); they are checked for type
// and otherwise ignored, except user, which is passed on. Any other field is
// refused.
type imageRequest struct {
	Model          string `json:"model"`
	Prompt         string `json:"prompt"`
	N              *int   `json:"n"`
	Size           string `json:"size"`
	ResponseFormat string `json:"response_format"`
	User           string `json:"user"`

	Quality           string `json:"quality"`
	Style             string `json:"style"`
	Background        string `json:"background"`
	Moderation        string `json:"moderation"`
	OutputFormat      string `json:"output_format"`
	OutputCompression *int   `json:"output_compression"`
	Stream            bool   `json:"stream"`
}

// readImageRequest decodes and validates the body of an image request and
// fills in the defaults.
func (s *Server) readImageRequest(w http.ResponseWriter, r *http.Request) (*sluice.ImageRequest, error) {
	var body imageRequest
	if err := s.decodeJSON(w, r, &body); err != nil {
		return nil, err
	}
	return body.validate(s.cfg(r).limits.MaxN)
}

func (b *imageRequest) validate(maxN int) (*sluice.ImageRequest, error) {
	if b.Model == "" {
		return nil, sluice.FieldError("model", "model is required; GET /v1/models lists the models.")
	}
	if strings.TrimSpace(b.Prompt) == "" {
		return nil, sluice.FieldError("prompt", "prompt is required and must not be blank.")
	}
	if utf8.RuneCountInString(b.Prompt) > MaxPrompt {
		return nil, sluice.FieldError("prompt", "prompt must be at most %d characters.", MaxPrompt)
	}
	n := 1
	if b.N != nil {
		n = *b.N
	}
	if n < 1 || n > maxN {
		return nil, sluice.FieldError("n", "n must be between 1 and %d.", maxN)
	}
	size := DefaultSize
	if b.Size != "" && b.Size != "auto" {
		var ok bool
		if size, ok = parseSize(b.Size); !ok {
			return nil, sluice.FieldError("size", `size must be "WIDTHxHEIGHT" with each side from %d to %d pixels, like "256x256", "512x512" or "1024x1024".`, MinSide, MaxSide)
		}
	}
	switch b.ResponseFormat {
	case "", "b64_json":
	case "url":
		return nil, sluice.FieldError("response_format", `Only response_format "b64_json" is supported: images are returned in the response, not as URLs.`)
	default:
		return nil, sluice.FieldError("response_format", `response_format must be "b64_json".`)
	}
	if b.Stream {
		return nil, sluice.FieldError("stream", "Streaming is not supported; leave stream out or set it to false.")
	}
	if c := b.OutputCompression; c != nil && (*c < 0 || *c > 100) {
		return nil, sluice.FieldError("output_compression", "output_compression must be between 0 and 100.")
	}
	return &sluice.ImageRequest{
		Model:          b.Model,
		Prompt:         b.Prompt,
		N:              n,
		Size:           size,
		ResponseFormat: "b64_json",
		User:           b.User,
	}, nil
}

// parseSize parses "WxH" with each side a decimal number of pixels in
// MinSide..MaxSide, and returns its canonical form.
func parseSize(s string) (string, bool) {
	ws, hs, ok := strings.Cut(s, "x")
	if !ok {
		return "", false
	}
	w, ok1 := parseSide(ws)
	h, ok2 := parseSide(hs)
	if !ok1 || !ok2 {
		return "", false
	}
	if strconv.Itoa(w) == ws && strconv.Itoa(h) == hs {
		return s, true
	}
	return strconv.Itoa(w) + "x" + strconv.Itoa(h), true
}

func parseSide(s string) (int, bool) {
	if len(s) == 0 || len(s) > 5 {
		return 0, false
	}
	v := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, MinSide <= v && v <= MaxSide
}

// apiAccount authenticates the request's API key and checks that its plan
// includes API access. On failure it has answered the request.
func (s *Server) apiAccount(w http.ResponseWriter, r *http.Request) (*quotaCtx, bool) {
	p, err := s.authAPIKey(r)
	if err != nil {
		s.Error(w, r, err)
		return nil, false
	}
	return s.resolveAccount(w, r, p, true)
}

// resolveAccount turns a principal into its quota context and records the
// account for the access log. If api, the plan must include API access.
func (s *Server) resolveAccount(w http.ResponseWriter, r *http.Request, p *principal, api bool) (*quotaCtx, bool) {
	if st := stateOf(r); st != nil {
		st.accountID = p.account.ID
	}
	q, err := s.quotaFor(r, p.account)
	if err != nil {
		s.Error(w, r, err)
		return nil, false
	}
	if p.key != nil {
		q.keyID = p.key.ID
	}
	if api && !q.plan.API {
		s.peekHeaders(w, r, q)
		s.writeError(w, r, s.noAPIAccess(r, q.plan))
		return nil, false
	}
	return q, true
}

// noAPIAccess is the 403 of a plan without API access; it names the plan.
func (s *Server) noAPIAccess(r *http.Request, p *sluice.Plan) *apiError {
	msg := "The " + p.Name + " plan does not include API access"
	if api := s.cfg(r).apiPlans; api != "" {
		msg += "; plans with API access: " + api
	}
	return &apiError{Code: sluice.ENOAPIACCESS, Message: msg + ".", Plan: p.ID}
}

// copyBufs are the buffers that relay generated images.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// handleGenerate handles POST /v1/images/generations: authenticate, check
// the plan and the body, take n units, generate, relay. Only delivered work
// counts: if the generator fails, or relaying its answer fails, or anything
// panics after the units were taken, they are refunded.
func (s *Server) handleGenerate(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q, ok := s.apiAccount(w, r)
	if !ok {
		return
	}
	idem, ok := s.idempotencyKey(w, r, q)
	if !ok {
		return
	}
	req, err := s.readImageRequest(w, r)
	if err != nil {
		s.failWithUsage(w, r, q, err)
		return
	}
	m := s.cfg(r).models[req.Model]
	if m == nil {
		s.failWithUsage(w, r, q, sluice.Errorf(sluice.EMODELNOTFOUND,
			"The model %q does not exist; GET /v1/models lists the models.", shorten(req.Model)))
		return
	}
	if !q.plan.AllowsModel(m) {
		s.peekHeaders(w, r, q)
		s.writeError(w, r, &apiError{Code: sluice.EMODELNOTALLOWED,
			Message: "The " + q.plan.Name + " plan may not use the model " + strconv.Quote(m.ID) + "; it includes starter-tier models only.",
			Plan:    q.plan.ID, Model: m.ID})
		return
	}
	// A keyed request: replayed, refused, or claimed until it completes
	// (a 200 relayed whole) or is abandoned (every other way out).
	claim, ok := idem.begin(s, w, r, q)
	if !ok {
		return
	}
	defer claim.abandon()

	n := int64(req.N)
	// d is the decision whose headers the answer carries; paid, the one
	// whose charge a refund gives back.
	var d, paid sluice.Decision
	if units, at, ok := claim.inherited(); ok {
		// The retry of a request that an instance charged and then
		// stopped serving: it is served on that charge, not charged again,
		// with the headers of a peek (none if the quota service cannot
		// answer one: failing would abandon the claim and its charge).
		d = s.peekForHeaders(r, q)
		q.model = m.ID // for the history's refund event, as recordTake sets it
		s.metrics.idem.WithLabelValues("inherited").Inc()
		// A refund gives back the inherited charge: its units, at its
		// instant, in the windows of the account's policy.
		n, paid = units, sluice.Decision{Allowed: true, Time: at, Blocking: -1, N: len(q.policy.Windows)}
	} else {
		if d, err = s.take(ctx, q, n); err != nil {
			s.Error(w, r, err)
			return
		}
		s.recordTake(q, m.ID, n, &d)
		if !d.Allowed {
			s.metrics.decision(q.plan.ID, "rejected")
			setRateHeaders(w.Header(), &d)
			if d.RetryAfter == sluice.InfDuration {
				s.Error(w, r, tooManyError(q, &d, n))
				return
			}
			s.writeError(w, r, rateLimitError(q, &d))
			return
		}
		outcome := "admitted"
		if d.Shadow {
			outcome = "shadow"
		}
		s.metrics.decision(q.plan.ID, outcome)
		paid = d
		if d.Charged() {
			claim.charged(q.key, n, d.Time)
		}
	}

	// From here the units are charged. Every way out that delivers nothing
	// refunds them, a panic included (deferred calls run before the panic
	// reaches the recovery middleware), after abandoning the claim, so that
	// no retry inherits a charge given back. settled: delivered or refunded.
	settled := false
	defer func() {
		if !settled {
			claim.abandon()
			s.refund(ctx, q, n, paid, "panic")
		}
	}()

	start := time.Now()
	gctx, up := s.startSpan(ctx, "upstream.generate", trace.SpanKindClient)
	res, err := s.Images.Generate(gctx, req)
	if up != nil {
		up.SetAttributes(attribute.String("sluice.model", req.Model), attribute.Int("sluice.n", req.N))
		defer func() { endSpan(up, err) }() // once relayed, or not
	}
	if err != nil {
		settled = true
		s.metrics.upstream.WithLabelValues(upstreamOutcome(ctx, err)).Observe(time.Since(start).Seconds())
		claim.abandon()
		s.refund(ctx, q, n, paid, "upstream_error")
		s.failWithUsage(w, r, q, s.upstreamError(r, err))
		return
	}
	defer res.Body.Close()

	h := w.Header()
	setRateHeaders(h, &d)
	ct := res.ContentType
	if ct == "" {
		ct = "application/json"
	}
	h["Content-Type"] = []string{ct}
	w.WriteHeader(http.StatusOK)
	buf := copyBufs.Get().(*[]byte)
	_, err = io.CopyBuffer(claim.tee(w), res.Body, *buf)
	copyBufs.Put(buf)
	if err != nil {
		settled = true
		s.metrics.upstream.WithLabelValues(upstreamOutcome(ctx, err)).Observe(time.Since(start).Seconds())
		claim.abandon()
		s.refund(ctx, q, n, paid, "relay_error")
		s.logger().LogAttrs(ctx, slog.LevelWarn, "relay of generated images failed; refunded",
			slog.String("request_id", requestID(r)), slog.Int64("account_id", q.account.ID),
			slog.String("error", err.Error()))
		if st := stateOf(r); st != nil {
			st.errCode = "relay_aborted"
		}
		// The status is out and part of the body may be: break the
		// connection so that the client cannot mistake it for a whole
		// answer.
		panic(http.ErrAbortHandler)
	}
	settled = true
	s.metrics.upstreamOK.Observe(time.Since(start).Seconds())
	claim.complete(http.StatusOK, ct)
}

// upstreamError is what the client is told about a generator's failure. The
// generator's own *sluice.Error (EUPSTREAM, or EINVALID for a request it
// refuses) is shown as it is; anything else becomes a generic EUPSTREAM.
// Every failure is logged.
func (s *Server) upstreamError(r *http.Request, err error) error {
	ctx := r.Context()
	s.logger().LogAttrs(ctx, slog.LevelWarn, "image generator failed; refunded",
		slog.String("request_id", requestID(r)), slog.String("error", err.Error()))
	switch sluice.ErrorCode(err) {
	case sluice.EUPSTREAM, sluice.EINVALID:
		return err
	}
	if ctx.Err() != nil {
		return &sluice.Error{Code: sluice.EUPSTREAM, Message: "The request was canceled before the images were generated; nothing was charged."}
	}
	return &sluice.Error{Code: sluice.EUPSTREAM, Message: "The image generator failed; nothing was charged."}
}

// upstreamOutcome labels a generator failure for the metrics.
func upstreamOutcome(ctx context.Context, err error) string {
	var t interface{ Timeout() bool }
	switch {
	case errors.Is(err, context.Canceled) || ctx.Err() == context.Canceled:
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &t) && t.Timeout():
		return "timeout"
	}
	return "error"
}
