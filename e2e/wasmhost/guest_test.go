package wasmhost

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// newHost starts a Host for the named test module and closes it at the end
// of the test.
func newHost(t *testing.T, name string, cfg Config) *Host {
	t.Helper()
	h, err := New(context.Background(), module(t, name), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Close(ctx)
	})
	return h
}

var getAuthority = Request{Headers: [][2]string{
	{":authority", "svc.ns"}, {":path", "/p"}, {":method", "GET"}, {"X-Mixed", "V"},
}}

func mustRequest(t *testing.T, w *Worker, req Request) Result {
	t.Helper()
	res, err := w.Request(context.Background(), req)
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	return res
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func countOf(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if l == s {
			n++
		}
	}
	return n
}

func hasPrefixLine(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func TestGuestStartsLikeEnvoy(t *testing.T) {
	h := newHost(t, "guest", Config{
		Workers:      2,
		VMConfig:     []byte("vmconf"),
		PluginConfig: []byte("read=:authority"),
		RootID:       "myroot",
		ManualTicks:  true,
	})
	info := h.Logs(LevelInfo)
	for _, want := range []string{
		"guest init",
		"vm_config=vmconf status=0",
		"configured root_id=myroot status=0 missing_status=1",
	} {
		if got := countOf(info, want); got != 2 {
			t.Errorf("%q logged %d times, want once per worker (2); info logs: %q", want, got, info)
		}
	}
	want := map[string]uint64{
		"_initialize": 2, "proxy_on_context_create": 2, "proxy_on_vm_start": 2, "proxy_on_configure": 2,
		// Copies in: the VM configuration, the plugin configuration and the
		// plugin_root_id property.
		"proxy_on_memory_allocate": 6,
	}
	if got := h.Stats().GuestCalls; !reflect.DeepEqual(got, want) {
		t.Errorf("guest calls during start = %v, want %v", got, want)
	}
}

func TestGuestRequestEntries(t *testing.T) {
	tests := []struct {
		name   string
		config string
		// allocs is the number of host→guest copies per request.
		allocs uint64
		log    string
	}{
		{name: "no host reads", config: "x=1", allocs: 0},
		{name: "read a header", config: "read=:authority", allocs: 1, log: "read :authority=svc.ns status=0"},
		{name: "read a header by mixed-case key", config: "read=X-MIXED", allocs: 1, log: "read X-MIXED=V status=0"},
		{name: "read a missing header", config: "read=x-missing", allocs: 0, log: "read x-missing= status=1"},
		{name: "read all headers", config: "pairs=1", allocs: 1, log: "pairs n=4 count=4 status=0 :authority=svc.ns,:path=/p,:method=GET,x-mixed=V"},
		// malloc answering 0 fails the copy as cpp-host does (copyToPointerSize,
		// proxy_get_header_map_pairs): InvalidMemoryAccess, out-params not written.
		{name: "read a header, malloc answers 0", config: "read=:authority;nomem=1", allocs: 1, log: "read :authority= status=6"},
		{name: "read all headers, malloc answers 0", config: "pairs=1;nomem=1", allocs: 1, log: "pairs n=4 count=0 status=6 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t, "guest", Config{PluginConfig: []byte(tt.config), ManualTicks: true})
			w := h.Worker(0)
			if got := h.Module().EntriesPerRequest(); got != 6 {
				t.Fatalf("EntriesPerRequest() = %d, want 6", got)
			}
			before := w.Stats()
			const n = 50
			for i := 0; i < n; i++ {
				mustRequest(t, w, getAuthority)
			}
			after := w.Stats()
			perRequest := (after.GuestEntries - before.GuestEntries) / n
			if want := uint64(h.Module().EntriesPerRequest()) + tt.allocs; perRequest != want || (after.GuestEntries-before.GuestEntries)%n != 0 {
				t.Errorf("guest entries per request = %d (total %d), want %d; stats %v", perRequest, after.GuestEntries-before.GuestEntries, want, after)
			}
			if got := after.Requests - before.Requests; got != n {
				t.Errorf("Stats.Requests grew by %d, want %d", got, n)
			}
			if got := after.GuestCalls["proxy_on_memory_allocate"] - before.GuestCalls["proxy_on_memory_allocate"]; got != n*tt.allocs {
				t.Errorf("allocations = %d, want %d", got, n*tt.allocs)
			}
			if tt.log != "" {
				if got := countOf(h.Logs(LevelInfo), tt.log); got != n {
					t.Errorf("%q logged %d times, want %d; logs %q", tt.log, got, n, h.Logs(LevelInfo))
				}
			}
		})
	}
}

