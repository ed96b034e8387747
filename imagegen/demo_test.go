package imagegen_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/imagegen"
)

var epoch = time.Unix(1709900000, 0)

func newDemo() *imagegen.Demo {
	return &imagegen.Demo{Now: func() time.Time { return epoch }}
}

// imagesBody is the JSON body of an answer of the images API.
type imagesBody struct {
	Created int64 `json:"created"`
	Data    []struct {
		B64JSON string `json:"b64_json"`
	} `json:"data"`
}

// generate runs g on req and returns the raw body and the PNGs in it.
func generate(t *testing.T, g sluice.ImageGenerator, req *sluice.ImageRequest) (raw []byte, pngs [][]byte) {
	t.Helper()
	res, err := g.Generate(context.Background(), req)
	if err != nil {
		t.Fatalf("Generate(%+v): %v", req, err)
	}
	defer res.Body.Close()
	if res.ContentType != "application/json" {
		t.Errorf("ContentType = %q, want application/json", res.ContentType)
	}
	raw, err = io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	var body imagesBody
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("body is not JSON: %v\n%.200s", err, raw)
	}
	if body.Created != epoch.Unix() {
		t.Errorf("created = %d, want %d", body.Created, epoch.Unix())
	}
	for i, d := range body.Data {
		b, err := base64.StdEncoding.DecodeString(d.B64JSON)
		if err != nil {
			t.Fatalf("data[%d].b64_json: %v", i, err)
		}
		pngs = append(pngs, b)
	}
	return raw, pngs
}

func decodePNG(t *testing.T, b []byte) image.Image {
	t.Helper()
	m, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode png: %v", err)
	}
	return m
}

func TestDemoDeterministic(t *testing.T) {
	req := &sluice.ImageRequest{Model: "sluice-sketch", Prompt: "a lighthouse at dusk", N: 2, Size: "256x128"}
	raw1, pngs := generate(t, newDemo(), req)
	raw2, _ := generate(t, newDemo(), req)
	if !bytes.Equal(raw1, raw2) {
		t.Errorf("two answers to the same request differ")
	}
	// The same picture comes back as the second of a request for two.
	_, single := generate(t, newDemo(), &sluice.ImageRequest{Model: req.Model, Prompt: req.Prompt, N: 1, Size: req.Size})
	if !bytes.Equal(single[0], pngs[0]) {
		t.Errorf("image 0 of n=2 differs from the image of n=1")
	}
	if bytes.Equal(pngs[0], pngs[1]) {
		t.Errorf("images 0 and 1 of one request are identical")
	}
}

func TestDemoSize(t *testing.T) {
	for _, size := range []string{"64x64", "512x512", "1024x256", "100x2048", "2048x64", "333x777"} {
		t.Run(size, func(t *testing.T) {
			_, pngs := generate(t, newDemo(), &sluice.ImageRequest{Model: "sluice-mosaic", Prompt: "tiles", N: 1, Size: size})
			var w, h int
			if _, err := fmt.Sscanf(size, "%dx%d", &w, &h); err != nil {
				t.Fatal(err)
			}
			if got, want := decodePNG(t, pngs[0]).Bounds(), image.Rect(0, 0, w, h); got != want {
				t.Errorf("bounds = %v, want %v", got, want)
			}
		})
	}
}

func TestDemoDefaults(t *testing.T) {
	_, pngs := generate(t, newDemo(), &sluice.ImageRequest{Model: "sluice-sketch", Prompt: "defaults"})
	if len(pngs) != 1 {
		t.Fatalf("got %d images, want 1", len(pngs))
	}
	if got, want := decodePNG(t, pngs[0]).Bounds(), image.Rect(0, 0, 512, 512); got != want {
		t.Errorf("bounds = %v, want %v", got, want)
	}
}

func TestDemoN(t *testing.T) {
	for _, n := range []int{1, 3, imagegen.MaxDemoN} {
		_, pngs := generate(t, newDemo(), &sluice.ImageRequest{Model: "sluice-ultra", Prompt: "many", N: n, Size: "64x96"})
		if len(pngs) != n {
			t.Errorf("n=%d: got %d images", n, len(pngs))
		}
		for i, b := range pngs {
			if got, want := decodePNG(t, b).Bounds(), image.Rect(0, 0, 64, 96); got != want {
				t.Errorf("n=%d: image %d: bounds = %v, want %v", n, i, got, want)
			}
		}
	}
}

// TestDemoDistinct checks that requests that differ in prompt or model get
// visibly different pictures: most pixels differ, not a few.
func TestDemoDistinct(t *testing.T) {
	base := sluice.ImageRequest{Model: "sluice-sketch", Prompt: "a red fox", N: 1, Size: "128x128"}
	_, want := generate(t, newDemo(), &base)
	m0 := decodePNG(t, want[0])
	for _, req := range []sluice.ImageRequest{
		{Model: "sluice-sketch", Prompt: "a red fax", N: 1, Size: "128x128"},
		{Model: "sluice-sketch", Prompt: "a red fox ", N: 1, Size: "128x128"},
		{Model: "sluice-studio", Prompt: "a red fox", N: 1, Size: "128x128"},
		{Model: "sluice-sketc", Prompt: "ha red fox", N: 1, Size: "128x128"},
	} {
		_, got := generate(t, newDemo(), &req)
		m := decodePNG(t, got[0])
		if f := differing(m0, m); f < 0.5 {
			t.Errorf("%q/%q against %q/%q: %.0f%% of pixels differ, want at least half",
				req.Model, req.Prompt, base.Model, base.Prompt, 100*f)
		}
	}
}

