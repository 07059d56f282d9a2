package wasmrewrite

import (
	"errors"
	"fmt"
)

// errTruncated is returned for a module that ends inside a construct.
var errTruncated = errors.New("unexpected end of module")

// reader decodes the wasm binary format from b, keeping its position so the
// rewriter can copy what it does not change byte for byte.
type reader struct {
	b   []byte
	pos int
}

func (r *reader) eof() bool { return r.pos >= len(r.b) }

func (r *reader) byte() (byte, error) {
	if r.pos >= len(r.b) {
		return 0, errTruncated
	}
	c := r.b[r.pos]
	r.pos++
	return c, nil
}

func (r *reader) bytes(n int) ([]byte, error) {
	if n < 0 || n > len(r.b)-r.pos {
		return nil, errTruncated
	}
	s := r.b[r.pos : r.pos+n]
	r.pos += n
	return s, nil
}

// uleb reads an unsigned LEB128 of at most bits bits.
func (r *reader) uleb(bits uint) (uint64, error) {
	var v uint64
	var shift uint
	for {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		if shift >= bits || (shift+7 > bits && uint64(c&0x7f)>>(bits-shift) != 0) {
			return 0, fmt.Errorf("LEB128 at offset %d overflows %d bits", r.pos-1, bits)
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, nil
		}
		shift += 7
	}
}

// vec reads a vector's length and calls f for each of its elements, in
// order, stopping at the first error.
func (r *reader) vec(f func(i uint32) error) error {
	n, err := r.u32()
	if err != nil {
		return err
	}
	for i := uint32(0); i < n; i++ {
		if err := f(i); err != nil {
			return err
		}
	}
	return nil
}

func (r *reader) u32() (uint32, error) {
	v, err := r.uleb(32)
	return uint32(v), err
}

// sleb skips a signed LEB128 of at most bits bits (the rewriter never needs
// its value).
func (r *reader) sleb(bits uint) error {
	for n := uint(0); ; n += 7 {
		c, err := r.byte()
		if err != nil {
			return err
		}
		if n >= bits {
			return fmt.Errorf("signed LEB128 at offset %d longer than %d bits", r.pos-1, bits)
		}
		if c&0x80 == 0 {
			return nil
		}
	}
}

// name skips a name (vec(byte)) and returns it.
func (r *reader) name() (string, error) {
	n, err := r.u32()
	if err != nil {
		return "", err
	}
	b, err := r.bytes(int(n))
	return string(b), err
}

// appendULEB appends v as an unsigned LEB128, padded to width bytes when
// width is larger than its minimal encoding (so a rewritten index keeps the
// size of the one it replaces, as Go's linker pads call targets to 5).
func appendULEB(out []byte, v uint64, width int) []byte {
	for i := 0; ; i++ {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 || i+1 < width {
			out = append(out, c|0x80)
			continue
		}
		return append(out, c)
	}
}

// ulebLen is the minimal encoded length of v.
func ulebLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
