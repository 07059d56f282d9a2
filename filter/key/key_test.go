package key_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/reqcount/reqcount/filter/key"
	"github.com/reqcount/reqcount/messages"
)

var (
	defaultParser = key.NewParser("default", "cluster.local")
	appsParser    = key.NewParser("apps", "corp.example")
	oneLabel      = key.NewParser("default", "local")

	// domain121 and domain121 are valid cluster domains that put a
	// 63.63.svc.<domain> host at exactly 253 and 254 characters.
	domain121 = strings.Repeat("d", 59) + "." + strings.Repeat("e", 61)
	domain122 = strings.Repeat("d", 60) + "." + strings.Repeat("e", 61)
	parser121 = key.NewParser("default", domain121)
	parser122 = key.NewParser("default", domain122)

	label63 = strings.Repeat("a", 63)
	label64 = strings.Repeat("a", 64)
	ns63    = strings.Repeat("b", 63)
)

type authorityCase struct {
	name      string
	parser    *key.Parser // nil: defaultParser
	authority string
	want      string // the key when reason is OK
	reason    key.Reason
}

// authorityCases are every form AppendAuthority accepts and rejects. The fuzz
// target uses them as its seed corpus.
var authorityCases = []authorityCase{
	// Accepted forms.
	{name: "bare service", authority: "web", want: "web.default"},
	{name: "bare service with port", authority: "web:8080", want: "web.default"},
	{name: "bare service trailing dot", authority: "web.", want: "web.default"},
	{name: "bare service trailing dot and port", authority: "web.:80", want: "web.default"},
	{name: "svc.ns", authority: "web.shop", want: "web.shop"},
	{name: "svc.ns port", authority: "web.shop:80", want: "web.shop"},
	{name: "svc.ns trailing dot", authority: "web.shop.", want: "web.shop"},
	{name: "svc.ns trailing dot and port", authority: "web.shop.:443", want: "web.shop"},
	{name: "svc.ns.svc", authority: "web.shop.svc", want: "web.shop"},
	{name: "svc.ns.svc port", authority: "web.shop.svc:8080", want: "web.shop"},
	{name: "svc.ns.svc trailing dot", authority: "web.shop.svc.", want: "web.shop"},
	{name: "FQDN", authority: "web.shop.svc.cluster.local", want: "web.shop"},
	{name: "FQDN port", authority: "web.shop.svc.cluster.local:8080", want: "web.shop"},
	{name: "FQDN trailing dot", authority: "web.shop.svc.cluster.local.", want: "web.shop"},
	{name: "FQDN trailing dot and port", authority: "web.shop.svc.cluster.local.:8080", want: "web.shop"},
	{name: "port 0", authority: "web.shop:0", want: "web.shop"},
	{name: "5-digit port", authority: "web.shop:65535", want: "web.shop"},
	{name: "upper case", authority: "WEB.SHOP", want: "web.shop"},
	{name: "mixed case FQDN", authority: "Web.Shop.SVC.Cluster.LOCAL:80", want: "web.shop"},
	{name: "mixed case bare", authority: "WeB", want: "web.default"},
	{name: "digits and dashes", authority: "a-1.b-2", want: "a-1.b-2"},
	{name: "numeric namespace", authority: "web.123", want: "web.123"},
	{name: "one-character labels", authority: "a.b", want: "a.b"},
	{name: "63-character labels", authority: label63 + "." + ns63 + ".svc.cluster.local", want: label63 + "." + ns63},
	{name: "default_namespace applied", parser: &appsParser, authority: "web", want: "web.apps"},
	{name: "custom cluster_domain", parser: &appsParser, authority: "api.shop.svc.corp.example:80", want: "api.shop"},
	{name: "custom cluster_domain upper case", parser: &appsParser, authority: "api.shop.svc.CORP.Example.", want: "api.shop"},
	{name: "custom cluster_domain svc only", parser: &appsParser, authority: "api.shop.svc", want: "api.shop"},
	{name: "one-label cluster_domain", parser: &oneLabel, authority: "api.shop.svc.local", want: "api.shop"},
	{name: "host of 253", parser: &parser121, authority: label63 + "." + ns63 + ".svc." + domain121, want: label63 + "." + ns63},
	{name: "host of 253 trailing dot and port", parser: &parser121, authority: label63 + "." + ns63 + ".svc." + domain121 + ".:80", want: label63 + "." + ns63},

	// Missing.
	{name: "empty", authority: "", reason: key.Missing},
	{name: "port only", authority: ":80", reason: key.Missing},
	{name: "dot only", authority: ".", reason: key.Missing},
	{name: "dot and port", authority: ".:80", reason: key.Missing},

	// IPLiteral.
	{name: "IPv4", authority: "10.0.0.1", reason: key.IPLiteral},
	{name: "IPv4 port", authority: "10.0.0.1:8080", reason: key.IPLiteral},
	{name: "IPv4 trailing dot", authority: "10.0.0.1.", reason: key.IPLiteral},
	{name: "decimal IPv4", authority: "1234", reason: key.IPLiteral},
	{name: "decimal IPv4 port", authority: "1234:80", reason: key.IPLiteral},
	{name: "bracketed IPv6", authority: "[2001:db8::1]", reason: key.IPLiteral},
	{name: "bracketed IPv6 port", authority: "[::1]:8080", reason: key.IPLiteral},
	{name: "bracketed garbage", authority: "[web.shop]", reason: key.IPLiteral},
	{name: "bare IPv6", authority: "2001:db8::1", reason: key.IPLiteral},
	{name: "bare IPv6 loopback", authority: "::1", reason: key.IPLiteral},
	{name: "bare IPv6 ending in colon", authority: "fe80::", reason: key.IPLiteral},
	{name: "two colons", authority: "web:80:80", reason: key.BadShape},
	{name: "port above 65535", authority: "web.shop:65536", reason: key.BadShape},
	{name: "bare IPv6 with IPv4 tail", authority: "::ffff:10.0.0.1", reason: key.IPLiteral},

	// BadShape.
	{name: "5 labels", authority: "a.b.c.d.e", reason: key.BadShape},
	{name: "wrong 3rd label", authority: "web.shop.cluster", reason: key.BadShape},
	{name: "4 labels", authority: "web.shop.svc.cluster", reason: key.BadShape},
	{name: "wrong domain", authority: "web.shop.svc.other.domain", reason: key.BadShape},
	{name: "wrong domain of the same length", authority: "web.shop.svc.cluster.lokal", reason: key.BadShape},
	{name: "wrong 3rd label of the same length", authority: "web.shop.svx", reason: key.BadShape},
	{name: "default domain on custom parser", parser: &appsParser, authority: "api.shop.svc.cluster.local", reason: key.BadShape},
	{name: "domain longer than configured", authority: "web.shop.svc.cluster.local.x", reason: key.BadShape},
	{name: "6 labels", authority: "web.shop.svc.cluster.local.local", reason: key.BadShape},
	{name: "non-numeric port", authority: "web:http", reason: key.BadShape},
	{name: "empty port", authority: "web:", reason: key.BadShape},
	{name: "6-digit port", authority: "web:123456", reason: key.BadShape},
	{name: "negative port", authority: "web:-1", reason: key.BadShape},
	{name: "port with space", authority: "web: 80", reason: key.BadShape},
	{name: "port then dot", authority: "web.shop:80.", reason: key.BadShape},
	{name: "empty namespace", authority: "web..", reason: key.BadShape},
	{name: "empty namespace then svc", authority: "web..svc", reason: key.BadShape},
	{name: "two trailing dots", authority: "web.shop..", reason: key.BadShape},
	{name: "two trailing dots and port", authority: "web.shop..:80", reason: key.BadShape},
	{name: "svc two trailing dots", authority: "web.shop.svc..", reason: key.BadShape},
	{name: "host of 254", parser: &parser122, authority: label63 + "." + ns63 + ".svc." + domain122, reason: key.BadShape},
	{name: "long garbage host", authority: strings.Repeat("a.", 200) + "a", reason: key.BadShape},

	// BadLabel.
	{name: "underscore in service", authority: "bad_name.shop", reason: key.BadLabel},
	{name: "underscore in namespace", authority: "web.bad_ns", reason: key.BadLabel},
	{name: "underscore bare", authority: "my_svc:80", reason: key.BadLabel},
	{name: "leading dash service", authority: "-web.shop", reason: key.BadLabel},
	{name: "trailing dash service", authority: "web-.shop", reason: key.BadLabel},
	{name: "leading dash namespace", authority: "web.-shop", reason: key.BadLabel},
	{name: "trailing dash namespace", authority: "web.shop-.svc", reason: key.BadLabel},
	{name: "dash only", authority: "-", reason: key.BadLabel},
	{name: "64-char service", authority: label64 + ".shop", reason: key.BadLabel},
	{name: "64-char namespace", authority: "web." + label64, reason: key.BadLabel},
	{name: "empty service", authority: ".shop", reason: key.BadLabel},
	{name: "non-ASCII namespace", authority: "web.\u00e9t\u00e9", reason: key.BadLabel},
	{name: "non-ASCII service", authority: "w\u00e9b.shop", reason: key.BadLabel},
	{name: "Kelvin sign", authority: "web.\u212aube", reason: key.BadLabel},
	{name: "invalid UTF-8", authority: "web.\xff", reason: key.BadLabel},
	{name: "NUL", authority: "web\x00.shop", reason: key.BadLabel},
	{name: "tab", authority: "web\t.shop", reason: key.BadLabel},
	{name: "CR LF", authority: "web.shop\r\n", reason: key.BadLabel},
	{name: "DEL", authority: "web.sh\x7fop", reason: key.BadLabel},
	{name: "space in service", authority: "we b.shop", reason: key.BadLabel},
	{name: "space before dot", authority: "web .shop", reason: key.BadLabel},
	{name: "space after dot", authority: "web. shop", reason: key.BadLabel},
	{name: "leading space", authority: " web", reason: key.BadLabel},
	{name: "at sign (userinfo)", authority: "user@web.shop", reason: key.BadLabel},
	{name: "slash", authority: "web/x.shop", reason: key.BadLabel},
	{name: "hex IPv4 is a name", authority: "0x7f.1", want: "0x7f.1"},
}

