package batch

import (
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice/client"
)

func TestBatchFlags(t *testing.T) {
	env := map[string]string{"SLUICE_URL": "http://env:8080", "SLUICE_KEY": "slk_env"}
	for _, tc := range []struct {
		args []string
		err  string
		want func(b *Runner) bool
	}{
		{[]string{"--url", "http://h", "--key", "k", "--model", "m", "--out", "o", "--concurrency", "3", "--size", "64x64", "p.txt"}, "",
			func(b *Runner) bool {
				return b.URL == "http://h" && b.Key == "k" && b.Model == "m" && b.Out == "o" && b.Concurrency == 3 && b.Size == "64x64" && b.File == "p.txt"
			}},
		{[]string{"-"}, "", func(b *Runner) bool {
			return b.URL == "http://env:8080" && b.Key == "slk_env" && b.Out == "." && b.Concurrency == 4 && b.File == "-" && b.Retries == client.DefaultMaxRetries
		}},
		{[]string{}, "a FILE of prompts is required", nil},
		{[]string{"a", "b"}, `unexpected argument "b"`, nil},
		{[]string{"--concurrency", "0", "f"}, "--concurrency must be at least 1", nil},
		{[]string{"--retries", "-1", "f"}, "--retries must not be negative", nil},
		{[]string{"--bogus", "f"}, "flag provided but not defined", nil},
	} {
		b := New(nil, io.Discard, io.Discard)
		b.Getenv = func(k string) string { return env[k] }
		err := b.ParseFlags(tc.args)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.args, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case !tc.want(b):
			t.Errorf("%q: %+v", tc.args, b)
		}
	}
	b := New(nil, io.Discard, io.Discard)
	b.Getenv = func(string) string { return "" }
	for _, args := range [][]string{{"f"}, {"--url", "u", "f"}} {
		if err := b.ParseFlags(args); err == nil || !strings.Contains(err.Error(), "is required") {
			t.Errorf("%q without url or key: %v", args, err)
		}
	}
}

func TestReadItems(t *testing.T) {
	in := "\uFEFFa lighthouse at dusk\n\n  A Lighthouse at Dusk!  \n" +
		`{"prompt":"two cats","n":2,"file":"cats/pair"}` + "\n" +
		`{"prompt":"a fox","model":"sluice-studio","file":"fox.jpg"}` + "\n" +
		"東京タワー\n"
	items, err := readItems(strings.NewReader(in), "sluice-sketch")
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Line          int
		Prompt, Model string
		N             int
		Files         []string
	}
	var got []row
	for _, it := range items {
		got = append(got, row{it.Line, it.Prompt, it.Model, it.N, it.files})
	}
	want := []row{
		{1, "a lighthouse at dusk", "sluice-sketch", 1, []string{"a-lighthouse-at-dusk-" + shortHash("sluice-sketch", "a lighthouse at dusk") + ".png"}},
		{3, "A Lighthouse at Dusk!", "sluice-sketch", 1, []string{"a-lighthouse-at-dusk-" + shortHash("sluice-sketch", "A Lighthouse at Dusk!") + ".png"}},
		{4, "two cats", "sluice-sketch", 2, []string{filepath.FromSlash("cats/pair-1.png"), filepath.FromSlash("cats/pair-2.png")}},
		{5, "a fox", "sluice-studio", 1, []string{"fox.jpg"}},
		{6, "東京タワー", "sluice-sketch", 1, []string{"image-" + shortHash("sluice-sketch", "東京タワー") + ".png"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got)\n%s", diff)
	}

	for _, tc := range []struct{ in, model, err string }{
		{`{"prompt":"x","colour":"red"}`, "m", `line 1: json: unknown field "colour"`},
		{"ok\n{\"prompt\":\"  \"}", "m", "line 2: prompt is missing or blank"},
		{`{"prompt":"x"} {"prompt":"y"}`, "m", "line 1: more than one JSON value"},
		{`{"prompt":"x","n":-1}`, "m", "line 1: n must be positive"},
		{`{"prompt":"x","file":"../escape.png"}`, "m", "must be a relative path inside the output directory"},
		{`{"prompt":"x","file":"/etc/x.png"}`, "m", "must be a relative path inside the output directory"},
		{"a prompt", "", `line 1: no model; give --model or a "model" field`},
		{`{"prompt":`, "m", "line 1:"},
	} {
		_, err := readItems(strings.NewReader(tc.in), tc.model)
		if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, errBadInput) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
		}
	}
}

func shortHash(model, prompt string) string {
	it := &item{Model: model, Prompt: prompt, N: 1}
	f, _ := outputFiles(it)
	name := strings.TrimSuffix(f[0], ".png")
	return name[strings.LastIndexByte(name, '-')+1:]
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{
		"A lighthouse at dusk":       "a-lighthouse-at-dusk",
		"  --Hello,   World!!  ":     "hello-world",
		"café au lait":               "caf-au-lait",
		"":                           "image",
		"!!!":                        "image",
		strings.Repeat("abcdef ", 9): "abcdef-abcdef-abcdef-abcdef-abcdef-abcde",
	} {
		if got := slug(in, 40); got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestEstimate: the ETA knows the quota: with 87 left this hour and 300 to
// go, the 87 go now, the next unit at the reset, and then 100 an hour.
func TestEstimate(t *testing.T) {
	now := time.Date(2026, 3, 8, 15, 0, 0, 0, time.UTC)
	q := client.Quota{Known: true, Windows: []client.WindowQuota{
		{Name: "hour", Limit: 100, Remaining: 87, Reset: now.Add(42 * time.Minute), Length: time.Hour},
		{Name: "day", Limit: 1000, Remaining: 934, Reset: now.Add(20 * time.Hour), Length: 24 * time.Hour},
	}}
	h := func(d time.Duration) time.Time { return now.Add(d) }
	for _, tc := range []struct {
		units int64
		want  time.Time
	}{
		{0, now},
		{50, h(50 * time.Second)},              // the pace so far: 1s an image
		{87, h(87 * time.Second)},              // all within the hour's 87
		{88, h(42 * time.Minute)},              // one over: at the hour's reset
		{187, h(42 * time.Minute)},             // 100 over: all at the reset
		{188, h(42*time.Minute + time.Hour)},   // 101 over: the last an hour later
		{300, h(42*time.Minute + 2*time.Hour)}, // 213 over
		{1000, h(20 * time.Hour)},              // the hour says 9h42m, the day 20h
		{2000, h(20*time.Hour + 24*time.Hour)}, // the day: 1066 over
		{1935, h(20*time.Hour + 24*time.Hour)}, // the hour says 18h42m, the day (1001 over) 44h
	} {
		if got := estimate(q, tc.units, 10, 10*time.Second, now); !got.Equal(tc.want) {
			t.Errorf("estimate(%d) = now+%v, want now+%v", tc.units, got.Sub(now), tc.want.Sub(now))
		}
	}
}
