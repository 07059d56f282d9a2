// Command callhook is a test plugin for the wasm glue's call hooks
// (filter/_sdkabi/callhook_wasip1.go, filter/callhook): on every tick it makes
// the same call twice, once through callhook.Dispatch and once through the
// SDK's DispatchHttpCall, and on every answer it reads a few headers through
// callhook.ResponseHeader and through the SDK's GetHttpCallResponseHeaders,
// so that e2e/callhook_test.go can check the hooks answer as the SDK's public
// API does. Built with filter/_sdkabi/build.sh (the SDK's full export set).
//
// It logs, at info level:
//
//	dispatch N hook=ERR sdk=ERR      the two calls of tick N (ERR: "ok" or the error)
//	answer VIA N HEADERS KEY=READ... on each answer (VIA: hook or sdk); READ is
//	                                 hook's value, "|", the list's first value of
//	                                 KEY (lowercased), each "!notfound",
//	                                 "!badargument" or "!other" when it failed
package main

import (
	"strconv"
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/callhook"
)

func init() { proxywasm.SetVMContext(&vmContext{}) }

func main() {}

type vmContext struct{ types.DefaultVMContext }

func (*vmContext) NewPluginContext(uint32) types.PluginContext { return &pluginContext{} }

type pluginContext struct {
	types.DefaultPluginContext
	tick    int
	cluster string
}

// keys are the headers read on every answer.
var keys = []string{":status", ":STATUS", "content-type", "x-dup", "empty", "x-missing", ""}

func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	data, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		return types.OnPluginStartStatusFailed
	}
	p.cluster = strings.TrimSpace(string(data))
	if err := proxywasm.SetTickPeriodMilliSeconds(1000); err != nil {
		return types.OnPluginStartStatusFailed
	}
	if callhook.Dispatch == nil || callhook.ResponseHeader == nil {
		proxywasm.LogError("no call hooks in this build")
		return types.OnPluginStartStatusFailed
	}
	return types.OnPluginStartStatusOK
}

// errString is "ok", or a host error as one word.
func errString(err error) string {
	switch err {
	case nil:
		return "ok"
	case types.ErrorStatusNotFound:
		return "!notfound"
	case types.ErrorStatusBadArgument:
		return "!badargument"
	}
	return "!other"
}

func (p *pluginContext) OnTick() {
	p.tick++
	n := p.tick
	hs := [][2]string{{":method", "POST"}, {":path", "/c"}, {":authority", "collector"}, {"x-case", strconv.Itoa(n)}}
	body := []byte("case=" + strconv.Itoa(n))
	if n%2 == 0 {
		body = nil // and an empty body
	}
	_, herr := callhook.Dispatch(p.cluster, callhook.AppendPairs(nil, hs), body, 1500, func(h, _, _ int) { answer("hook", n, h) })
	_, serr := proxywasm.DispatchHttpCall(p.cluster, hs, body, nil, 1500, func(h, _, _ int) { answer("sdk", n, h) })
	proxywasm.LogInfof("dispatch %d hook=%s sdk=%s", n, errString(herr), errString(serr))
}

func answer(via string, n, numHeaders int) {
	var b strings.Builder
	b.WriteString("answer " + via + " " + strconv.Itoa(n) + " " + strconv.Itoa(numHeaders))
	list, lerr := proxywasm.GetHttpCallResponseHeaders()
	for _, k := range keys {
		b.WriteString(" " + k + "=")
		if v, err := callhook.ResponseHeader(k); err != nil {
			b.WriteString(errString(err))
		} else {
			b.WriteString(v)
		}
		b.WriteString("|")
		switch v, ok := first(list, k); {
		case lerr != nil:
			b.WriteString(errString(lerr))
		case !ok:
			b.WriteString(errString(types.ErrorStatusNotFound))
		default:
			b.WriteString(v)
		}
	}
	proxywasm.LogInfo(b.String())
}

// first is the first value of key in list, as Envoy's getHeaderMapValue
// answers (keys are lowercase in Envoy's maps; the key asked is lowercased).
func first(list [][2]string, key string) (string, bool) {
	key = strings.ToLower(key)
	for _, h := range list {
		if h[0] == key {
			return h[1], true
		}
	}
	return "", false
}
