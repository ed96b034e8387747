package sluice

import (
	"strings"
	"testing"
)

// FuzzSearchTerms: the LIKE pattern matches the text literally: every
// wildcard and escape character of the text is escaped, and the limit is
// within bounds.
func FuzzSearchTerms(f *testing.F) {
	for _, s := range []string{"", "ann@example.com", "42", "%", "_", `\`, "  Mixed Case  ", "-7", "0"} {
		f.Add(s, 0)
	}
	f.Add("x", 10_000)
	f.Add("x", -1)
	f.Fuzz(func(t *testing.T, text string, limit int) {
		got, pattern, id, n := SearchTerms(AccountQuery{Text: text, Limit: limit})
		if got != strings.ToLower(strings.TrimSpace(text)) {
			t.Fatalf("text %q", got)
		}
		if n < 1 || n > MaxAccountSearchLimit {
			t.Fatalf("limit %d", n)
		}
		if id < 0 {
			t.Fatalf("id %d", id)
		}
		if !strings.HasPrefix(pattern, "%") || !strings.HasSuffix(pattern, "%") || len(pattern) < 2 {
			t.Fatalf("pattern %q", pattern)
		}
		// Unescaping the inside gives the text back, and no wildcard is
		// left unescaped.
		inner := pattern[1 : len(pattern)-1]
		var b strings.Builder
		for i := 0; i < len(inner); i++ {
			c := inner[i]
			if c == '\\' {
				if i+1 == len(inner) {
					t.Fatalf("pattern %q ends in an escape", pattern)
				}
				i++
				b.WriteByte(inner[i])
				continue
			}
			if c == '%' || c == '_' {
				t.Fatalf("pattern %q has an unescaped wildcard", pattern)
			}
			b.WriteByte(c)
		}
		if b.String() != got {
			t.Fatalf("pattern %q stands for %q, want %q", pattern, b.String(), got)
		}
	})
}
