package naming

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Endpoint is the address of a sidecar's inbound listener, host:port, as
// `sigil-proxy --upstream NAME=ADDR` and --advertise, a sidecar's
// registration with its agent and the endpoints discovery streams carry
// it. Build it with ParseEndpoint; the zero Endpoint is no address.
type Endpoint struct {
	host string     // a DNS name, as given; "" when addr is set
	addr netip.Addr // an IP literal
	port uint16
}

// maxEndpoint bounds an endpoint's text: a 253-character name, ':' and a
// five-digit port (a bracketed IPv6 literal is shorter).
const maxEndpoint = maxHost + 1 + 5

// ParseEndpoint parses host:port, the one rule for an address another
// sidecar dials:
//
//   - host is an IP literal (IPv4 dotted decimal, or IPv6 in brackets as
//     RFC 3986 §3.2.2 writes it: [::1]:15006) or a DNS host name (RFC 1123
//     §2.1: labels of letters, digits and inner '-', at most 63 each, 253
//     in all, one trailing dot allowed) whose last label is not all digits
//     (RFC 3696 §2), so 10.0.0.300, 127.1 or 010.0.0.1 are neither;
//   - an IP is one a connection can reach: not unspecified (0.0.0.0, ::),
//     not multicast, without an IPv6 zone (%eth0 means nothing on another
//     node);
//   - port is 1 to 65535 in decimal digits (no sign, no name such as http).
//
// Errors carry the prefix "naming: endpoint" and say which rule failed.
func ParseEndpoint(s string) (Endpoint, error) {
	if len(s) > maxEndpoint {
		return Endpoint{}, fmt.Errorf("naming: endpoint %s: longer than %d characters", Quote(s), maxEndpoint)
	}
	host, port, ok := cutEndpoint(s)
	if !ok || host == "" {
		return Endpoint{}, fmt.Errorf("naming: endpoint %s: want HOST:PORT (an IPv6 address in brackets: [::1]:15006)", Quote(s))
	}
	if !validPort(port) {
		return Endpoint{}, fmt.Errorf("naming: endpoint %s: bad port, want 1 to 65535", Quote(s))
	}
	n, _ := strconv.Atoi(port)
	e := Endpoint{port: uint16(n)}
	if v6, ok := strings.CutPrefix(host, "["); ok {
		a, err := netip.ParseAddr(strings.TrimSuffix(v6, "]"))
		if err != nil || !a.Is6() {
			return Endpoint{}, fmt.Errorf("naming: endpoint %s: bad IPv6 address in brackets", Quote(s))
		}
		e.addr = a
	} else if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		e.addr = a
	} else {
		labels, err := splitName(host, nil)
		if err != nil {
			return Endpoint{}, fmt.Errorf("naming: endpoint %s: the host is neither an IP address nor a DNS name: %w", Quote(s), err)
		}
		if allDigits(labels[len(labels)-1]) {
			return Endpoint{}, fmt.Errorf("naming: endpoint %s: the host is neither an IP address (dotted decimal, 4 parts, no leading zeros) nor a DNS name (its last label is all digits)", Quote(s))
		}
		e.host = host
	}
	switch a := e.addr; {
	case !a.IsValid():
	case a.Zone() != "":
		return Endpoint{}, fmt.Errorf("naming: endpoint %s: an IPv6 zone names an interface of one node only", Quote(s))
	case a.IsUnspecified():
		return Endpoint{}, fmt.Errorf("naming: endpoint %s: an unspecified IP cannot be reached; give a routable one", Quote(s))
	case a.IsMulticast():
		return Endpoint{}, fmt.Errorf("naming: endpoint %s: a multicast IP cannot be connected to", Quote(s))
	}
	return e, nil
}

// cutEndpoint splits host:port; an IPv6 host keeps its brackets.
func cutEndpoint(s string) (host, port string, ok bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 || !strings.HasPrefix(s[end+1:], ":") {
			return "", "", false
		}
		return s[:end+1], s[end+2:], true
	}
	host, port, ok = strings.Cut(s, ":")
	if !ok || strings.Contains(port, ":") {
		return "", "", false
	}
	return host, port, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// IsZero reports whether e is no address.
func (e Endpoint) IsZero() bool { return e.port == 0 }

// Addr is the endpoint's IP when its host is an IP literal, and the zero
// Addr when it is a DNS name.
func (e Endpoint) Addr() netip.Addr { return e.addr }

// Host is the endpoint's DNS name, and "" when its host is an IP literal.
func (e Endpoint) Host() string { return e.host }

// Port is the endpoint's port, 1 to 65535 (0 for the zero Endpoint).
func (e Endpoint) Port() uint16 { return e.port }

// String is host:port, what net.Dial takes: an IP in its canonical form
// (IPv6 in brackets), a DNS name as it was given.
func (e Endpoint) String() string {
	if e.IsZero() {
		return ""
	}
	host := e.host
	if e.addr.IsValid() {
		host = e.addr.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(int(e.port)))
}

// MarshalText writes String, so an Endpoint is a string in JSON.
func (e Endpoint) MarshalText() ([]byte, error) { return []byte(e.String()), nil }
