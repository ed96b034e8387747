package config

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90s", 90 * time.Second, true},
		{"1h30m", 90 * time.Minute, true},
		{"100ms", 100 * time.Millisecond, true},
		{"0", 0, true},
		{"-5m", -5 * time.Minute, true},
		{"7d", 7 * 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"1d.5h", 24*time.Hour + 30*time.Minute, true},
		{"+2d", 48 * time.Hour, true},
		{"-2d1h", -49 * time.Hour, true},
		{"0d", 0, true},
		{"106751d", 106751 * 24 * time.Hour, true},
		{"106751d23h47m16.854775807s", math.MaxInt64, true},
		{"106751d23h47m16.854775808s", 0, false}, // overflow
		{"106752d", 0, false},
		{"60", 0, false}, // a bare number is not a duration
		{"", 0, false},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"1d-1h", 0, false},
		{"1d+1h", 0, false},
		{"1h2d", 0, false},
		{"1dd", 0, false},
		{"--1d", 0, false},
		{"1w", 0, false},
		{"1 h", 0, false},
	} {
		got, err := ParseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                            "0s",
		time.Hour:                    "1h",
		24 * time.Hour:               "24h",
		time.Minute:                  "1m",
		90 * time.Second:             "1m30s",
		90 * time.Minute:             "1h30m",
		time.Hour + time.Second:      "1h0m1s",
		100 * time.Millisecond:       "100ms",
		-time.Hour:                   "-1h",
		1500 * time.Millisecond:      "1.5s",
		10*time.Minute + time.Second: "10m1s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		ok   bool
	}{
		{"65536", 65536, true},
		{"64KiB", 64 << 10, true},
		{"64 KiB", 64 << 10, true},
		{"64kib", 64 << 10, true},
		{"1MiB", 1 << 20, true},
		{"2GiB", 2 << 30, true},
		{"64KB", 64000, true},
		{"1MB", 1e6, true},
		{"1GB", 1e9, true},
		{"10B", 10, true},
		{"0", 0, true},
		{"8589934591GiB", 8589934591 << 30, true},
		{"8589934592GiB", 0, false}, // overflow
		{"-1", 0, false},
		{"+1", 0, false},
		{"1.5MiB", 0, false},
		{"KiB", 0, false},
		{"", 0, false},
		{"64  KiB", 0, false},
		{"64 TiB", 0, false},
		{"64\u212aB", 0, false}, // Kelvin sign, which folds to k
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	for s, want := range map[Size]string{0: "0", 1: "1", 1000: "1000", KiB: "1KiB", 64 * KiB: "64KiB", MiB: "1MiB", 3 * GiB: "3GiB", MiB + 1: "1048577"} {
		if got := s.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(s), got, want)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rate
		ok   bool
	}{
		{"10/1m", Rate{10, time.Minute}, true},
		{"3/1h", Rate{3, time.Hour}, true},
		{"10/m", Rate{10, time.Minute}, true},
		{"100/d", Rate{100, 24 * time.Hour}, true},
		{"5/30s", Rate{5, 30 * time.Second}, true},
		{"0/1m", Rate{0, time.Minute}, true}, // parses; Validate refuses it
		{"unlimited", Rate{Limit: sluice.Unlimited}, true},
		{"10", Rate{}, false},
		{"10/", Rate{}, false},
		{"/1m", Rate{}, false},
		{"-1/1m", Rate{}, false},
		{"10/0s", Rate{}, false},
		{"10/-1m", Rate{}, false},
		{"10/1m/1h", Rate{}, false},
		{"10 / 1m", Rate{}, false},
		{"ten/1m", Rate{}, false},
		{"Unlimited", Rate{}, false},
	} {
		got, err := ParseRate(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3/8":          "10.0.0.0/8",
		"10.1.2.3":            "10.1.2.3/32",
		"::1":                 "::1/128",
		"::ffff:10.0.0.1":     "10.0.0.1/32",
		"2001:db8::1/32":      "2001:db8::/32",
		"fe80::1%eth0":        "fe80::1/128",
		"10.0.0.0/33":         "",
		"example.com":         "",
		"10.0.0.0/8/8":        "",
		"":                    "",
		"2001:db8::/129":      "",
		"10.0.0.1 /32":        "",
		"::ffff:10.0.0.0/8":   "",
		"::ffff:10.1.0.0/104": "10.0.0.0/8",
	} {
		p, err := parsePrefix(in)
		if want == "" {
			if err == nil {
				t.Errorf("parsePrefix(%q) = %v, want an error", in, p)
			}
			continue
		}
		if err != nil || p.String() != want {
			t.Errorf("parsePrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"90s", "1h30m", "100ms", "0", "-5m", "7d", "1d12h", "1d.5h", "+2d", "106751d23h47m16.854775807s", "60", "", "1d-1h", "1µs", ".5h", "-2562047h47m16.854775808s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if !strings.Contains(s, "d") {
			want, werr := time.ParseDuration(s)
			if (err == nil) != (werr == nil) || d != want {
				t.Fatalf("ParseDuration(%q) = %v, %v; time.ParseDuration: %v, %v", s, d, err, want, werr)
			}
		}
		if err != nil {
			return
		}
		f := formatDuration(d)
		back, err := ParseDuration(f)
		if err != nil || back != d {
			t.Fatalf("ParseDuration(%q) = %v, formatted %q, parsed back %v, %v", s, d, f, back, err)
		}
	})
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"10/1m", "3/1h", "10/m", "100/d", "5/30s", "0/1m", "unlimited", "10/", "/1m", "10/-1m", "10/1d12h", "9223372036854775807/1ns", "1/+1h", "1/.5s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		if !r.Unlimited() && (r.Limit < 0 || r.Per <= 0) {
			t.Fatalf("ParseRate(%q) = %+v", s, r)
		}
		back, err := ParseRate(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseRate(%q) = %+v, formatted %q, parsed back %+v, %v", s, r, r.String(), back, err)
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"65536", "64KiB", "64 KiB", "1MiB", "2GiB", "64KB", "1mb", "10B", "0", "8589934591GiB", "-1", "1.5MiB", "KiB", "64\u212aB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		back, err := ParseSize(n.String())
		if err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d, formatted %q, parsed back %d, %v", s, n, n.String(), back, err)
		}
	})
}

func TestParseInts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Ints
		err  bool
	}{
		{"80,100", Ints{80, 100}, false},
		{" 80 , 90,100 ", Ints{80, 90, 100}, false},
		{"", Ints{}, false},
		{"  ", Ints{}, false},
		{"-5", Ints{-5}, false}, // a number; Validate checks the range
		{"80,", nil, true},
		{",80", nil, true},
		{"80;100", nil, true},
		{"8 0", nil, true},
		{"1e2", nil, true},
		{"99999999999999999999", nil, true},
		{strings.Repeat("1,", 100) + "1", nil, true},
	} {
		got, err := ParseInts(tc.in)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("ParseInts(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func FuzzParseInts(f *testing.F) {
	for _, s := range []string{"80,100", "80", "", " 1 , 2 ", "80,,100", "-1,0", "9223372036854775807", "１", strings.Repeat("7,", 120)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		xs, err := ParseInts(s)
		if err != nil {
			return
		}
		if len(xs) > maxInts {
			t.Fatalf("ParseInts(%q): %d numbers", s, len(xs))
		}
		back, err := ParseInts(xs.String())
		if err != nil || !slices.Equal(back, xs) {
			t.Fatalf("ParseInts(%q) = %v, formatted %q, parsed back %v, %v", s, xs, xs.String(), back, err)
		}
	})
}
