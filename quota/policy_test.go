package quota_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/quota"
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want sluice.Policy
		err  string
	}{
		{in: "sliding hour=100/1h day=1000/24h", want: sluice.Policy{Algorithm: sluice.Sliding, Windows: []sluice.Window{
			{Name: "hour", Length: time.Hour, Limit: 100}, {Name: "day", Length: 24 * time.Hour, Limit: 1000}}}},
		{in: "token_bucket  week=unlimited/7d", want: sluice.Policy{Algorithm: sluice.TokenBucket, Windows: []sluice.Window{
			{Name: "week", Length: 7 * 24 * time.Hour, Limit: sluice.Unlimited}}}},
		{in: "calendar m=0/90s", want: sluice.Policy{Algorithm: sluice.Calendar, Windows: []sluice.Window{
			{Name: "m", Length: 90 * time.Second, Limit: 0}}}},
		{in: "", err: "invalid policy"},
		{in: "sliding", err: "invalid policy"},
		{in: "leaky hour=1/1h", err: "unknown algorithm"},
		{in: "sliding hour", err: "invalid window"},
		{in: "sliding hour=1/1h hour=2/2h", err: "appears twice"},
		{in: "sliding hour=1/1.5s", err: "whole number of seconds"},
		{in: "sliding hour=-2/1h", err: "invalid rate"},
		{in: "sliding hour=1/0s", err: "invalid rate"},
		{in: "sliding hour=unlimited", err: "positive whole number of seconds"},
		{in: "sliding a=1/1h b=1/1h c=1/1h d=1/1h e=1/1h", err: "1 to 4 windows"},
		{in: "token_bucket d=9223372036854775807/24h", err: "too large"},
		{in: "sliding hour=1/99999999999999d", err: "invalid rate"},
	} {
		got, err := quota.ParsePolicy(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePolicy(%q) error = %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePolicy(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParsePolicy(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in  string
		l   sluice.Limit
		per time.Duration
		ok  bool
	}{
		{"10/1m", 10, time.Minute, true},
		{"3/1h", 3, time.Hour, true},
		{"5/2d", 5, 48 * time.Hour, true},
		{"10/m", 10, time.Minute, true},
		{"unlimited", sluice.Unlimited, 0, true},
		{"unlimited/1h", sluice.Unlimited, time.Hour, true},
		{"10", 0, 0, false},
		{"x/1m", 0, 0, false},
		{"10/", 0, 0, false},
		{"10/-1m", 0, 0, false},
	} {
		l, per, err := quota.ParseRate(tc.in)
		if (err == nil) != tc.ok || l != tc.l || per != tc.per {
			t.Errorf("ParseRate(%q) = %d, %v, %v; want %d, %v, ok=%v", tc.in, l, per, err, tc.l, tc.per, tc.ok)
		}
	}
}

// FuzzParsePolicy: any input either fails or gives a policy that Validate
// accepts, that decides without panicking, and that prints back to a string
// that parses to the same policy.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{"sliding hour=100/1h day=1000/24h", "calendar d=1/24h", "token_bucket x=unlimited/7d",
		"sliding a=0/1s", "sliding h=1/1h30m", "calendar w=5/-1s", "sliding =1/1h", "token_bucket b=4611686018427387904/1s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := quota.ParsePolicy(s)
		if err != nil {
			return
		}
		if err := quota.Validate(&p); err != nil {
			t.Fatalf("ParsePolicy(%q) gave an invalid policy: %v", s, err)
		}
		st := make([][]uint64, len(p.Windows))
		now := time.Unix(1_800_000_000, 0)
		for i := range 3 {
			quota.Take(&p, st, int64(i), now.Add(time.Duration(i)*time.Hour))
		}
		var b strings.Builder
		b.WriteString(p.Algorithm.String())
		for _, w := range p.Windows {
			l := "unlimited"
			if !w.Limit.IsUnlimited() {
				l = strconv.FormatInt(int64(w.Limit), 10)
			}
			b.WriteString(" " + w.Name + "=" + l + "/" + w.Length.String())
		}
		q, err := quota.ParsePolicy(b.String())
		if err != nil {
			t.Fatalf("%q parsed, but its printed form %q does not: %v", s, b.String(), err)
		}
		if diff := cmp.Diff(p, q); diff != "" {
			t.Fatalf("round trip of %q (-first +second):\n%s", s, diff)
		}
	})
}

// FuzzParseDuration: never panics, and what parses prints back to the same
// duration.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"1h", "7d", "90s", "-1d", "1.5d", "d", "106751d", "106752d", "9223372036854775807d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := quota.ParseDuration(s)
		if err != nil {
			return
		}
		if e, err := quota.ParseDuration(d.String()); err != nil || e != d {
			t.Fatalf("ParseDuration(%q) = %v, which prints as %q and parses back to %v, %v", s, d, d.String(), e, err)
		}
	})
}
