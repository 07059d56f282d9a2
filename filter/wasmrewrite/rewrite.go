package wasmrewrite

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
)

// Section ids of the wasm binary format.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13
)

var wasmHeader = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// Import names one imported function: Module is the import's module name
// ("wasi_snapshot_preview1"), Name its field name ("poll_oneoff").
type Import struct {
	Module, Name string
}

func (i Import) String() string { return i.Module + "." + i.Name }

// Result says what a rewrite did.
type Result struct {
	// Replaced lists the imports that became the module's own function, in
	// import order; empty when the module imported none of them (the
	// module is then returned unchanged).
	Replaced []Import
	// Function is the index of the new function in the rewritten module.
	Function uint32
	// Remapped counts the function indices rewritten (calls, ref.func,
	// element segments, exports, start, names).
	Remapped int
}

// Func is the body of a function added to a module, with its signature:
// Params and Results are value types (0x7f i32, 0x7e i64, 0x7d f32, 0x7c
// f64), Body is the function's code entry without its size: the locals
// declaration followed by the instructions and the final end.
type Func struct {
	Params, Results []byte
	Body            []byte
	// Name is its entry in the module's name section, if it has one.
	Name string
}

// ReplaceImports returns wasm with every imported function named in imps
// removed from the imports and served instead by fn, appended to the
// module's functions. Every reference to a function index (call,
// return_call, ref.func, element segments, exports, the start function,
// the name section's function, local and label names) is renumbered for the
// import's removal; nothing else changes, byte for byte. Each replaced
// import must have fn's signature.
//
// It fails, without a result, on anything it cannot rewrite safely: an
// instruction, section or encoding it does not know (a function index it
// did not see would point at the wrong function afterwards).
func ReplaceImports(wasm []byte, imps []Import, fn Func) ([]byte, Result, error) {
	m, err := parse(wasm)
	if err != nil {
		return nil, Result{}, err
	}
	return m.replace(imps, fn)
}

type section struct {
	id      byte
	content []byte
}

type module struct {
	sections []section
	types    []funcType
	// imported functions: their position in the import section and type.
	funcImports []funcImport
	nDefined    uint32
	hasMemory   bool
}

type funcType struct{ params, results []byte }

type funcImport struct {
	imp     Import
	typeIdx uint32
}

func parse(wasm []byte) (*module, error) {
	if !bytes.HasPrefix(wasm, wasmHeader) {
		return nil, errors.New("wasmrewrite: not a WebAssembly 1 binary module (bad magic or version)")
	}
	r := &reader{b: wasm, pos: len(wasmHeader)}
	m := &module{}
	for !r.eof() {
		id, err := r.byte()
		if err != nil {
			return nil, err
		}
		size, err := r.u32()
		if err != nil {
			return nil, fmt.Errorf("wasmrewrite: section %d: %w", id, err)
		}
		content, err := r.bytes(int(size))
		if err != nil {
			return nil, fmt.Errorf("wasmrewrite: section %d: %w", id, err)
		}
		if id > secTag {
			return nil, fmt.Errorf("wasmrewrite: unknown section id %d", id)
		}
		m.sections = append(m.sections, section{id: id, content: content})
		if err := m.index(id, content); err != nil {
			return nil, fmt.Errorf("wasmrewrite: section %d: %w", id, err)
		}
	}
	return m, nil
}

