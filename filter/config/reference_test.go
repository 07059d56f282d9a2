package config

// The encoding/json based parser that Parse replaced, kept verbatim (but for the
// names) as the reference that Parse is checked against: see differential_test.go.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// jsonDocument is document with the JSON field names encoding/json matches.
type jsonDocument struct {
	Cluster          *string  `json:"cluster"`
	Authority        *string  `json:"authority"`
	Path             *string  `json:"path"`
	Mode             *string  `json:"mode"`
	FlushInterval    *string  `json:"flush_interval"`
	Timeout          *string  `json:"timeout"`
	KeySource        *string  `json:"key_source"`
	ServiceHeader    *string  `json:"service_header"`
	NamespaceHeader  *string  `json:"namespace_header"`
	Service          *string  `json:"service"`
	Namespace        *string  `json:"namespace"`
	DefaultNamespace *string  `json:"default_namespace"`
	ClusterDomain    *string  `json:"cluster_domain"`
	MaxKeys          *int64   `json:"max_keys"`
	WakeAfter        *string  `json:"wake_after"`
	Include          []string `json:"include"`
	Exclude          []string `json:"exclude"`
	IgnorePaths      []string `json:"ignore_paths"`
	IgnoreUserAgents []string `json:"ignore_user_agents"`
	MemoSize         *int64   `json:"memo_size"`
	Aggregate        *string  `json:"aggregate"`

	Hold              []string `json:"hold"`
	HoldProbePath     *string  `json:"hold_probe_path"`
	HoldProbeInterval *string  `json:"hold_probe_interval"`
	HoldTimeout       *string  `json:"hold_timeout"`
	HoldMax           *int64   `json:"hold_max"`
}

// referenceParse is Parse as it was with encoding/json.
func referenceParse(data []byte) (Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Config{}, &Error{Reason: `empty configuration: at least {"cluster": "<envoy cluster>"} is required`}
	}
	if len(data) > MaxConfigSize {
		return Config{}, &Error{Reason: fmt.Sprintf("configuration is %d bytes, more than the %d allowed", len(data), MaxConfigSize)}
	}
	if err := referenceCheckFieldNames(data); err != nil {
		return Config{}, err
	}
	var doc jsonDocument
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return Config{}, referenceDecodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Config{}, &Error{Reason: "unexpected data after the JSON object"}
	}
	d := document(doc)
	return d.validate()
}

// referenceFieldNames are the configuration's fields, spelled exactly.
var referenceFieldNames = map[string]bool{
	"cluster": true, "authority": true, "path": true, "mode": true, "flush_interval": true, "timeout": true,
	"key_source": true, "service_header": true, "namespace_header": true, "service": true, "namespace": true,
	"default_namespace": true, "cluster_domain": true, "max_keys": true, "wake_after": true, "include": true,
	"exclude": true, "ignore_paths": true, "ignore_user_agents": true, "memo_size": true, "aggregate": true,
	"hold": true, "hold_probe_path": true, "hold_probe_interval": true, "hold_timeout": true, "hold_max": true,
}

// referenceCheckFieldNames refuses an unknown field, a field whose name is not
// spelled exactly as documented (encoding/json would match "Cluster" to "cluster")
// and a field given twice. A document that is not a JSON object is left for the
// full decode to describe.
func referenceCheckFieldNames(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	seen := make(map[string]bool, len(referenceFieldNames))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		name, _ := tok.(string)
		if !referenceFieldNames[name] {
			return fieldErr(name, "unknown field (known: cluster, authority, path, mode, flush_interval, timeout, key_source, "+
				"service_header, namespace_header, service, namespace, default_namespace, cluster_domain, max_keys, "+
				"wake_after, include, exclude, ignore_paths, ignore_user_agents, memo_size, aggregate, hold, hold_probe_path, "+
				"hold_probe_interval, hold_timeout, hold_max)")
		}
		if seen[name] {
			return fieldErr(name, "given more than once")
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

// referenceDecodeError turns encoding/json's errors into ones that name the field.
func referenceDecodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		if typeErr.Field == "" {
			return &Error{Reason: fmt.Sprintf("must be a JSON object, not %s", typeErr.Value)}
		}
		want := "a string"
		switch typeErr.Field {
		case "max_keys", "memo_size":
			want = "a whole number"
		case "include", "exclude", "ignore_paths", "ignore_user_agents":
			want = "a list of strings"
		}
		return fieldErr(typeErr.Field, "must be %s, not %s", want, typeErr.Value)
	}
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		return &Error{Reason: fmt.Sprintf("not valid JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return &Error{Reason: "not valid JSON: unexpected end of input"}
	}
	return &Error{Reason: "not valid JSON: " + err.Error()}
}
