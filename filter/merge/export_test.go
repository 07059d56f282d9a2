package merge

// Snapshot returns a copy of the worker's outbox, all shards in one, as it
// holds it (published or not). Keys are in one shard each.
func (w *Worker) Snapshot() Outbox {
	o := Outbox{Entries: map[string]Cum{}}
	for _, sh := range w.shards {
		for k, c := range sh.out.Entries {
			o.Entries[k] = c
		}
	}
	return o
}

// Published returns the outbox entries as last written, all shards.
func (w *Worker) Published() map[string]Cum {
	out := map[string]Cum{}
	for _, sh := range w.shards {
		for k, c := range sh.out.Entries {
			if c.Pub > 0 {
				out[k] = Cum{Gen: c.Gen, N: c.Pub}
			}
		}
	}
	return out
}

// CallParts returns the parts call id carries (for tests and logs).
func (l *Leader) CallParts(id uint64) []Part { return append([]Part(nil), l.calls[id]...) }
