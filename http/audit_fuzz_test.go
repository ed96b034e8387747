package http

import (
	"errors"
	"net/url"
	"testing"

	"github.com/sluicehq/sluice"
)

// FuzzParseAuditQuery: the query of the audit endpoints never panics the
// parser; a refusal is a §5 invalid_request naming one of the parameters
// (or none, for a query that is not URL encoding); an acceptance is within
// the bounds of sluice.AuditFilter and agrees with the query.
func FuzzParseAuditQuery(f *testing.F) {
	for _, seed := range []string{
		"", "account=1", "account=1&limit=500&before=9223372036854775807", "limit=0", "limit=501",
		"before=-1", "account=%2B1", "limit=%zz", "limit=1&limit=1", "account=&limit=&before=",
		"account=99999999999999999999", "limit=1e2", "x=1;y=2", "limit=\x00", "before=007",
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	f.Fuzz(func(t *testing.T, raw string, withAccount bool) {
		got, err := parseAuditQuery(raw, withAccount)
		if err != nil {
			var e *sluice.Error
			if !errors.As(err, &e) || e.Code != sluice.EINVALID || e.Message == "" {
				t.Fatalf("parseAuditQuery(%q): %v, want an invalid_request", raw, err)
			}
			switch e.Field {
			case "limit", "before":
			case "account":
				if !withAccount {
					t.Fatalf("parseAuditQuery(%q) without account refused account: %v", raw, err)
				}
			case "":
				if _, perr := url.ParseQuery(raw); perr == nil {
					t.Fatalf("parseAuditQuery(%q): %v without a field for a query that parses", raw, err)
				}
			default:
				t.Fatalf("parseAuditQuery(%q) names %q", raw, e.Field)
			}
			checkErrorBody(t, err, sluice.EINVALID)
			return
		}
		if got.AccountID < 0 || (!withAccount && got.AccountID != 0) || got.Before < 0 ||
			got.Limit < 0 || got.Limit > sluice.MaxAuditLimit {
			t.Fatalf("parseAuditQuery(%q, %v) = %+v, out of bounds", raw, withAccount, got)
		}
		q, _ := url.ParseQuery(raw)
		if got.Limit != 0 && q.Get("limit") == "" || got.Before != 0 && q.Get("before") == "" {
			t.Fatalf("parseAuditQuery(%q) = %+v from nothing", raw, got)
		}
	})
}
