package http

import (
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")}
	for _, tc := range []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"peer", "203.0.113.7:1234", nil, "203.0.113.7"},
		{"untrusted peer: forwarded ignored", "203.0.113.7:1234", []string{"198.51.100.1"}, "203.0.113.7"},
		{"untrusted peer: spoofed chain ignored", "203.0.113.7:1234", []string{"10.0.0.1, 198.51.100.1"}, "203.0.113.7"},
		{"trusted peer without header", "10.0.0.5:80", nil, "10.0.0.5"},
		{"trusted peer", "10.0.0.5:80", []string{"203.0.113.9"}, "203.0.113.9"},
		{"rightmost untrusted wins", "10.0.0.5:80", []string{"1.2.3.4, 203.0.113.9"}, "203.0.113.9"},
		{"through two proxies", "10.0.0.5:80", []string{"1.2.3.4, 203.0.113.9, 10.9.9.9"}, "203.0.113.9"},
		{"several header lines", "10.0.0.5:80", []string{"1.2.3.4", "203.0.113.9", "10.9.9.9"}, "203.0.113.9"},
		{"all trusted: the leftmost", "10.0.0.5:80", []string{"10.1.1.1, 10.2.2.2"}, "10.1.1.1"},
		{"spaces", "10.0.0.5:80", []string{"  203.0.113.9  ,10.9.9.9 "}, "203.0.113.9"},
		{"entry with a port", "10.0.0.5:80", []string{"203.0.113.9:5555"}, "203.0.113.9"},
		{"IPv6 entry with a port", "10.0.0.5:80", []string{"[2001:db8::9]:5555"}, "2001:db8::9"},
		{"IPv6 entry in brackets", "10.0.0.5:80", []string{"[2001:db8::9]"}, "2001:db8::9"},
		{"IPv4-mapped entry", "10.0.0.5:80", []string{"::ffff:203.0.113.9"}, "203.0.113.9"},
		{"IPv6 trusted proxy", "[2001:db8:ffff:1::1]:80", []string{"2001:db8:1:2::3"}, "2001:db8:1:2::3"},
		{"IPv4-mapped peer", "[::ffff:10.0.0.5]:80", []string{"203.0.113.9"}, "203.0.113.9"},
		{"garbage: the last trusted hop", "10.0.0.5:80", []string{"203.0.113.9, nonsense, 10.9.9.9"}, "10.9.9.9"},
		{"garbage at once: the peer", "10.0.0.5:80", []string{"nonsense"}, "10.0.0.5"},
		{"empty entry", "10.0.0.5:80", []string{"203.0.113.9,"}, "10.0.0.5"},
		{"empty header", "10.0.0.5:80", []string{""}, "10.0.0.5"},
		{"zone dropped", "[fe80::1%eth0]:80", nil, "fe80::1"},
		{"not a TCP peer", "@", nil, "invalid IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{TrustedProxies: trusted}
			r := httptest.NewRequest("POST", "/auth/login", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := s.clientIP(r).String(); got != tc.want {
				t.Errorf("clientIP = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.7":              "203.0.113.7",
		"2001:db8:1:2::1":          "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff::": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":          "2001:db8:1:3::/64",
		"::1":                      "::/64",
	} {
		if got := ipKey(netip.MustParseAddr(in)); got != want {
			t.Errorf("ipKey(%s) = %s, want %s", in, got, want)
		}
	}
	if got := ipKey(netip.Addr{}); got != "unknown" {
		t.Errorf("ipKey(zero) = %s", got)
	}
}

func TestWindowName(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Second: "second", time.Minute: "minute", time.Hour: "hour", 24 * time.Hour: "day",
		30 * time.Second: "30s", 5 * time.Minute: "5m", 90 * time.Minute: "1h30m", 2 * time.Hour: "2h",
		90 * time.Second: "1m30s", 48 * time.Hour: "48h",
	} {
		if got := windowName(d); got != want {
			t.Errorf("windowName(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestNewRateLimit(t *testing.T) {
	l := newRateLimit("{ip:login:", Rate{}, DefaultLoginLimit, "per IP on POST /auth/login").rule.Load()
	if l.off || l.message != "Rate limit reached: 10 requests/minute per IP on POST /auth/login" ||
		l.windows[0] != (sluice.Window{Name: "minute", Length: time.Minute, Limit: 10}) {
		t.Errorf("default login limit: %+v", l)
	}
	l = newRateLimit("{ip:x:", Rate{Limit: 5, Per: 1500 * time.Millisecond}, DefaultLoginLimit, "per IP on X").rule.Load()
	if l.windows[0].Length != 2*time.Second || l.message != "Rate limit reached: 5 requests/2s per IP on X" {
		t.Errorf("fractional window: %+v", l)
	}
	if l := newRateLimit("{ip:x:", Rate{Limit: sluice.Unlimited}, DefaultLoginLimit, "").rule.Load(); !l.off {
		t.Errorf("unlimited is on")
	}
}

func TestLoginDelay(t *testing.T) {
	var got []time.Duration
	for f := int64(0); f <= 16; f++ {
		got = append(got, loginDelay(f))
	}
	s := time.Second
	want := []time.Duration{0, 0, 0, 0, 0, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 64 * s, 128 * s, 256 * s, 300 * s, 300 * s, 300 * s, 300 * s}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("loginDelay(%d) = %v, want %v", i, got[i], want[i])
		}
	}
	if loginDelay(1<<40) != LoginMaxDelay {
		t.Fatal("no cap for many failures")
	}
}

func TestValidToken(t *testing.T) {
	tok := "slr_" + sluice.RandomString(40)
	for s, want := range map[string]bool{
		tok: true, tok[:43]: false, tok + "x": false, "sls_" + tok[4:]: false,
		"slr_" + "!" + tok[5:]: false, "": false,
	} {
		if validToken("slr_", s) != want {
			t.Errorf("validToken(%q) = %v", s, !want)
		}
	}
}
