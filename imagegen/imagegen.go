// Package imagegen holds the image generators of the gateway: Demo, the
// built-in generator that draws a deterministic PNG from the prompt, and
// Upstream, a client for any OpenAI-compatible images endpoint. Both
// implement sluice.ImageGenerator.
package imagegen

import (
	"bytes"
	"errors"
	"io"
	"sync"
)

// bufferPool holds the buffers that Demo encodes PNGs and response bodies
// into, so that a steady stream of requests allocates no new ones.
var bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer {
	b := bufferPool.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

// pooledBody is a response body read from a pooled buffer, which Close
// gives back to the pool. Reading after Close is an error rather than a
// read of a buffer that another request may be filling.
type pooledBody struct {
	r   bytes.Reader
	buf *bytes.Buffer // nil once closed
}

var errBodyClosed = errors.New("imagegen: read on closed body")

func newPooledBody(buf *bytes.Buffer) *pooledBody {
	b := &pooledBody{buf: buf}
	b.r.Reset(buf.Bytes())
	return b
}

func (b *pooledBody) Read(p []byte) (int, error) {
	if b.buf == nil {
		return 0, errBodyClosed
	}
	return b.r.Read(p)
}

// WriteTo lets io.Copy write the body in one call, without a copy buffer.
func (b *pooledBody) WriteTo(w io.Writer) (int64, error) {
	if b.buf == nil {
		return 0, errBodyClosed
	}
	return b.r.WriteTo(w)
}

func (b *pooledBody) Close() error {
	if b.buf != nil {
		b.r.Reset(nil)
		bufferPool.Put(b.buf)
		b.buf = nil
	}
	return nil
}
