package http

import (
	"bytes"
	"io"
	"net/http"
	"sync"
	"unicode/utf8"
)

// The body of an image request is decoded on every call of the API, and
// encoding/json's Decoder (allocated per body, reflecting over the struct,
// then asked for one more token) was the largest cost of the gateway's own
// code in a CPU profile under load. Most bodies are a flat object of known
// keys with plain values: parseImageRequest reads those by hand, and
// refuses anything else, which then goes to decodeBody over the very same
// bytes. So the answer to every body, accepted or refused, and every error
// message, is decodeBody's; FuzzImageRequestFastPath checks it.

// fastBodyMax is the most of a body read for the fast path (a prompt of a
// few hundred characters); a longer body is decoded by decodeBody alone.
const fastBodyMax = 2 << 10

var fastBodyBufs = sync.Pool{New: func() any { b := make([]byte, fastBodyMax); return &b }}

// decodeImageRequest decodes the body of an image request into v, with the
// answers of decodeJSON (s.maxBody, the same errors).
func (s *Server) decodeImageRequest(w http.ResponseWriter, r *http.Request, v *imageRequest) error {
	body := http.MaxBytesReader(w, r.Body, s.maxBody)
	bp := fastBodyBufs.Get().(*[]byte)
	defer fastBodyBufs.Put(bp)
	buf := *bp
	n, err := io.ReadFull(body, buf)
	switch err {
	case io.EOF, io.ErrUnexpectedEOF: // the whole body, shorter than buf
		if parseImageRequest(buf[:n], v) {
			return nil
		}
		*v = imageRequest{}
		err = io.EOF
	case nil: // buf is full: the body may go on
	}
	// What decodeBody would have read: the n bytes, then the rest of the
	// body, or the error that ended the reading (sticky, as a
	// MaxBytesReader's is).
	return decodeBody(&replayReader{b: buf[:n], err: err, r: body}, v)
}

// replayReader reads b, then err if it is not nil, else from r.
type replayReader struct {
	b   []byte
	err error
	r   io.Reader
}

func (rr *replayReader) Read(p []byte) (int, error) {
	if len(rr.b) > 0 {
		n := copy(p, rr.b)
		rr.b = rr.b[n:]
		return n, nil
	}
	if rr.err != nil {
		return 0, rr.err
	}
	return rr.r.Read(p)
}

// parseImageRequest decodes b into v, which must be zero, if b is a JSON
// object whose keys are fields of imageRequest spelled as their tags, each
// once, with values of the field's type, strings without escapes, numbers
// without a fraction or exponent and of at most 9 digits, no null, and
// nothing but white space after it. It reports false for anything else,
// leaving v in any state: such a body is for decodeBody.
func parseImageRequest(b []byte, v *imageRequest) bool {
	p := fastParser{b: b}
	p.space()
	if !p.byte('{') {
		return false
	}
	var seen uint16
	p.space()
	if !p.byte('}') {
		for {
			p.space()
			key, ok := p.plainString()
			if !ok {
				return false
			}
			p.space()
			if !p.byte(':') {
				return false
			}
			p.space()
			bit := uint16(0)
			switch string(key) {
			case "model":
				bit, ok = 1<<0, p.stringField(&v.Model)
			case "prompt":
				bit, ok = 1<<1, p.stringField(&v.Prompt)
			case "n":
				bit, ok = 1<<2, p.intField(&v.N)
			case "size":
				bit, ok = 1<<3, p.stringField(&v.Size)
			case "response_format":
				bit, ok = 1<<4, p.stringField(&v.ResponseFormat)
			case "user":
				bit, ok = 1<<5, p.stringField(&v.User)
			case "quality":
				bit, ok = 1<<6, p.stringField(&v.Quality)
			case "style":
				bit, ok = 1<<7, p.stringField(&v.Style)
			case "background":
				bit, ok = 1<<8, p.stringField(&v.Background)
			case "moderation":
				bit, ok = 1<<9, p.stringField(&v.Moderation)
			case "output_format":
				bit, ok = 1<<10, p.stringField(&v.OutputFormat)
			case "output_compression":
				bit, ok = 1<<11, p.intField(&v.OutputCompression)
			case "stream":
				bit, ok = 1<<12, p.boolField(&v.Stream)
			}
			if bit == 0 || !ok || seen&bit != 0 {
				return false
			}
			seen |= bit
			p.space()
			if p.byte('}') {
				break
			}
			if !p.byte(',') {
				return false
			}
		}
	}
	p.space()
	return p.i == len(p.b)
}

// fastParser is the cursor of parseImageRequest.
type fastParser struct {
	b []byte
	i int
}

// space skips JSON white space.
func (p *fastParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// byte consumes c if it is next.
func (p *fastParser) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// plainString consumes a JSON string without escapes or control
// characters, in valid UTF-8 (which encoding/json keeps as it is), and
// returns its contents.
func (p *fastParser) plainString() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	ascii := true
	for ; p.i < len(p.b); p.i++ {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

func (p *fastParser) stringField(dst *string) bool {
	s, ok := p.plainString()
	if ok {
		*dst = string(s)
	}
	return ok
}

// intField consumes a JSON integer of at most 9 digits (one that fits any
// int) into a new int, as encoding/json fills a *int.
func (p *fastParser) intField(dst **int) bool {
	neg := p.byte('-')
	start := p.i
	v := 0
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		v = v*10 + int(p.b[p.i]-'0')
		p.i++
	}
	digits := p.i - start
	if digits == 0 || digits > 9 || digits > 1 && p.b[start] == '0' {
		return false
	}
	// A fraction or an exponent would follow here; neither is for us.
	if p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		return false
	}
	if neg {
		v = -v
	}
	*dst = &v
	return true
}

func (p *fastParser) boolField(dst *bool) bool {
	switch {
	case bytes.HasPrefix(p.b[p.i:], []byte("true")):
		p.i += 4
		*dst = true
	case bytes.HasPrefix(p.b[p.i:], []byte("false")):
		p.i += 5
		*dst = false
	default:
		return false
	}
	return true
}
