// Command reqcount-bench measures what the request-count filter costs: per
// request against two floor plugins on the same SDK and toolchain, its linear
// memory over millions of requests, its native hot path, and its flush.
// `make bench` runs it from the repository root; bench/README.md says what
// each number means.
//
// Usage:
//
//	go run ./bench/cmd/reqcount-bench [-rounds 7] [-n 200000] [-quick] [-out bench/RESULTS.md]
//	go run ./bench/cmd/reqcount-bench -only perkey -out '' [-key-long-ticks 240]
//
// It builds the modules into -build-dir with filter/_sdkabi/build.sh, runs
// everything in one process on the e2e wasm host (e2e/wasmhost, wazero),
// prints one markdown table and the targets to stdout, per-phase timings to
// stderr, and writes -out (keeping its hand-written Notes section).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// options are the command's flags.
type options struct {
	rounds int
	n      int
	warmup int
	mem1   int
	mem2   int
	// longTicks and longRequests make the long run: that many ticks, each after
	// longRequests requests, after the memory checkpoints.
	longTicks    int
	longRequests int
	keys         int
	flushRuns    int
	wakeups      int
	// keyLongTicks is the length of the per-key long run, in ticks.
	keyLongTicks int
	buildDir     string
	out          string
	quick        bool
	profile      string
	// only names the one phase to run (onlyPerKey), "" for all.
	only string
}

// onlyPerKey is -only's one value: the per-key memory phase alone.
const onlyPerKey = "perkey"

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("reqcount-bench", flag.ContinueOnError)
	fs.IntVar(&o.rounds, "rounds", 7, "timed rounds; each drives -n requests through every variant, round-robin")
	fs.IntVar(&o.n, "n", 200000, "requests per variant per round")
	fs.IntVar(&o.warmup, "warmup", 50000, "untimed requests per variant before the rounds")
	fs.IntVar(&o.mem1, "mem1", 1000000, "first linear-memory checkpoint, in requests per variant")
	fs.IntVar(&o.mem2, "mem2", 5000000, "second linear-memory checkpoint, in requests per variant")
	fs.IntVar(&o.longTicks, "long-ticks", 14400, "ticks of the long run after the memory checkpoints (14400: two hours of 500ms ticks), each after -long-requests requests")
	fs.IntVar(&o.longRequests, "long-requests", 10, "requests before each tick of the long run")
	fs.IntVar(&o.keys, "keys", 10000, "keys in the flush measurements")
	fs.IntVar(&o.flushRuns, "flush-runs", 9, "timed runs of each flush measurement (the median is reported)")
	fs.IntVar(&o.wakeups, "wakeups", 1000, "timed wake-ups in the wake-up latency measurement")
	fs.IntVar(&o.keyLongTicks, "key-long-ticks", 7200, "ticks of the per-key long run (7200: an hour of 500ms ticks), 10 000 keys turning over")
	fs.StringVar(&o.buildDir, "build-dir", "build/bench", "where the modules are built (relative to the repository root)")
	fs.StringVar(&o.out, "out", "bench/RESULTS.md", "results file to write (relative to the repository root); empty: none")
	fs.BoolVar(&o.quick, "quick", false, "smoke mode: few requests, short benchmarks, no results file unless -out is given")
	fs.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the wasm phases to this file")
	fs.StringVar(&o.only, "only", "", "run one phase only and print its rows and targets: \"perkey\" (the per-key memory phase: the filter's linear memory at 0, 1k and 10k active keys per role, then the key turnover and its long run, -key-long-ticks long); needs -out '' (a partial run writes no results file)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]func(){
			"rounds":         func() { o.rounds = 2 },
			"n":              func() { o.n = 2000 },
			"warmup":         func() { o.warmup = 500 },
			"mem1":           func() { o.mem1 = 5000 },
			"mem2":           func() { o.mem2 = 20000 },
			"long-ticks":     func() { o.longTicks = 200 },
			"keys":           func() { o.keys = 1000 },
			"flush-runs":     func() { o.flushRuns = 2 },
			"wakeups":        func() { o.wakeups = 50 },
			"key-long-ticks": func() { o.keyLongTicks = 240 },
			"out":            func() { o.out = "" },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	switch {
	case o.rounds < 1 || o.n < 1 || o.warmup < 0 || o.keys < 1 || o.flushRuns < 1 || o.wakeups < 1:
		return o, fmt.Errorf("-rounds, -n, -keys, -flush-runs and -wakeups must be positive, -warmup not negative")
	case o.mem1 < 1 || o.mem2 <= o.mem1:
		return o, fmt.Errorf("need 0 < -mem1 < -mem2")
	case o.longTicks < 1 || o.longRequests < 0:
		return o, fmt.Errorf("-long-ticks must be positive, -long-requests not negative")
	case o.only != "" && o.only != onlyPerKey:
		return o, fmt.Errorf("-only %q: the one phase it runs alone is %q", o.only, onlyPerKey)
	case o.only != "" && o.out != "":
		return o, fmt.Errorf("-only writes no results file: pass -out ''")
	}
	return o, nil
}

