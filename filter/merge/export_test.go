package merge

// Snapshot returns a copy of the worker's outbox, all shards in one, as it
// holds it (published or not). Keys are in one shard each.
func (w *Worker) Snapshot() Outbox {
	o := Outbox{Entries: map[string]Cum{}}
	for _, sh := range w.shards {
		if sh == nil {
			continue
		}
		sh.each(func(k []byte, e *outEntry) { o.Entries[string(k)] = Cum{Gen: e.gen, N: e.n, Pub: e.pub} })
	}
	return o
}

// Published returns the outbox entries as last written, all shards.
func (w *Worker) Published() map[string]Cum {
	out := map[string]Cum{}
	for _, sh := range w.shards {
		if sh == nil {
			continue
		}
		sh.each(func(k []byte, e *outEntry) {
			if e.pub > 0 {
				out[string(k)] = Cum{Gen: e.gen, N: e.pub}
			}
		})
	}
	return out
}

// CallParts returns the parts call id carries and has not settled (for tests
// and logs).
func (l *Leader) CallParts(id uint64) []Part {
	var parts []Part
	for _, f := range l.calls[id] {
		parts = append(parts, f.Part)
	}
	return parts
}

// each calls fn for every entry with counts (tests only).
func (sh *shard) each(fn func(key []byte, e *outEntry)) {
	for i := range sh.ents {
		if sh.ents[i].n > 0 {
			fn(sh.key(i), &sh.ents[i])
		}
	}
}
