// Package streamhook is where the filter's build of the SDK (filter/_sdkabi)
// and the plugin meet for the streams the plugin hands one shared context
// (no per-stream state, no SDK bookkeeping): which stream a request-headers
// callback is for, and which streams' end the plugin wants to hear of. Plain
// Go, no SDK: the build's copy of the SDK imports it, as it imports
// filter/idmap.
package streamhook

import "github.com/reqcount/reqcount/filter/idmap"

// Current is the context id of the stream whose callback runs: set by the
// SDK glue before it calls the shared context's OnHttpRequestHeaders (and, in
// native tests, by the per-stream wrapper).
var Current uint32

// Watched are the streams whose end (proxy_on_done) the plugin wants to
// hear of, through Done. Empty, a stream's end costs one length check.
var Watched idmap.Map

// Done, when set, is called for a watched stream's proxy_on_done, with its
// id and the value Watch took, inside that callback (the stream's
// properties can still be read); the stream is then no longer watched.
var Done func(id, v uint32)

// Watch asks to hear of stream id's end; v is the caller's (Done gets it).
func Watch(id, v uint32) { Watched.Put(id, v) }

// Ended is the glue's (and the native wrapper's) call at stream id's
// proxy_on_done: it calls Done if the stream is watched.
func Ended(id uint32) {
	if Watched.Len() == 0 {
		return
	}
	v, ok := Watched.Get(id)
	if !ok {
		return
	}
	Watched.Delete(id)
	if Done != nil {
		Done(id, v)
	}
}
