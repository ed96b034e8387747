package imagegen

import (
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice"
)

// Limits of the demo generator's requests. The gateway validates requests
// against its own configuration first; these bound what Demo will draw
// whatever it is asked.
const (
	MinSide     = 64   // smallest width or height, in pixels
	MaxSide     = 2048 // largest width or height, in pixels
	MaxDemoN    = 10   // most images in one request
	DefaultSize = "512x512"
)

// Demo is the built-in image generator, the default when no upstream is
// configured. For each image it draws a tiling of Truchet tiles, a mosaic
// or a maze (the style depends on the model) over a gradient, with colours,
// angles and tile sizes derived from a hash of the model, the prompt and the
// image's index: the same model, prompt, size and index always give a
// byte-identical PNG (from the same build: the drawing uses integer
// arithmetic only, but Go's PNG encoder may change), and prompts that differ by one character give
// unrelated pictures. The size only scales the picture.
//
// The zero value is ready to use. A Demo is safe for concurrent use as long
// as its fields do not change.
type Demo struct {
	// Delay, if positive, is waited before drawing to simulate the latency
	// of a real generator. A ctx that ends first ends the wait.
	Delay time.Duration
	// Now is the clock for the "created" field; nil means time.Now.
	Now func() time.Time
}

var _ sluice.ImageGenerator = (*Demo)(nil)

// Generate draws req.N images (1 if N is 0) of req.Size ("512x512" if
// empty) and returns them as an OpenAI-shaped JSON body,
// {"created":…,"data":[{"b64_json":…},…]}. A size outside MinSide..MaxSide
// per side is an EINVALID error for the field "size", an N outside
// 1..MaxDemoN one for "n". If ctx ends first, the error wraps ctx.Err().
func (d *Demo) Generate(ctx context.Context, req *sluice.ImageRequest) (*sluice.ImageResult, error) {
	size := req.Size
	if size == "" {
		size = DefaultSize
	}
	w, h, err := parseSize(size)
	if err != nil {
		return nil, err
	}
	n := req.N
	if n == 0 {
		n = 1
	}
	if n < 1 || n > MaxDemoN {
		return nil, sluice.FieldError("n", "n must be between 1 and %d.", MaxDemoN)
	}
	if err := d.wait(ctx); err != nil {
		return nil, err
	}
	now := time.Now
	if d.Now != nil {
		now = d.Now
	}

	out := getBuffer()
	out.WriteString(`{"created":`)
	out.Write(strconv.AppendInt(out.AvailableBuffer(), now().Unix(), 10))
	out.WriteString(`,"data":[`)
	c := getCanvas(w, h)
	defer canvasPool.Put(c)
	pngBuf := getBuffer()
	defer bufferPool.Put(pngBuf)
	style := styleOf(req.Model)
	for i := range n {
		if err := ctx.Err(); err != nil {
			bufferPool.Put(out)
			return nil, fmt.Errorf("demo generator: %w", err)
		}
		c.draw(style, seedOf(req.Model, req.Prompt, i))
		pngBuf.Reset()
		if err := pngEncoder.Encode(pngBuf, &c.img); err != nil {
			bufferPool.Put(out)
			return nil, fmt.Errorf("encode png: %w", err)
		}
		if i > 0 {
			out.WriteByte(',')
		}
		out.WriteString(`{"b64_json":"`)
		out.Grow(base64.StdEncoding.EncodedLen(pngBuf.Len()))
		out.Write(base64.StdEncoding.AppendEncode(out.AvailableBuffer(), pngBuf.Bytes()))
		out.WriteString(`"}`)
	}
	out.WriteString(`]}`)
	return &sluice.ImageResult{Body: newPooledBody(out), ContentType: "application/json"}, nil
}

// wait waits d.Delay, or until ctx ends.
func (d *Demo) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("demo generator: %w", err)
	}
	if d.Delay <= 0 {
		return nil
	}
	t := time.NewTimer(d.Delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("demo generator: %w", ctx.Err())
	case <-t.C:
		return nil
	}
}

// parseSize parses a size of the form "WxH": two decimal numbers without
// signs, spaces or leading zeros, each in MinSide..MaxSide. Its errors are
// EINVALID errors for the field "size".
func parseSize(s string) (w, h int, err error) {
	ws, hs, ok := strings.Cut(s, "x")
	if !ok {
		return 0, 0, sluice.FieldError("size", "Size must be WIDTHxHEIGHT, such as %q.", DefaultSize)
	}
	w, okw := parseSide(ws)
	h, okh := parseSide(hs)
	if !okw || !okh {
		return 0, 0, sluice.FieldError("size", "Size must be WIDTHxHEIGHT, such as %q.", DefaultSize)
	}
	if w < MinSide || w > MaxSide || h < MinSide || h > MaxSide {
		return 0, 0, sluice.FieldError("size", "Size must be between %d and %d pixels on each side.", MinSide, MaxSide)
	}
	return w, h, nil
}

