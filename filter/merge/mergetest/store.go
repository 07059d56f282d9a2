// Package mergetest holds a shared-data store for native tests that follows
// Envoy's rules (proxy-wasm-cpp-host src/shared_data.cc, SharedData::set,
// FACTS.md §2), unlike the SDK's proxytest, where a CAS of 0 is not
// unconditional and a new key stores cas+1:
//
//   - a get returns the value with its CAS token;
//   - a set with CAS 0 is unconditional;
//   - a set with a non-zero CAS fails with CasMismatch if the key exists with
//     another token, and always succeeds if the key does not exist yet;
//   - every successful set gives the key a new token, from one counter for the
//     whole store that starts at 1 and skips 0 when it wraps.
//
// It is safe for concurrent use, as Envoy's is (one mutex).
package mergetest

import (
	"sync"

	"github.com/reqcount/reqcount/filter/merge"
)

// Store is Envoy's shared data for one vm_id, as a merge.Store.
type Store struct {
	mu      sync.Mutex
	m       map[string]entry
	nextCas uint32
	// Sets counts successful and failed sets.
	Sets int
	// FailSet, if set, is asked before every set: a non-nil error fails it
	// (a host error), leaving the value as it was.
	FailSet func(key string) error
}

type entry struct {
	v   []byte
	cas uint32
}

// New returns an empty store whose first token is 1.
func New() *Store { return &Store{m: map[string]entry{}, nextCas: 1} }

// Get returns a copy of key's value and its token; ok is false for a key
// never set.
func (s *Store) Get(key string) ([]byte, uint32, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok {
		return nil, 0, false, nil
	}
	return append([]byte(nil), e.v...), e.cas, true, nil
}

// Set stores value under Envoy's CAS rules (the package comment).
func (s *Store) Set(key string, value []byte, cas uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Sets++
	if s.FailSet != nil {
		if err := s.FailSet(key); err != nil {
			return err
		}
	}
	if e, ok := s.m[key]; ok && cas != 0 && cas != e.cas {
		return merge.ErrCasMismatch
	}
	s.m[key] = entry{append([]byte(nil), value...), s.nextCas}
	s.nextCas++
	if s.nextCas == 0 {
		s.nextCas = 1
	}
	return nil
}

// Keys returns the number of keys stored.
func (s *Store) Keys() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
