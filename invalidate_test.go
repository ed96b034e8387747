package sluice_test

import (
	"testing"

	"github.com/sluicehq/sluice"
)

// FuzzDecodeInvalidation: any message is parsed without a crash, and what
// EncodeInvalidation writes reads back.
func FuzzDecodeInvalidation(f *testing.F) {
	for _, s := range []string{"v1 abc quota {acct:1}", "v1 abc account 42", "v1 abc api_key k 1", "v1 abc later x",
		"v2 abc quota k", "v1  quota k", "", "v1", "v1 a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		origin, inv, ok := sluice.DecodeInvalidation(msg)
		if !ok || inv.Kind == sluice.InvalidateAll {
			return
		}
		o2, inv2, ok := sluice.DecodeInvalidation(sluice.EncodeInvalidation(origin, inv))
		if !ok || o2 != origin || inv2 != inv {
			t.Fatalf("%q: (%q, %+v) reads back as (%q, %+v, %v)", msg, origin, inv, o2, inv2, ok)
		}
	})
}
