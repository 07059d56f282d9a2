package wasmrewrite

import "fmt"

// exprRewriter copies an instruction sequence, replacing the function index
// of every call, return_call and ref.func through remap. Everything else is
// copied byte for byte; an opcode it does not know is an error, never
// skipped, since a function index hidden behind it would be left pointing at
// the wrong function.
type exprRewriter struct {
	r     *reader
	out   []byte
	last  int // r.b[last:r.pos] is read but not yet copied to out
	remap func(uint32) uint32
	// changed counts the function indices rewritten.
	changed int
}

// funcIndex reads a function index immediate and writes its remapped value,
// with the width of the original encoding when the new value fits in it.
func (e *exprRewriter) funcIndex() error {
	start := e.r.pos
	old, err := e.r.u32()
	if err != nil {
		return err
	}
	nu := e.remap(old)
	if nu == old {
		return nil
	}
	width := e.r.pos - start
	if ulebLen(uint64(nu)) > width {
		width = 0
	}
	e.out = append(e.out, e.r.b[e.last:start]...)
	e.out = appendULEB(e.out, uint64(nu), width)
	e.last = e.r.pos
	e.changed++
	return nil
}

// flush copies what was read since the last rewrite.
func (e *exprRewriter) flush() {
	e.out = append(e.out, e.r.b[e.last:e.r.pos]...)
	e.last = e.r.pos
}

// Opcodes with immediates the walker must decode (WebAssembly 2.0 plus
// tail calls). Every other single-byte opcode in [0x45, 0xc4] is a numeric
// instruction without immediates.
const (
	opUnreachable        = 0x00
	opNop                = 0x01
	opBlock              = 0x02
	opLoop               = 0x03
	opIf                 = 0x04
	opElse               = 0x05
	opEnd                = 0x0b
	opBr                 = 0x0c
	opBrIf               = 0x0d
	opBrTable            = 0x0e
	opReturn             = 0x0f
	opCall               = 0x10
	opCallIndirect       = 0x11
	opReturnCall         = 0x12
	opReturnCallIndirect = 0x13
	opDrop               = 0x1a
	opSelect             = 0x1b
	opSelectT            = 0x1c
	opLocalGet           = 0x20
	opGlobalSet          = 0x24
	opTableGet           = 0x25
	opTableSet           = 0x26
	opLoadFirst          = 0x28 // i32.load
	opStoreLast          = 0x3e // i64.store32
	opMemorySize         = 0x3f
	opMemoryGrow         = 0x40
	opI32Const           = 0x41
	opI64Const           = 0x42
	opF32Const           = 0x43
	opF64Const           = 0x44
	opNumericFirst       = 0x45 // i32.eqz
	opNumericLast        = 0xc4 // i64.extend32_s
	opRefNull            = 0xd0
	opRefIsNull          = 0xd1
	opRefFunc            = 0xd2
	opPrefixFC           = 0xfc
)

// expr walks instructions up to and including the end that closes the
// sequence (a function body or a constant expression).
func (e *exprRewriter) expr() error {
	depth := 0
	for {
		at := e.r.pos
		op, err := e.r.byte()
		if err != nil {
			return err
		}
		switch {
		case op == opUnreachable, op == opNop, op == opElse, op == opReturn, op == opDrop, op == opSelect,
			op == opRefIsNull, op >= opNumericFirst && op <= opNumericLast:
		case op == opBlock, op == opLoop, op == opIf:
			depth++
			if err := e.blockType(); err != nil {
				return err
			}
		case op == opEnd:
			if depth == 0 {
				return nil
			}
			depth--
		case op == opBr, op == opBrIf, op >= opLocalGet && op <= opGlobalSet, op == opTableGet, op == opTableSet,
			op == opMemorySize, op == opMemoryGrow:
			if _, err := e.r.u32(); err != nil {
				return err
			}
		case op == opBrTable:
			n, err := e.r.u32()
			if err != nil {
				return err
			}
			for i := uint64(0); i <= uint64(n); i++ { // n targets and the default
				if _, err := e.r.u32(); err != nil {
					return err
				}
			}
		case op == opCall, op == opReturnCall, op == opRefFunc:
			if err := e.funcIndex(); err != nil {
				return err
			}
		case op == opCallIndirect, op == opReturnCallIndirect:
			if _, err := e.r.u32(); err != nil { // type index
				return err
			}
			if _, err := e.r.u32(); err != nil { // table index
				return err
			}
		case op == opSelectT:
			if err := e.r.vec(func(uint32) error { return e.valType() }); err != nil {
				return err
			}
		case op >= opLoadFirst && op <= opStoreLast:
			if err := e.memArg(); err != nil {
				return err
			}
		case op == opI32Const:
			if err := e.r.sleb(32); err != nil {
				return err
			}
		case op == opI64Const:
			if err := e.r.sleb(64); err != nil {
				return err
			}
		case op == opF32Const:
			if _, err := e.r.bytes(4); err != nil {
				return err
			}
		case op == opF64Const:
			if _, err := e.r.bytes(8); err != nil {
				return err
			}
		case op == opRefNull:
			if err := e.r.sleb(33); err != nil { // heap type
				return err
			}
		case op == opPrefixFC:
			if err := e.prefixFC(at); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown opcode 0x%02x at offset %d", op, at)
		}
	}
}

// blockType reads a block type: 0x40 (empty), one value type, or a type
// index as a signed 33-bit LEB128.
func (e *exprRewriter) blockType() error {
	if e.r.eof() {
		return errTruncated
	}
	switch e.r.b[e.r.pos] {
	case 0x40, 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f:
		e.r.pos++
		return nil
	}
	return e.r.sleb(33)
}

// valType reads one of the value types of WebAssembly 2.0.
func (e *exprRewriter) valType() error {
	c, err := e.r.byte()
	if err != nil {
		return err
	}
	switch c {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f:
		return nil
	}
	return fmt.Errorf("unknown value type 0x%02x at offset %d", c, e.r.pos-1)
}

// memArg reads a load/store's alignment (with bit 6 set, a memory index
// follows: multi-memory) and offset.
func (e *exprRewriter) memArg() error {
	align, err := e.r.u32()
	if err != nil {
		return err
	}
	if align&0x40 != 0 {
		if _, err := e.r.u32(); err != nil {
			return err
		}
	}
	_, err = e.r.uleb(64)
	return err
}

// prefixFC reads the 0xfc instructions: saturating truncations (0-7) and
// bulk memory and table operations (8-17).
func (e *exprRewriter) prefixFC(at int) error {
	sub, err := e.r.u32()
	if err != nil {
		return err
	}
	var immediates int
	switch {
	case sub <= 7:
		immediates = 0
	case sub == 8, sub == 10, sub == 12, sub == 14: // memory.init, memory.copy, table.init, table.copy
		immediates = 2
	case sub <= 17: // data.drop, memory.fill, elem.drop, table.grow, table.size, table.fill
		immediates = 1
	default:
		return fmt.Errorf("unknown opcode 0xfc %d at offset %d", sub, at)
	}
	for i := 0; i < immediates; i++ {
		if _, err := e.r.u32(); err != nil {
			return err
		}
	}
	return nil
}