// index reads what the rewrite needs to know before it changes anything.
func (m *module) index(id byte, content []byte) error {
	r := &reader{b: content}
	switch id {
	case secType:
		n, err := r.u32()
		if err != nil {
			return err
		}
		for i := uint32(0); i < n; i++ {
			form, err := r.byte()
			if err != nil {
				return err
			}
			if form != 0x60 {
				return fmt.Errorf("type %d: form 0x%02x is not a function type", i, form)
			}
			var t funcType
			if t.params, err = valTypes(r); err != nil {
				return err
			}
			if t.results, err = valTypes(r); err != nil {
				return err
			}
			m.types = append(m.types, t)
		}
	case secImport:
		n, err := r.u32()
		if err != nil {
			return err
		}
		for i := uint32(0); i < n; i++ {
			var imp Import
			if imp.Module, err = r.name(); err != nil {
				return err
			}
			if imp.Name, err = r.name(); err != nil {
				return err
			}
			kind, err := r.byte()
			if err != nil {
				return err
			}
			if kind == 0x00 {
				t, err := r.u32()
				if err != nil {
					return err
				}
				m.funcImports = append(m.funcImports, funcImport{imp: imp, typeIdx: t})
				continue
			}
			if kind == 0x02 {
				m.hasMemory = true
			}
			if err := skipImportDesc(r, kind); err != nil {
				return fmt.Errorf("import %s: %w", imp, err)
			}
		}
	case secFunction:
		n, err := r.u32()
		if err != nil {
			return err
		}
		m.nDefined = n
	case secMemory:
		n, err := r.u32()
		if err != nil {
			return err
		}
		m.hasMemory = m.hasMemory || n > 0
	}
	return nil
}

