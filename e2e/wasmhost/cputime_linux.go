//go:build linux

package wasmhost

import (
	"syscall"
	"unsafe"
)

// clockThreadCPUTime is Linux's CLOCK_THREAD_CPUTIME_ID.
const clockThreadCPUTime = 3

// threadCPU returns the CPU time the calling OS thread has run, in
// nanoseconds: time the kernel ran it, not time it waited for a CPU (on a
// virtual machine, time the hypervisor gave another guest is steal, not the
// thread's). A timed guest call is locked to its thread (Worker.call).
func threadCPU() (int64, bool) {
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, false
	}
	return ts.Nano(), true
}
