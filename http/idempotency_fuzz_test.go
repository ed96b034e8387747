package http

import (
	"net/http"
	"strings"
	"testing"

	"github.com/sluicehq/sluice"
)

// FuzzIdempotencyKey checks that any header value is either accepted as a
// key of 1 to 255 printable ASCII characters, returned unchanged, or refused
// with a §5 error naming the header; never a panic.
func FuzzIdempotencyKey(f *testing.F) {
	for _, s := range []string{"", "k", "batch-7f3a:0001", " ", "a b", "tab\there", "é", "\x00",
		"\x7f", strings.Repeat("x", 255), strings.Repeat("x", 256), "ok\r\nX-Injected: 1"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, v string, twice bool) {
		h := http.Header{"Idempotency-Key": {v}}
		if twice {
			h.Add("Idempotency-Key", v)
		}
		key, err := parseIdempotencyKey(h)
		if err != nil {
			checkErrorBody(t, err, sluice.EINVALID)
			if f := err.(*sluice.Error).Field; f != "Idempotency-Key" {
				t.Errorf("error names field %q, want Idempotency-Key", f)
			}
			if !twice && sluice.ValidIdempotencyKey(v) {
				t.Errorf("valid key %q refused: %v", v, err)
			}
			return
		}
		if twice || key != v {
			t.Fatalf("parseIdempotencyKey(%q, twice=%v) = %q, nil", v, twice, key)
		}
		if len(key) < 1 || len(key) > 255 {
			t.Errorf("accepted a key of %d bytes", len(key))
		}
		for i := 0; i < len(key); i++ {
			if key[i] < 0x20 || key[i] > 0x7e {
				t.Errorf("accepted a key with byte %#x", key[i])
			}
		}
	})
}
