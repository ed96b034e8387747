package client

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// WindowHeader is what one response said about one window of the account's
// quota (CONTRACT.md §4). Fields the response did not carry (or carried
// malformed) are at their "unknown" values, documented per field.
type WindowHeader struct {
	// Name is the window's name in lower case: "hour", "day", or any
	// other name the headers carry.
	Name string
	// Limit is the window's limit (X-RateLimit-Limit-<Name>, else the q=
	// of RateLimit-Policy); -1 if unknown.
	Limit int64
	// Remaining is the number of units left after the request
	// (X-RateLimit-Remaining-<Name>, else the r= of RateLimit).
	Remaining int64
	// Reset is the Unix second, by the server's clock, at which Remaining
	// next grows (X-RateLimit-Reset-<Name>); 0 if unknown.
	Reset int64
	// ResetIn is how long after the response's decision the window's
	// Remaining next grows, in whole seconds (the t= of RateLimit); -1 if
	// unknown.
	ResetIn int64
	// Length is the window's length (the w= of RateLimit-Policy); 0 if
	// unknown.
	Length time.Duration
}

// maxSeconds bounds every number of seconds read from a header, so that
// converting it to a time.Duration or adding it to a Unix time cannot
// overflow (about 31 years).
const maxSeconds = 1 << 30

// ParseRateLimitHeaders reads the quota headers of a response: the
// X-RateLimit-{Limit,Remaining,Reset}-<Window> fields of the public page and
// the IETF RateLimit and RateLimit-Policy fields, e.g.
//
//	X-RateLimit-Limit-Hour: 100
//	X-RateLimit-Remaining-Hour: 87
//	X-RateLimit-Reset-Hour: 1709903600
//	RateLimit-Policy: "hour";q=100;w=3600, "day";q=1000;w=86400
//	RateLimit: "hour";r=87;t=847, "day";r=934;t=77247
//
// Where both forms carry a figure, the X-RateLimit-* one wins. A window is
// returned only if its Remaining is known. Malformed fields and list members
// are skipped, never an error: a client must go on working whatever a proxy
// does to the headers. The result is ordered hour, day, then the other
// windows by name; it is empty when the response carries no quota headers
// (an unlimited account).
func ParseRateLimitHeaders(h http.Header) []WindowHeader {
	byName := map[string]*WindowHeader{}
	get := func(name string) *WindowHeader {
		w := byName[name]
		if w == nil {
			w = &WindowHeader{Name: name, Limit: -1, Remaining: -1, ResetIn: -1}
			byName[name] = w
		}
		return w
	}
	// The structured fields first, so that the X-RateLimit-* figures
	// overwrite them.
	for _, v := range h.Values("RateLimit-Policy") {
		for _, m := range parseList(v) {
			w := get(m.name)
			if q, ok := m.params["q"]; ok {
				w.Limit = q
			}
			if s, ok := m.params["w"]; ok && s > 0 {
				w.Length = time.Duration(s) * time.Second
			}
		}
	}
	for _, v := range h.Values("RateLimit") {
		for _, m := range parseList(v) {
			w := get(m.name)
			if r, ok := m.params["r"]; ok {
				w.Remaining = r
			}
			if t, ok := m.params["t"]; ok {
				w.ResetIn = t
			}
		}
	}
	for key, vals := range h {
		if len(vals) == 0 || len(key) < len("x-ratelimit-") || !strings.EqualFold(key[:len("x-ratelimit-")], "x-ratelimit-") {
			continue
		}
		rest := strings.ToLower(key[len("x-ratelimit-"):])
		field, name, ok := strings.Cut(rest, "-")
		if !ok || !validName(name) {
			continue
		}
		v, ok := parseCount(vals[0])
		if !ok {
			continue
		}
		switch field {
		case "limit":
			get(name).Limit = v
		case "remaining":
			get(name).Remaining = v
		case "reset":
			get(name).Reset = v
		}
	}
	out := make([]WindowHeader, 0, len(byName))
	for _, w := range byName {
		if w.Remaining >= 0 {
			out = append(out, *w)
		}
	}
	slices.SortFunc(out, func(a, b WindowHeader) int {
		if ra, rb := windowRank(a.Name), windowRank(b.Name); ra != rb {
			return ra - rb
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

func windowRank(name string) int {
	switch name {
	case "hour":
		return 0
	case "day":
		return 1
	}
	return 2
}

// validName reports whether s can be a window name: 1 to 32 characters of
// lower-case letters, digits, '_' and '-'.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// parseCount parses a non-negative decimal integer of at most 15 digits
// (surrounding spaces allowed).
func parseCount(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	if len(s) == 0 || len(s) > 15 {
		return 0, false
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// member is one member of a RateLimit or RateLimit-Policy list: a window
// name and its integer parameters.
type member struct {
	name   string
	params map[string]int64
}

// parseList parses a structured-field list whose members are a string or
// token naming a window, followed by ;key=integer parameters:
//
//	"hour";r=87;t=847, "day";r=934;t=77247
//
// It is lenient in what it skips: a malformed member is left out, and so is
// a malformed parameter of a member that is otherwise fine. Names are
// lowered; parameters that are not non-negative integers are ignored.
func parseList(v string) []member {
	var out []member
	for _, raw := range splitList(v) {
		raw = strings.TrimSpace(raw)
		nameEnd := 0
		var name string
		if strings.HasPrefix(raw, `"`) {
			end := strings.IndexByte(raw[1:], '"')
			if end < 0 {
				continue
			}
			name = raw[1 : 1+end]
			nameEnd = end + 2
		} else {
			nameEnd = strings.IndexByte(raw, ';')
			if nameEnd < 0 {
				nameEnd = len(raw)
			}
			name = strings.TrimSpace(raw[:nameEnd])
		}
		name = strings.ToLower(name)
		if !validName(name) {
			continue
		}
		m := member{name: name, params: map[string]int64{}}
		for _, p := range strings.Split(raw[nameEnd:], ";") {
			k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
			if !ok {
				continue
			}
			n, ok := parseCount(val)
			if !ok {
				continue
			}
			m.params[strings.ToLower(strings.TrimSpace(k))] = n
		}
		out = append(out, m)
	}
	return out
}

// splitList splits v at the commas that are not inside a quoted string.
func splitList(v string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			if quoted {
				i++
			}
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, v[start:i])
				start = i + 1
			}
		}
	}
	if start <= len(v) {
		out = append(out, v[start:])
	}
	return out
}

// ParseRetryAfter reads a Retry-After value: delay-seconds ("120") or an
// HTTP-date ("Fri, 08 Mar 2024 15:42:00 GMT"), which is taken relative to
// serverNow (the response's Date, or the local clock without one) so that
// a skewed local clock does not shorten or stretch the wait. A date in the
// past is a zero wait. ok is false for anything else, including negative
// numbers. Waits are capped at about 31 years.
func ParseRetryAfter(v string, serverNow time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if '0' <= v[0] && v[0] <= '9' {
		for i := 0; i < len(v); i++ {
			if v[i] < '0' || v[i] > '9' {
				return 0, false
			}
		}
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil || s > maxSeconds {
			s = maxSeconds // only overflow fails here: a huge wait
		}
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d = t.Sub(serverNow)
	switch {
	case d < 0:
		d = 0
	case d > maxSeconds*time.Second:
		d = maxSeconds * time.Second
	}
	return d, true
}
