package http

import (
	"net/http"
	"net/netip"
	"strings"
)

// clientIP returns the address of the client that sent r, as CONTRACT.md §6
// defines it: the peer address, unless the peer is in TrustedProxies; then
// the rightmost X-Forwarded-For entry that is not a trusted proxy. The zero
// Addr means the peer address could not be read (not a TCP peer).
func (s *Server) clientIP(r *http.Request) netip.Addr {
	return forwardedClient(peerAddr(r.RemoteAddr), r.Header.Values("X-Forwarded-For"), s.TrustedProxies)
}

// forwardedClient walks the X-Forwarded-For entries (all header lines, in order,
// each a comma-separated list) from the right, starting at the peer. Every
// trusted proxy appends the address it received the request from, so the
// entries right of the first untrusted one were written by trusted proxies
// and the first untrusted one is the client; entries further left came from
// the client and are never believed. If every entry is trusted, the
// leftmost is the client. An entry that is not an IP address stops the
// walk at the last hop that was read, a trusted proxy: its clients then
// share one limit, which errs on the side of limiting, and a client can
// never choose the address it is counted under.
func forwardedClient(peer netip.Addr, xff []string, trusted []netip.Prefix) netip.Addr {
	if !peer.IsValid() || !isTrusted(peer, trusted) {
		return peer
	}
	addr := peer
	for i := len(xff) - 1; i >= 0; i-- {
		line := xff[i]
		for {
			entry := line
			j := strings.LastIndexByte(line, ',')
			if j >= 0 {
				entry = line[j+1:]
			}
			a, ok := parseForwarded(strings.TrimSpace(entry))
			if !ok {
				return addr
			}
			addr = a
			if !isTrusted(a, trusted) {
				return a
			}
			if j < 0 {
				break
			}
			line = line[:j]
		}
	}
	return addr
}

// peerAddr parses the RemoteAddr of a request ("192.0.2.1:1234",
// "[2001:db8::1]:1234"); IPv4-mapped IPv6 addresses become IPv4.
func peerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}

// parseForwarded parses one X-Forwarded-For entry: an IP address, which
// some proxies write with a port ("192.0.2.1:1234", "[2001:db8::1]:1234")
// or in brackets ("[2001:db8::1]").
func parseForwarded(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return a.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ipKey is the part of a quota key that names a client address: an IPv4
// address as it is, an IPv6 address as its /64 ("2001:db8:1:2::/64"), since
// one subscriber usually holds a whole /64. An unknown address is
// "unknown": all such requests share one limit.
func ipKey(a netip.Addr) string {
	switch {
	case a.Is4():
		return a.String()
	case a.Is6():
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return "unknown"
}
