package wasmhost_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// This example runs build/filter.wasm on two workers, drives one request and
// shuts the plugin down. (It is compiled, not run: it needs the build.)
func Example() {
	ctx := context.Background()
	wasm, err := os.ReadFile("build/filter.wasm")
	if err != nil {
		log.Fatal(err)
	}
	mod, err := wasmhost.Compile(ctx, wasm)
	if err != nil {
		log.Fatal(err) // e.g. an import Envoy does not provide
	}
	defer mod.Close(ctx)

	h, err := wasmhost.New(ctx, mod, wasmhost.Config{
		Workers:      2,
		PluginConfig: []byte(`{"cluster":"operator"}`),
		Clusters:     map[string]string{"operator": "127.0.0.1:8013"},
		LogOutput:    os.Stderr,
	})
	if err != nil {
		log.Fatal(err) // e.g. proxy_on_configure returned false
	}
	res, err := h.Worker(0).Request(ctx, wasmhost.Request{Headers: [][2]string{
		{":authority", "app.shop.svc.cluster.local"}, {":path", "/"}, {":method", "GET"},
	}})
	if err != nil {
		log.Fatal(err) // the VM trapped
	}
	fmt.Println(res.RequestAction, h.Module().EntriesPerRequest(), h.Stats().GuestEntries)
	if err := h.Close(ctx); err != nil {
		log.Fatal(err)
	}
}
