//go:build wasip1

// This file is not part of the reqcount module: build.sh copies it into a
// build-time copy of github.com/tetratelabs/proxy-wasm-go-sdk v0.24.0
// (proxywasm/internal). See README.md.

package internal

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/idmap"
)

// Shared streams: the SDK keeps every HTTP stream in Go maps (its context, and
// its root for calls dispatched from it): two inserts when the stream is
// created, four lookups and deletes when it goes, a lookup per callback. In a
// wasm VM those map operations cost about as much as all the rest of the
// request-count filter's work per request (measured: 1 633 → 845 ns per request
// in the e2e host without them).
//
// A plugin context that hands every stream the same HttpContext and keeps no
// per-stream state says so by implementing sharedStreams. Its streams then skip
// the SDK's maps: the exports remember each one's root in an idmap.Map (an
// insert, a lookup per callback and a delete, without hashing interfaces or
// tombstones) and call the root's shared context directly. While such a stream's
// callback runs, the SDK's active context is the root, not the stream: a call
// dispatched from it is the root's (registered with the root, answered with the
// root as effective context), which is what Envoy does with it anyway
// (proxy_http_call from a stream is bound to the root context). Other plugin
// contexts, and TCP streams, go through the SDK as before.

// sharedStreams is implemented by a plugin context whose HTTP streams all use
// the one HttpContext it returns, created with the plugin context and kept for
// its life; NewHttpContext is then not called for its streams.
type sharedStreams interface {
	SharedHttpContext() types.HttpContext
}

// sharedRoot is a root context whose plugin context implements sharedStreams.
type sharedRoot struct {
	id  uint32
	ctx types.HttpContext
}

var (
	// sharedRoots are the live roots with shared streams: usually one.
	sharedRoots []sharedRoot
	// streamRoots maps each live shared stream to its root's id.
	streamRoots idmap.Map
)

// rootCreated registers a new root context's shared HttpContext, if its plugin
// context has one. Called after the SDK created the root.
func rootCreated(id uint32) {
	if r, ok := currentState.pluginContexts[id]; ok {
		if s, ok := r.context.(sharedStreams); ok {
			sharedRoots = append(sharedRoots, sharedRoot{id: id, ctx: s.SharedHttpContext()})
		}
	}
}

// sharedRootContext returns the shared HttpContext of root id, if it has one.
func sharedRootContext(id uint32) (types.HttpContext, bool) {
	for i := range sharedRoots {
		if sharedRoots[i].id == id {
			return sharedRoots[i].ctx, true
		}
	}
	return nil, false
}

// createStream takes a new stream of a root with shared streams, reporting
// whether it did; the SDK creates the others.
func createStream(id, rootID uint32) bool {
	if _, ok := sharedRootContext(rootID); !ok {
		return false
	}
	streamRoots.Put(id, rootID)
	return true
}

// sharedStream returns stream id's shared HttpContext and makes its root the
// SDK's active context, if id is a shared stream.
func sharedStream(id uint32) (types.HttpContext, bool) {
	rootID, ok := streamRoots.Get(id)
	if !ok {
		return nil, false
	}
	ctx, ok := sharedRootContext(rootID)
	if !ok {
		return nil, false // its root is gone: treat it as unknown, as the SDK would
	}
	currentState.setActiveContextID(rootID)
	return ctx, true
}

// deleteContext forgets a shared stream, or a root with shared streams, and
// reports whether id was a shared stream (the SDK then has nothing to delete).
func deleteContext(id uint32) bool {
	if streamRoots.Delete(id) {
		return true
	}
	for i := range sharedRoots {
		if sharedRoots[i].id == id {
			sharedRoots = append(sharedRoots[:i], sharedRoots[i+1:]...)
			break
		}
	}
	return false
}