// parseSide parses a decimal number without sign or leading zeros. Numbers
// above MaxSide come out as MaxSide+1, so that no input overflows.
func parseSide(s string) (int, bool) {
	if s == "" || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = min(n*10+int(c-'0'), MaxSide+1)
	}
	return n, true
}

// pngEncoder favours speed: the pictures are flat areas of a 256-colour
// palette, which compress well even at BestSpeed, and its BufferPool keeps
// the encoder's zlib state (over a megabyte) from being allocated per image.
var pngEncoder = png.Encoder{CompressionLevel: png.BestSpeed, BufferPool: new(encoderPool)}

type encoderPool sync.Pool

func (p *encoderPool) Get() *png.EncoderBuffer {
	b, _ := (*sync.Pool)(p).Get().(*png.EncoderBuffer)
	return b
}

func (p *encoderPool) Put(b *png.EncoderBuffer) { (*sync.Pool)(p).Put(b) }

// Picture styles; a model draws in one of them.
const (
	styleArcs   = iota // Truchet tiles: quarter-circle arcs in opposite corners
	styleMosaic        // each tile split along a diagonal
	styleMaze          // one diagonal stroke per tile ("10 PRINT"), posts at the corners
	numStyles
)

// canvas is the reusable state for drawing one picture: a paletted image
// (one byte a pixel, which the PNG encoder copies row by row and does not
// filter, so that encoding is cheap) and its palette. The palette's entries
// point into rgba, so that changing the colours for a new picture boxes no
// color.RGBA into an interface, which would cost 256 allocations.
type canvas struct {
	img  image.Paletted
	rgba [256]color.RGBA
	pal  [256]color.Color
	flip []bool // orientation of each tile in the current row of tiles
}

var canvasPool = sync.Pool{New: func() any {
	c := new(canvas)
	for i := range c.pal {
		c.pal[i] = &c.rgba[i]
	}
	c.img.Palette = c.pal[:]
	return c
}}

// getCanvas returns a canvas of w×h pixels from the pool.
func getCanvas(w, h int) *canvas {
	c := canvasPool.Get().(*canvas)
	if cap(c.img.Pix) < w*h {
		c.img.Pix = make([]uint8, w*h)
	}
	c.img.Pix = c.img.Pix[:w*h]
	c.img.Stride = w
	c.img.Rect = image.Rect(0, 0, w, h)
	return c
}

// draw paints the picture of seed in a style over the whole canvas. Palette
// entries 0..127 are the background ramp, 128..255 the foreground ramp; each
// pixel's entry comes from a linear gradient across the image, so the
// picture is two crossing gradients cut by the tiles' shapes.
func (c *canvas) draw(style int, seed uint64) {
	r := splitmix(seed)
	w, h := c.img.Rect.Dx(), c.img.Rect.Dy()

	hue := r.intn(360)
	fgHue := hue + 150 + r.intn(60)
	c.ramp(0, hsv(hue, 165, 30), hsv(hue+40, 140, 107))
	c.ramp(128, hsv(fgHue, 190, 255), hsv(fgHue+50, 128, 217))
	dx, dy := r.intn(513)-256, r.intn(513)-256
	if dx == 0 && dy == 0 {
		dx = 256
	}
	bg := newGradient(dx, dy, w, h)
	// The foreground runs roughly across the background.
	fdx, fdy := -dy+r.intn(257)-128, dx+r.intn(257)-128
	if fdx == 0 && fdy == 0 {
		fdx = 256
	}
	fg := newGradient(fdx, fdy, w, h)

	s := max(min(w, h)/(3+r.intn(6)), 16) // tile side
	band := max(s*(10+r.intn(16))/100, 2) // stroke width
	rad := s / 2
	lo, hi := (rad-band/2)*(rad-band/2), (rad+band/2)*(rad+band/2)

	cols := (w + s - 1) / s
	if cap(c.flip) < cols {
		c.flip = make([]bool, cols)
	}
	flip := c.flip[:cols]

	pix := c.img.Pix
	for y := range h {
		ty, ly := y/s, y%s
		if ly == 0 {
			for tx := range flip {
				flip[tx] = mix64(seed^uint64(ty)<<32^uint64(tx))&1 != 0
			}
		}
		row := pix[y*w : y*w+w]
		b, f := bg.at(0, y), fg.at(0, y)
		tx, lx := 0, 0
		for x := range row {
			// u is the x within the tile, mirrored for flipped tiles.
			u := lx
			if flip[tx] {
				u = s - lx
			}
			var on bool
			switch style {
			case styleArcs:
				d1 := u*u + ly*ly
				du, dv := s-u, s-ly
				d2 := du*du + dv*dv
				on = lo <= d1 && d1 <= hi || lo <= d2 && d2 <= hi
			case styleMosaic:
				on = u > ly
			default:
				// A stroke is cut square where it leaves its tile; the
				// diamonds at the tile's corners fill in the corners of
				// the strokes of the neighbouring tiles.
				d := u - ly
				on = -band < d && d < band ||
					u+ly < band || s-u+ly < band || u+s-ly < band || 2*s-u-ly < band
			}
			if on {
				row[x] = 128 + uint8(min(f>>16, 127))
			} else {
				row[x] = uint8(min(b>>16, 127))
			}
			b += bg.dx
			f += fg.dx
			if lx++; lx == s {
				tx, lx = tx+1, 0
			}
		}
	}
}