func TestGuestRequestsFastPath(t *testing.T) {
	h := newHost(t, "guest", Config{PluginConfig: []byte("read=:authority"), ManualTicks: true})
	w := h.Worker(0)
	before := w.Stats()
	if err := w.Requests(context.Background(), 1000, getAuthority); err != nil {
		t.Fatalf("Requests: %v", err)
	}
	after := w.Stats()
	if got := after.Requests - before.Requests; got != 1000 {
		t.Errorf("requests = %d, want 1000", got)
	}
	if got := after.HostCalls["proxy_get_header_map_value"] - before.HostCalls["proxy_get_header_map_value"]; got != 1000 {
		t.Errorf("header reads = %d, want 1000", got)
	}
	if got, want := after.GuestEntries-before.GuestEntries, uint64(1000*7); got != want {
		t.Errorf("guest entries = %d, want %d (6 callbacks + 1 allocation per request)", got, want)
	}
}

func TestGuestEndOfStreamAndResponse(t *testing.T) {
	h := newHost(t, "guest", Config{PluginConfig: []byte("read_response=1"), ManualTicks: true})
	w := h.Worker(0)
	tests := []struct {
		name      string
		req       Request
		wantDebug string
		wantInfo  string
	}{
		{
			name:      "header-only exchange",
			req:       Request{Headers: getAuthority.Headers, ResponseHeaders: [][2]string{{":status", "204"}}},
			wantDebug: "request eos=1",
			wantInfo:  "response :status=204 status=0 eos=1",
		},
		{
			name:      "bodies follow the headers",
			req:       Request{Headers: getAuthority.Headers, RequestHasBody: true, ResponseHasBody: true},
			wantDebug: "request eos=0",
			wantInfo:  "response :status=200 status=0 eos=0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustRequest(t, w, tt.req)
			if !res.ResponseCalled || res.RequestAction != ActionContinue {
				t.Errorf("result = %+v, want a continued request and a response", res)
			}
			debug, info := h.Logs(LevelDebug), h.Logs(LevelInfo)
			if debug[len(debug)-1] != tt.wantDebug || info[len(info)-1] != tt.wantInfo {
				t.Errorf("last logs = %q / %q, want %q / %q", debug[len(debug)-1], info[len(info)-1], tt.wantDebug, tt.wantInfo)
			}
		})
	}
}

func TestGuestMutatesHeaders(t *testing.T) {
	h := newHost(t, "guest", Config{PluginConfig: []byte("mutate=1"), ManualTicks: true})
	req := Request{Headers: [][2]string{{":authority", "a"}, {":path", "/p"}, {"x-drop", "1"}, {":path", "/second"}, {"x-drop", "2"}}}
	res := mustRequest(t, h.Worker(0), req)
	want := [][2]string{{":authority", "a"}, {":path", "/rewritten"}, {"x-added", "1"}}
	if !reflect.DeepEqual(res.RequestHeaders, want) {
		t.Errorf("request headers after the module = %q, want %q", res.RequestHeaders, want)
	}
	if req.Headers[2] != [2]string{"x-drop", "1"} {
		t.Errorf("the caller's headers were modified: %q", req.Headers)
	}
}

