package imagegen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
)

// DefaultTimeout bounds one upstream request when NewUpstream is given no
// timeout (CONTRACT.md §8, upstream.timeout).
const DefaultTimeout = 60 * time.Second

// Bounds on reading the body of a failed upstream answer: a snippet for the
// log, and the most drained so that the connection can be reused.
const (
	errorSnippetLen = 512
	maxDrain        = 64 << 10
)

// Upstream generates images with an OpenAI-compatible images endpoint. It
// never retries: a retry could make the upstream bill twice for a request
// whose answer was lost. It is safe for concurrent use.
type Upstream struct {
	url     string // <base URL>/images/generations
	apiKey  string
	auth    []string // the Authorization header's value; nil without a key
	timeout time.Duration
	rt      http.RoundTripper
}

// The values of the headers every request carries, shared by all requests:
// a header's value slice is only read, or replaced (a full slice appends
// into a new array), so none of them ever changes.
var (
	jsonValue  = []string{"application/json"}
	agentValue = []string{"sluice"}
)

var _ sluice.ImageGenerator = (*Upstream)(nil)

// NewUpstream returns a client for the images endpoint under baseURL, given
// as an OpenAI SDK takes it ("https://api.openai.com/v1"): it posts to
// baseURL + "/images/generations", with apiKey as a bearer token unless it
// is empty. Each request, reading the answer's body included, is bounded by
// timeout, or DefaultTimeout if timeout is not positive.
//
// The requests go through rt, or if it is nil a transport of its own
// (NewTransport). They go to rt directly, not through an http.Client: a
// redirect is not followed but is an answer other than 2xx, like any other
// (a client would send the prompt again elsewhere, or turn the POST into a
// GET), and no request pays for a client's redirect bookkeeping (a copy of
// its headers).
func NewUpstream(baseURL, apiKey string, timeout time.Duration, rt http.RoundTripper) *Upstream {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if rt == nil {
		rt = NewTransport()
	}
	u := &Upstream{
		url:     strings.TrimRight(baseURL, "/") + "/images/generations",
		apiKey:  apiKey,
		timeout: timeout,
		rt:      rt,
	}
	if apiKey != "" {
		u.auth = []string{"Bearer " + apiKey}
	}
	return u
}

// NewTransport returns the transport NewUpstream uses by default: it bounds
// dialling and TLS handshakes and keeps up to 256 idle connections per
// host. It sets no ResponseHeaderTimeout: an images endpoint sends its
// headers only once the images are done, so that bound would be the
// request's timeout, which the request's context already enforces. Callers
// that wrap it (to add headers, say) pass the result to NewUpstream.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
	}
}

// Generate posts req to the upstream and returns its 2xx answer, whose body
// is streamed from the upstream as the caller reads it; closing it ends the
// request. The timeout keeps running while the body is read; a failure
// while reading is an *UpstreamError too.
//
// A connection error, a timeout or any answer other than 2xx is an
// *UpstreamError, which counts as a *sluice.Error with code EUPSTREAM. If
// ctx ends first, the error wraps ctx.Err() instead: the caller gave up,
// the upstream did not fail.
func (u *Upstream) Generate(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode image request: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, u.timeout)
	hreq, err := http.NewRequestWithContext(rctx, http.MethodPost, u.url, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, &UpstreamError{Err: err} // a malformed base URL
	}
	h := hreq.Header // canonical names, shared values: no allocation but the map's
	h["Content-Type"], h["Accept"], h["User-Agent"] = jsonValue, jsonValue, agentValue
	if u.auth != nil {
		h["Authorization"] = u.auth
	}

	resp, err := u.rt.RoundTrip(hreq)
	if err != nil {
		cancel()
		return nil, failure(ctx, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		err := u.statusError(resp)
		cancel()
		return nil, err
	}
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/json"
	}
	return &sluice.ImageResult{
		Body:        &upstreamBody{rc: resp.Body, ctx: ctx, cancel: cancel},
		ContentType: ct,
	}, nil
}

// statusError reads the start of a failed answer's body for the log, drains
// a bounded amount more so that the connection can be reused, and closes it.
// The API key is redacted from the snippet in case the upstream echoes it.
func (u *Upstream) statusError(resp *http.Response) error {
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, errorSnippetLen))
	io.CopyN(io.Discard, resp.Body, maxDrain-errorSnippetLen)
	resp.Body.Close()
	s := string(snippet)
	if u.apiKey != "" {
		s = strings.ReplaceAll(s, u.apiKey, "[redacted]")
	}
	return &UpstreamError{Status: resp.StatusCode, Err: fmt.Errorf("status %q, body %q", resp.Status, s)}
}

// CloseIdleConnections closes the transport's idle connections, for a clean
// shutdown, if it has a CloseIdleConnections method (as *http.Transport
// has).
func (u *Upstream) CloseIdleConnections() {
	if c, ok := u.rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// upstreamBody is the body of a 2xx answer. Close ends the request's
// context, which otherwise ends at the timeout.
type upstreamBody struct {
	rc     io.ReadCloser
	ctx    context.Context // the caller's
	cancel context.CancelFunc
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		err = failure(b.ctx, err)
	}
	return n, err
}

func (b *upstreamBody) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}

// failure returns the error for err, an error of the exchange with the
// upstream made under the caller's ctx: the caller's own error if ctx has
// ended, an *UpstreamError otherwise.
func failure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("upstream request: %w", ctx.Err())
	}
	return &UpstreamError{Err: err}
}

// UpstreamError is a failure of the upstream generator: no answer, a
// timeout, or an answer other than 2xx. Its Error text, with the cause, is
// for logs (with the API key redacted); errors.As sees it as the
// *sluice.Error that clients are shown, with code EUPSTREAM and a message
// that says only what kind of failure it was, so that sluice.ErrorCode and
// sluice.ErrorMessage work on it as on any *sluice.Error.
type UpstreamError struct {
	Status int   // the upstream's HTTP status; 0 if no answer came
	Err    error // the cause
}

func (e *UpstreamError) Error() string { return "upstream: " + e.Err.Error() }

func (e *UpstreamError) Unwrap() error { return e.Err }

// As sets target, a **sluice.Error, to the error that clients are shown.
func (e *UpstreamError) As(target any) bool {
	t, ok := target.(**sluice.Error)
	if ok {
		*t = &sluice.Error{Code: sluice.EUPSTREAM, Message: e.message()}
	}
	return ok
}

// Timeout reports whether the upstream took too long.
func (e *UpstreamError) Timeout() bool {
	var ne net.Error
	return e.Status == 0 && errors.As(e.Err, &ne) && ne.Timeout()
}

func (e *UpstreamError) message() string {
	switch {
	case e.Status != 0:
		return fmt.Sprintf("The image generator failed: upstream returned %d.", e.Status)
	case e.Timeout():
		return "The image generator failed: upstream timed out."
	default:
		return "The image generator failed: no answer from upstream."
	}
}
