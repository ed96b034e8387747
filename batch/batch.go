// Package batch is `sluice batch`: it generates images in bulk through a
// gateway with the Go client, pacing itself by the quota headers, and writes
// each image atomically so that a rerun resumes where a run stopped.
package batch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/client"
)

// Exit codes of `sluice batch` (Main).
const (
	ExitOK          = 0
	ExitFailures    = 1
	ExitUsage       = 2
	ExitInterrupted = 130
)

// TmpSuffix ends the name of an output being written. A file with it is
// never a finished image: a run that was killed may leave one, and the next
// run removes it.
const TmpSuffix = ".sluice-tmp"

// Runner is `sluice batch`: it generates one image per prompt of a file,
// through a client.Client that paces itself by the quota headers, writing
// each image atomically so that a rerun resumes where a run stopped.
type Runner struct {
	URL, Key, Model string
	Out             string // directory of the images
	Size            string // "" means the gateway's default
	Concurrency     int
	Retries         int
	File            string // "-" means standard input

	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Terminal reports whether Stdout is a terminal: a progress bar there,
	// a plain line per image otherwise.
	Terminal bool
	Getenv   func(string) string
	// Options are passed to client.New after the Runner's own (tests use
	// them for short backoffs).
	Options []client.Option
	// OnItem, if set, is called after each item is settled (tests use it
	// to interrupt a run).
	OnItem func(done int)
}

// New returns a Runner with the defaults.
func New(stdin io.Reader, stdout, stderr io.Writer) *Runner {
	b := &Runner{Out: ".", Concurrency: 4, Retries: client.DefaultMaxRetries,
		Stdin: stdin, Stdout: stdout, Stderr: stderr, Getenv: os.Getenv}
	if f, ok := stdout.(*os.File); ok {
		b.Terminal = term.IsTerminal(int(f.Fd()))
	}
	return b
}

const batchUsage = `Usage: sluice batch --url URL --key KEY --model ID [--out DIR] [--concurrency N] [--size WxH] FILE

Generates one image per prompt of FILE ("-" for standard input): one prompt per
line, or JSON Lines with the fields prompt, model, n and file. It paces itself
by the account's quota headers, so that it uses the whole quota and receives no
429 in a normal run. Images are written atomically; a rerun skips the prompts
whose images exist (and asks only for the missing images of a prompt with n > 1),
so an interrupted run (Ctrl-C) resumes where it stopped.

`

// ParseFlags reads the command line. --url and --key default to
// $SLUICE_URL and $SLUICE_KEY (a key on the command line is visible to
// other users of the machine).
func (b *Runner) ParseFlags(args []string) error {
	fset := flag.NewFlagSet("sluice batch", flag.ContinueOnError)
	fset.SetOutput(b.Stderr)
	fset.Usage = func() {
		fmt.Fprint(b.Stderr, batchUsage)
		fset.PrintDefaults()
	}
	fset.StringVar(&b.URL, "url", b.Getenv("SLUICE_URL"), "base `URL` of the gateway (default $SLUICE_URL)")
	fset.StringVar(&b.Key, "key", b.Getenv("SLUICE_KEY"), "API `key` (default $SLUICE_KEY)")
	fset.StringVar(&b.Model, "model", b.Model, "model `ID` of the prompts that do not name one")
	fset.StringVar(&b.Out, "out", b.Out, "`directory` of the images")
	fset.IntVar(&b.Concurrency, "concurrency", b.Concurrency, "requests in flight at most")
	fset.StringVar(&b.Size, "size", b.Size, "image size `WxH` (default: the gateway's, 512x512)")
	fset.IntVar(&b.Retries, "retries", b.Retries, "retries of a request after a 429, a 5xx or a connection error")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flag.ErrHelp
		}
		return err
	}
	switch {
	case fset.NArg() == 0:
		return errors.New("sluice batch: a FILE of prompts is required (\"-\" for standard input)")
	case fset.NArg() > 1:
		return fmt.Errorf("sluice batch: unexpected argument %q after FILE", fset.Arg(1))
	case b.URL == "":
		return errors.New("sluice batch: --url is required (or SLUICE_URL)")
	case b.Key == "":
		return errors.New("sluice batch: --key is required (or SLUICE_KEY)")
	case b.Concurrency < 1:
		return errors.New("sluice batch: --concurrency must be at least 1")
	case b.Retries < 0:
		return errors.New("sluice batch: --retries must not be negative")
	}
	b.File = fset.Arg(0)
	return nil
}