func TestGuestStopsIteration(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   Result
	}{
		{
			// A held stream waits (Request would block until it is
			// resumed): the client resets it, and it ends as before.
			name:   "pause, then a client reset",
			config: "pause=1",
			want:   Result{RequestAction: ActionPause, Paused: true, Reset: true},
		},
		{
			name:   "local reply",
			config: "local=1",
			want: Result{RequestAction: ActionPause, LocalReply: &LocalReply{
				Status: 403, Details: "guest_said_no", Body: []byte("denied"), GrpcCode: -1,
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t, "guest", Config{PluginConfig: []byte(tt.config), ManualTicks: true})
			var res Result
			if tt.want.Paused {
				st, err := h.Worker(0).Open(context.Background(), getAuthority)
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if !st.Paused() {
					t.Fatalf("stream %d not held", st.ID())
				}
				if err := st.Reset(context.Background()); err != nil {
					t.Fatalf("Reset: %v", err)
				}
				if res, err = st.Wait(context.Background()); err != nil {
					t.Fatalf("Wait: %v", err)
				}
			} else {
				res = mustRequest(t, h.Worker(0), getAuthority)
			}
			if res.Paused != tt.want.Paused || res.Reset != tt.want.Reset {
				t.Errorf("result paused=%v reset=%v, want %v %v", res.Paused, res.Reset, tt.want.Paused, tt.want.Reset)
			}
			if res.RequestAction != tt.want.RequestAction || res.ResponseCalled || !reflect.DeepEqual(res.LocalReply, tt.want.LocalReply) {
				t.Errorf("result = %+v (local reply %+v), want %+v (local reply %+v)", res, res.LocalReply, tt.want, tt.want.LocalReply)
			}
			calls := h.Stats().GuestCalls
			if calls["proxy_on_response_headers"] != 0 || calls["proxy_on_log"] != 1 || calls["proxy_on_delete"] != 1 {
				t.Errorf("guest calls = %v, want the stream ended without response headers", calls)
			}
		})
	}
}

func TestGuestManualTicks(t *testing.T) {
	t.Run("no period", func(t *testing.T) {
		h := newHost(t, "guest", Config{ManualTicks: true})
		if err := h.Worker(0).Tick(context.Background()); !errors.Is(err, ErrNoTickPeriod) {
			t.Fatalf("Tick = %v, want ErrNoTickPeriod", err)
		}
		if got := h.Worker(0).TickPeriod(); got != 0 {
			t.Errorf("TickPeriod() = %v, want 0", got)
		}
	})
	t.Run("period set in proxy_on_configure", func(t *testing.T) {
		h := newHost(t, "guest", Config{Workers: 2, ManualTicks: true, PluginConfig: []byte("tick=60000")})
		for i := 0; i < 2; i++ {
			if got := h.Worker(i).TickPeriod(); got != time.Minute {
				t.Errorf("worker %d TickPeriod() = %v, want 1m", i, got)
			}
		}
		if err := h.Worker(1).Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := h.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := h.Worker(0).Stats().GuestCalls["proxy_on_tick"]; got != 1 {
			t.Errorf("worker 0 ticks = %d, want 1", got)
		}
		if got := h.Worker(1).Stats().GuestCalls["proxy_on_tick"]; got != 2 {
			t.Errorf("worker 1 ticks = %d, want 2", got)
		}
	})
}

func TestGuestRealTimeTicks(t *testing.T) {
	h := newHost(t, "guest", Config{Workers: 2, PluginConfig: []byte("tick=5")})
	waitFor(t, "3 ticks on each worker", func() bool {
		return h.Worker(0).Stats().GuestCalls["proxy_on_tick"] >= 3 && h.Worker(1).Stats().GuestCalls["proxy_on_tick"] >= 3
	})
	// Ticks interleave with requests on the same worker without overlapping.
	if err := h.Worker(0).Requests(context.Background(), 200, getAuthority); err != nil {
		t.Fatal(err)
	}
}

// upstream is a loopback HTTP server recording the callouts it receives.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	method, path, host, contentType, probe, userAgent string
	body                                              string
}

func newUpstream(t *testing.T, handler http.HandlerFunc) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, recorded{r.Method, r.URL.Path, r.Host, r.Header.Get("Content-Type"), r.Header.Get("X-Probe"), r.Header.Get("User-Agent"), string(body)})
		u.mu.Unlock()
		handler(rw, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) received() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recorded(nil), u.reqs...)
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func callConfig(cluster, authority, timeout string) []byte {
	return []byte("tick=60000;call=1;cluster=" + cluster + ";path=/informer/incoming-request;authority=" + authority + ";timeout=" + timeout)
}

