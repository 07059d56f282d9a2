package merge

import (
	"fmt"
	"strconv"
)

// keySeq is the shared-data key of the worker sequence: "v1 <last number>".
const keySeq = "reqcount.v1.seq"

// NewWorkerID returns a worker id no other VM of the Envoy has had while its
// shared data lived: the next number of a sequence in shared data, taken by
// compare-and-swap (so two VMs starting together never get the same one,
// whatever their random sources give), followed by random's low 32 bits,
// 16 hex digits in all. Envoy's random_get is real randomness, but a host
// with a fixed seed (wazero's default source) gives every VM the same bytes:
// with random ids alone every worker then believed it held the lease, and
// the one voice became one per worker (TestWorkerIDsUnique, and the e2e
// TestSimFixedSeed, break without it).
func NewWorkerID(s Store, random uint64) (string, error) {
	var n uint64
	err := update(s, keySeq, []byte("v1 0"), func(v []byte) ([]byte, bool, error) {
		f, rest := nextField(v)
		num, _ := nextField(rest)
		last, err := strconv.ParseUint(string(num), 10, 64)
		if string(f) != "v1" || err != nil {
			return nil, false, fmt.Errorf("%s: unreadable value %q", keySeq, v)
		}
		n = last + 1
		return strconv.AppendUint([]byte("v1 "), n, 10), true, nil
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%08x%08x", uint32(n), uint32(random)), nil
}
