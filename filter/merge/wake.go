package merge

// ClaimWake reports whether this worker may send key's wake-up at nowMs: no
// worker has sent one in the last afterMs. A successful claim records nowMs for
// the key (about the newest max keys are kept, over wakeShards keys).
func ClaimWake(s Store, key string, nowMs, afterMs int64, max int) (bool, error) {
	claimed := false
	k := WakeKey(ShardOf(key, wakeShards))
	max = (max + wakeShards - 1) / wakeShards
	err := update(s, k, []byte("v1\n"), func(v []byte) ([]byte, bool, error) {
		ws, err := ParseWakes(v)
		if err != nil {
			return nil, false, err
		}
		if t, ok := ws[key]; ok && nowMs-t < afterMs {
			claimed = false
			return nil, false, nil
		}
		ws[key] = nowMs
		claimed = true
		return AppendWakes(nil, ws, max), true, nil
	})
	return claimed && err == nil, err
}