// prefix is what dst holds before each call: a key is appended after it.
const prefix = "pre|"

func TestAppendAuthority(t *testing.T) {
	for _, tc := range authorityCases {
		t.Run(tc.name, func(t *testing.T) {
			p := &defaultParser
			if tc.parser != nil {
				p = tc.parser
			}
			// A dst with a prefix and room, its spare capacity filled with a
			// sentinel so that a write past len on rejection shows.
			buf := make([]byte, len(prefix), len(prefix)+key.MaxLen)
			copy(buf, prefix)
			spare := buf[len(buf):cap(buf)]
			for i := range spare {
				spare[i] = '#'
			}
			got, r := p.AppendAuthority(buf, tc.authority)
			if r != tc.reason {
				t.Fatalf("AppendAuthority(%q) reason %v, want %v (key %q)", tc.authority, r, tc.reason, got)
			}
			if !bytes.HasPrefix(got, []byte(prefix)) {
				t.Fatalf("prefix overwritten: %q", got)
			}
			if &got[0] != &buf[0] {
				t.Fatalf("dst with room was reallocated")
			}
			if r != key.OK {
				if len(got) != len(prefix) {
					t.Fatalf("rejected, but dst changed to %q", got)
				}
				if s := string(spare); strings.Trim(s, "#") != "" {
					t.Fatalf("rejected, but wrote into dst's spare capacity: %q", s)
				}
				return
			}
			if k := string(got[len(prefix):]); k != tc.want {
				t.Fatalf("AppendAuthority(%q) = %q, want %q", tc.authority, k, tc.want)
			}
		})
	}
}

