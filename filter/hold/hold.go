// Package hold keeps the requests a worker holds while their destination is
// not known to be ready, and decides when to check each destination and when
// to let its requests go: plain Go, no SDK, so that every rule is tested
// natively (package main pauses and resumes the streams).
//
// The rules:
//   - A request is held under the cluster Envoy routes it to; a worker holds
//     at most Max requests (beyond it Hold refuses, and the request passes).
//   - While a cluster has held requests, it is checked (a probe call of the
//     plugin's) at most every ProbeEvery, one check in flight at a time.
//   - A check answered by the service makes the cluster ready: every request
//     held for it is let go, oldest first. A check answered by Envoy itself
//     (no healthy host, connect failure, its timeout) or reset means not yet.
//   - A request held for Timeout is let go whatever the checks say (Envoy
//     then routes it as it would have); a request whose client went away is
//     forgotten; at shutdown every request is let go.
//
// Nothing here allocates per request once its slices have grown, but a
// cluster's first hold (its name); nothing holds a pointer per request.
package hold

import "github.com/reqcount/reqcount/filter/idmap"

// Options configure a Holder.
type Options struct {
	// Max is the most requests held at once (at least 1).
	Max int
	// TimeoutMs is how long a request is held at most.
	TimeoutMs int64
	// ProbeEveryMs is the shortest time between two checks of a cluster.
	ProbeEveryMs int64
}

// Stats are running totals, and what is held now.
type Stats struct {
	// Held counts requests held; Resumed those let go because their cluster
	// became ready; TimedOut those let go at Timeout; Abandoned those whose
	// client went away while held; OverBound those not held because Max were;
	// Released those let go at shutdown.
	Held, Resumed, TimedOut, Abandoned, OverBound, Released uint64
	// Probes counts checks sent, ProbesReady those answered ready.
	Probes, ProbesReady uint64
	// Now is the number of requests held now.
	Now int
}

// Request is one held request, as let go.
type Request struct {
	// ID is the stream's context id.
	ID uint32
	// Tag is the caller's (package main: the table entry of the request's
	// key, to mark it ready).
	Tag uint64
	// HeldMs is how long it was held.
	HeldMs int64
}

type held struct {
	id      uint32
	cluster int32
	tag     uint64
	sinceMs int64
}

type cluster struct {
	name string
	// queue holds the indices into Holder.reqs of its requests, oldest first;
	// a request let go or forgotten leaves a stale index (its id no longer
	// matches), skipped and dropped when the queue is walked.
	queue        []int32
	ids          []uint32 // the ids queue's entries had when queued
	live         int      // requests held for it now
	probing      bool
	lastProbeMs  int64
	probedBefore bool
}

// Holder is one worker's held requests. Not safe for concurrent use.
type Holder struct {
	opts     Options
	reqs     []held // slots; id 0: free
	free     []int32
	byID     idmap.Map // id → slot+1
	clusters []*cluster
	byName   map[string]int32
	stats    Stats
	out      []Request // reused result of the calls that let requests go
}

// PresizeMax bounds what New sets aside up front: room for Max requests,
// up to this many (about 40 bytes each).
const PresizeMax = 16384

// New returns a Holder, with room for Max requests (up to PresizeMax) made
// at once: a burst of holds then makes no garbage of outgrown tables, which a
// VM's memory would keep for good.
func New(opts Options) *Holder {
	opts.Max = max(opts.Max, 1)
	h := &Holder{opts: opts, byName: map[string]int32{}}
	n := min(opts.Max, PresizeMax)
	h.reqs = make([]held, 0, n)
	h.free = make([]int32, 0, n)
	h.byID.Reserve(n)
	return h
}

// Stats returns the running totals.
func (h *Holder) Stats() Stats { s := h.stats; s.Now = h.byID.Len(); return s }

// Holding reports whether request id is held.
func (h *Holder) Holding(id uint32) bool { _, ok := h.byID.Get(id); return ok }