// Main is `sluice batch` with its arguments; it returns the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	b := New(stdin, stdout, stderr)
	if err := b.ParseFlags(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintln(stderr, err)
		return ExitUsage
	}
	s, err := b.Run(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "sluice batch:", err)
	}
	switch {
	case s.Interrupted:
		return ExitInterrupted
	case errors.Is(err, errBadInput):
		return ExitUsage
	case err != nil || s.Failed > 0:
		return ExitFailures
	}
	return ExitOK
}

// item is one prompt of the input.
type item struct {
	Line   int    `json:"-"`
	Prompt string `json:"prompt"`
	Model  string `json:"model"`
	N      int    `json:"n"`
	File   string `json:"file"`
	// files are the paths of its images, in the output directory.
	files []string
	// missing are those of files that are not on disk, set when the run
	// starts: what the item asks for (n = len(missing)) and writes, so
	// that images an interrupted run wrote are never paid for again.
	missing []string
}

var errBadInput = errors.New("bad input")

// readItems reads the prompts: a line that starts with '{' is a JSON object
// with the fields prompt (required), model, n and file; any other line that
// is not blank is a prompt. model is the model of the items that name none.
func readItems(r io.Reader, model string) ([]*item, error) {
	var items []*item
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if line == 1 {
			text = strings.TrimPrefix(text, "\uFEFF")
		}
		if text == "" {
			continue
		}
		it := &item{Line: line, Prompt: text}
		if strings.HasPrefix(text, "{") {
			it = &item{Line: line}
			dec := json.NewDecoder(strings.NewReader(text))
			dec.DisallowUnknownFields()
			if err := dec.Decode(it); err != nil {
				return nil, fmt.Errorf("%w: line %d: %v", errBadInput, line, err)
			}
			if dec.More() {
				return nil, fmt.Errorf("%w: line %d: more than one JSON value", errBadInput, line)
			}
			if strings.TrimSpace(it.Prompt) == "" {
				return nil, fmt.Errorf("%w: line %d: prompt is missing or blank", errBadInput, line)
			}
		}
		if it.Model == "" {
			it.Model = model
		}
		if it.Model == "" {
			return nil, fmt.Errorf("%w: line %d: no model; give --model or a \"model\" field", errBadInput, line)
		}
		switch {
		case it.N == 0:
			it.N = 1
		case it.N < 0:
			return nil, fmt.Errorf("%w: line %d: n must be positive", errBadInput, line)
		}
		files, err := outputFiles(it)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", errBadInput, line, err)
		}
		it.files = files
		items = append(items, it)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read prompts: %w", err)
	}
	return items, nil
}

// outputFiles are the paths (relative to the output directory) of an item's
// images: its file field (".png" added if it has no extension), else a slug
// of the prompt and a short hash of the model and prompt; with n > 1,
// name-1.png, name-2.png, ….
func outputFiles(it *item) ([]string, error) {
	name := it.File
	if name != "" {
		name = filepath.Clean(filepath.FromSlash(name))
		if !filepath.IsLocal(name) || strings.HasSuffix(name, TmpSuffix) {
			return nil, fmt.Errorf("file %q must be a relative path inside the output directory", it.File)
		}
		if filepath.Ext(name) == "" {
			name += ".png"
		}
	} else {
		h := sha256.Sum256([]byte(it.Model + "\n" + it.Prompt))
		name = slug(it.Prompt, 40) + "-" + hex.EncodeToString(h[:4]) + ".png"
	}
	if it.N == 1 {
		return []string{name}, nil
	}
	ext := filepath.Ext(name)
	base := strings.TrimSuffix(name, ext)
	files := make([]string, it.N)
	for i := range files {
		files[i] = fmt.Sprintf("%s-%d%s", base, i+1, ext)
	}
	return files, nil
}

// slug returns s in lower case with every run of characters other than
// ASCII letters and digits replaced by one '-', trimmed to at most max
// bytes; "image" if nothing is left.
func slug(s string, max int) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
			if b.Len() >= max {
				break
			}
			continue
		}
		dash = true
	}
	if b.Len() == 0 {
		return "image"
	}
	return strings.TrimRight(b.String(), "-")
}

