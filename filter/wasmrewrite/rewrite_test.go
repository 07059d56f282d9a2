package wasmrewrite

import (
	"bytes"
	"context"

	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// testModule assembles a module byte by byte: every construct that holds a
// function index, around poll_oneoff imports under both WASI names.
type testModule struct {
	types   [][]byte
	imports [][]byte
	nImp    uint32
	funcs   []uint32
	bodies  [][]byte
	exports [][]byte
	globals [][]byte
	elems   [][]byte
	start   int // -1: none
	names   map[uint32]string
	nameSec bool
}

func leb(v uint64) []byte { return appendULEB(nil, v, 0) }

func vecOf(items [][]byte) []byte {
	out := leb(uint64(len(items)))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

func str(s string) []byte { return append(leb(uint64(len(s))), s...) }

func (m *testModule) typ(params, results []byte) uint32 {
	enc := append(append(append([]byte{0x60}, leb(uint64(len(params)))...), params...), append(leb(uint64(len(results))), results...)...)
	for i, t := range m.types {
		if bytes.Equal(t, enc) {
			return uint32(i)
		}
	}
	m.types = append(m.types, enc)
	return uint32(len(m.types) - 1)
}

func (m *testModule) imp(mod, name string, params, results []byte) uint32 {
	t := m.typ(params, results)
	m.imports = append(m.imports, append(append(append(str(mod), str(name)...), 0x00), leb(uint64(t))...))
	m.nImp++
	m.name(m.nImp-1, mod+"."+name)
	return m.nImp - 1
}

func (m *testModule) name(idx uint32, n string) {
	if m.names == nil {
		m.names = map[uint32]string{}
	}
	m.names[idx] = n
}

// fn defines a function (body without locals and final end) and exports it
// under export unless that is empty.
func (m *testModule) fn(export string, params, results []byte, body ...byte) uint32 {
	m.funcs = append(m.funcs, m.typ(params, results))
	m.bodies = append(m.bodies, append(append([]byte{0x00}, body...), 0x0b))
	idx := m.nImp + uint32(len(m.funcs)) - 1
	if export != "" {
		m.exports = append(m.exports, append(append(str(export), 0x00), leb(uint64(idx))...))
		m.name(idx, export)
	}
	return idx
}

func sec(id byte, content []byte) []byte {
	return append(append([]byte{id}, leb(uint64(len(content)))...), content...)
}

func (m *testModule) bytes() []byte {
	out := append([]byte(nil), wasmHeader...)
	out = append(out, sec(secType, vecOf(m.types))...)
	out = append(out, sec(secImport, vecOf(m.imports))...)
	fs := make([][]byte, len(m.funcs))
	for i, t := range m.funcs {
		fs[i] = leb(uint64(t))
	}
	out = append(out, sec(secFunction, vecOf(fs))...)
	out = append(out, sec(secTable, vecOf([][]byte{{0x70, 0x00, 0x04}}))...) // funcref, min 4
	out = append(out, sec(secMemory, vecOf([][]byte{{0x00, 0x01}}))...)      // 1 page
	if len(m.globals) > 0 {
		out = append(out, sec(secGlobal, vecOf(m.globals))...)
	}
	exports := append([][]byte{append(str("memory"), 0x02, 0x00)}, m.exports...)
	out = append(out, sec(secExport, vecOf(exports))...)
	if m.start >= 0 {
		out = append(out, sec(secStart, leb(uint64(m.start)))...)
	}
	if len(m.elems) > 0 {
		out = append(out, sec(secElement, vecOf(m.elems))...)
	}
	bodies := make([][]byte, len(m.bodies))
	for i, b := range m.bodies {
		bodies[i] = append(leb(uint64(len(b))), b...)
	}
	out = append(out, sec(secCode, vecOf(bodies))...)
	if m.nameSec {
		var entries [][]byte
		for i := uint32(0); i < m.nImp+uint32(len(m.funcs)); i++ {
			if n, ok := m.names[i]; ok {
				entries = append(entries, append(leb(uint64(i)), str(n)...))
			}
		}
		sub := vecOf(entries)
		content := append(str("name"), append([]byte{0x01}, append(leb(uint64(len(sub))), sub...)...)...)
		out = append(out, sec(secCustom, content)...)
	}
	return out
}

var (
	none = []byte{}
	r1   = []byte{i32}
	p4   = []byte{i32, i32, i32, i32}
)

func call(idx uint32) []byte  { return append([]byte{opCall}, leb(uint64(idx))...) }
func i32c(v byte) []byte      { return []byte{opI32Const, v} } // v < 64
func cat(p ...[]byte) []byte  { return bytes.Join(p, nil) }
func local(i byte) []byte     { return []byte{opLocalGet, i} }
func refFunc(i uint32) []byte { return append([]byte{opRefFunc}, leb(uint64(i))...) }

// sampleModule has imports env.a (answers 10), the WASI poll_oneoffs and
// env.b (answers 20), interleaved, and functions that reach them through
// calls, a table, ref.func, an export of an import, a start function and
// padding functions (so the new function's index needs a wider LEB128 than
// a call to import 1 has).
func sampleModule(padding int) *testModule {
	m := &testModule{start: -1, nameSec: true}
	a := m.imp("env", "a", none, r1)
	poll1 := m.imp("wasi_snapshot_preview1", "poll_oneoff", p4, r1)
	b := m.imp("env", "b", none, r1)
	poll2 := m.imp("wasi_unstable", "poll_oneoff", p4, r1)
	m.exports = append(m.exports, append(append(str("poll_export"), 0x00), leb(uint64(poll1))...))
	callA := m.fn("callA", none, r1, call(a)...)
	callB := m.fn("callB", none, r1, call(b)...)
	// poll(nevents) calls poll_oneoff(1000, 2000, 1, nevents).
	pollBody := func(target uint32) []byte {
		return cat([]byte{opI32Const, 0xe8, 0x07}, []byte{opI32Const, 0xd0, 0x0f}, i32c(1), local(0), call(target))
	}
	m.fn("poll", r1, r1, pollBody(poll1)...)
	m.fn("poll2", r1, r1, pollBody(poll2)...)
	// indirect(i) calls table[i]: a, b, callA, callB.
	m.fn("indirect", r1, r1, cat(local(0), []byte{opCallIndirect}, leb(uint64(m.typ(none, r1))), []byte{0x00})...)
	// refs: ref.func callB, ref.is_null → 0; a block and a loop around it.
	m.fn("refs", none, r1, cat([]byte{opBlock, i32}, refFunc(callB), []byte{opRefIsNull, opEnd},
		[]byte{opLoop, 0x40, opEnd})...)
	// The start function stores 7 at address 0; readStart loads it.
	start := m.fn("", none, none, cat(i32c(0), i32c(7), []byte{0x36, 0x02, 0x00})...)
	m.start = int(start)
	m.fn("readStart", none, r1, cat(i32c(0), []byte{0x28, 0x02, 0x00})...)
	for i := 0; i < padding; i++ {
		m.fn("", none, r1, call(a)...)
	}
	// Table 0 at offset 0: a, b, callA, callB (flags 0); callB declared for
	// ref.func (flags 3); a funcref global initialized with ref.func callA.
	m.elems = append(m.elems, cat([]byte{0x00}, i32c(0), []byte{opEnd}, vecOf([][]byte{leb(uint64(a)), leb(uint64(b)), leb(uint64(callA)), leb(uint64(callB))})))
	m.elems = append(m.elems, cat([]byte{0x03, 0x00}, vecOf([][]byte{leb(uint64(callB))})))
	m.globals = append(m.globals, cat([]byte{0x70, 0x00}, refFunc(callA), []byte{opEnd}))
	return m
}

// instance runs wasm on wazero with env.a, env.b and both poll_oneoffs
// (answering ENOSYS and counted).
func instance(t *testing.T, wasm []byte) (api.Module, *int) {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { rt.Close(ctx) })
	calls := new(int)
	env := rt.NewHostModuleBuilder("env")
	env.NewFunctionBuilder().WithFunc(func() uint32 { return 10 }).Export("a")
	env.NewFunctionBuilder().WithFunc(func() uint32 { return 20 }).Export("b")
	if _, err := env.Instantiate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"wasi_snapshot_preview1", "wasi_unstable"} {
		w := rt.NewHostModuleBuilder(name)
		w.NewFunctionBuilder().WithFunc(func(_, _, _, _ uint32) uint32 { *calls++; return 52 }).Export("poll_oneoff")
		if _, err := w.Instantiate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mod, err := rt.Instantiate(ctx, wasm)
	if err != nil {
		t.Fatal(err)
	}
	return mod, calls
}

func call1(t *testing.T, m api.Module, name string, args ...uint64) uint32 {
	t.Helper()
	res, err := m.ExportedFunction(name).Call(context.Background(), args...)
	if err != nil {
		t.Fatalf("%s%v: %v", name, args, err)
	}
	return uint32(res[0])
}

func TestOwnPollOneoff(t *testing.T) {
	for _, padding := range []int{0, 200} {
		t.Run(strings.Repeat("padded ", min(padding, 1))+"module", func(t *testing.T) {
			orig := sampleModule(padding).bytes()
			// The original behaves as built: its polls reach the host.
			om, ocalls := instance(t, orig)
			if got := call1(t, om, "poll", 8); got != 52 || *ocalls != 1 {
				t.Fatalf("original poll = %d with %d host calls, want ENOSYS from the host", got, *ocalls)
			}

			out, res, err := OwnPollOneoff(orig)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Replaced) != 2 {
				t.Errorf("Replaced = %v, want both WASI names", res.Replaced)
			}
			if want := uint32(2 + 8 + padding); res.Function != want {
				t.Errorf("Function = %d, want %d", res.Function, want)
			}
			mod, calls := instance(t, out)
			cm, err := wazero.NewRuntime(context.Background()).CompileModule(context.Background(), out)
			if err != nil {
				t.Fatal(err)
			}
			var imports []string
			for _, d := range cm.ImportedFunctions() {
				mo, n, _ := d.Import()
				imports = append(imports, mo+"."+n)
			}
			if strings.Join(imports, " ") != "env.a env.b" {
				t.Errorf("imports %v, want env.a env.b", imports)
			}
			// Names follow their functions.
			for name, d := range cm.ExportedFunctions() {
				if name != "poll_export" && d.Name() != name {
					t.Errorf("export %s has name %q", name, d.Name())
				}
			}
			if d := cm.ExportedFunctions()["poll_export"]; d.Index() != res.Function || !strings.HasPrefix(d.Name(), "wasi_snapshot_preview1.poll_oneoff") {
				t.Errorf("poll_export is function %d named %q, want %d, the first import's name", d.Index(), d.Name(), res.Function)
			}

			checks := []struct {
				fn   string
				args []uint64
				want uint32
			}{
				{"callA", nil, 10},
				{"callB", nil, 20},
				{"indirect", []uint64{0}, 10},
				{"indirect", []uint64{1}, 20},
				{"indirect", []uint64{2}, 10},
				{"indirect", []uint64{3}, 20},
				{"refs", nil, 0},
				{"readStart", nil, 7},
				{"poll", []uint64{8}, 0},
				{"poll2", []uint64{16}, 0},
				{"poll_export", []uint64{0, 0, 1, 24}, 0},
				{"poll", []uint64{65532}, 0},          // the last word of memory
				{"poll", []uint64{65533}, errnoFault}, // crosses the end
				{"poll2", []uint64{1 << 31}, errnoFault},
				{"poll", []uint64{0xfffffffe}, errnoFault}, // would wrap in 32 bits
			}
			mem := mod.Memory()
			for _, at := range []uint32{8, 16, 24, 65532} {
				mem.WriteUint32Le(at, 0xffffffff)
			}
			for _, c := range checks {
				if got := call1(t, mod, c.fn, c.args...); got != c.want {
					t.Errorf("%s%v = %d, want %d", c.fn, c.args, got, c.want)
				}
			}
			for _, at := range []uint32{8, 16, 24, 65532} {
				if v, _ := mem.ReadUint32Le(at); v != 0 {
					t.Errorf("nevents at %d = %#x, want 0", at, v)
				}
			}
			if *calls != 0 {
				t.Errorf("%d calls reached the host's poll_oneoff", *calls)
			}
		})
	}
}

