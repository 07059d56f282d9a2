package messages

import (
	"strconv"
	"strings"
)

// RequestCount reports that requests reached one Kubernetes service during a
// flush window. It is the body the operator's
// POST /informer/incoming-request decodes, exactly one per request body; batch
// collectors take a JSON array of them instead.
//
// Its JSON form is {"count":N,"svc":"name","namespace":"ns"}: the field names
// are fixed by the operator and must not change.
type RequestCount struct {
	// Count is how many requests the sender saw for this service since its
	// previous report. It is at least 1: a window with no requests is not
	// reported at all. The operator today only uses the fact that a message
	// arrived (it scales the target up from zero), not the magnitude.
	Count int `json:"count"`

	// Svc is the name of the Kubernetes Service the requests were for, a
	// DNS-1123 label such as "checkout" (not a host name such as
	// "checkout.shop.svc.cluster.local").
	Svc string `json:"svc"`

	// Namespace is the Kubernetes namespace of that Service, a DNS-1123 label
	// such as "shop".
	Namespace string `json:"namespace"`
}

// Field names as they appear on the wire, used in error reports.
const (
	fieldCount     = "count"
	fieldSvc       = "svc"
	fieldNamespace = "namespace"
)

// maxLabelLen is the length limit of a DNS-1123 label (RFC 1123, as
// Kubernetes applies it to namespace and service names).
const maxLabelLen = 63

// labelProblem is the explanation attached to a name that is not a label.
const labelProblem = "is not a DNS-1123 label (lower-case alphanumerics and '-', at most 63 characters)"

// Validate reports whether m is a message a consumer should act on: Count is
// at least 1, and Svc and Namespace are DNS-1123 labels (see
// [IsDNS1123Label]). It returns nil or a [*FieldError] for the first field
// that is wrong, with Index -1.
func (m RequestCount) Validate() error {
	if m.Count < 1 {
		return &FieldError{Index: -1, Field: fieldCount, Problem: strconv.Itoa(m.Count) + " is less than 1"}
	}
	if err := validateLabel(fieldSvc, m.Svc); err != nil {
		return err
	}
	return validateLabel(fieldNamespace, m.Namespace)
}

func validateLabel(field, s string) error {
	if IsDNS1123Label(s) {
		return nil
	}
	if s == "" {
		return &FieldError{Index: -1, Field: field, Problem: "is empty, want a DNS-1123 label"}
	}
	return &FieldError{Index: -1, Field: field, Problem: quoteShort(s) + " " + labelProblem}
}

// quoteShort quotes s for an error message, cutting it short so that a
// hostile body cannot blow up log lines.
func quoteShort(s string) string {
	const keep = 2 * maxLabelLen
	if len(s) <= keep {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:keep]) + "... (" + strconv.Itoa(len(s)) + " bytes)"
}

// IsDNS1123Label reports whether s is a DNS-1123 label as Kubernetes defines
// it for namespace and service names: 1 to 63 characters from [a-z0-9-],
// starting and ending with a letter or digit.
func IsDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > maxLabelLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '-' && i != 0 && i != len(s)-1:
		default:
			return false
		}
	}
	return true
}

// FieldError describes why a message was refused by [Decode] or
// [RequestCount.Validate]. Callers can inspect it with errors.As.
type FieldError struct {
	// Index is the position of the message in a JSON array, or -1 when the
	// body was a single object (and for errors from Validate).
	Index int

	// Field is the JSON field name ("count", "svc" or "namespace"), or ""
	// when the problem is with the array element as a whole.
	Field string

	// Problem says what is wrong, e.g. `"Bad_Name" is not a DNS-1123 label
	// (...)`.
	Problem string
}

// Error formats the error as "messages: [2].svc: <problem>", leaving out the
// index for single objects and the field for whole-element problems.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString("messages: ")
	if e.Index >= 0 {
		b.WriteByte('[')
		b.WriteString(strconv.Itoa(e.Index))
		b.WriteByte(']')
		if e.Field != "" {
			b.WriteByte('.')
		}
	}
	b.WriteString(e.Field)
	if e.Index >= 0 || e.Field != "" {
		b.WriteString(": ")
	}
	b.WriteString(e.Problem)
	return b.String()
}
