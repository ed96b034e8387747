package quota

import (
	"fmt"
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
	return 0, fmt.Errorf("unknown algorithm %q (want sliding, calendar or token_bucket)", s)
}

// ParseDuration parses a Go duration ("90s", "1h30m") or a number of days
// ("7d").
func ParseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 0 || n > int64(sluice.InfDuration/(24*time.Hour)) {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return d, nil
}

// ParseRate parses a limit per window such as "10/1m" or "3/1h"; the limit
// may be "unlimited".
func ParseRate(s string) (sluice.Limit, time.Duration, error) {
	num, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, 0, fmt.Errorf("invalid rate %q (want N/DURATION, e.g. 10/1m)", s)
	}
	var l sluice.Limit
	if num == "unlimited" {
		l = sluice.Unlimited
	} else {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, fmt.Errorf("invalid rate %q: limit must be a whole number at least 0", s)
		}
		l = sluice.Limit(n)
	}
	d, err := ParseDuration(per)
	if err != nil {
		return 0, 0, fmt.Errorf("invalid rate %q: %w", s, err)
	}
	if d <= 0 {
		return 0, 0, fmt.Errorf("invalid rate %q: window must be positive", s)
	}
	return l, d, nil
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