func TestOwnPollOneoffUnchanged(t *testing.T) {
	m := &testModule{start: -1}
	m.imp("env", "a", none, r1)
	m.fn("callA", none, r1, call(0)...)
	wasm := m.bytes()
	out, res, err := OwnPollOneoff(wasm)
	if err != nil || len(res.Replaced) != 0 || !bytes.Equal(out, wasm) {
		t.Fatalf("OwnPollOneoff on a module without poll_oneoff = %d bytes, %v, %v; want it unchanged", len(out), res, err)
	}
}

// TestReplaceImportsRefuses: whatever the rewriter cannot renumber safely
// is an error, never a module with an index left behind.
func TestReplaceImportsRefuses(t *testing.T) {
	withBody := func(body ...byte) []byte {
		m := &testModule{start: -1}
		m.imp("wasi_snapshot_preview1", "poll_oneoff", p4, r1)
		m.fn("f", none, none, body...)
		return m.bytes()
	}
	wrongSig := func() []byte {
		m := &testModule{start: -1}
		m.imp("wasi_snapshot_preview1", "poll_oneoff", []byte{i32}, r1)
		m.fn("f", none, none)
		return m.bytes()
	}()
	tests := []struct {
		name string
		wasm []byte
		want string
	}{
		{"SIMD opcode", withBody(0xfd, 0x0c), "unknown opcode 0xfd"},
		{"atomics opcode", withBody(0xfe, 0x00), "unknown opcode 0xfe"},
		{"exception handling", withBody(0x06, 0x40, opEnd), "unknown opcode 0x06"},
		{"unknown 0xfc instruction", withBody(0xfc, 0x20), "unknown opcode 0xfc 32"},
		{"truncated body", withBody(opCall), "unexpected end"},
		{"wrong signature", wrongSig, "has type"},
		{"not wasm", []byte("hello, world"), "not a WebAssembly"},
		{"truncated module", withBody()[:20], "unexpected end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := OwnPollOneoff(tt.wasm)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestIndexWidths: remapped indices keep their encoded width when they fit
// (bodies keep their size), and grow when they do not.
func TestIndexWidths(t *testing.T) {
	tests := []struct {
		name      string
		in        []byte
		remap     uint32
		want      []byte
		remapped  int
		wantError bool
	}{
		{"padded 5-byte call keeps 5 bytes", []byte{opCall, 0x85, 0x80, 0x80, 0x80, 0x00, opEnd}, 4,
			[]byte{opCall, 0x84, 0x80, 0x80, 0x80, 0x00, opEnd}, 1, false},
		{"1-byte call grows to 2", []byte{opCall, 0x01, opEnd}, 300, []byte{opCall, 0xac, 0x02, opEnd}, 1, false},
		{"return_call", []byte{opReturnCall, 0x01, opEnd}, 2, []byte{opReturnCall, 0x02, opEnd}, 1, false},
		{"unchanged index left alone", []byte{opCall, 0x07, opEnd}, 7, []byte{opCall, 0x07, opEnd}, 0, false},
		{"br_table and consts copied", []byte{opBlock, 0x40, opI32Const, 0x00, opBrTable, 0x01, 0x00, 0x00, opEnd,
			opI64Const, 0x80, 0x7f, opDrop, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, opDrop, opCall, 0x01, opEnd}, 9,
			[]byte{opBlock, 0x40, opI32Const, 0x00, opBrTable, 0x01, 0x00, 0x00, opEnd,
				opI64Const, 0x80, 0x7f, opDrop, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, opDrop, opCall, 0x09, opEnd}, 1, false},
		{"overlong LEB128", []byte{opCall, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, opEnd}, 0, nil, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &exprRewriter{r: &reader{b: tt.in}, remap: func(i uint32) uint32 {
				if i == 7 {
					return 7
				}
				return tt.remap
			}}
			err := e.expr()
			if tt.wantError {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			e.flush()
			if !bytes.Equal(e.out, tt.want) || e.changed != tt.remapped {
				t.Errorf("got % x (%d changed), want % x (%d)", e.out, e.changed, tt.want, tt.remapped)
			}
		})
	}
}
