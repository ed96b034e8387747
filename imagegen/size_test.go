package imagegen

import (
	"errors"
	"strconv"
	"testing"

	"github.com/sluicehq/sluice"
)

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		w, h int
		ok   bool
	}{
		{"512x512", 512, 512, true},
		{"64x2048", 64, 2048, true},
		{"2048x64", 2048, 64, true},
		{"1000x999", 1000, 999, true},
		{"63x512", 0, 0, false},
		{"512x2049", 0, 0, false},
		{"0x0", 0, 0, false},
		{"", 0, 0, false},
		{"x", 0, 0, false},
		{"512", 0, 0, false},
		{"512x", 0, 0, false},
		{"x512", 0, 0, false},
		{"512X512", 0, 0, false},
		{"512×512", 0, 0, false},
		{"512x512x512", 0, 0, false},
		{"0512x512", 0, 0, false},
		{"+512x512", 0, 0, false},
		{"512x-512", 0, 0, false},
		{"512 x512", 0, 0, false},
		{"512x512\n", 0, 0, false},
		{"99999999999999999999999x512", 0, 0, false},
	} {
		w, h, err := parseSize(tt.in)
		if ok := err == nil; ok != tt.ok || w != tt.w || h != tt.h {
			t.Errorf("parseSize(%q) = %d, %d, %v; want %d, %d, ok=%t", tt.in, w, h, err, tt.w, tt.h, tt.ok)
		}
	}
}

// FuzzParseSize checks that parseSize accepts exactly the canonical
// spellings of sizes within bounds, and that everything else is an
// EINVALID error for the field "size".
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512x512", "64x64", "2048x2048", "63x64", "1x1", "x", "", "0512x512", "512x", "9999999999x1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, h, err := parseSize(s)
		if err != nil {
			var e *sluice.Error
			if !errors.As(err, &e) || e.Code != sluice.EINVALID || e.Field != "size" {
				t.Fatalf("parseSize(%q): err = %#v, want an EINVALID error for size", s, err)
			}
			if w != 0 || h != 0 {
				t.Fatalf("parseSize(%q) = %d, %d with an error", s, w, h)
			}
			return
		}
		if w < MinSide || w > MaxSide || h < MinSide || h > MaxSide {
			t.Fatalf("parseSize(%q) = %d, %d: out of bounds", s, w, h)
		}
		if canon := strconv.Itoa(w) + "x" + strconv.Itoa(h); canon != s {
			t.Fatalf("parseSize(%q) = %d, %d, which is spelled %q", s, w, h, canon)
		}
	})
}
