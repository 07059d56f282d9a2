// Command reqcount-vmmem measures what one worker VM of the filter costs over
// millions of requests: linear memory, GC cycles and heap (from the filter's
// reqcount.vm.* gauges, package bench/vmstats), and ns per request against the
// floor plugins, for the variants issue 9 sets targets on. It is the quick,
// focused companion of reqcount-bench (which `make bench` runs).
//
// Usage, from the repository root:
//
//	go run ./bench/cmd/reqcount-vmmem [-n 5000000] [-warmup 200000] [-segment 250000]
//
// It builds the modules with filter/_sdkabi/build.sh into -build-dir, drives
// every variant round-robin in segments of -segment requests (one host and one
// worker each; a tick after every segment, as a flush timer would), and prints
// one markdown table.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/reqcount/reqcount/bench/vmstats"
	"github.com/reqcount/reqcount/e2e/wasmhost"
)

var baseHeaders = [][2]string{
	{":authority", "web.shop.svc.cluster.local:8080"},
	{":path", "/api/v1/items?page=2&size=20"},
	{":method", "GET"},
	{":scheme", "http"},
	{"user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"},
	{"accept", "application/json"},
	{"x-service", "web"},
	{"x-namespace", "shop"},
	{"x-request-id", "3f2b9c1e-8d4a-4b7e-9a61-2c5d7e8f9a0b"},
}

type spec struct {
	name, module, config string
	hosts                int
}

var specs = []spec{
	{name: "noop", module: "noop"},
	{name: "authority-floor", module: "authorityfloor"},
	{name: "filter authority", module: "filter", config: `{"cluster":"operator","key_source":"authority"}`},
	{name: "filter authority, 8 hosts", module: "filter", hosts: 8, config: `{"cluster":"operator","key_source":"authority"}`},
	{name: "filter header", module: "filter", config: `{"cluster":"operator","key_source":"header"}`},
	{name: "filter static", module: "filter", config: `{"cluster":"operator","key_source":"static","service":"web","namespace":"shop"}`},
}

type variant struct {
	spec
	h       *wasmhost.Host
	reqs    []wasmhost.Request
	done    int
	spent   time.Duration
	timed   int
	start   vmstats.Stats
	at      map[int]vmstats.Stats
	marks   []int
	atStart uint32
}

func main() {
	n := flag.Int("n", 5000000, "requests per variant")
	warmup := flag.Int("warmup", 200000, "requests per variant before timing and the first checkpoint")
	segment := flag.Int("segment", 250000, "requests per variant per turn")
	mark := flag.Int("mark", 1000000, "first checkpoint (the second is -n)")
	buildDir := flag.String("build-dir", "build/vmmem", "where the modules are built")
	flag.Parse()
	if err := run(*n, *warmup, *segment, *mark, *buildDir); err != nil {
		fmt.Fprintln(os.Stderr, "reqcount-vmmem:", err)
		os.Exit(1)
	}
}

func run(n, warmup, segment, mark int, buildDir string) error {
	ctx := context.Background()
	mods := map[string]*wasmhost.Module{}
	for name, args := range map[string][]string{
		"filter":         {"-tags", "proxywasm_lean", "./filter"},
		"noop":           {"./bench/noop"},
		"authorityfloor": {"./bench/authorityfloor"},
	} {
		out := filepath.Join(buildDir, name+".wasm")
		cmd := exec.Command("filter/_sdkabi/build.sh", append([]string{"-o", out}, args...)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", name, err, b)
		}
		wasm, err := os.ReadFile(out)
		if err != nil {
			return err
		}
		if mods[name], err = wasmhost.Compile(ctx, wasm); err != nil {
			return err
		}
	}
	var vs []*variant
	for _, s := range specs {
		h, err := wasmhost.New(ctx, mods[s.module], wasmhost.Config{
			PluginConfig: []byte(s.config),
			Clusters:     map[string]string{"operator": ""},
			ManualTicks:  true,
			Dispatch: func(_ wasmhost.Callout, reply func(wasmhost.Response)) {
				reply(wasmhost.Response{Status: 200, Body: []byte(`{"message":"Request received successfully!"}`)})
			},
		})
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		defer h.Close(ctx)
		v := &variant{spec: s, h: h, at: map[int]vmstats.Stats{}, marks: []int{mark, n}}
		v.atStart = h.Worker(0).MemorySize()
		v.reqs = []wasmhost.Request{{Headers: baseHeaders}}
		if s.hosts > 0 {
			v.reqs = nil
			for i := 0; i < s.hosts; i++ {
				hs := append([][2]string(nil), baseHeaders...)
				hs[0][1] = fmt.Sprintf("svc-%d.shop.svc.cluster.local:8080", i)
				v.reqs = append(v.reqs, wasmhost.Request{Headers: hs})
			}
		}
		vs = append(vs, v)
	}
	for _, v := range vs {
		if err := v.h.Worker(0).RequestsCycle(ctx, warmup, v.reqs); err != nil {
			return err
		}
		v.done = warmup
		var err error
		if v.start, err = vmstats.Read(ctx, v.h); err != nil {
			return err
		}
	}
	for {
		moved := false
		for _, v := range vs {
			if v.done >= n {
				continue
			}
			moved = true
			step := min(segment, n-v.done)
			for _, m := range v.marks {
				if v.done < m && v.done+step > m {
					step = m - v.done
				}
			}
			t0 := time.Now()
			if err := v.h.Worker(0).RequestsCycle(ctx, step, v.reqs); err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			v.spent += time.Since(t0)
			v.timed += step
			v.done += step
			st, err := vmstats.Read(ctx, v.h)
			if err != nil {
				return err
			}
			for _, m := range v.marks {
				if v.done == m {
					v.at[m] = st
				}
			}
		}
		if !moved {
			break
		}
	}
	ns := map[string]float64{}
	for _, v := range vs {
		ns[v.name] = float64(v.spent) / float64(v.timed)
		if err := v.h.Worker(0).Crashed(); err != nil {
			return err
		}
	}
	fmt.Printf("%d requests per variant (%d warm-up), segments of %d, ticks between segments\n\n", n, warmup, segment)
	fmt.Printf("| variant | ns/req | ÷ floor | MiB at start | MiB at %s | MiB at %s | GC cycles per M (warm, %s→%s) | heap objects MiB | runtime-mapped MiB |\n",
		count(mark), count(n), count(warmup), count(n))
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, v := range vs {
		floor := "authority-floor"
		if v.name == "filter static" || v.name == "noop" {
			floor = "noop"
		}
		end, first := v.at[n], v.at[mark]
		gc, heap, rt := "—", "—", "—"
		if end.Instances > 0 {
			gc = fmt.Sprintf("%.2f", float64(end.GCCycles-v.start.GCCycles)/(float64(n-warmup)/1e6))
			heap = mib(uint64(end.HeapBytes))
			rt = mib(uint64(end.MemoryBytes))
		}
		fmt.Printf("| %s | %.0f | %.3f | %s | %s | %s | %s | %s | %s |\n", v.name, ns[v.name], ns[v.name]/ns[floor],
			mib(uint64(v.atStart)), mib(first.LinearMemory), mib(end.LinearMemory), gc, heap, rt)
	}
	return nil
}

func mib(b uint64) string { return fmt.Sprintf("%.2f", float64(b)/(1<<20)) }

func count(n int) string {
	if n%1000000 == 0 {
		return fmt.Sprintf("%dM", n/1000000)
	}
	return fmt.Sprintf("%dk", n/1000)
}