// TestAppendAuthorityNilDst checks appending to nil and to a full slice.
func TestAppendAuthorityNilDst(t *testing.T) {
	got, r := defaultParser.AppendAuthority(nil, "web.shop")
	if r != key.OK || string(got) != "web.shop" {
		t.Fatalf("nil dst: %q %v", got, r)
	}
	full := []byte("abc")[:3:3]
	got, r = defaultParser.AppendAuthority(full, "web")
	if r != key.OK || string(got) != "abcweb.default" || string(full) != "abc" {
		t.Fatalf("full dst: %q %v (dst now %q)", got, r, full)
	}
	got, r = defaultParser.AppendAuthority(full, "10.0.0.1")
	if r != key.IPLiteral || len(got) != 3 || &got[0] != &full[0] {
		t.Fatalf("rejected into full dst: %q %v", got, r)
	}
}

func TestAppendHeaders(t *testing.T) {
	for _, tc := range []struct {
		name               string
		parser             *key.Parser
		service, namespace string
		want               string
		reason             key.Reason
	}{
		{name: "both", service: "web", namespace: "shop", want: "web.shop"},
		{name: "no namespace: default", service: "web", want: "web.default"},
		{name: "no namespace: custom default", parser: &appsParser, service: "web", want: "web.apps"},
		{name: "upper case folded", service: "WEB", namespace: "Shop", want: "web.shop"},
		{name: "63-character labels", service: label63, namespace: ns63, want: label63 + "." + ns63},
		{name: "no service", namespace: "shop", reason: key.Missing},
		{name: "neither", reason: key.Missing},
		{name: "service with dot", service: "web.shop", namespace: "shop", reason: key.BadLabel},
		{name: "service FQDN", service: "web.shop.svc.cluster.local", reason: key.BadLabel},
		{name: "underscore service", service: "bad_name", namespace: "shop", reason: key.BadLabel},
		{name: "underscore namespace", service: "web", namespace: "bad_ns", reason: key.BadLabel},
		{name: "64-character service", service: label64, namespace: "shop", reason: key.BadLabel},
		{name: "64-character namespace", service: "web", namespace: label64, reason: key.BadLabel},
		{name: "space namespace", service: "web", namespace: " ", reason: key.BadLabel},
		{name: "leading dash", service: "-web", reason: key.BadLabel},
		{name: "trailing dash namespace", service: "web", namespace: "shop-", reason: key.BadLabel},
		{name: "service with port", service: "web:80", reason: key.BadLabel},
		{name: "non-ASCII", service: "w\u00e9b", reason: key.BadLabel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &defaultParser
			if tc.parser != nil {
				p = tc.parser
			}
			buf := append(make([]byte, 0, len(prefix)+key.MaxLen), prefix...)
			got, r := p.AppendHeaders(buf, tc.service, tc.namespace)
			if r != tc.reason {
				t.Fatalf("AppendHeaders(%q, %q) reason %v, want %v", tc.service, tc.namespace, r, tc.reason)
			}
			if r != key.OK {
				if string(got) != prefix {
					t.Fatalf("rejected, but dst changed to %q", got)
				}
				return
			}
			if string(got) != prefix+tc.want {
				t.Fatalf("AppendHeaders(%q, %q) = %q, want %q", tc.service, tc.namespace, got, prefix+tc.want)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct{ key, svc, ns string }{
		{"web.shop", "web", "shop"},
		{"web", "web", ""},
		{"", "", ""},
		{"a.b.c", "a", "b.c"},
		{".x", "", "x"},
		{"x.", "x", ""},
		{label63 + "." + ns63, label63, ns63},
	} {
		t.Run(tc.key, func(t *testing.T) {
			svc, ns := key.Split(tc.key)
			if svc != tc.svc || ns != tc.ns {
				t.Fatalf("Split(%q) = %q, %q; want %q, %q", tc.key, svc, ns, tc.svc, tc.ns)
			}
		})
	}
	// Every accepted key splits back into the parts it was built from.
	k, _ := defaultParser.AppendHeaders(nil, "api", "blog")
	if svc, ns := key.Split(string(k)); svc != "api" || ns != "blog" {
		t.Fatalf("Split(%q) = %q, %q", k, svc, ns)
	}
}

func TestReasonString(t *testing.T) {
	for _, tc := range []struct {
		r    key.Reason
		want string
	}{
		{key.OK, "ok"},
		{key.Missing, "missing"},
		{key.IPLiteral, "ip_literal"},
		{key.BadShape, "bad_shape"},
		{key.BadLabel, "bad_label"},
		{key.NumReasons, "unknown"},
		{255, "unknown"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("Reason(%d).String() = %q, want %q", tc.r, got, tc.want)
		}
	}
	if key.NumReasons != 5 {
		t.Errorf("NumReasons = %d: a new Reason needs a String and a metric", key.NumReasons)
	}
}

// TestNoAllocations checks the hot path allocates nothing when dst has room.
func TestNoAllocations(t *testing.T) {
	buf := make([]byte, 0, key.MaxLen)
	for _, a := range []string{"web", "web.shop", "web.shop.svc.cluster.local:8080", "10.0.0.1", "bad_name.shop", "a.b.c.d.e"} {
		t.Run(a, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, func() { buf, _ = defaultParser.AppendAuthority(buf[:0], a) }); n != 0 {
				t.Fatalf("AppendAuthority(%q) allocates %v times per call", a, n)
			}
		})
	}
	t.Run("headers", func(t *testing.T) {
		if n := testing.AllocsPerRun(1000, func() { buf, _ = defaultParser.AppendHeaders(buf[:0], "web", "shop") }); n != 0 {
			t.Fatalf("AppendHeaders allocates %v times per call", n)
		}
	})
}

// FuzzAppendAuthority checks, for any authority and any dst, that AppendAuthority
// never panics, writes at most MaxLen bytes, leaves dst alone on rejection, and
// only accepts keys made of two DNS-1123 labels that parse back to themselves.
func FuzzAppendAuthority(f *testing.F) {
	for _, tc := range authorityCases {
		f.Add(tc.authority, []byte(prefix))
	}
	f.Add("web.shop", []byte(nil))
	f.Fuzz(func(t *testing.T, authority string, dst []byte) {
		orig := string(dst)
		dst = dst[:len(dst):len(dst)] // no spare capacity: an overwrite would need a copy
		got, r := defaultParser.AppendAuthority(dst, authority)
		if r >= key.NumReasons {
			t.Fatalf("reason %d out of range", r)
		}
		if string(got[:min(len(got), len(orig))]) != orig || len(got) < len(orig) {
			t.Fatalf("dst %q became %q", orig, got)
		}
		// Case does not matter: the ASCII upper-case authority gives the same result.
		up, ru := defaultParser.AppendAuthority(nil, asciiUpper(authority))
		if ru != r || (r == key.OK && !bytes.Equal(up, got[len(orig):])) {
			t.Fatalf("AppendAuthority(%q) = %q %v, but upper case gives %q %v", authority, got[len(orig):], r, up, ru)
		}
		if r != key.OK {
			if len(got) != len(orig) {
				t.Fatalf("rejected (%v), but dst %q became %q", r, orig, got)
			}
			return
		}
		k := got[len(orig):]
		if len(k) > key.MaxLen {
			t.Fatalf("key %q is %d bytes, more than MaxLen %d", k, len(k), key.MaxLen)
		}
		svc, ns := key.Split(string(k))
		if !messages.IsDNS1123Label(svc) || !messages.IsDNS1123Label(ns) {
			t.Fatalf("AppendAuthority(%q) accepted key %q: %q, %q are not both DNS-1123 labels", authority, k, svc, ns)
		}
		// A key is itself an authority for the same key.
		if again, r := defaultParser.AppendAuthority(nil, string(k)); r != key.OK || !bytes.Equal(again, k) {
			t.Fatalf("key %q parses as %q %v", k, again, r)
		}
	})
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}

func BenchmarkAppendAuthority(b *testing.B) {
	for _, bc := range []struct{ name, authority string }{
		{"short", "web.shop"},
		{"bare", "web"},
		{"FQDN", "web.shop.svc.cluster.local:8080"},
		{"rejected", "10.0.0.1:8080"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, key.MaxLen)
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = defaultParser.AppendAuthority(buf[:0], bc.authority)
			}
		})
	}
}