// Summary is the outcome of a run.
type Summary struct {
	Total       int // items in the input
	Skipped     int // their images were there already
	Duplicates  int // the same images as an earlier item
	Done        int // generated in this run
	Failed      int
	Left        int // not attempted, or abandoned on an interrupt
	Interrupted bool
	Elapsed     time.Duration
	Stats       client.Stats
}

// result is the outcome of one item.
type result struct {
	it  *item
	err error
}

// Run generates the images of the input and returns what it did. An error
// means the run could not start (bad input, an unwritable directory) or
// was stopped by an error that every request would get (a bad key, a plan
// without API access). If ctx ends, in-flight requests are abandoned (the
// gateway refunds what it does not deliver), no partial file is left, and
// the Summary says Interrupted.
func (b *Runner) Run(ctx context.Context) (Summary, error) {
	var s Summary
	start := time.Now()
	in := b.Stdin
	if b.File != "-" {
		f, err := os.Open(b.File)
		if err != nil {
			return s, fmt.Errorf("%w: %v", errBadInput, err)
		}
		defer f.Close()
		in = f
	}
	items, err := readItems(in, b.Model)
	if err != nil {
		return s, err
	}
	s.Total = len(items)
	if err := os.MkdirAll(b.Out, 0o755); err != nil {
		return s, fmt.Errorf("output directory: %w", err)
	}

	// Resume: sweep what a killed run left half-written, skip what is
	// there, and generate each set of files once.
	todo := make([]*item, 0, len(items))
	seen := map[string]bool{}
	swept := map[string]bool{}
	units := int64(0)
	for _, it := range items {
		dir := filepath.Join(b.Out, filepath.Dir(it.files[0]))
		if !swept[dir] {
			swept[dir] = true
			sweepTemp(dir)
		}
		if seen[it.files[0]] {
			s.Duplicates++
			continue
		}
		for _, f := range it.files {
			seen[f] = true
		}
		it.missing = b.missing(it)
		if len(it.missing) == 0 {
			s.Skipped++
			continue
		}
		todo = append(todo, it)
		units += int64(len(it.missing))
	}

	c := client.New(b.URL, b.Key, append([]client.Option{client.WithMaxRetries(b.Retries)}, b.Options...)...)
	// Where the account stands, before the first image: GET /v1/usage
	// costs nothing, and without it the first request would be sent
	// blind, into a 429 if an earlier run spent the quota.
	if len(todo) > 0 {
		if _, err := c.Usage(ctx); err != nil {
			if isFatal(err) || ctx.Err() != nil {
				s.Left = len(todo)
				s.Interrupted = ctx.Err() != nil
				s.Elapsed = time.Since(start)
				s.Stats = c.Stats()
				newProgress(b, c, 0, 0, s.Skipped).finish(s)
				if s.Interrupted {
					return s, nil
				}
				return s, err
			}
			fmt.Fprintf(b.Stderr, "sluice batch: usage: %v; going on without it\n", err)
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := newProgress(b, c, len(todo), units, s.Skipped)

	queue := make(chan *item)
	results := make(chan result)
	var wg sync.WaitGroup
	for range min(b.Concurrency, max(len(todo), 1)) {
		wg.Go(func() {
			for it := range queue {
				results <- result{it, b.generate(ctx, c, it)}
			}
		})
	}
	go func() {
		defer close(queue)
		for _, it := range todo {
			select {
			case queue <- it:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()

	var fatal error
	for r := range results {
		switch {
		case r.err == nil:
			s.Done++
			units -= int64(len(r.it.missing))
			p.item(r.it, nil, units)
		case ctx.Err() != nil && errors.Is(r.err, context.Cause(ctx)):
			// Abandoned: counted in Left.
		default:
			s.Failed++
			units -= int64(len(r.it.missing))
			p.item(r.it, r.err, units)
			if isFatal(r.err) && fatal == nil {
				fatal = r.err
				cancel(errFatal)
			}
		}
		if b.OnItem != nil {
			b.OnItem(s.Done)
		}
	}
	s.Left = len(todo) - s.Done - s.Failed
	s.Interrupted = s.Left > 0 && ctx.Err() != nil && !errors.Is(context.Cause(ctx), errFatal)
	s.Elapsed = time.Since(start)
	s.Stats = c.Stats()
	p.finish(s)
	return s, fatal
}

var errFatal = errors.New("stopped after an error that every request would get")

// isFatal reports whether err is one that every further request would get
// too, so that the run stops: a bad key, a plan without API access.
func isFatal(err error) bool {
	switch sluice.ErrorCode(err) {
	case sluice.EINVALIDKEY, sluice.ENOAPIACCESS, sluice.EUNAUTHORIZED:
		return true
	}
	return false
}

// missing returns the images of it that are not there. Each image is
// written whole or not at all (writeAtomic), so the files on disk are the
// record of what an earlier run finished, image by image: an item with
// n > 1 that a run left half written asks only for the rest.
func (b *Runner) missing(it *item) []string {
	var out []string
	for _, f := range it.files {
		fi, err := os.Stat(filepath.Join(b.Out, f))
		if err != nil || !fi.Mode().IsRegular() {
			out = append(out, f)
		}
	}
	return out
}

// generate asks for the item's missing images and writes them.
func (b *Runner) generate(ctx context.Context, c *client.Client, it *item) error {
	n := len(it.missing)
	res, err := c.GenerateImages(ctx, &client.ImageRequest{Model: it.Model, Prompt: it.Prompt, N: n, Size: b.Size})
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return err
	}
	if len(res.Data) != n {
		return fmt.Errorf("asked for %d images, got %d", n, len(res.Data))
	}
	for i, im := range res.Data {
		data, err := im.Bytes()
		if err != nil {
			return err
		}
		if err := writeAtomic(filepath.Join(b.Out, it.missing[i]), data); err != nil {
			return err
		}
	}
	return nil
}

// writeAtomic writes data to path through a temporary file in the same
// directory that is synced and then renamed over path, so that path is
// either absent or whole, whenever the process stops; then it syncs the
// directory, so that the rename itself survives a crash of the machine
// (without it, the new name may be lost although the data is on disk).
func writeAtomic(path string, data []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+base+".*"+TmpSuffix)
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	return nil
}

// syncDir makes the entries of directory dir durable. A variable, so that
// a test can see that writeAtomic calls it after the rename.
var syncDir = func(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for syncing there
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// sweepTemp removes the temporary files a killed run left in dir.
func sweepTemp(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, ".") && strings.HasSuffix(n, TmpSuffix) && e.Type().IsRegular() {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

// progress shows the run: a progress bar on a terminal, a line per item
// otherwise, and a summary at the end. Its methods are called from one
// goroutine, except the bar's own refresh.
type progress struct {
	b       *Runner
	c       *client.Client
	total   int
	done    int // items settled
	start   time.Time
	bar     *progressbar.ProgressBar
	stop    chan struct{}
	stopped sync.WaitGroup
	mu      sync.Mutex // guards done and units, which the refresher reads
	units   int64      // units still to generate
}

func newProgress(b *Runner, c *client.Client, total int, units int64, skipped int) *progress {
	p := &progress{b: b, c: c, total: total, start: time.Now(), units: units, stop: make(chan struct{})}
	if skipped > 0 {
		fmt.Fprintf(b.Stdout, "sluice batch: %d prompts already done in %s; %d to go\n", skipped, b.Out, total)
	}
	if !b.Terminal || total == 0 {
		return p
	}
	p.bar = progressbar.NewOptions(total,
		progressbar.OptionSetWriter(b.Stdout),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("img"),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionSetDescription(p.describe(time.Now())),
	)
	p.bar.RenderBlank()
	// The quota line changes while the run waits for a reset: refresh it.
	p.stopped.Add(1)
	go func() {
		defer p.stopped.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.bar.Describe(p.describe(time.Now()))
			case <-p.stop:
				return
			}
		}
	}()
	return p
}

// item reports a settled item; units are the units still to generate.
func (p *progress) item(it *item, err error, units int64) {
	p.mu.Lock()
	p.done++
	done := p.done
	p.units = units
	p.mu.Unlock()
	now := time.Now()
	if p.bar != nil {
		if err != nil {
			p.bar.Clear()
			fmt.Fprintf(p.b.Stdout, "\rline %d: %v\n", it.Line, err)
		}
		p.bar.Describe(p.describe(now))
		p.bar.Add(1)
		return
	}
	status := "ok  "
	detail := strings.Join(it.missing, " ")
	if err != nil {
		status, detail = "FAIL", fmt.Sprintf("line %d: %v", it.Line, err)
	}
	fmt.Fprintf(p.b.Stdout, "%s [%d/%d] %s  (%s)\n", status, done, p.total, detail, p.describe(now))
}

// describe is the quota line: "87 left this hour, next unit 15:42:07, ETA
// 16:10:00".
func (p *progress) describe(now time.Time) string {
	p.mu.Lock()
	units, done := p.units, p.done
	p.mu.Unlock()
	q := p.c.Quota()
	var parts []string
	switch {
	case !q.Known:
		parts = append(parts, "quota not known yet")
	case q.Unlimited:
		parts = append(parts, "no limits")
	default:
		var next time.Time
		for _, w := range q.Windows {
			parts = append(parts, fmt.Sprintf("%d left this %s", max(w.Remaining-q.InFlight, 0), w.Name))
			if w.Remaining-q.InFlight <= 0 && w.Reset.After(next) {
				next = w.Reset
			}
		}
		if !next.IsZero() {
			parts = append(parts, "next unit "+timeOfDay(next, now))
		}
	}
	if units > 0 {
		if eta := estimate(q, units, done, now.Sub(p.start), now); !eta.IsZero() {
			parts = append(parts, "ETA "+timeOfDay(eta, now))
		}
	}
	return strings.Join(parts, ", ")
}

// timeOfDay formats t as a time of day, with seconds when it is less than an
// hour away, and with the date when it is not today.
func timeOfDay(t, now time.Time) string {
	switch {
	case t.YearDay() != now.YearDay() || t.Year() != now.Year():
		return t.Format("Jan 2 15:04")
	case t.Sub(now) < time.Hour:
		return t.Format("15:04:05")
	}
	return t.Format("15:04")
}

// estimate is when `units` more units will have been generated: the later
// of what the quota allows and what the pace so far allows. For the quota,
// each window that has fewer units left than needed frees the next unit at
// its reset, and then a whole limit every window length (as a sliding
// window does once it is saturated: the units charged together free
// together). Zero if nothing is known.
func estimate(q client.Quota, units int64, done int, elapsed time.Duration, now time.Time) time.Time {
	var eta time.Time
	if done > 0 {
		eta = now.Add(time.Duration(float64(elapsed) / float64(done) * float64(units)))
	}
	if !q.Known || q.Unlimited {
		return eta
	}
	for _, w := range q.Windows {
		extra := units - w.Remaining
		if extra <= 0 || w.Limit <= 0 {
			continue
		}
		t := w.Reset
		if t.Before(now) {
			t = now
		}
		if w.Length > 0 {
			t = t.Add(time.Duration((extra-1)/w.Limit) * w.Length)
		}
		if t.After(eta) {
			eta = t
		}
	}
	return eta
}

// finish stops the display and prints the summary.
func (p *progress) finish(s Summary) {
	close(p.stop)
	p.stopped.Wait()
	if p.bar != nil {
		if s.Interrupted {
			p.bar.Exit()
		} else {
			p.bar.Finish()
		}
		fmt.Fprintln(p.b.Stdout)
	}
	var w bytes.Buffer
	fmt.Fprintf(&w, "sluice batch: %d done, %d failed", s.Done, s.Failed)
	if s.Skipped > 0 {
		fmt.Fprintf(&w, ", %d skipped (already there)", s.Skipped)
	}
	if s.Duplicates > 0 {
		fmt.Fprintf(&w, ", %d duplicates", s.Duplicates)
	}
	fmt.Fprintf(&w, ", %d left; %s; %d requests, %d 429s received",
		s.Left, s.Elapsed.Round(10*time.Millisecond), s.Stats.Requests, s.Stats.RateLimited)
	if s.Stats.Waits > 0 {
		fmt.Fprintf(&w, "; waited for quota %d times", s.Stats.Waits)
	}
	w.WriteByte('\n')
	if s.Interrupted {
		fmt.Fprintf(&w, "sluice batch: interrupted; no partial files were left. Run the same command again to do the %d left.\n", s.Left)
	}
	p.b.Stdout.Write(w.Bytes())
}