func valTypes(r *reader) ([]byte, error) {
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	b, err := r.bytes(int(n))
	if err != nil {
		return nil, err
	}
	e := &exprRewriter{r: &reader{b: b}}
	for !e.r.eof() {
		if err := e.valType(); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// skipImportDesc skips a table (0x01), memory (0x02), global (0x03) or tag
// (0x04) import's type.
func skipImportDesc(r *reader, kind byte) error {
	e := &exprRewriter{r: r}
	switch kind {
	case 0x01:
		if err := e.valType(); err != nil {
			return err
		}
		return skipLimits(r)
	case 0x02:
		return skipLimits(r)
	case 0x03:
		if err := e.valType(); err != nil {
			return err
		}
		_, err := r.byte()
		return err
	case 0x04:
		if _, err := r.byte(); err != nil {
			return err
		}
		_, err := r.u32()
		return err
	}
	return fmt.Errorf("unknown import kind 0x%02x", kind)
}

// skipLimits skips limits: flags (bit 0: a maximum follows; bit 1: shared;
// bit 2: 64-bit), minimum, maximum.
func skipLimits(r *reader) error {
	flags, err := r.byte()
	if err != nil {
		return err
	}
	if flags > 0x07 {
		return fmt.Errorf("unknown limits flags 0x%02x", flags)
	}
	if _, err := r.uleb(64); err != nil {
		return err
	}
	if flags&1 != 0 {
		_, err = r.uleb(64)
	}
	return err
}

func (m *module) replace(imps []Import, fn Func) ([]byte, Result, error) {
	want := map[Import]bool{}
	for _, i := range imps {
		want[i] = true
	}
	// removed[k] is true for function import k that goes.
	var res Result
	removed := make([]bool, len(m.funcImports))
	for k, fi := range m.funcImports {
		if !want[fi.imp] {
			continue
		}
		if int(fi.typeIdx) >= len(m.types) {
			return nil, Result{}, fmt.Errorf("wasmrewrite: import %s has type %d, the module has %d", fi.imp, fi.typeIdx, len(m.types))
		}
		t := m.types[fi.typeIdx]
		if !bytes.Equal(t.params, fn.Params) || !bytes.Equal(t.results, fn.Results) {
			return nil, Result{}, fmt.Errorf("wasmrewrite: import %s has type %x -> %x, the replacement %x -> %x",
				fi.imp, t.params, t.results, fn.Params, fn.Results)
		}
		removed[k] = true
		res.Replaced = append(res.Replaced, fi.imp)
	}
	if len(res.Replaced) == 0 {
		return nil, res, nil
	}
	if !m.hasMemory {
		return nil, Result{}, errors.New("wasmrewrite: the module has no memory for the replacement to use")
	}
	typeIdx := m.funcImports[indexOf(removed)].typeIdx
	nRemoved := uint32(len(res.Replaced))
	nImports := uint32(len(m.funcImports))
	res.Function = nImports - nRemoved + m.nDefined
	// below[k] = number of removed imports before import k.
	below := make([]uint32, len(m.funcImports)+1)
	for k := range m.funcImports {
		below[k+1] = below[k]
		if removed[k] {
			below[k+1]++
		}
	}
	remap := func(i uint32) uint32 {
		switch {
		case i < nImports && removed[i]:
			return res.Function
		case i < nImports:
			return i - below[i]
		default:
			return i - nRemoved
		}
	}

	out := append([]byte(nil), wasmHeader...)
	sawCode := false
	for _, s := range m.sections {
		content, n, err := m.rewriteSection(s, removed, remap, typeIdx, fn, res.Function)
		if err != nil {
			return nil, Result{}, fmt.Errorf("wasmrewrite: section %d: %w", s.id, err)
		}
		res.Remapped += n
		sawCode = sawCode || s.id == secCode
		out = append(out, s.id)
		out = appendULEB(out, uint64(len(content)), 0)
		out = append(out, content...)
	}
	if !sawCode || m.nDefined == 0 {
		return nil, Result{}, errors.New("wasmrewrite: the module defines no functions (no code section to add one to)")
	}
	return out, res, nil
}

func indexOf(b []bool) int {
	for i, v := range b {
		if v {
			return i
		}
	}
	return -1
}

// rewriteSection returns the section's new content and how many function
// indices it rewrote.
func (m *module) rewriteSection(s section, removed []bool, remap func(uint32) uint32, typeIdx uint32, fn Func, newFunc uint32) ([]byte, int, error) {
	e := &exprRewriter{r: &reader{b: s.content}, remap: remap}
	var err error
	switch s.id {
	case secType, secMemory, secData, secDataCount, secTag:
		return s.content, 0, nil
	case secCustom:
		name, nerr := e.r.name()
		if nerr != nil {
			return nil, 0, nerr
		}
		switch {
		case name == "name":
			return m.rewriteNames(e.r.b[:e.r.pos], e.r.b[e.r.pos:], remap, newFunc, fn.Name)
		case name == "linking" || len(name) > 6 && name[:6] == "reloc.":
			return nil, 0, fmt.Errorf("custom section %q: an object file, not a linked module", name)
		}
		return s.content, 0, nil
	case secImport:
		return rewriteImports(s.content, removed)
	case secFunction:
		n, _ := e.r.u32()
		out := appendULEB(nil, uint64(n)+1, 0)
		out = append(out, e.r.b[e.r.pos:]...)
		return appendULEB(out, uint64(typeIdx), 0), 0, nil
	case secTable:
		err = checkTables(e.r)
		if err == nil {
			return s.content, 0, nil
		}
	case secGlobal:
		err = e.globals()
	case secExport:
		err = e.exports()
	case secStart:
		err = e.funcIndex()
	case secElement:
		err = e.elements()
	case secCode:
		return rewriteCode(s.content, remap, fn)
	default:
		err = fmt.Errorf("unknown section")
	}
	if err != nil {
		return nil, 0, err
	}
	if !e.r.eof() {
		return nil, 0, fmt.Errorf("%d bytes left over", len(e.r.b)-e.r.pos)
	}
	e.flush()
	return e.out, e.changed, nil
}

func rewriteImports(content []byte, removed []bool) ([]byte, int, error) {
	r := &reader{b: content}
	n, err := r.u32()
	if err != nil {
		return nil, 0, err
	}
	nRemoved := 0
	for _, v := range removed {
		if v {
			nRemoved++
		}
	}
	out := appendULEB(nil, uint64(n)-uint64(nRemoved), 0)
	fi := 0
	for i := uint32(0); i < n; i++ {
		start := r.pos
		if _, err := r.name(); err != nil {
			return nil, 0, err
		}
		if _, err := r.name(); err != nil {
			return nil, 0, err
		}
		kind, err := r.byte()
		if err != nil {
			return nil, 0, err
		}
		if kind == 0x00 {
			if _, err := r.u32(); err != nil {
				return nil, 0, err
			}
			fi++
			if removed[fi-1] {
				continue
			}
		} else if err := skipImportDesc(r, kind); err != nil {
			return nil, 0, err
		}
		out = append(out, content[start:r.pos]...)
	}
	return out, 0, nil
}

// checkTables refuses tables with an initializer expression (0x40 0x00
// form), which could hold ref.func.
func checkTables(r *reader) error {
	e := &exprRewriter{r: r}
	return r.vec(func(i uint32) error {
		if !r.eof() && r.b[r.pos] == 0x40 {
			return fmt.Errorf("table %d has an initializer expression, which this rewriter does not handle", i)
		}
		if err := e.valType(); err != nil {
			return err
		}
		return skipLimits(r)
	})
}

func (e *exprRewriter) globals() error {
	return e.r.vec(func(i uint32) error {
		if err := e.valType(); err != nil {
			return err
		}
		if _, err := e.r.byte(); err != nil { // mutability
			return err
		}
		if err := e.expr(); err != nil {
			return fmt.Errorf("global %d: %w", i, err)
		}
		return nil
	})
}

func (e *exprRewriter) exports() error {
	return e.r.vec(func(uint32) error {
		if _, err := e.r.name(); err != nil {
			return err
		}
		kind, err := e.r.byte()
		if err != nil {
			return err
		}
		if kind == 0x00 {
			return e.funcIndex()
		}
		_, err = e.r.u32()
		return err
	})
}

// elements rewrites the element segments' function indices, in the eight
// encodings of WebAssembly 2.0 (flags 0-7).
func (e *exprRewriter) elements() error {
	n, err := e.r.u32()
	if err != nil {
		return err
	}
	for i := uint32(0); i < n; i++ {
		flags, err := e.r.u32()
		if err != nil {
			return err
		}
		if flags > 7 {
			return fmt.Errorf("element segment %d: unknown flags %d", i, flags)
		}
		if flags&0x02 != 0 && flags&0x01 == 0 { // 2, 6: explicit table index
			if _, err := e.r.u32(); err != nil {
				return err
			}
		}
		if flags&0x01 == 0 { // 0, 2, 4, 6: active, offset expression
			if err := e.expr(); err != nil {
				return fmt.Errorf("element segment %d offset: %w", i, err)
			}
		}
		if flags&0x03 != 0 { // 1, 2, 3, 5, 6, 7: element kind or reference type
			if flags&0x04 == 0 {
				if k, err := e.r.byte(); err != nil {
					return err
				} else if k != 0x00 {
					return fmt.Errorf("element segment %d: unknown element kind 0x%02x", i, k)
				}
			} else if err := e.valType(); err != nil {
				return err
			}
		}
		count, err := e.r.u32()
		if err != nil {
			return err
		}
		for j := uint32(0); j < count; j++ {
			if flags&0x04 == 0 {
				err = e.funcIndex()
			} else {
				err = e.expr()
			}
			if err != nil {
				return fmt.Errorf("element segment %d item %d: %w", i, j, err)
			}
		}
	}
	return nil
}

// rewriteCode rewrites every function body and appends fn's.
func rewriteCode(content []byte, remap func(uint32) uint32, fn Func) ([]byte, int, error) {
	r := &reader{b: content}
	n, err := r.u32()
	if err != nil {
		return nil, 0, err
	}
	out := appendULEB(nil, uint64(n)+1, 0)
	changed := 0
	for i := uint32(0); i < n; i++ {
		size, err := r.u32()
		if err != nil {
			return nil, 0, err
		}
		body, err := r.bytes(int(size))
		if err != nil {
			return nil, 0, err
		}
		e := &exprRewriter{r: &reader{b: body}, remap: remap}
		if err := e.locals(); err != nil {
			return nil, 0, fmt.Errorf("function body %d: %w", i, err)
		}
		if err := e.expr(); err != nil {
			return nil, 0, fmt.Errorf("function body %d: %w", i, err)
		}
		if !e.r.eof() {
			return nil, 0, fmt.Errorf("function body %d: %d bytes after its end", i, len(body)-e.r.pos)
		}
		e.flush()
		changed += e.changed
		out = appendULEB(out, uint64(len(e.out)), 0)
		out = append(out, e.out...)
	}
	if !r.eof() {
		return nil, 0, fmt.Errorf("%d bytes after the last body", len(content)-r.pos)
	}
	out = appendULEB(out, uint64(len(fn.Body)), 0)
	return append(out, fn.Body...), changed, nil
}

// locals skips a body's local declarations.
func (e *exprRewriter) locals() error {
	return e.r.vec(func(uint32) error {
		if _, err := e.r.u32(); err != nil { // how many
			return err
		}
		return e.valType()
	})
}

// rewriteNames renumbers the name section: function names (subsection 1),
// local names (2) and label names (3) are keyed by function index; the
// removed imports' entries move to the new function (the first one's kept),
// and fn's name is added if no entry covered it. Other subsections are
// copied.
func (m *module) rewriteNames(head, rest []byte, remap func(uint32) uint32, newFunc uint32, name string) ([]byte, int, error) {
	out := append([]byte(nil), head...)
	r := &reader{b: rest}
	changed := 0
	for !r.eof() {
		id, err := r.byte()
		if err != nil {
			return nil, 0, err
		}
		size, err := r.u32()
		if err != nil {
			return nil, 0, err
		}
		sub, err := r.bytes(int(size))
		if err != nil {
			return nil, 0, err
		}
		if id >= 1 && id <= 3 {
			var n int
			sub, n, err = renumberNameMap(sub, id != 1, remap, newFunc, name)
			if err != nil {
				return nil, 0, fmt.Errorf("name subsection %d: %w", id, err)
			}
			changed += n
		}
		out = append(out, id)
		out = appendULEB(out, uint64(len(sub)), 0)
		out = append(out, sub...)
	}
	return out, changed, nil
}

type nameEntry struct {
	idx  uint32
	body []byte // the rest of the entry: a name, or an inner name map
}

// renumberNameMap renumbers a name map (indirect: an indirect name map)
// keyed by function index, keeping it sorted and free of duplicates.
func renumberNameMap(sub []byte, indirect bool, remap func(uint32) uint32, newFunc uint32, name string) ([]byte, int, error) {
	r := &reader{b: sub}
	n, err := r.u32()
	if err != nil {
		return nil, 0, err
	}
	entries := make([]nameEntry, 0, n+1)
	seen := map[uint32]bool{}
	changed := 0
	for i := uint32(0); i < n; i++ {
		idx, err := r.u32()
		if err != nil {
			return nil, 0, err
		}
		start := r.pos
		if indirect {
			m, err := r.u32()
			if err != nil {
				return nil, 0, err
			}
			for j := uint32(0); j < m; j++ {
				if _, err := r.u32(); err != nil {
					return nil, 0, err
				}
				if _, err := r.name(); err != nil {
					return nil, 0, err
				}
			}
		} else if _, err := r.name(); err != nil {
			return nil, 0, err
		}
		nu := remap(idx)
		if nu != idx {
			changed++
		}
		if seen[nu] {
			continue
		}
		seen[nu] = true
		entries = append(entries, nameEntry{idx: nu, body: sub[start:r.pos]})
	}
	if !r.eof() {
		return nil, 0, fmt.Errorf("%d bytes left over", len(sub)-r.pos)
	}
	if !indirect && !seen[newFunc] && name != "" {
		entries = append(entries, nameEntry{idx: newFunc, body: appendName(nil, name)})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].idx < entries[j].idx })
	out := appendULEB(nil, uint64(len(entries)), 0)
	for _, en := range entries {
		out = appendULEB(out, uint64(en.idx), 0)
		out = append(out, en.body...)
	}
	return out, changed, nil
}

func appendName(out []byte, s string) []byte {
	out = appendULEB(out, uint64(len(s)), 0)
	return append(out, s...)
}
