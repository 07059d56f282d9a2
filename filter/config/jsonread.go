package config

import (
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// This file is a small, strict JSON (RFC 8259) reader, so that the filter need not
// link encoding/json and reflect for its one JSON document. It is a pull reader:
// the caller walks the document with peek, enter, next, name, colon, str, number
// and skip. It reads a byte slice in place, allocates little (the strings it is
// asked to decode, a byte per open container) and recurses nowhere, so no input
// can exhaust the stack.
//
// Its syntax errors are encoding/json's, word for word and at the same offset
// (SyntaxError.Offset: the count of bytes read, the bad one included), and it
// decodes strings as encoding/json does: escapes, \uXXXX with UTF-16 surrogate
// pairs, U+FFFD for a lone surrogate and for each byte of invalid UTF-8.

// maxDepth bounds the nesting of arrays and objects, as encoding/json's scanner
// does (maxNestingDepth).
const maxDepth = 10000

// kind is the JSON type of a value.
type kind uint8

const (
	kindNull kind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

// String returns the name encoding/json gives k in its type errors.
func (k kind) String() string {
	switch k {
	case kindBool:
		return "bool"
	case kindNumber:
		return "number"
	case kindString:
		return "string"
	case kindArray:
		return "array"
	case kindObject:
		return "object"
	}
	return "null"
}

// syntaxError is input that is not JSON.
type syntaxError struct {
	msg    string // "invalid character 'x' after object key", as encoding/json says it
	offset int    // bytes read when the error was found, the bad byte included
}

func (e *syntaxError) Error() string { return e.msg }

// errEOF is input that ends inside a value.
var errEOF = errors.New("unexpected end of JSON input")

// reader reads one JSON document from data.
type reader struct {
	data []byte
	pos  int // the next byte to read
	// open holds the containers being read, innermost last: '{' or '['.
	open []byte
	// tooDeep is set when nesting one level past maxDepth was tolerated inside a
	// top-level object (see enter); the document is refused with it.
	tooDeep *syntaxError
	// buf is scratch space for decoding strings with escapes.
	buf []byte
}

// fail returns a syntax error about the byte at r.pos.
func (r *reader) fail(context string) *syntaxError {
	return &syntaxError{msg: "invalid character " + quoteChar(r.data[r.pos]) + " " + context, offset: r.pos + 1}
}

// quoteChar formats c for an error message as encoding/json does.
func quoteChar(c byte) string {
	switch c {
	case '\'':
		return `'\''`
	case '"':
		return `'"'`
	}
	s := strconv.Quote(string(rune(c)))
	return "'" + s[1:len(s)-1] + "'"
}

// space skips whitespace.
func (r *reader) space() {
	for r.pos < len(r.data) {
		switch r.data[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

// peek skips whitespace and returns the next byte without reading it; errEOF at
// the end of the input.
func (r *reader) peek() (byte, error) {
	r.space()
	if r.pos >= len(r.data) {
		return 0, errEOF
	}
	return r.data[r.pos], nil
}

// peekKind skips whitespace and returns the kind of the value that starts there.
func (r *reader) peekKind() (kind, error) {
	c, err := r.peek()
	if err != nil {
		return 0, err
	}
	switch c {
	case '{':
		return kindObject, nil
	case '[':
		return kindArray, nil
	case '"':
		return kindString, nil
	case 't', 'f':
		return kindBool, nil
	case 'n':
		return kindNull, nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return kindNumber, nil
	}
	return 0, r.fail("looking for beginning of value")
}

// enter reads the '{' or '[' at r.pos and reports whether the container has
// elements; an empty one is read whole. Nesting deeper than maxDepth is refused.
//
// One level more is let through, and remembered in tooDeep, inside a top-level
// object: the encoding/json based parser this reader replaced first checked the
// field names with a scanner that started afresh at each member's value, so a
// misspelled field after such a value was reported before the depth.
func (r *reader) enter() (bool, error) {
	r.open = append(r.open, r.data[r.pos])
	if len(r.open) > maxDepth {
		err := r.fail("exceeded max depth")
		if len(r.open) > maxDepth+1 || r.open[0] != '{' {
			return false, err
		}
		if r.tooDeep == nil {
			r.tooDeep = err
		}
	}
	r.pos++
	if c, err := r.peek(); err == nil && c == closer(r.open[len(r.open)-1]) {
		r.pos++
		r.open = r.open[:len(r.open)-1]
		return false, nil
	}
	return true, nil
}

// closer returns the byte that closes a container opened by open.
func closer(open byte) byte {
	if open == '{' {
		return '}'
	}
	return ']'
}

// next is called after each element of the innermost container: it reads the ','
// before another element (true) or the closing bracket (false).
func (r *reader) next() (bool, error) {
	c, err := r.peek()
	if err != nil {
		return false, err
	}
	open := r.open[len(r.open)-1]
	switch c {
	case ',':
		r.pos++
		return true, nil
	case closer(open):
		r.pos++
		r.open = r.open[:len(r.open)-1]
		return false, nil
	}
	if open == '{' {
		return false, r.fail("after object key:value pair")
	}
	return false, r.fail("after array element")
}

// name reads an object member's name, decoded when decode is set.
func (r *reader) name(decode bool) (string, error) {
	c, err := r.peek()
	if err != nil {
		return "", err
	}
	if c != '"' {
		return "", r.fail("looking for beginning of object key string")
	}
	return r.str(decode)
}

// colon reads the ':' after an object member's name.
func (r *reader) colon() error {
	c, err := r.peek()
	if err != nil {
		return err
	}
	if c != ':' {
		return r.fail("after object key")
	}
	r.pos++
	return nil
}

// skip reads one value of any kind and depth, checking its syntax, and returns
// its kind. It keeps track of the nesting in r.open: it does not recurse.
func (r *reader) skip() (kind, error) {
	k, err := r.peekKind()
	if err != nil {
		return k, err
	}
	base := len(r.open)
	for {
		more, err := r.begin()
		for err == nil && !more { // a value is complete
			if len(r.open) == base {
				return k, nil
			}
			more, err = r.next()
		}
		if err == nil && r.open[len(r.open)-1] == '{' {
			if _, err = r.name(false); err == nil {
				err = r.colon()
			}
		}
		if err != nil {
			return k, err
		}
	}
}

// begin reads a scalar value whole, or enters a container; more reports an
// entered container with elements to read.
func (r *reader) begin() (more bool, err error) {
	k, err := r.peekKind()
	if err != nil {
		return false, err
	}
	switch k {
	case kindObject, kindArray:
		return r.enter()
	case kindString:
		_, err = r.str(false)
	case kindNumber:
		_, err = r.number()
	default:
		err = r.literal()
	}
	return false, err
}

// literal reads true, false or null.
func (r *reader) literal() error {
	word := "null"
	switch r.data[r.pos] {
	case 't':
		word = "true"
	case 'f':
		word = "false"
	}
	for i := 1; i < len(word); i++ {
		r.pos++
		if r.pos >= len(r.data) {
			return errEOF
		}
		if r.data[r.pos] != word[i] {
			return r.fail("in literal " + word + " (expecting " + quoteChar(word[i]) + ")")
		}
	}
	r.pos++
	return nil
}

// number reads a number and returns its text, which aliases the input.
func (r *reader) number() ([]byte, error) {
	start := r.pos
	if r.data[r.pos] == '-' {
		r.pos++
		if err := r.digit("in numeric literal"); err != nil {
			return nil, err
		}
	}
	if r.data[r.pos] == '0' {
		r.pos++
	} else {
		r.digits()
	}
	if r.pos < len(r.data) && r.data[r.pos] == '.' {
		r.pos++
		if err := r.digit("after decimal point in numeric literal"); err != nil {
			return nil, err
		}
		r.digits()
	}
	if r.pos < len(r.data) && (r.data[r.pos] == 'e' || r.data[r.pos] == 'E') {
		r.pos++
		if r.pos < len(r.data) && (r.data[r.pos] == '+' || r.data[r.pos] == '-') {
			r.pos++
		}
		if err := r.digit("in exponent of numeric literal"); err != nil {
			return nil, err
		}
		r.digits()
	}
	return r.data[start:r.pos], nil
}

// digit checks that a digit is at r.pos, without reading it.
func (r *reader) digit(context string) error {
	if r.pos >= len(r.data) {
		return errEOF
	}
	if c := r.data[r.pos]; c < '0' || c > '9' {
		return r.fail(context)
	}
	return nil
}

// digits reads digits.
func (r *reader) digits() {
	for r.pos < len(r.data) && '0' <= r.data[r.pos] && r.data[r.pos] <= '9' {
		r.pos++
	}
}

// str reads a string and, when decode is set, returns its value: a copy, never an
// alias of the input.
func (r *reader) str(decode bool) (string, error) {
	start := r.pos + 1
	plain := true // no escapes and valid UTF-8: the value is the bytes as they are
	for r.pos = start; r.pos < len(r.data); {
		switch c := r.data[r.pos]; {
		case c == '"':
			r.pos++
			if !decode {
				return "", nil
			}
			if plain {
				return string(r.data[start : r.pos-1]), nil
			}
			return r.unquote(r.data[start : r.pos-1]), nil
		case c == '\\':
			plain = false
			if err := r.escape(); err != nil {
				return "", err
			}
		case c < ' ':
			return "", r.fail("in string literal")
		case c < utf8.RuneSelf:
			r.pos++
		default:
			rr, size := utf8.DecodeRune(r.data[r.pos:])
			plain = plain && !(rr == utf8.RuneError && size == 1)
			r.pos += size
		}
	}
	return "", errEOF
}

// escape checks and reads the escape sequence at r.pos, its '\\' included.
func (r *reader) escape() error {
	r.pos++
	if r.pos >= len(r.data) {
		return errEOF
	}
	switch r.data[r.pos] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		r.pos++
		return nil
	case 'u':
		for range 4 {
			r.pos++
			if r.pos >= len(r.data) {
				return errEOF
			}
			if hexValue(r.data[r.pos]) < 0 {
				return r.fail(`in \u hexadecimal character escape`)
			}
		}
		r.pos++
		return nil
	}
	return r.fail("in string escape code")
}

// hexValue returns the value of the hexadecimal digit c, or -1.
func hexValue(c byte) rune {
	switch {
	case '0' <= c && c <= '9':
		return rune(c - '0')
	case 'a' <= c && c <= 'f':
		return rune(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

// unquote decodes s, the checked contents of a string between its quotes.
func (r *reader) unquote(s []byte) string {
	b := r.buf[:0]
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == '\\' && s[i+1] == 'u':
			var rr rune
			rr, i = unicodeEscape(s, i)
			b = utf8.AppendRune(b, rr)
		case c == '\\':
			b = append(b, unescape(s[i+1]))
			i += 2
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			rr, size := utf8.DecodeRune(s[i:])
			b = utf8.AppendRune(b, rr)
			i += size
		}
	}
	r.buf = b
	return string(b)
}

// unescape returns the byte that the one-letter escape \c stands for.
func unescape(c byte) byte {
	switch c {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return c // '"', '\\' or '/'
}

// unicodeEscape decodes the \uXXXX at s[i:], with the low half of a UTF-16
// surrogate pair when one follows, and returns the rune and the index after
// what it read. A surrogate that is not half of a pair is U+FFFD.
func unicodeEscape(s []byte, i int) (rune, int) {
	rr := hex4(s[i+2:])
	i += 6
	if !utf16.IsSurrogate(rr) {
		return rr, i
	}
	if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
		if pair := utf16.DecodeRune(rr, hex4(s[i+2:])); pair != utf8.RuneError {
			return pair, i + 6
		}
	}
	return utf8.RuneError, i
}

// hex4 returns the value of the four hexadecimal digits at the start of s, or -1
// when they are not.
func hex4(s []byte) rune {
	var v rune
	for _, c := range s[:4] {
		d := hexValue(c)
		if d < 0 {
			return -1
		}
		v = v<<4 | d
	}
	return v
}
