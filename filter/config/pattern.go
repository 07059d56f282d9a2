package config

import (
	"strings"

	"github.com/reqcount/reqcount/messages"
)

// Any is the wildcard of a Pattern part.
const Any = "*"

// Pattern matches keys by service and namespace, each either a DNS-1123 label or
// Any: "web.shop", "*.ml", "web.*", "*.*". It is written "svc.ns", like a key.
type Pattern struct {
	Service, Namespace string
}

// Match reports whether the key (svc, ns) matches p.
func (p Pattern) Match(svc, ns string) bool {
	return (p.Service == Any || p.Service == svc) && (p.Namespace == Any || p.Namespace == ns)
}

// String returns p as written in the configuration.
func (p Pattern) String() string { return p.Service + "." + p.Namespace }

// MatchAny reports whether any of ps matches (svc, ns).
func MatchAny(ps []Pattern, svc, ns string) bool {
	for _, p := range ps {
		if p.Match(svc, ns) {
			return true
		}
	}
	return false
}

// ParsePattern reads "svc.ns" where each part is a DNS-1123 label or "*".
func ParsePattern(s string) (Pattern, bool) {
	svc, ns, ok := strings.Cut(s, ".")
	if !ok {
		return Pattern{}, false
	}
	for _, part := range []string{svc, ns} {
		if part != Any && !messages.IsDNS1123Label(part) {
			return Pattern{}, false
		}
	}
	return Pattern{Service: svc, Namespace: ns}, true
}

// patterns parses a list of patterns for field.
func patterns(field string, list []string) ([]Pattern, error) {
	if len(list) > MaxPatterns {
		return nil, fieldErr(field, "has %d patterns, more than the %d allowed", len(list), MaxPatterns)
	}
	var out []Pattern
	for i, s := range list {
		p, ok := ParsePattern(s)
		if !ok {
			return nil, fieldErr(field, "pattern %d %q is not \"svc.ns\" with each part a DNS-1123 label or \"*\" (e.g. \"*.ml\", \"web.shop\")", i, s)
		}
		out = append(out, p)
	}
	return out, nil
}

// Counts reports whether the configuration counts requests for (svc, ns): include
// (when set) matches it and exclude does not.
func (c *Config) Counts(svc, ns string) bool {
	if len(c.Include) > 0 && !MatchAny(c.Include, svc, ns) {
		return false
	}
	return !MatchAny(c.Exclude, svc, ns)
}
