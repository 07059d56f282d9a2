// Package sizeof measures the memory of the filter's structures for its
// reqcount.vm.bytes.* gauges.
package sizeof

import "unsafe"

// Slice is the memory of s's array: its capacity, not its length, since the
// room is held either way.
func Slice[E any](s []E) uint64 {
	var e E
	return uint64(cap(s)) * uint64(unsafe.Sizeof(e))
}