// ramp fills the 128 palette entries from start with colours running from
// a to b.
func (c *canvas) ramp(start int, a, b color.RGBA) {
	lerp := func(a, b uint8, i int) uint8 { return uint8((int(a)*(127-i) + int(b)*i + 63) / 127) }
	for i := range 128 {
		c.rgba[start+i] = color.RGBA{lerp(a.R, b.R, i), lerp(a.G, b.G, i), lerp(a.B, b.B, i), 0xff}
	}
}

// gradient is a linear ramp across an image in 16.16 fixed point: at(x, y)
// runs from 0 to at most 127<<16 over the image. Drawing uses integers only,
// so that a picture is the same on every architecture (floating-point
// expressions may be fused differently).
type gradient struct{ dx, dy, off int }

// newGradient returns the gradient across a w×h image in the direction
// (vx, vy), which is not (0, 0) and has components within ±256.
func newGradient(vx, vy, w, h int) gradient {
	const top = 127 << 16
	span := abs(vx)*(w-1) + abs(vy)*(h-1)
	g := gradient{dx: vx * top / span, dy: vy * top / span}
	// The offset lifts the corner with the lowest value to 0; division
	// truncates dx and dy towards zero, which keeps the highest at most top.
	g.off = -(min(0, g.dx*(w-1)) + min(0, g.dy*(h-1)))
	return g
}

func (g gradient) at(x, y int) int { return g.off + x*g.dx + y*g.dy }

// hsv returns the opaque colour of hue h (degrees, any value), saturation s
// and value v (0..255).
func hsv(h, s, v int) color.RGBA {
	h = (h%360 + 360) % 360
	c := v * s / 255
	x := c * (60 - abs(h%120-60)) / 60
	var r, g, b int
	switch h / 60 {
	case 0:
		r, g = c, x
	case 1:
		r, g = x, c
	case 2:
		g, b = c, x
	case 3:
		g, b = x, c
	case 4:
		r, b = x, c
	default:
		r, b = c, x
	}
	m := v - c
	return color.RGBA{uint8(r + m), uint8(g + m), uint8(b + m), 0xff}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// FNV-1a, over strings without converting them to bytes.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return h
}

// seedOf is the seed of the i-th picture for a model and prompt. The zero
// byte keeps ("ab", "c") and ("a", "bc") apart.
func seedOf(model, prompt string, i int) uint64 {
	h := fnvString(fnvOffset, model)
	h *= fnvPrime // a zero byte
	h = fnvString(h, prompt)
	return mix64(h ^ uint64(i)*0x9e3779b97f4a7c15)
}

// styleOf is the style of a model's pictures.
func styleOf(model string) int { return int(mix64(fnvString(fnvOffset, model)) >> 32 % numStyles) }

// mix64 is the finalizer of SplitMix64: every input bit flips about half of
// the output bits.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// splitmix is the SplitMix64 generator: a tiny, fixed algorithm, unlike
// math/rand's, so that the drawing depends on nothing but the seed. (The
// PNG encoding of a drawing may still change with the Go version.)
type splitmix uint64

func (s *splitmix) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	return mix64(uint64(*s))
}

// intn returns a number in [0, n); the bias is negligible for small n.
func (s *splitmix) intn(n int) int { return int(s.next() % uint64(n)) }
