package e2e_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/messages"
)

// TestReusedCopies counts thousands of distinct authorities, interleaved with
// repeats and several spellings of one key, on the compiled module, across
// ticks and call answers that arrive between requests (some late, some
// refused). The wasm glue rewinds its copy arena at every callback
// (filter/_sdkabi), so each request's :authority lands in the bytes the
// previous one used: any value the filter kept from an earlier callback
// without copying it (the last authority, a memo key, a header) would be
// overwritten and count a request into the wrong key. What the collector
// accepted, per key, must equal the test's own tally of what it sent, and the
// filter's uncounted tallies must match the authorities that are not keys.
func TestReusedCopies(t *testing.T) {
	const (
		keys     = 3000 // distinct (svc, namespace); 4 spellings each, past the memo's 4096
		requests = 40000
		chunk    = 997 // requests between ticks
	)
	rng := rand.New(rand.NewPCG(9, 9))
	spell := func(i int) (authority, key string) {
		svc, ns := fmt.Sprintf("svc-%d", i), fmt.Sprintf("ns-%d", i%37)
		key = svc + "." + ns
		switch rng.IntN(4) {
		case 0:
			return svc + "." + ns, key
		case 1:
			return svc + "." + ns + ".svc.cluster.local:8080", key
		case 2:
			return strings.ToUpper(svc + "." + ns + ".svc"), key
		default:
			return svc + "." + ns + ".svc.cluster.local.", key
		}
	}
	notKeys := []struct{ authority, reason string }{
		{"10.0.0.1:8080", "ip_literal"}, {"[::1]:80", "ip_literal"},
		{"a.b.c.d.e.f", "bad_shape"}, {"bad_name.ns", "bad_label"},
	}

	var mu sync.Mutex
	delivered := map[string]int{}
	var held []func() // answers not given yet
	calls := 0
	draining := false // the test is over: answer at once (the shutdown's last flush)
	h := startHost(t, wasmhost.Config{
		// One tick per interval (100ms): each tick sends every key; wake-ups on.
		PluginConfig: []byte(fmt.Sprintf(`{"cluster":"collector","max_keys":%d,"flush_interval":"100ms"}`, keys)),
		Clusters:     map[string]string{"collector": ""},
		ManualTicks:  true,
		Dispatch: func(c wasmhost.Callout, reply func(wasmhost.Response)) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			ms, err := messages.Decode(c.Body)
			switch {
			case err != nil:
				reply(wasmhost.Response{Status: 400})
			case draining:
				reply(wasmhost.Response{Status: 200})
			case calls%7 == 0: // refused: the counts go back and out again later
				held = append(held, func() { reply(wasmhost.NoHealthyUpstream()) })
			default:
				held = append(held, func() {
					mu.Lock()
					for _, m := range ms {
						delivered[m.Svc+"."+m.Namespace] += m.Count
					}
					mu.Unlock()
					reply(wasmhost.Response{Status: 200, Body: []byte(`{"message":"Request received successfully!"}`)})
				})
			}
		},
	})
	// answer gives half of the held answers (the oldest), or all of them: the
	// rest arrive while the next chunk of requests runs.
	answer := func(all bool) {
		mu.Lock()
		n := len(held)
		if !all {
			n /= 2
		}
		now := held[:n]
		held = append([]func(){}, held[n:]...)
		mu.Unlock()
		for _, f := range now {
			f()
		}
	}

	w := h.Worker(0)
	ctx := boundedCtx(t)
	sent := map[string]int{}
	uncounted := map[string]int{}
	var batch []wasmhost.Request
	// tally counts req as the test expects the filter to: key is its key, or
	// reason why it is not one.
	tally := func(key, reason string) {
		if key != "" {
			sent[key]++
		} else {
			uncounted[reason]++
		}
	}
	prev, prevKey, prevReason := wasmhost.Request{Headers: [][2]string{{":authority", "svc-0.ns-0"}}}, "svc-0.ns-0", ""
	tally(prevKey, prevReason)
	batch = append(batch, prev)
	for i := 1; i < requests; i++ {
		req, key, reason := prev, prevKey, prevReason // 3 in 10: the same authority again
		switch r := rng.IntN(10); {
		case r < 3:
		case r < 4:
			bad := notKeys[rng.IntN(len(notKeys))]
			req, key, reason = wasmhost.Request{Headers: [][2]string{{":authority", bad.authority}}}, "", bad.reason
		default:
			var a string
			a, key = spell(rng.IntN(keys))
			req, reason = wasmhost.Request{Headers: [][2]string{{":authority", a}}}, ""
		}
		tally(key, reason)
		batch = append(batch, req)
		prev, prevKey, prevReason = req, key, reason
		if len(batch) == chunk || i == requests-1 {
			if err := w.RequestsCycle(ctx, len(batch), batch); err != nil {
				t.Fatalf("requests: %v", err)
			}
			batch = batch[:0]
			if err := w.Tick(ctx); err != nil {
				t.Fatalf("tick: %v", err)
			}
			answer(false)
		}
	}
	// Drain: answer everything, tick again, until the collector has it all.
	want := 0
	for _, n := range sent {
		want += n
	}
	for round := 0; ; round++ {
		answer(true)
		syncWorker(w)
		mu.Lock()
		got := 0
		for _, n := range delivered {
			got += n
		}
		mu.Unlock()
		if got >= want {
			break
		}
		if round == 20 {
			t.Fatalf("after 20 ticks %d of %d counts delivered", got, want)
		}
		if err := w.Tick(ctx); err != nil {
			t.Fatalf("tick: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	draining = true
	if len(delivered) != len(sent) {
		t.Errorf("%d keys delivered, %d sent", len(delivered), len(sent))
	}
	for k, n := range sent {
		if delivered[k] != n {
			t.Errorf("key %s: %d delivered, %d sent", k, delivered[k], n)
		}
	}
	for k, n := range delivered {
		if sent[k] == 0 {
			t.Errorf("key %s: %d delivered, none sent", k, n)
		}
	}
	for reason, n := range uncounted {
		if got := h.Counter("reqcount.requests_uncounted." + reason); got != uint64(n) {
			t.Errorf("uncounted %s: %d, sent %d", reason, got, n)
		}
	}
	if got := h.Counter("reqcount.requests_counted"); got != uint64(want) {
		t.Errorf("requests_counted %d, sent %d countable", got, want)
	}
}
