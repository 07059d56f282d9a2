// Package key derives the (service, namespace) key a request is counted under, from
// its :authority or from two headers. It is the per-request hot path: it allocates
// nothing, writing the key into a buffer the caller owns.
//
// A key is written as "svc.ns": both parts are DNS-1123 labels, which hold no dot, so
// the first dot splits it again (Split).
package key

import "strings"

// Reason says why a request was not counted. OK means it was.
type Reason uint8

// Reasons a request is not counted. Each has an Envoy counter metric of its own.
const (
	OK Reason = iota
	// Missing: no :authority (or service header), or an empty one.
	Missing
	// IPLiteral: the host is an IPv4 address or a bracketed (or bare) IPv6 one.
	IPLiteral
	// BadShape: not svc, svc.ns, svc.ns.svc or svc.ns.svc.<cluster domain>; a port
	// that is not a number; a host longer than DNS allows.
	BadShape
	// BadLabel: the service or namespace is not a DNS-1123 label.
	BadLabel

	// NumReasons is the number of reasons, OK included: the size of a per-reason array.
	NumReasons
)

var reasonNames = [NumReasons]string{"ok", "missing", "ip_literal", "bad_shape", "bad_label"}

// String returns the reason as used in metric names, e.g. "ip_literal".
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// MaxLen is the longest key Append* can write: two labels of 63 and a dot.
const MaxLen = 63 + 1 + 63

// maxHost bounds the host part of an authority, trailing dot dropped: a DNS name
// is at most 253 characters.
const maxHost = 253

// Parser turns an :authority or header values into a key. The zero value is not
// useful: build one with NewParser.
type Parser struct {
	defaultNamespace string
	// domainSuffix is "svc." + the cluster domain: what may follow svc.ns.
	domainSuffix string
}

// NewParser returns a Parser that gives a bare service name defaultNamespace and
// accepts svc.ns.svc.<clusterDomain>. Both must already be valid and lower-case (the
// config package checks them).
func NewParser(defaultNamespace, clusterDomain string) Parser {
	return Parser{defaultNamespace: defaultNamespace, domainSuffix: "svc." + clusterDomain}
}

// AppendAuthority parses an HTTP :authority and appends its key to dst. It accepts
// svc, svc.ns, svc.ns.svc and svc.ns.svc.<cluster domain>, each with an optional
// :port and one trailing dot, in any case. On any other input it returns dst
// unchanged and the reason.
func (p *Parser) AppendAuthority(dst []byte, authority string) ([]byte, Reason) {
	host, r := hostOf(authority)
	if r != OK {
		return dst, r
	}
	if isNumeric(host) {
		return dst, IPLiteral
	}
	// Split off the first two labels; rest is what follows "svc.ns.".
	svc, rest, hasNS := strings.Cut(host, ".")
	ns := p.defaultNamespace
	if hasNS {
		var more bool
		ns, rest, more = strings.Cut(rest, ".")
		if rest != "" && !equalFold(rest, "svc") && !equalFold(rest, p.domainSuffix) {
			return dst, BadShape
		}
		// more with nothing after it: "svc.ns..", a second trailing dot.
		if ns == "" || (more && rest == "") {
			return dst, BadShape
		}
	}
	return appendKey(dst, svc, ns)
}

// AppendHeaders appends the key for a service and a namespace read from request
// headers. An empty namespace means the default namespace. Values are matched
// case-insensitively, as host names are.
func (p *Parser) AppendHeaders(dst []byte, service, namespace string) ([]byte, Reason) {
	if service == "" {
		return dst, Missing
	}
	if namespace == "" {
		namespace = p.defaultNamespace
	}
	return appendKey(dst, service, namespace)
}

// Split returns the service and namespace of a key written by this package.
func Split(key string) (service, namespace string) {
	service, namespace, _ = strings.Cut(key, ".")
	return service, namespace
}

// hostOf strips the port and one trailing dot from an authority, and rejects the
// forms that are no host name at all.
func hostOf(authority string) (string, Reason) {
	if authority == "" {
		return "", Missing
	}
	if authority[0] == '[' {
		return "", IPLiteral
	}
	host := authority
	for i := len(authority) - 1; i >= 0; i-- {
		if authority[i] != ':' {
			continue
		}
		host = authority[:i]
		port := authority[i+1:]
		for j := 0; j < len(host); j++ {
			if host[j] == ':' {
				if isIPv6ish(authority) {
					return "", IPLiteral // an unbracketed IPv6 address
				}
				return "", BadShape
			}
		}
		if !isPort(port) {
			return "", BadShape
		}
		break
	}
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	if host == "" {
		return "", Missing
	}
	if len(host) > maxHost {
		return "", BadShape
	}
	return host, OK
}

// appendKey validates both labels and appends "svc.ns" in lower case.
func appendKey(dst []byte, svc, ns string) ([]byte, Reason) {
	if !isLabel(svc) || !isLabel(ns) {
		return dst, BadLabel
	}
	dst = appendLower(dst, svc)
	dst = append(dst, '.')
	return appendLower(dst, ns), OK
}

// isLabel reports whether s is a DNS-1123 label, ignoring case: 1 to 63 of
// [a-z0-9-], starting and ending with an alphanumeric.
func isLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20 // fold ASCII upper case; leaves digits and '-' alone
		switch {
		case c >= 'a' && c <= 'z', s[i] >= '0' && s[i] <= '9':
		case s[i] == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// isNumeric reports whether s holds only digits and dots: an IPv4 address in one of
// its spellings. No Kubernetes service is named so (names start with a letter).
func isNumeric(s string) bool {
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return true
}

// isPort reports whether s is a TCP port number, 0 to 65535.
func isPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n <= 65535
}

// isIPv6ish reports whether s holds only what an IPv6 address (with an
// IPv4 tail or a port) can: hex digits, colons and dots.
func isIPv6ish(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if !(s[i] >= '0' && s[i] <= '9') && !(c >= 'a' && c <= 'f') && s[i] != ':' && s[i] != '.' {
			return false
		}
	}
	return true
}

// equalFold reports whether s equals lower, ignoring ASCII case in s.
func equalFold(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
