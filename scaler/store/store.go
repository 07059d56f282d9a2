// Package store keeps what reqcount-scaler knows about each target (a
// Kubernetes service in a namespace): when it was last reported, and the counts
// reported in each second of the last MaxWindow, in a ring of one-second
// buckets. It answers the two questions KEDA asks (is the target active over a
// window, what is its request rate over a window) and tells subscribers the
// moment a count arrives for a target.
//
// Memory is bounded: at most MaxTargets targets with counts, each holding
// MaxWindow/Resolution buckets of 4 bytes. A target reported nothing for
// MaxWindow is forgotten by Sweep, or when room is needed for a new one. When
// every target is live and there is no room, Add refuses the whole batch with
// ErrFull and counts nothing of it (the sender keeps the counts and retries).
package store

import (
	"errors"
	"math"
	"sync"
	"time"

	"github.com/reqcount/reqcount/messages"
)

// ErrFull is returned by Add when the messages name targets the store has no
// room for. Nothing of the batch was counted.
var ErrFull = errors.New("store: too many targets")

// Key names a target: a Kubernetes service and its namespace.
type Key struct {
	Service, Namespace string
}

// String returns "service.namespace".
func (k Key) String() string { return k.Service + "." + k.Namespace }

// Defaults of Options.
const (
	DefaultMaxTargets = 10000
	DefaultMaxWindow  = 5 * time.Minute
	DefaultResolution = time.Second
)