func responseLine(h *Host) string {
	for _, l := range h.Logs(LevelInfo) {
		if strings.HasPrefix(l, "response token=") {
			return l
		}
	}
	return ""
}

func TestGuestCallouts(t *testing.T) {
	ok := newUpstream(t, func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("X-Answer", "42")
		rw.Header()["Date"] = nil // keep the answer deterministic
		rw.Write([]byte(`{"message":"Request received successfully!"}`))
	})
	slow := newUpstream(t, func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	resetMidBody := newUpstream(t, func(rw http.ResponseWriter, r *http.Request) {
		conn, buf, err := rw.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
		buf.Flush()
		conn.Close()
	})
	redirect := newUpstream(t, func(rw http.ResponseWriter, r *http.Request) {
		rw.Header()["Date"] = nil
		http.Redirect(rw, r, "/elsewhere", http.StatusFound)
	})
	closeBeforeHeaders := newUpstream(t, func(rw http.ResponseWriter, r *http.Request) {
		conn, _, err := rw.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})

	tests := []struct {
		name     string
		addr     string
		config   []byte
		wantCall string // "call status=N" logged by the module
		wantResp string // prefix of the response line; "" = no response
		server   *upstream
	}{
		{
			name:     "delivered",
			addr:     ok.Listener.Addr().String(),
			config:   callConfig("operator", "operator.svc:8013", "2000"),
			wantCall: "call status=0",
			wantResp: `response token=1 headers=4 status=200 body={"message":"Request received successfully!"} call_status=0/ pairs=:status=200,content-length=44,content-type=text/plain; charset=utf-8,x-answer=42 reads=0/0/0`,
			server:   ok,
		},
		{
			name:     "redirect handed over, not followed",
			addr:     redirect.Listener.Addr().String(),
			config:   callConfig("operator", "operator", "2000"),
			wantCall: "call status=0",
			wantResp: "response token=1 headers=3 status=302 body= call_status=0/ pairs=:status=302,content-length=0,location=/elsewhere reads=0/0/0",
		},
		{
			name:     "timeout",
			addr:     slow.Listener.Addr().String(),
			config:   callConfig("operator", "operator", "50"),
			wantCall: "call status=0",
			wantResp: "response token=1 headers=3 status=504 body=upstream request timeout call_status=0/ pairs=:status=504,content-length=24,content-type=text/plain",
		},
		{
			name:     "connection refused",
			addr:     closedPort(t),
			config:   callConfig("operator", "operator", "2000"),
			wantCall: "call status=0",
			wantResp: "response token=1 headers=3 status=503 body=upstream connect error or disconnect/reset before headers. reset reason: remote connection failure",
		},
		{
			name:     "closed before headers",
			addr:     closeBeforeHeaders.Listener.Addr().String(),
			config:   callConfig("operator", "operator", "2000"),
			wantCall: "call status=0",
			wantResp: "response token=1 headers=3 status=503 body=upstream connect error or disconnect/reset before headers. reset reason: connection termination",
		},
		{
			name:     "reset after headers",
			addr:     resetMidBody.Listener.Addr().String(),
			config:   callConfig("operator", "operator", "2000"),
			wantCall: "call status=0",
			// Envoy keeps no response for a reset call: its :status read is
			// BadArgument, its header pairs read empty, its body NotFound.
			wantResp: "response token=1 headers=0 status= body= call_status=11/reset pairs= reads=2/0/1",
		},
		{
			name:     "unknown cluster",
			addr:     ok.Listener.Addr().String(),
			config:   callConfig("nosuch", "operator", "2000"),
			wantCall: "call status=2",
		},
		{
			name:     "missing :authority",
			addr:     ok.Listener.Addr().String(),
			config:   callConfig("operator", "-", "2000"),
			wantCall: "call status=2",
		},
		{
			name:     "negative timeout",
			addr:     ok.Listener.Addr().String(),
			config:   callConfig("operator", "operator", "-1"),
			wantCall: "call status=2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t, "guest", Config{
				PluginConfig: tt.config,
				ManualTicks:  true,
				Clusters:     map[string]string{"operator": tt.addr},
			})
			if err := h.Worker(0).Tick(context.Background()); err != nil {
				t.Fatalf("Tick: %v", err)
			}
			if got := h.Logs(LevelInfo); !slices.Contains(got, tt.wantCall) {
				t.Fatalf("logs %q, want %q", got, tt.wantCall)
			}
			if tt.wantResp == "" {
				// Nothing may arrive: give a wrong delivery a chance to show.
				time.Sleep(20 * time.Millisecond)
				if got := h.Stats().GuestCalls["proxy_on_http_call_response"]; got != 0 {
					t.Fatalf("proxy_on_http_call_response called %d times for a refused call", got)
				}
				return
			}
			waitFor(t, "the callout response", func() bool { return responseLine(h) != "" })
			if got := responseLine(h); !strings.HasPrefix(got, tt.wantResp) {
				t.Errorf("response line\n got %q\nwant %q...", got, tt.wantResp)
			}
			if tt.server != nil {
				want := []recorded{{"POST", "/informer/incoming-request", "operator.svc:8013", "text/plain", "1", "", "hello"}}
				if got := tt.server.received(); !reflect.DeepEqual(got, want) {
					t.Errorf("upstream received %+v, want %+v", got, want)
				}
			}
		})
	}
}

