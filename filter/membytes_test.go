package main

import (
	"fmt"
	"io"
	"log"
	"os"
	"testing"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/merge/mergetest"
)

// TestMemBytesGauges checks the reqcount.vm.bytes.* gauges on the native
// host: set at start, grown by keys once a flush interval has passed (not
// before: they are measured once per interval), the outbox and merged ones
// only with aggregate: envoy, and all back to 0 after the drain's last push.
func TestMemBytesGauges(t *testing.T) {
	tests := []struct {
		aggregate string
		grow      []int // indexes into memBytesNames that keys must grow
		zero      []int // and those that must stay 0
	}{
		{"worker", []int{memTable, memMemo, memSeries}, []int{memOutbox, memMerged}},
		{"envoy", []int{memTable, memMemo, memSeries, memOutbox, memMerged}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.aggregate, func(t *testing.T) {
			store := sharedDataStore
			sharedDataStore = mergetest.New()
			log.SetOutput(io.Discard)
			t.Cleanup(func() { sharedDataStore = store; log.SetOutput(os.Stderr) })
			conf := fmt.Sprintf(`{"cluster":"operator","aggregate":%q,"flush_interval":"2s","wake_after":"0s"}`, tt.aggregate)
			host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().
				WithVMContext(&vmContext{}).WithPluginConfiguration([]byte(conf)))
			defer reset()
			if host.StartVM() != types.OnVMStartStatusOK || host.StartPlugin() != types.OnPluginStartStatusOK {
				t.Fatalf("start failed: %v", host.GetErrorLogs())
			}
			gauge := func(i int) uint64 {
				t.Helper()
				v, err := host.GetGaugeMetric(memBytesNames[i])
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			var start [numMemBytes]uint64
			for i := range start {
				start[i] = gauge(i)
			}
			for i := range 500 {
				id := host.InitializeHttpContext()
				host.CallOnRequestHeaders(id, [][2]string{{":authority", fmt.Sprintf("svc-%d.ns", i)}, {":path", "/"}, {":method", "GET"}}, true)
				host.CompleteHttpContext(id)
			}
			slices := int(2000 / host.GetTickPeriod())
			for range slices - 1 {
				host.Tick()
			}
			for i := range start {
				if got := gauge(i); got != start[i] {
					t.Errorf("%s moved before a flush interval passed: %d → %d", memBytesNames[i], start[i], got)
				}
			}
			host.Tick()
			for _, i := range tt.grow {
				if got := gauge(i); got <= start[i] {
					t.Errorf("%s = %d after 500 keys and an interval, want above %d", memBytesNames[i], got, start[i])
				}
			}
			for _, i := range tt.zero {
				if got := gauge(i); got != 0 {
					t.Errorf("%s = %d, want 0 with aggregate: %s", memBytesNames[i], got, tt.aggregate)
				}
			}
			// The table's figure counts its entries and the keys' bytes.
			if got, least := gauge(memTable), uint64(500*len("svc-100.ns")); got < least {
				t.Errorf("%s = %d, want at least the keys' bytes %d", memBytesNames[memTable], got, least)
			}
			host.FinishVM()
			for range 4 * slices {
				host.Tick()
			}
			for i := range memBytesNames {
				if got := gauge(i); got != 0 {
					t.Errorf("%s = %d after the drain, want 0 (the VM's share taken back)", memBytesNames[i], got)
				}
			}
		})
	}
}