// Hold holds request id (tag is the caller's) for clusterName (read only
// during the call) at nowMs. It
// returns false, holding nothing, when Max requests are held (or id is held
// already).
func (h *Holder) Hold(id uint32, tag uint64, clusterName []byte, nowMs int64) bool {
	if id == 0 {
		return false
	}
	if _, dup := h.byID.Get(id); dup {
		return false
	}
	if h.byID.Len() >= h.opts.Max {
		h.stats.OverBound++
		return false
	}
	ci, ok := h.byName[string(clusterName)] // no string made for a known cluster
	if !ok {
		name := string(clusterName)
		ci = int32(len(h.clusters))
		h.clusters = append(h.clusters, &cluster{name: name})
		h.byName[name] = ci
	}
	var slot int32
	if n := len(h.free); n > 0 {
		slot = h.free[n-1]
		h.free = h.free[:n-1]
	} else {
		slot = int32(len(h.reqs))
		h.reqs = append(h.reqs, held{})
	}
	h.reqs[slot] = held{id: id, cluster: ci, tag: tag, sinceMs: nowMs}
	h.byID.Put(id, uint32(slot)+1)
	c := h.clusters[ci]
	c.queue = append(c.queue, slot)
	c.ids = append(c.ids, id)
	c.live++
	h.stats.Held++
	return true
}

// release frees slot, returning the request as let go at nowMs.
func (h *Holder) release(slot int32, nowMs int64) Request {
	r := h.reqs[slot]
	h.byID.Delete(r.id)
	h.clusters[r.cluster].live--
	h.reqs[slot] = held{}
	h.free = append(h.free, slot)
	return Request{ID: r.id, Tag: r.tag, HeldMs: nowMs - r.sinceMs}
}

// Forget drops request id, whose client went away: it reports whether it
// was held.
func (h *Holder) Forget(id uint32) bool {
	v, ok := h.byID.Get(id)
	if !ok {
		return false
	}
	h.release(int32(v-1), 0)
	h.stats.Abandoned++
	return true
}

// DueProbes appends to dst the clusters to check at nowMs: those with held
// requests, no check in flight, and none sent within ProbeEvery. The caller
// sends each and calls ProbeSent (or ProbeFailed if it could not).
func (h *Holder) DueProbes(dst []string, nowMs int64) []string {
	for _, c := range h.clusters {
		if c.live > 0 && !c.probing && (!c.probedBefore || nowMs-c.lastProbeMs >= h.opts.ProbeEveryMs) {
			dst = append(dst, c.name)
		}
	}
	return dst
}

// ProbeSent records a check of clusterName sent at nowMs.
func (h *Holder) ProbeSent(clusterName string, nowMs int64) {
	if ci, ok := h.byName[clusterName]; ok {
		c := h.clusters[ci]
		c.probing, c.probedBefore, c.lastProbeMs = true, true, nowMs
		h.stats.Probes++
	}
}

// ProbeDone settles the check of clusterName: ready means the service
// answered. When ready it returns the cluster's held requests, oldest first
// (valid until the next call that lets requests go), to be let go.
func (h *Holder) ProbeDone(clusterName string, ready bool, nowMs int64) []Request {
	h.out = h.out[:0]
	ci, ok := h.byName[clusterName]
	if !ok {
		return h.out
	}
	c := h.clusters[ci]
	c.probing = false
	if !ready {
		return h.out
	}
	h.stats.ProbesReady++
	h.releaseQueue(c, nowMs, &h.stats.Resumed)
	return h.out
}

// releaseQueue lets every request held for c go, oldest first, into h.out,
// counting them in n.
func (h *Holder) releaseQueue(c *cluster, nowMs int64, n *uint64) {
	for i, slot := range c.queue {
		if r := h.reqs[slot]; r.id != 0 && r.id == c.ids[i] {
			h.out = append(h.out, h.release(slot, nowMs))
			*n++
		}
	}
	c.queue, c.ids = c.queue[:0], c.ids[:0]
}

// Expired returns the requests held for Timeout at nowMs, oldest first per
// cluster (valid until the next call that lets requests go), to be let go.
func (h *Holder) Expired(nowMs int64) []Request {
	h.out = h.out[:0]
	for _, c := range h.clusters {
		keep := 0
		for i, slot := range c.queue {
			r := h.reqs[slot]
			if r.id == 0 || r.id != c.ids[i] {
				continue // let go or forgotten: dropped from the queue
			}
			if nowMs-r.sinceMs >= h.opts.TimeoutMs {
				h.out = append(h.out, h.release(slot, nowMs))
				h.stats.TimedOut++
				continue
			}
			c.queue[keep], c.ids[keep] = slot, c.ids[i]
			keep++
		}
		c.queue, c.ids = c.queue[:keep], c.ids[:keep]
	}
	return h.out
}

// ReleaseAll returns every held request, oldest first per cluster (valid
// until the next call that lets requests go), to be let go: the plugin is
// shutting down.
func (h *Holder) ReleaseAll(nowMs int64) []Request {
	h.out = h.out[:0]
	for _, c := range h.clusters {
		h.releaseQueue(c, nowMs, &h.stats.Released)
	}
	return h.out
}