func TestGuestCustomDispatch(t *testing.T) {
	var mu sync.Mutex
	var callouts []Callout
	var replies []func(Response)
	h := newHost(t, "guest", Config{
		Workers:      2,
		PluginConfig: callConfig("operator", "operator", "1500"),
		ManualTicks:  true,
		Clusters:     map[string]string{"operator": ""},
		Dispatch: func(c Callout, reply func(Response)) {
			mu.Lock()
			defer mu.Unlock()
			callouts = append(callouts, c)
			replies = append(replies, reply)
		},
	})
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := h.Worker(1).Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	got := callouts
	mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("dispatched %d callouts, want 2", len(got))
	}
	c := got[1]
	if c.Worker != 1 || c.Token != 3 || c.Cluster != "operator" || c.Timeout != 1500*time.Millisecond ||
		string(c.Body) != "hello" || c.Header(":path") != "/informer/incoming-request" || c.Header(":authority") != "operator" {
		t.Errorf("second callout = %+v", c)
	}
	// Answer out of order; a second reply to the same callout is ignored.
	replies[1](Response{Status: 200, Headers: [][2]string{{"X-Late", "yes"}}, Body: []byte("ok")})
	replies[1](Response{Status: 500})
	replies[0](Reset())
	// Replies are events on the worker: Sync waits for the ones already made.
	if err := h.Worker(1).Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range h.Logs(LevelInfo) {
		if strings.HasPrefix(l, "response token=") {
			lines = append(lines, l)
		}
	}
	want := []string{
		"response token=3 headers=2 status=200 body=ok call_status=0/ pairs=:status=200,x-late=yes reads=0/0/0",
		"response token=1 headers=0 status= body= call_status=11/reset pairs= reads=2/0/1",
	}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("responses\n got %q\nwant %q", lines, want)
	}
}