// Options configures a Store. The zero value uses the defaults.
type Options struct {
	// MaxTargets bounds the targets with counts. Default DefaultMaxTargets.
	MaxTargets int
	// MaxWindow is the longest window Active and Rate answer for, and how long
	// an unreported target is kept. Default DefaultMaxWindow.
	MaxWindow time.Duration
	// Resolution is the width of a bucket. Default DefaultResolution (1s).
	// MaxWindow must be a whole number of Resolutions.
	Resolution time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Stats counts what the store did.
type Stats struct {
	// Targets is the number of targets held now.
	Targets int
	// Subscribers is the number of open subscriptions.
	Subscribers int
	// Messages and Counts are the messages added and the sum of their counts.
	Messages, Counts uint64
	// Refused is the number of messages refused with ErrFull.
	Refused uint64
	// Evicted is the number of targets forgotten after MaxWindow of silence.
	Evicted uint64
}

// Store is safe for concurrent use. Create one with New.
type Store struct {
	maxTargets int
	slots      int64 // buckets per target
	res        int64 // bucket width, ns
	window     time.Duration
	now        func() time.Time

	mu      sync.Mutex
	targets map[Key]*target
	subs    map[Key]map[*Subscription]struct{}
	nsubs   int
	stats   Stats
	// swept is when makeRoomLocked last swept: with every target live, a full
	// store sweeps at most once per Resolution, not on every Add.
	swept int64
}

// target is one key's state. All fields are guarded by Store.mu.
type target struct {
	last    int64    // unix ns of the newest arrival
	head    int64    // bucket number (unix ns / res) of the newest bucket written
	buckets []uint32 // ring: bucket b lives at b % slots
}

// New returns a store configured by opts, or an error naming the bad option.
func New(opts Options) (*Store, error) {
	if opts.MaxTargets == 0 {
		opts.MaxTargets = DefaultMaxTargets
	}
	if opts.MaxWindow == 0 {
		opts.MaxWindow = DefaultMaxWindow
	}
	if opts.Resolution == 0 {
		opts.Resolution = DefaultResolution
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	switch {
	case opts.MaxTargets < 1:
		return nil, errors.New("store: MaxTargets must be positive")
	case opts.Resolution < time.Millisecond:
		return nil, errors.New("store: Resolution must be at least 1ms")
	case opts.MaxWindow < opts.Resolution || opts.MaxWindow%opts.Resolution != 0:
		return nil, errors.New("store: MaxWindow must be a positive whole number of Resolutions")
	case opts.MaxWindow/opts.Resolution > 1<<20:
		return nil, errors.New("store: MaxWindow/Resolution must be at most 1048576 buckets")
	}
	return &Store{
		maxTargets: opts.MaxTargets,
		slots:      int64(opts.MaxWindow / opts.Resolution),
		res:        int64(opts.Resolution),
		window:     opts.MaxWindow,
		now:        opts.Now,
		targets:    make(map[Key]*target),
		subs:       make(map[Key]map[*Subscription]struct{}),
	}, nil
}

// MaxWindow returns the longest window the store answers for.
func (s *Store) MaxWindow() time.Duration { return s.window }

// MaxTargets returns the bound on targets.
func (s *Store) MaxTargets() int { return s.maxTargets }

// Resolution returns the width of a bucket.
func (s *Store) Resolution() time.Duration { return time.Duration(s.res) }

// Add counts msgs, which must have passed messages.RequestCount.Validate, and
// wakes the subscribers of their targets. Either all of msgs are counted or,
// with ErrFull, none.
func (s *Store) Add(msgs []messages.RequestCount) error {
	now := s.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.makeRoomLocked(msgs, now); err != nil {
		s.stats.Refused += uint64(len(msgs))
		return err
	}
	for _, m := range msgs {
		k := Key{m.Svc, m.Namespace}
		t := s.targets[k]
		if t == nil {
			t = &target{buckets: make([]uint32, s.slots), head: now / s.res}
			s.targets[k] = t
		}
		s.addLocked(t, now, m.Count)
		s.stats.Messages++
		s.stats.Counts += uint64(m.Count)
		for sub := range s.subs[k] {
			select {
			case sub.c <- struct{}{}:
			default: // already signalled, not yet read
			}
		}
	}
	return nil
}

// makeRoomLocked makes sure the targets of msgs fit, evicting silent ones if
// needed.
func (s *Store) makeRoomLocked(msgs []messages.RequestCount, now int64) error {
	need := 0
	var seen map[Key]bool
	for _, m := range msgs {
		k := Key{m.Svc, m.Namespace}
		if s.targets[k] != nil {
			continue
		}
		if len(msgs) > 1 {
			if seen == nil {
				seen = make(map[Key]bool)
			}
			if seen[k] {
				continue
			}
			seen[k] = true
		}
		need++
	}
	if len(s.targets)+need <= s.maxTargets {
		return nil
	}
	if now-s.swept >= s.res {
		s.swept = now
		s.sweepLocked(now)
	}
	if len(s.targets)+need <= s.maxTargets {
		return nil
	}
	return ErrFull
}

// addLocked adds count to t's bucket of now, clearing the buckets between
// its newest and now.
func (s *Store) addLocked(t *target, now int64, count int) {
	b := now / s.res
	if b > t.head {
		s.advanceLocked(t, b)
	}
	// An arrival can only be older than head if the clock went back; it then
	// counts in the newest bucket, so nothing is lost.
	i := t.head % s.slots
	if c := uint64(t.buckets[i]) + uint64(count); c <= math.MaxUint32 {
		t.buckets[i] = uint32(c)
	} else {
		t.buckets[i] = math.MaxUint32
	}
	if now > t.last {
		t.last = now
	}
}

// advanceLocked moves t's newest bucket to b, zeroing the buckets passed.
func (s *Store) advanceLocked(t *target, b int64) {
	if b-t.head >= s.slots {
		clear(t.buckets)
	} else {
		for x := t.head + 1; x <= b; x++ {
			t.buckets[x%s.slots] = 0
		}
	}
	t.head = b
}

// Sweep forgets the targets reported nothing for MaxWindow and returns how
// many it forgot. Run it now and then (the command does, every MaxWindow);
// Add also runs it when it needs room.
func (s *Store) Sweep() int {
	now := s.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sweepLocked(now)
}

func (s *Store) sweepLocked(now int64) int {
	n := 0
	for k, t := range s.targets {
		if now-t.last >= int64(s.window) {
			delete(s.targets, k)
			n++
		}
	}
	s.stats.Evicted += uint64(n)
	return n
}

// Last returns when k was last reported, and false if the store holds no
// counts for it (never reported, or forgotten after MaxWindow).
func (s *Store) Last(k Key) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.targets[k]
	if t == nil {
		return time.Time{}, false
	}
	return time.Unix(0, t.last), true
}

// Active reports whether k was reported within the last window, and, if so,
// how long it stays active without another report. Windows longer than
// MaxWindow are answered as MaxWindow.
func (s *Store) Active(k Key, window time.Duration) (bool, time.Duration) {
	window = min(window, s.window)
	now := s.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.targets[k]
	if t == nil {
		return false, 0
	}
	left := t.last + int64(window) - now
	if left <= 0 {
		return false, 0
	}
	return true, time.Duration(left)
}

// Sum returns the counts reported for k in the last window, rounded to whole
// buckets: the bucket of now and the window/Resolution - 1 before it. Windows
// longer than MaxWindow are answered as MaxWindow.
func (s *Store) Sum(k Key, window time.Duration) uint64 {
	n := s.buckets(window)
	b := s.now().UnixNano() / s.res
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.targets[k]
	if t == nil {
		return 0
	}
	// The buckets (b-n, b] that the ring still holds: (head-slots, head].
	from, to := max(b-n+1, t.head-s.slots+1), min(b, t.head)
	var sum uint64
	for x := from; x <= to; x++ {
		sum += uint64(t.buckets[x%s.slots])
	}
	return sum
}

// Rate returns the requests per second reported for k over the last window:
// Sum(k, window) divided by the window rounded to whole buckets.
func (s *Store) Rate(k Key, window time.Duration) float64 {
	return float64(s.Sum(k, window)) / (float64(s.buckets(window)*s.res) / float64(time.Second))
}

// buckets is window in whole buckets: at least one, at most MaxWindow's.
func (s *Store) buckets(window time.Duration) int64 {
	return max(int64(min(window, s.window))/s.res, 1)
}

// Subscription is told when counts arrive for its key. Read C; Close it when
// done.
type Subscription struct {
	s *Store
	k Key
	c chan struct{}
}

// C receives a value after one or more Adds for the key; signals that arrive
// before the last one was read are merged.
func (sub *Subscription) C() <-chan struct{} { return sub.c }

// Close ends the subscription. It is safe to call more than once.
func (sub *Subscription) Close() {
	s := sub.s
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.subs[sub.k]
	if _, ok := set[sub]; !ok {
		return
	}
	delete(set, sub)
	s.nsubs--
	if len(set) == 0 {
		delete(s.subs, sub.k)
	}
}

// Subscribe returns a subscription to k's arrivals.
func (s *Store) Subscribe(k Key) *Subscription {
	sub := &Subscription{s: s, k: k, c: make(chan struct{}, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.subs[k]
	if set == nil {
		set = make(map[*Subscription]struct{})
		s.subs[k] = set
	}
	set[sub] = struct{}{}
	s.nsubs++
	return sub
}

// Stats returns a snapshot of the store's counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Targets = len(s.targets)
	st.Subscribers = s.nsubs
	return st
}
