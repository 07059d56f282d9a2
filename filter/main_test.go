package main

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/filtertest"
	"github.com/reqcount/reqcount/filter/merge/mergetest"
)

// TestScenarios runs the shared behaviour table natively, on the SDK's proxytest
// emulator. The e2e package runs the same table on the compiled module.
func TestScenarios(t *testing.T) {
	filtertest.Run(t, func(t *testing.T) filtertest.Host { return &nativeHost{t: t} })
}

// nativeHost adapts proxytest to filtertest.Host.
//
// Two quirks of proxytest v0.24.0 shape it. Callout IDs are the number of unanswered
// callouts, so answering an older callout first lets the next dispatch reuse a live
// ID: Answer refuses that order, and the scenarios answer newest first. And proxytest
// does not record proxy_done, only logs that it is "not implemented", so PluginDone
// watches the emulator's log output for that line.
type nativeHost struct {
	t        *testing.T
	host     proxytest.HostEmulator
	answered map[int]bool
	logBuf   bytes.Buffer

	headerReads int
}

func (h *nativeHost) Start(config string) error {
	opt := proxytest.NewEmulatorOption().WithVMContext(&vmContext{}).WithPluginConfiguration([]byte(config))
	log.SetOutput(&h.logBuf) // proxytest logs every callout through the log package
	host, reset := proxytest.NewHostEmulator(opt)
	read := getRequestHeader
	getRequestHeader = func(name string) (string, error) { h.headerReads++; return read(name) }
	// Shared data as Envoy keeps it, not as proxytest does (a CAS of 0 is
	// unconditional there, and a new key does not store cas+1).
	store := sharedDataStore
	sharedDataStore = mergetest.New()
	h.t.Cleanup(func() { reset(); log.SetOutput(os.Stderr); getRequestHeader = read; sharedDataStore = store })
	h.host, h.answered = host, map[int]bool{}
	if st := host.StartVM(); st != types.OnVMStartStatusOK {
		return errors.New("vm start failed")
	}
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		return fmt.Errorf("plugin start failed: %s", strings.Join(host.GetErrorLogs(), "; "))
	}
	return nil
}

func (h *nativeHost) Request(headers [][2]string) {
	id := h.host.InitializeHttpContext()
	if a := h.host.CallOnRequestHeaders(id, headers, true); a != types.ActionContinue {
		h.t.Fatalf("request headers: action %v, want continue", a)
	}
	h.host.CompleteHttpContext(id)
}

func (h *nativeHost) Tick() { h.host.Tick() }

func (h *nativeHost) TickPeriod() time.Duration {
	return time.Duration(h.host.GetTickPeriod()) * time.Millisecond
}

func (h *nativeHost) Callouts() []filtertest.Callout {
	var out []filtertest.Callout
	live := map[uint32]bool{}
	// proxytest appends every callout ever made; the driver remembers which of them
	// (by position) were answered.
	for i, a := range h.host.GetCalloutAttributesFromContext(proxytest.PluginContextID) {
		if h.answered[i] {
			continue
		}
		if live[a.CalloutID] {
			h.t.Fatalf("proxytest gave callout ID %d to two live calls", a.CalloutID)
		}
		live[a.CalloutID] = true
		out = append(out, filtertest.Callout{ID: a.CalloutID, Cluster: a.Upstream, Headers: a.Headers, Body: a.Body})
	}
	return out
}

func (h *nativeHost) Answer(id uint32, status int) {
	idx := -1
	for i, a := range h.host.GetCalloutAttributesFromContext(proxytest.PluginContextID) {
		if h.answered[i] {
			continue
		}
		if a.CalloutID > id {
			h.t.Fatalf("answering callout %d before newer callout %d: proxytest would reuse ID %d", id, a.CalloutID, id)
		}
		if a.CalloutID == id {
			idx = i
		}
	}
	if idx < 0 {
		h.t.Fatalf("no live callout %d", id)
	}
	var headers [][2]string
	if status != 0 {
		headers = [][2]string{{":status", strconv.Itoa(status)}}
	}
	h.answered[idx] = true
	h.host.CallOnHttpCallResponse(id, headers, nil, nil)
}

func (h *nativeHost) Shutdown() bool { return h.host.FinishVM() }

func (h *nativeHost) PluginDone() bool {
	return strings.Contains(h.logBuf.String(), "ProxyDone not implemented")
}

func (h *nativeHost) Counter(name string) uint64 {
	v, _ := h.host.GetCounterMetric(name)
	return v
}

func (h *nativeHost) Logs(level string) []string {
	switch level {
	case "error":
		return h.host.GetErrorLogs()
	case "warn":
		return h.host.GetWarnLogs()
	case "info":
		return h.host.GetInfoLogs()
	}
	h.t.Fatalf("unknown log level %q", level)
	return nil
}

// HeaderReads counts the plugin's request-header reads through its
// getRequestHeader seam: proxytest does not record them.
func (h *nativeHost) HeaderReads() (int, bool) { return h.headerReads, true }

// Route sets the routed cluster of the requests (xds.cluster_name). proxytest
// keeps one property set for every stream.
func (h *nativeHost) Route(cluster string) {
	if err := h.host.SetProperty([]string{"xds", "cluster_name"}, []byte(cluster)); err != nil {
		h.t.Fatal(err)
	}
}

// Open starts a request; proxytest's stream stays as the plugin left it.
func (h *nativeHost) Open(headers [][2]string, body []byte) filtertest.HoldStream {
	id := h.host.InitializeHttpContext()
	h.host.CallOnRequestHeaders(id, headers, len(body) == 0)
	if len(body) > 0 {
		h.host.CallOnRequestBody(id, body, true)
	}
	return &nativeStream{h: h, id: id}
}

// nativeStream is a request opened on proxytest.
type nativeStream struct {
	h  *nativeHost
	id uint32
}

func (s *nativeStream) Held() bool {
	return s.h.host.GetCurrentHttpStreamAction(s.id) == types.ActionPause
}

func (s *nativeStream) Reset() { s.h.host.CompleteHttpContext(s.id) }

// UpstreamBody: proxytest routes nothing; the body the filter leaves alone
// is the one proxytest holds for the stream.
func (s *nativeStream) UpstreamBody() ([]byte, bool) {
	return s.h.host.GetCurrentRequestBody(s.id), true
}