func TestGuestSharedDataCAS(t *testing.T) {
	const workers, perWorker = 2, 300
	h := newHost(t, "guest", Config{Workers: workers, PluginConfig: []byte("shared=hits"), ManualTicks: true})
	// The key exists before the workers race: shared data has no atomic create
	// (a set of a missing key succeeds whatever its CAS, as in Envoy), so two
	// first increments of a missing key could both write 1 (seen once under load).
	if st := h.SetSharedData("hits", []byte("0"), 0); st != StatusOK {
		t.Fatalf("SetSharedData(hits) = %d", st)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perWorker; j++ {
				if _, err := h.Worker(i).Request(context.Background(), getAuthority); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	v, cas, ok := h.SharedData("hits")
	if !ok || string(v) != "600" || cas == 0 {
		t.Fatalf("shared data hits = %q (cas %d, found %v), want 600", v, cas, ok)
	}
	if st := h.SetSharedData("hits", []byte("0"), cas+1); st != StatusCasMismatch {
		t.Errorf("SetSharedData with a stale CAS = %d, want CasMismatch", st)
	}
	if st := h.SetSharedData("hits", []byte("0"), cas); st != StatusOK {
		t.Errorf("SetSharedData with the current CAS = %d, want OK", st)
	}
}

func TestGuestMetrics(t *testing.T) {
	h := newHost(t, "guest", Config{Workers: 2, PluginConfig: []byte("metrics=1"), ManualTicks: true})
	for i := 0; i < 2; i++ {
		for j := 0; j <= i; j++ {
			mustRequest(t, h.Worker(i), getAuthority)
		}
	}
	if got := h.Counter("requests_total"); got != 3 {
		t.Errorf("Counter(requests_total) = %d, want 3 (one stat shared by both workers)", got)
	}
	if got := h.Gauge("inflight"); got != 3 {
		t.Errorf("Gauge(inflight) = %d, want 3", got)
	}
	// Three values of 4 (headers): in Envoy's bucket ≤ 5 and every later
	// one (cumulative).
	buckets := []uint64{0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3}
	want := []Metric{
		{Name: "header_count", Type: MetricHistogram, Value: 3, Sum: 12, Buckets: buckets},
		{Name: "inflight", Type: MetricGauge, Value: 3},
		{Name: "requests_total", Type: MetricCounter, Value: 3},
	}
	if got := h.Metrics(); !reflect.DeepEqual(got, want) {
		t.Errorf("Metrics() = %+v, want %+v", got, want)
	}
	// Envoy's answers: a counter cannot be incremented by 0, a histogram has
	// no readable value, an unknown id is NotFound.
	if got := countOf(h.Logs(LevelInfo), "metric checks: counter+0=2 histogram_get=2 unknown_get=1"); got != 2 {
		t.Errorf("metric checks logged %d times, want 2; logs %q", got, h.Logs(LevelInfo))
	}
}

func TestGuestRefusedStarts(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{
			name:    "host call from init",
			cfg:     Config{Env: map[string]string{"GUEST_TICK_IN_INIT": "1"}},
			wantErr: []string{"proxy_set_tick_period_milliseconds called during _initialize", "restricted_callback"},
		},
		{
			name:    "configuration refused",
			cfg:     Config{PluginConfig: []byte("fail=1")},
			wantErr: []string{"proxy_on_configure: returned false", "module logged: refusing configuration"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := New(context.Background(), module(t, "guest"), tt.cfg)
			if err == nil {
				h.Close(context.Background())
				t.Fatal("New succeeded, want an error")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("New error = %v, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestGuestTrapCrashesOnlyItsWorker(t *testing.T) {
	h := newHost(t, "guest", Config{Workers: 2, PluginConfig: []byte("trap=request"), ManualTicks: true})
	ctx := context.Background()
	_, err := h.Worker(0).Request(ctx, getAuthority)
	if !errors.Is(err, ErrCrashed) || !strings.Contains(err.Error(), "proxy_on_request_headers") {
		t.Fatalf("Request = %v, want ErrCrashed in proxy_on_request_headers", err)
	}
	if _, err2 := h.Worker(0).Request(ctx, getAuthority); !errors.Is(err2, ErrCrashed) {
		t.Errorf("second Request on the crashed worker = %v, want ErrCrashed", err2)
	}
	if got := h.Worker(0).Crashed(); got == nil {
		t.Error("Crashed() = nil after a trap")
	}
	if got := h.Stats().Crashes; len(got) != 1 {
		t.Errorf("Stats().Crashes = %v, want one crash", got)
	}
	// The Go runtime's panic message reaches the error log through
	// fd_write(2), one line per write as in Envoy.
	if errLogs := h.Logs(LevelError); !slices.Contains(errLogs, "panic: ") || !slices.Contains(errLogs, "trap requested") {
		t.Errorf("error logs %q, want the guest's panic message", errLogs)
	}
	if h.Worker(1).Crashed() != nil {
		t.Error("worker 1 crashed too")
	}
	if err := h.Close(ctx); err != nil {
		t.Errorf("Close = %v, want nil (a crashed VM is not called again)", err)
	}
}

func TestGuestDeferredDone(t *testing.T) {
	t.Run("proxy_done from the final callout", func(t *testing.T) {
		u := newUpstream(t, func(rw http.ResponseWriter, r *http.Request) { rw.Write([]byte("bye")) })
		h, err := New(context.Background(), module(t, "guest"), Config{
			PluginConfig: append(callConfig("operator", "operator", "2000"), ";defer_done=1"...),
			ManualTicks:  true,
			Clusters:     map[string]string{"operator": u.Listener.Addr().String()},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		var got []string
		for _, l := range h.Logs(LevelInfo) {
			if strings.HasPrefix(l, "done") || strings.HasPrefix(l, "response") || strings.HasPrefix(l, "proxy_done") || l == "root deleted" {
				got = append(got, strings.SplitN(l, " call_status", 2)[0])
			}
		}
		want := []string{"done deferred", "response token=1 headers=4 status=200 body=bye", "proxy_done status=0", "root deleted"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("shutdown logs %q, want %q", got, want)
		}
		if _, err := h.Worker(0).Request(context.Background(), getAuthority); !errors.Is(err, ErrClosed) {
			t.Errorf("Request after Close = %v, want ErrClosed", err)
		}
	})
	t.Run("deadline before proxy_done", func(t *testing.T) {
		h, err := New(context.Background(), module(t, "guest"), Config{
			PluginConfig: append(callConfig("operator", "operator", "2000"), ";defer_done=1"...),
			ManualTicks:  true,
			Clusters:     map[string]string{"operator": ""},
			Dispatch:     func(Callout, func(Response)) {}, // never answers
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err = h.Close(ctx)
		if err == nil || !strings.Contains(err.Error(), "proxy_done was not called") {
			t.Errorf("Close = %v, want the missing proxy_done reported", err)
		}
		if got := countOf(h.Logs(LevelInfo), "root deleted"); got != 1 {
			t.Errorf("root deleted %d times, want once", got)
		}
	})
}

func TestGuestMemoryGrowth(t *testing.T) {
	h := newHost(t, "guest", Config{PluginConfig: []byte("grow=1024"), ManualTicks: true})
	w := h.Worker(0)
	before := w.MemorySize()
	if err := w.Requests(context.Background(), 8, getAuthority); err != nil {
		t.Fatal(err)
	}
	after := w.MemorySize()
	if after < before+8<<20 {
		t.Errorf("memory grew from %d to %d bytes, want at least 8 MiB more (8 requests retaining 1 MiB each)", before, after)
	}
}

func TestGuestSharedQueue(t *testing.T) {
	// Both workers register "q"; the last to register (worker 1, started
	// second) is notified of what any worker enqueues, as in Envoy.
	h := newHost(t, "guest", Config{Workers: 2, VMID: "vm", PluginConfig: []byte("queue=1;vm_id=vm"), ManualTicks: true})
	if got := countOf(h.Logs(LevelInfo), "registered queue token=1 status=0"); got != 2 {
		t.Fatalf("registrations logged %d times, want 2 with the same token; logs %q", got, h.Logs(LevelInfo))
	}
	res := mustRequest(t, h.Worker(0), getAuthority)
	// Guest call counters move when a call starts: wait for its last log.
	waitFor(t, "the queue notification", func() bool { return hasPrefixLine(h.Logs(LevelInfo), "queue drained") })
	item := "item-" + strconv.Itoa(int(res.ContextID))
	var got []LogLine
	for _, l := range h.LogLines() {
		if l.Level == LevelInfo && (strings.HasPrefix(l.Message, "enqueue") || strings.HasPrefix(l.Message, "dequeued") || strings.HasPrefix(l.Message, "queue")) {
			got = append(got, l)
		}
	}
	want := []LogLine{
		{Worker: 0, Level: LevelInfo, Message: "enqueue " + item + " status=0"},
		{Worker: 1, Level: LevelInfo, Message: "dequeued " + item},
		{Worker: 1, Level: LevelInfo, Message: "queue drained status=7"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("queue logs %+v, want %+v", got, want)
	}
	if n := h.Worker(0).Stats().GuestCalls["proxy_on_queue_ready"]; n != 0 {
		t.Errorf("worker 0 notified %d times, want 0", n)
	}
}