// differing returns the fraction of pixels in which a and b differ by more
// than a little in some channel.
func differing(a, b image.Image) float64 {
	r := a.Bounds()
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			r1, g1, b1, _ := a.At(x, y).RGBA()
			r2, g2, b2, _ := b.At(x, y).RGBA()
			if far(r1, r2) || far(g1, g2) || far(b1, b2) {
				n++
			}
		}
	}
	return float64(n) / float64(r.Dx()*r.Dy())
}

func far(a, b uint32) bool { return max(a, b)-min(a, b) > 16<<8 }

func TestDemoInvalid(t *testing.T) {
	for _, tt := range []struct {
		size  string
		n     int
		field string
	}{
		{"63x64", 1, "size"},
		{"64x63", 1, "size"},
		{"2049x512", 1, "size"},
		{"512x4096", 1, "size"},
		{"0x0", 1, "size"},
		{"512", 1, "size"},
		{"512X512", 1, "size"},
		{"512x512x1", 1, "size"},
		{"-512x512", 1, "size"},
		{"+512x512", 1, "size"},
		{" 512x512", 1, "size"},
		{"0512x512", 1, "size"},
		{"x", 1, "size"},
		{"99999999999999999999x512", 1, "size"},
		{"512x512", -1, "n"},
		{"512x512", imagegen.MaxDemoN + 1, "n"},
	} {
		_, err := newDemo().Generate(context.Background(), &sluice.ImageRequest{Model: "m", Prompt: "p", N: tt.n, Size: tt.size})
		var e *sluice.Error
		if !errors.As(err, &e) {
			t.Errorf("size %q, n %d: err = %v, want a *sluice.Error", tt.size, tt.n, err)
			continue
		}
		if e.Code != sluice.EINVALID || e.Field != tt.field {
			t.Errorf("size %q, n %d: code %q field %q, want %q field %q", tt.size, tt.n, e.Code, e.Field, sluice.EINVALID, tt.field)
		}
	}
}

func TestDemoDelay(t *testing.T) {
	d := newDemo()
	d.Delay = 20 * time.Millisecond
	start := time.Now()
	generate(t, d, &sluice.ImageRequest{Model: "m", Prompt: "slow", N: 1, Size: "64x64"})
	// A timer never fires early, so this is no race against the clock.
	if elapsed := time.Since(start); elapsed < d.Delay {
		t.Errorf("answered after %v, want at least the delay %v", elapsed, d.Delay)
	}
}

func TestDemoDelayCanceled(t *testing.T) {
	d := newDemo()
	d.Delay = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	res, err := d.Generate(ctx, &sluice.ImageRequest{Model: "m", Prompt: "p", N: 1, Size: "64x64"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Generate = %v, %v; want context.Canceled", res, err)
	}

	// An ended ctx stops a request with no delay too.
	res, err = newDemo().Generate(ctx, &sluice.ImageRequest{Model: "m", Prompt: "p", N: 1, Size: "64x64"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Generate = %v, %v; want context.Canceled", res, err)
	}
}

func TestDemoBodyClose(t *testing.T) {
	res, err := newDemo().Generate(context.Background(), &sluice.ImageRequest{Model: "m", Prompt: "p", N: 1, Size: "64x64"})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Body.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := res.Body.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n, err := res.Body.Read(make([]byte, 8)); n != 0 || err == nil {
		t.Errorf("Read after Close = %d, %v; want an error", n, err)
	}
}

// TestDemoConcurrent runs requests of different sizes at once, so that the
// race detector sees the pooled canvases and buffers shared between them.
func TestDemoConcurrent(t *testing.T) {
	d := newDemo()
	sizes := []string{"64x64", "300x200", "128x512"}
	want := make([][]byte, len(sizes))
	for i, s := range sizes {
		want[i], _ = generate(t, d, &sluice.ImageRequest{Model: "m", Prompt: s, N: 2, Size: s})
	}
	errc := make(chan error)
	for g := range 8 {
		go func() {
			for j := range 10 {
				i := (g + j) % len(sizes)
				res, err := d.Generate(context.Background(), &sluice.ImageRequest{Model: "m", Prompt: sizes[i], N: 2, Size: sizes[i]})
				if err != nil {
					errc <- err
					return
				}
				got, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err == nil && !bytes.Equal(got, want[i]) {
					err = errors.New("answer differs from the one drawn alone: " + sizes[i])
				}
				if err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

func BenchmarkDemo512(b *testing.B) {
	d := newDemo()
	req := &sluice.ImageRequest{Model: "sluice-sketch", Prompt: "a lighthouse at dusk", N: 1, Size: "512x512"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, err := d.Generate(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
}

func BenchmarkDemo(b *testing.B) {
	ctx := context.Background()
	for _, model := range []string{"sluice-sketch", "sluice-mosaic", "sluice-ultra"} {
		for _, size := range []string{"256x256", "1024x1024", "2048x2048"} {
			req := &sluice.ImageRequest{Model: model, Prompt: "a lighthouse at dusk", N: 1, Size: size}
			b.Run(model+"/"+size, func(b *testing.B) {
				d := newDemo()
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						res, err := d.Generate(ctx, req)
						if err != nil {
							b.Error(err)
							return
						}
						io.Copy(io.Discard, res.Body)
						res.Body.Close()
					}
				})
			})
		}
	}
}
