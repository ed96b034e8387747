package quota

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
)

// Validate reports whether p can be decided: one to sluice.MaxWindows
// windows with distinct non-empty names and positive lengths, whole seconds
// for the sliding and calendar algorithms, and limits whose token-bucket
// arithmetic fits in 64 bits.
func Validate(p *sluice.Policy) error {
	if p.Algorithm > sluice.TokenBucket {
		return fmt.Errorf("unknown algorithm %d", p.Algorithm)
	}
	if len(p.Windows) == 0 || len(p.Windows) > sluice.MaxWindows {
		return fmt.Errorf("a policy has 1 to %d windows, not %d", sluice.MaxWindows, len(p.Windows))
	}
	for i, w := range p.Windows {
		if w.Name == "" {
			return fmt.Errorf("window %d has no name", i)
		}
		for _, v := range p.Windows[:i] {
			if v.Name == w.Name {
				return fmt.Errorf("window %q appears twice", w.Name)
			}
		}
		if w.Length < time.Second || w.Length%time.Second != 0 {
			return fmt.Errorf("window %q: length must be a positive whole number of seconds, not %v", w.Name, w.Length)
		}
		if w.Limit < sluice.Unlimited {
			return fmt.Errorf("window %q: limit must be at least 0 or unlimited", w.Name)
		}
		if w.Limit > maxLimit(p.Algorithm, w.Length) {
			return fmt.Errorf("window %q: limit %d is too large for a %v window", w.Name, w.Limit, w.Length)
		}
	}
	return nil
}

// maxLimit is the largest limit the algorithm counts exactly in a window of
// length d.
func maxLimit(a sluice.Algorithm, d time.Duration) sluice.Limit {
	if a == sluice.TokenBucket {
		// The bucket holds L*W microsecond-units; keep two bits spare.
		return sluice.Limit(int64(1<<62) / int64(d/time.Microsecond))
	}
	return 1 << 40
}

// ParseAlgorithm parses "sliding", "calendar" or "token_bucket".
func ParseAlgorithm(s string) (sluice.Algorithm, error) {
	for a := sluice.Sliding; a <= sluice.TokenBucket; a++ {
		if s == a.String() {
			return a, nil
		}
	}
	return 0, fmt.Errorf("unknown algorithm %q: use sliding, calendar or token_bucket", s)
}

// ParseDuration parses a Go duration ("90s", "1h30m", "-5m") or a whole
// number of days followed by an optional non-negative Go duration ("7d",
// "1d12h", "-2d"). A bare number other than "0" is not a duration.
func ParseDuration(s string) (time.Duration, error) {
	body, neg := s, false
	if body != "" && (body[0] == '-' || body[0] == '+') {
		body, neg = body[1:], body[0] == '-'
	}
	i := strings.IndexByte(body, 'd')
	if i < 0 {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, invalidDuration(s)
		}
		return d, nil
	}
	days, err := strconv.ParseUint(body[:i], 10, 63)
	if err != nil || days > uint64(math.MaxInt64/int64(24*time.Hour)) {
		return 0, invalidDuration(s)
	}
	d := time.Duration(days) * 24 * time.Hour
	if rest := body[i+1:]; rest != "" {
		if !isDigit(rest[0]) && rest[0] != '.' {
			return 0, invalidDuration(s) // no second sign: "1d-1h"
		}
		r, err := time.ParseDuration(rest)
		if err != nil || r > math.MaxInt64-d {
			return 0, invalidDuration(s)
		}
		d += r
	}
	if neg {
		d = -d
	}
	return d, nil
}

func invalidDuration(s string) error {
	return fmt.Errorf("invalid duration %q: use a Go duration like 90s, 10m or 1h30m, or whole days like 7d", s)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// ParseRate parses a limit per window: "N/DURATION" ("10/1m", "3/1h",
// "100/1d"), where a duration without a leading number counts one unit
// ("10/m" is "10/1m"), "unlimited/DURATION", or "unlimited" alone (whose
// window is 0). The window of a limited rate must be positive.
func ParseRate(s string) (sluice.Limit, time.Duration, error) {
	if s == "unlimited" {
		return sluice.Unlimited, 0, nil
	}
	num, per, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, invalidRate(s)
	}
	l := sluice.Unlimited
	if num != "unlimited" {
		n, err := strconv.ParseUint(num, 10, 63)
		if err != nil {
			return 0, 0, invalidRate(s)
		}
		l = sluice.Limit(n)
	}
	if per != "" && !isDigit(per[0]) && per[0] != '.' && per[0] != '-' && per[0] != '+' {
		per = "1" + per
	}
	d, err := ParseDuration(per)
	if err != nil || d <= 0 {
		return 0, 0, invalidRate(s)
	}
	return l, d, nil
}

func invalidRate(s string) error {
	return fmt.Errorf("invalid rate %q: use requests/duration like 10/1m or 3/1h, or unlimited", s)
}

// ParsePolicy parses a policy written as an algorithm and its windows, e.g.
// "sliding hour=100/1h day=1000/24h". The result is valid.
func ParsePolicy(s string) (sluice.Policy, error) {
	fields := strings.Fields(s)
	if len(fields) < 2 {
		return sluice.Policy{}, fmt.Errorf("invalid policy %q (want ALGORITHM NAME=N/DURATION ...)", s)
	}
	a, err := ParseAlgorithm(fields[0])
	if err != nil {
		return sluice.Policy{}, err
	}
	p := sluice.Policy{Algorithm: a}
	for _, f := range fields[1:] {
		name, rate, ok := strings.Cut(f, "=")
		if !ok {
			return sluice.Policy{}, fmt.Errorf("invalid window %q (want NAME=N/DURATION)", f)
		}
		l, d, err := ParseRate(rate)
		if err != nil {
			return sluice.Policy{}, err
		}
		p.Windows = append(p.Windows, sluice.Window{Name: name, Length: d, Limit: l})
	}
	if err := Validate(&p); err != nil {
		return sluice.Policy{}, err
	}
	return p, nil
}
