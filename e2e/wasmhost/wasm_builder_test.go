package wasmhost

import (
	"fmt"
)

// wasmBuilder assembles small wasm modules byte by byte, so tests can make
// modules that do exactly one odd thing (import sock_open, call a proxy_*
// function from _initialize, trap) without a toolchain.
type wasmBuilder struct {
	types    []string // encoded functype, deduplicated
	imports  [][]byte
	nImports uint32
	funcs    []uint32 // type index per defined function
	bodies   [][]byte
	exports  [][]byte
	memPages uint32
	data     [][]byte
}

// Value types and opcodes used by the tests.
const (
	tI32 = 0x7f
	tI64 = 0x7e

	opUnreachable = 0x00
	opCall        = 0x10
	opDrop        = 0x1a
	opLocalGet    = 0x20
	opI32Const    = 0x41
	opI64Const    = 0x42
	opEnd         = 0x0b
)

func uleb(v uint64) []byte {
	var out []byte
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			out = append(out, b|0x80)
			continue
		}
		return append(out, b)
	}
}

func sleb(v int64) []byte {
	var out []byte
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && b&0x40 == 0) || (v == -1 && b&0x40 != 0) {
			return append(out, b)
		}
		out = append(out, b|0x80)
	}
}

func wasmName(s string) []byte { return append(uleb(uint64(len(s))), s...) }

func vec(items [][]byte) []byte {
	out := uleb(uint64(len(items)))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

// i32c is "i32.const v".
func i32c(v int32) []byte { return append([]byte{opI32Const}, sleb(int64(v))...) }

// i64c is "i64.const v".
func i64c(v int64) []byte { return append([]byte{opI64Const}, sleb(v)...) }

// call is "call idx".
func call(idx uint32) []byte { return append([]byte{opCall}, uleb(uint64(idx))...) }

// code concatenates instructions.
func code(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func (b *wasmBuilder) typeIndex(params, results []byte) uint32 {
	enc := string(append(append(append([]byte{0x60}, uleb(uint64(len(params)))...), params...),
		append(uleb(uint64(len(results))), results...)...))
	for i, t := range b.types {
		if t == enc {
			return uint32(i)
		}
	}
	b.types = append(b.types, enc)
	return uint32(len(b.types) - 1)
}

// importFunc imports mod.name and returns its function index. All imports
// must come before the first defined function.
func (b *wasmBuilder) importFunc(mod, name string, params, results []byte) uint32 {
	if len(b.funcs) > 0 {
		panic("imports must precede functions")
	}
	t := b.typeIndex(params, results)
	imp := append(append(wasmName(mod), wasmName(name)...), 0x00)
	b.imports = append(b.imports, append(imp, uleb(uint64(t))...))
	b.nImports++
	return b.nImports - 1
}

// fn defines a function with body (without the final end), exports it as
// export unless export is "", and returns its index.
func (b *wasmBuilder) fn(export string, params, results []byte, body ...byte) uint32 {
	b.funcs = append(b.funcs, b.typeIndex(params, results))
	b.bodies = append(b.bodies, append(append([]byte{0x00}, body...), opEnd)) // no locals
	idx := b.nImports + uint32(len(b.funcs)) - 1
	if export != "" {
		b.exports = append(b.exports, append(append(wasmName(export), 0x00), uleb(uint64(idx))...))
	}
	return idx
}

// memory declares one memory of pages pages, exported as "memory".
func (b *wasmBuilder) memory(pages uint32) {
	b.memPages = pages
	b.exports = append(b.exports, append(append(wasmName("memory"), 0x02), 0x00))
}

// dataAt places s at offset in memory.
func (b *wasmBuilder) dataAt(offset int32, s string) {
	seg := append([]byte{0x00}, i32c(offset)...)
	seg = append(seg, opEnd)
	seg = append(seg, wasmName(s)...)
	b.data = append(b.data, seg)
}

func section(id byte, content []byte) []byte {
	return append(append([]byte{id}, uleb(uint64(len(content)))...), content...)
}

func (b *wasmBuilder) bytes() []byte {
	out := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}
	types := make([][]byte, len(b.types))
	for i, t := range b.types {
		types[i] = []byte(t)
	}
	out = append(out, section(1, vec(types))...)
	if len(b.imports) > 0 {
		out = append(out, section(2, vec(b.imports))...)
	}
	fns := make([][]byte, len(b.funcs))
	for i, t := range b.funcs {
		fns[i] = uleb(uint64(t))
	}
	out = append(out, section(3, vec(fns))...)
	if b.memPages > 0 {
		out = append(out, section(5, vec([][]byte{append([]byte{0x00}, uleb(uint64(b.memPages))...)}))...)
	}
	out = append(out, section(7, vec(b.exports))...)
	bodies := make([][]byte, len(b.bodies))
	for i, body := range b.bodies {
		bodies[i] = append(uleb(uint64(len(body))), body...)
	}
	out = append(out, section(10, vec(bodies))...)
	if len(b.data) > 0 {
		out = append(out, section(11, vec(b.data))...)
	}
	return out
}

var (
	none = []byte{}
	p1   = []byte{tI32}
	p2   = []byte{tI32, tI32}
	p3   = []byte{tI32, tI32, tI32}
	p4   = []byte{tI32, tI32, tI32, tI32}
	p5   = []byte{tI32, tI32, tI32, tI32, tI32}
)

// heapBase is where the test allocator hands out memory.
const heapBase = 8192

// proxyModule is a builder preloaded with what every proxy-wasm module has:
// call addImports to add imports first, then the ABI marker, a memory and
// an allocator (malloc returning heapBase) are defined.
func proxyModule(addImports func(b *wasmBuilder)) *wasmBuilder {
	b := &wasmBuilder{}
	if addImports != nil {
		addImports(b)
	}
	b.fn("proxy_abi_version_0_2_0", none, none)
	b.memory(1)
	b.fn("malloc", p1, p1, i32c(heapBase)...)
	return b
}

func (b *wasmBuilder) String() string { return fmt.Sprintf("wasm(%d bytes)", len(b.bytes())) }
