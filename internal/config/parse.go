package config

import (
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/quota"
)

// ParseDuration parses a Go duration ("90s", "1h30m") or whole days
// optionally followed by a Go duration ("7d", "1d12h"): quota.ParseDuration.
func ParseDuration(s string) (time.Duration, error) { return quota.ParseDuration(s) }

// formatDuration is d as ParseDuration reads it, without time.Duration's
// trailing zero units: "1h", "1m30s", "100ms".
func formatDuration(d time.Duration) string {
	s := d.String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

// Size is a number of bytes.
type Size int64

// Size units: binary and decimal.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	KB  Size = 1e3
	MB  Size = 1e6
	GB  Size = 1e9
)

var sizeUnits = []struct {
	name string
	size Size
}{
	// Longest names first, so that "KiB" is not read as "B".
	{"kib", KiB}, {"mib", MiB}, {"gib", GiB},
	{"kb", KB}, {"mb", MB}, {"gb", GB},
	{"b", 1},
}

// ParseSize parses a byte count ("65536") or a whole number with a unit,
// optionally separated by a space ("64KiB", "1 MiB", "2MB"). Units are
// case-insensitive.
func ParseSize(s string) (Size, error) {
	num, unit := s, Size(1)
	for _, u := range sizeUnits {
		if i := len(s) - len(u.name); i >= 0 && strings.EqualFold(s[i:], u.name) {
			num, unit = strings.TrimSuffix(s[:i], " "), u.size
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 63)
	if err != nil || n > uint64(math.MaxInt64/int64(unit)) {
		return 0, fmt.Errorf("invalid size %q: use a byte count or a whole number with a unit, like 64KiB or 1MiB", s)
	}
	return Size(n) * unit, nil
}

// String formats s in the largest binary unit that divides it: "64KiB",
// "1MiB", or a plain byte count.
func (s Size) String() string {
	for _, u := range []struct {
		name string
		size Size
	}{{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s != 0 && s%u.size == 0 {
			return strconv.FormatInt(int64(s/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// Rate is a limit of Limit units in any window of Per, such as the per-IP
// limit of an auth endpoint. A Limit of sluice.Unlimited never rejects.
type Rate struct {
	Limit sluice.Limit
	Per   time.Duration
}

// Unlimited reports whether r never rejects.
func (r Rate) Unlimited() bool { return r.Limit.IsUnlimited() }

// ParseRate parses "N/duration" ("10/1m", "3/1h", "100/1d"), where a
// duration without a leading number counts one unit ("10/m" is "10/1m"), or
// "unlimited": the syntax of quota.ParseRate.
func ParseRate(s string) (Rate, error) {
	l, per, err := quota.ParseRate(s)
	if err != nil || (l.IsUnlimited() && s != "unlimited") {
		return Rate{}, fmt.Errorf("invalid rate %q: use requests/duration like 10/1m or 3/1h, or unlimited", s)
	}
	return Rate{Limit: l, Per: per}, nil
}

// String formats r as ParseRate reads it: "10/1m", "unlimited".
func (r Rate) String() string {
	if r.Unlimited() {
		return "unlimited"
	}
	return strconv.FormatInt(int64(r.Limit), 10) + "/" + formatDuration(r.Per)
}

// parseLimit parses a plan limit: a whole number, or "unlimited". (A YAML
// null is Unlimited too; the decoder handles it before any text is parsed.)
func parseLimit(s string) (sluice.Limit, error) {
	if s == "unlimited" {
		return sluice.Unlimited, nil
	}
	n, err := strconv.ParseUint(s, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("invalid limit %q: use a whole number of images, or null for unlimited", s)
	}
	return sluice.Limit(n), nil
}

var levels = []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}

// parseLevel accepts the four names of slog's levels, case-insensitively,
// and not slog's offsets ("info+2"), which sluice has no use for.
func parseLevel(s string) (slog.Level, error) {
	for _, l := range levels {
		if strings.EqualFold(s, l.String()) {
			return l, nil
		}
	}
	return 0, fmt.Errorf("unknown log level %q: use debug, info, warn or error", s)
}

// parsePrefix parses a CIDR or a bare IP, which is the prefix of that one
// address, and masks it. IPv4-mapped IPv6 addresses become IPv4.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err == nil && p.Addr().Is4In6() {
			// ::ffff:10.0.0.0/104 is 10.0.0.0/8, as peers are compared unmapped.
			p, err = p.Addr().Unmap().Prefix(p.Bits() - 96)
		}
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid IP or CIDR %q", s)
	}
	a = a.Unmap() // ::ffff:10.0.0.1 is the IPv4 peer net/http reports
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parsePrefixes parses a comma-separated list of CIDRs or IPs; an empty
// list is none.
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := parsePrefix(f)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func parseLocation(s string) (*time.Location, error) {
	loc, err := time.LoadLocation(s)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q: use an IANA name like UTC or Europe/Berlin", s)
	}
	return loc, nil
}

// Ints is a list of whole numbers, such as alerts.thresholds.
type Ints []int

// maxInts bounds the length of an Ints, so that a hostile value cannot make
// a huge list.
const maxInts = 100

// ParseInts parses a comma-separated list of whole numbers ("80,100", "80,
// 90, 100"); an empty string, or one of spaces, is the empty list.
func ParseInts(s string) (Ints, error) {
	xs := Ints{}
	if strings.TrimSpace(s) == "" {
		return xs, nil
	}
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("invalid list %q: use whole numbers separated by commas, like 80,100", s)
		}
		if len(xs) == maxInts {
			return nil, fmt.Errorf("invalid list: more than %d numbers", maxInts)
		}
		xs = append(xs, n)
	}
	return xs, nil
}

// String formats xs as ParseInts reads it: "80,100".
func (xs Ints) String() string {
	b := make([]byte, 0, 4*len(xs))
	for i, x := range xs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(x), 10)
	}
	return string(b)
}
