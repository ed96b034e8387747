package http

import (
	"net/url"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

// FuzzHistoryParams: any query string and Accept header give either a §5
// invalid_request naming a parameter, or a query the stores can run: a
// known granularity and grouping, from not after to, at most
// MaxHistoryBuckets buckets.
func FuzzHistoryParams(f *testing.F) {
	for _, s := range []string{
		"", "granularity=minute", "granularity=week", "from=1709900000&to=1709990000",
		"from=2026-03-10T00:00:00Z&to=2026-03-11T00:00:00%2B02:00", "from=-1", "to=99999999999999999999",
		"granularity=minute&from=0&to=600000", "granularity=minute&from=0&to=600001", "group_by=key&format=csv",
		"group_by=plan", "format=xml", "from=1709990000&to=1709900000", "from=0001-01-01T00:00:00Z",
		"from=9999-12-31T23:59:59Z", "from=%ff", "from=1e9", "limit=5&window=hour", "window=day&limit=100",
	} {
		f.Add(s, "")
	}
	f.Add("", "text/csv")
	f.Add("format=json", "text/CSV; q=0.9")
	now := time.Unix(1709900000, 0)
	f.Fuzz(func(t *testing.T, raw, accept string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		p, err := parseHistoryParams(v, accept, now)
		if err != nil {
			checkErrorBody(t, err, sluice.EINVALID)
			if e, _ := err.(*sluice.Error); e == nil || e.Field == "" {
				t.Fatalf("%q: error %v names no field", raw, err)
			}
		} else {
			d, ok := sluice.UsageGranularity(p.q.Granularity)
			if !ok {
				t.Fatalf("%q: granularity %q", raw, p.q.Granularity)
			}
			if p.q.From.After(p.q.To) || p.q.To.Sub(p.q.From) > MaxHistoryBuckets*d {
				t.Fatalf("%q: range %v to %v of %s", raw, p.q.From, p.q.To, p.q.Granularity)
			}
			switch p.q.GroupBy {
			case "", sluice.GroupByKey, sluice.GroupByChannel, sluice.GroupByModel:
			default:
				t.Fatalf("%q: group_by %q", raw, p.q.GroupBy)
			}
		}
		from, to, limit, err := parseTopParams(v, now)
		if err != nil {
			checkErrorBody(t, err, sluice.EINVALID)
		} else if limit < 1 || limit > MaxTopLimit || !from.Before(to) {
			t.Fatalf("%q: top %v to %v, limit %d", raw, from, to, limit)
		}
	})
}