// phaseTimer prints a phase's wall time to stderr.
type phaseTimer struct {
	name  string
	start time.Time
}

var phases []phaseRecord

type phaseRecord struct {
	name string
	d    time.Duration
}

func startPhase(name string) *phaseTimer {
	fmt.Fprintf(os.Stderr, "phase %s ...\n", name)
	return &phaseTimer{name: name, start: time.Now()}
}

func (p *phaseTimer) end() {
	d := time.Since(p.start)
	phases = append(phases, phaseRecord{p.name, d})
	fmt.Fprintf(os.Stderr, "phase %s: %v\n", p.name, d.Round(time.Millisecond))
}

func main() {
	if serveRole() {
		return
	}
	o, err := parseFlags(os.Args[1:])
	if err == flag.ErrHelp {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "reqcount-bench:", err)
		os.Exit(2)
	}
	if err := run(context.Background(), o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "reqcount-bench:", err)
		os.Exit(1)
	}
}

// run measures everything o asks for, prints the table and the targets to
// stdout, and writes o.out if set.
func run(ctx context.Context, o options, stdout io.Writer) error {
	began := time.Now()
	root, err := repoRoot()
	if err != nil {
		return err
	}
	buildDir := o.buildDir
	if !filepath.IsAbs(buildDir) {
		buildDir = filepath.Join(root, buildDir)
	}
	res := &results{opts: o, started: began.UTC(),
		sdkVersion: requiredVersion(root, "github.com/tetratelabs/proxy-wasm-go-sdk")}

	if o.only == onlyPerKey {
		return runOnlyPerKey(ctx, o, root, buildDir, stdout)
	}
	phase := startPhase("build")
	wasm, err := buildModules(root, buildDir, moduleSpecs)
	if err != nil {
		return err
	}
	phase.end()
	for _, m := range moduleSpecs {
		gz, err := gzipSize(wasm[m.name])
		if err != nil {
			return err
		}
		res.sizes = append(res.sizes, moduleSize{name: m.name, raw: len(wasm[m.name]), gzip: gz})
	}

	phase = startPhase("compile")
	mods := map[string]*wasmhost.Module{}
	for name, b := range wasm {
		m, err := wasmhost.Compile(ctx, b)
		if err != nil {
			return fmt.Errorf("compile %s: %w", name, err)
		}
		defer m.Close(ctx)
		mods[name] = m
	}
	phase.end()

	if o.profile != "" {
		f, err := os.Create(o.profile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if res.wasm, err = runVariants(ctx, o, mods); err != nil {
		return err
	}
	phase = startPhase(fmt.Sprintf("guest flush (%d keys)", o.keys))
	if res.guestFlush, err = runGuestFlush(ctx, o, mods["filter"]); err != nil {
		return err
	}
	phase.end()
	phase = startPhase(fmt.Sprintf("wake-ups (%d)", o.wakeups))
	if res.wakeups, err = runWakeups(ctx, o, mods["filter"]); err != nil {
		return err
	}
	phase.end()
	phase = startPhase(fmt.Sprintf("keda (%d wake-ups, POSTs, memory)", o.wakeups))
	if res.keda, err = runKEDA(ctx, o, mods["filter"]); err != nil {
		return err
	}
	phase.end()
	phase = startPhase("per-key memory")
	if res.perKey, err = runPerKey(ctx, o, mods["filter"]); err != nil {
		return err
	}
	phase.end()
	phase = startPhase("hold")
	if res.hold, err = runHold(ctx, o, mods["filter"]); err != nil {
		return err
	}
	phase.end()
	phase = startPhase("model")
	if res.model, err = runModel(ctx, mods["filter"]); err != nil {
		return err
	}
	phase.end()
	if o.profile != "" {
		pprof.StopCPUProfile()
	}

	phase = startPhase("native hot path")
	if o.quick {
		// testing.Benchmark's default is 1s per benchmark; a smoke run needs less.
		if err := setBenchtime("20ms"); err != nil {
			return err
		}
	}
	if res.hot, err = runHotPaths(); err != nil {
		return err
	}
	phase.end()

	phase = startPhase(fmt.Sprintf("native flush (%d keys)", o.keys))
	if res.flush, err = runFlushBench(o.keys, o.flushRuns); err != nil {
		return err
	}
	phase.end()

	res.wall = time.Since(began)
	fmt.Fprintf(os.Stderr, "total: %v\n", res.wall.Round(time.Millisecond))

	report := res.markdown()
	fmt.Fprint(stdout, report.table)
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, report.targets)
	if o.out != "" {
		out := o.out
		if !filepath.IsAbs(out) {
			out = filepath.Join(root, out)
		}
		if err := writeResults(out, res, report); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", out)
	}
	return nil
}
