package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/reqcount/reqcount/filter/flush"
	"github.com/reqcount/reqcount/filter/key"
	"github.com/reqcount/reqcount/filter/table"
	"github.com/reqcount/reqcount/messages"
)

// hotPath is the filter's per-request work for one key source, natively:
// what OnHttpRequestHeaders does in filter/request.go once the header values
// are in hand (parse into a reused buffer, then count), for a key already in
// the table. The header reads themselves are host calls, measured in the
// wasm rows.
type hotPath struct {
	name   string
	what   string // what one request does
	count  func() // one request
	table  *table.Table
	nsOp   float64
	allocs float64 // testing.AllocsPerRun: exact, not rounded down
}

func newHotPaths() []*hotPath {
	parser := key.NewParser("default", "cluster.local")
	var buf [key.MaxLen]byte
	static, _ := parser.AppendHeaders(nil, "web", "shop")
	mk := func(name, what string, fn func(t *table.Table)) *hotPath {
		hp := &hotPath{name: name, what: what, table: table.New(10000)}
		hp.count = func() { fn(hp.table) }
		return hp
	}
	add := func(t *table.Table, k []byte, r key.Reason) {
		if r != key.OK || !t.Add(k, 1) {
			panic(fmt.Sprintf("hot path did not count: reason %v", r))
		}
	}
	authority := benchRequest.Headers[0][1]
	memo := table.NewMemo(4096)
	return []*hotPath{
		// What the filter does: the memo maps an authority seen before to its entry.
		mk("authority", "memo lookup (authority seen before) + table.AddRef, as the filter does", func(t *table.Table) {
			if ref, ok := memo.Get(authority); ok && t.AddRef(ref, 1) {
				return
			}
			k, r := parser.AppendAuthority(buf[:0], authority)
			if r != key.OK {
				panic(fmt.Sprintf("hot path did not count: reason %v", r))
			}
			ref, ok := t.AddKey(k, 1)
			if !ok {
				panic("hot path did not count: table full")
			}
			memo.Put(authority, ref)
		}),
		// An authority not in the memo: parsed, then counted by key.
		mk("authority parsed", "key parsing + table.Add for a key already counted (an authority not in the memo)", func(t *table.Table) {
			k, r := parser.AppendAuthority(buf[:0], authority)
			add(t, k, r)
		}),
		mk("header", "key parsing + table.Add for a key already counted", func(t *table.Table) {
			k, r := parser.AppendHeaders(buf[:0], "web", "shop")
			add(t, k, r)
		}),
		mk("static", "table.Add of the configured key", func(t *table.Table) { add(t, static, key.OK) }),
	}
}

// runHotPaths measures each hot path after its key is in the table.
func runHotPaths() ([]*hotPath, error) {
	hps := newHotPaths()
	for _, hp := range hps {
		hp.count() // the first request of a key adds it: that one allocates
		hp.allocs = testing.AllocsPerRun(10000, hp.count)
		r := testing.Benchmark(func(b *testing.B) {
			for b.Loop() {
				hp.count()
			}
		})
		if r.N == 0 {
			return nil, fmt.Errorf("hot path %s: benchmark did not run", hp.name)
		}
		hp.nsOp = float64(r.T.Nanoseconds()) / float64(r.N)
		if hp.table.Len() != 1 {
			return nil, fmt.Errorf("hot path %s: %d keys in the table, want 1", hp.name, hp.table.Len())
		}
	}
	return hps, nil
}

// flushBench is the flush path natively over keys distinct keys: encoding
// only, and a whole flush.Flusher.Tick with a dispatch that does nothing.
type flushBench struct {
	encodeSingle, encodeBatch []time.Duration
	tickSingle, tickBatch     []time.Duration
	bytesSingle, bytesBatch   int
}

// flushKeys are realistic names: a service label and one of 50 namespaces.
func flushKeys(n int) (svcs, nss []string) {
	for i := 0; i < n; i++ {
		svcs = append(svcs, fmt.Sprintf("service-%05d", i))
		nss = append(nss, fmt.Sprintf("team-%02d", i%50))
	}
	return svcs, nss
}

func runFlushBench(keys, runs int) (*flushBench, error) {
	fb := &flushBench{}
	svcs, nss := flushKeys(keys)

	// Encoding, single mode: one message per key into a reused buffer, as
	// Flusher.Flush does. bytesSingle is the total over all messages.
	var buf []byte
	for run := 0; run <= runs; run++ { // run 0 warms up and sizes buf
		total := 0
		start := time.Now()
		for i := range svcs {
			buf = messages.AppendFields(buf[:0], i+1, svcs[i], nss[i])
			total += len(buf)
		}
		d := time.Since(start)
		if run > 0 {
			fb.encodeSingle = append(fb.encodeSingle, d)
		}
		fb.bytesSingle = total
	}

	// Encoding, batch mode: one array of every key.
	msgs := make([]messages.RequestCount, keys)
	for i := range msgs {
		msgs[i] = messages.RequestCount{Count: i + 1, Svc: svcs[i], Namespace: nss[i]}
	}
	for run := 0; run <= runs; run++ {
		start := time.Now()
		buf = messages.AppendBatchJSON(buf[:0], msgs)
		d := time.Since(start)
		if run > 0 {
			fb.encodeBatch = append(fb.encodeBatch, d)
		}
		fb.bytesBatch = len(buf)
	}
	if got, err := messages.Decode(buf); err != nil || len(got) != keys {
		return nil, fmt.Errorf("batch encode: %d messages decoded, %v", len(got), err)
	}

	// Whole ticks: a table of keys keys, each with a pending count, flushed
	// through a Flusher whose dispatch accepts and does nothing; the answers
	// (all delivered) are given after the timed Tick, and the counts are
	// re-added, so every run flushes the same steady-state table.
	for _, batch := range []bool{false, true} {
		t := table.New(keys)
		var ids []uint64
		sent := 0
		f := flush.New(t, flush.Options{Batch: batch}, func(body []byte, id uint64) error {
			ids = append(ids, id)
			sent += len(body)
			return nil
		})
		ks := make([][]byte, keys)
		for i := range ks {
			ks[i] = []byte(svcs[i] + "." + nss[i])
		}
		for run := 0; run <= runs; run++ {
			for _, k := range ks {
				if !t.Add(k, 1) {
					return nil, fmt.Errorf("flush tick: table full at %d keys", t.Len())
				}
			}
			ids, sent = ids[:0], 0
			start := time.Now()
			f.Tick()
			d := time.Since(start)
			wantCalls := keys
			if batch {
				wantCalls = 1
			}
			if len(ids) != wantCalls || f.Stats().CountsSent != uint64(keys*(run+1)) {
				return nil, fmt.Errorf("flush tick (batch %v): %d calls, %d counts sent in total; want %d calls, %d counts",
					batch, len(ids), f.Stats().CountsSent, wantCalls, keys*(run+1))
			}
			for _, id := range ids {
				f.Done(id, flush.Delivered, 200)
			}
			if run == 0 {
				continue
			}
			if batch {
				fb.tickBatch = append(fb.tickBatch, d)
			} else {
				fb.tickSingle = append(fb.tickSingle, d)
			}
		}
	}
	return fb, nil
}
