// Package coalesce turns a stream of changes into batches of work: keys marked changed are
// handed over together, each once however often it changed. Two ways to decide when:
//   - trailing (New): after the changes have paused for a quiet period or, for a stream that
//     never pauses, after a maximum delay;
//   - leading (NewLeading): a key that was not handed over within the window goes at once;
//     its changes within the window after that go together at the window's end. An idle
//     key costs no wait, and a burst of changes within one window at most two hand-overs.
//
// Both controllers (registry services to ServiceEntries, traffic rules to EnvoyFilters) use it.
package coalesce

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// Queue collects changed keys. Create it with New and run it with Run.
type Queue[K comparable] struct {
	debounce, maxDelay time.Duration
	// window is the leading mode's; 0 for trailing.
	window time.Duration
	// handed holds, in leading mode, when each key was last handed over, for keys handed
	// over within the window.
	handed map[K]time.Time

	mu      sync.Mutex
	pending map[K]change // key -> its earliest change not handed over yet
	// order holds every pending key once, as a heap by seq, so a limited take finds the
	// oldest keys without sorting all of them: an initial sync has every host pending.
	order       order[K]
	seq         uint64    // numbers the changes, so that order survives equal times
	first, last time.Time // earliest and latest change pending
	poked       bool      // a flush is wanted even without keys
	wake        chan struct{}
}

// change is a pending key's earliest change not handed over yet.
type change struct {
	at  time.Time
	seq uint64
}

// New returns a queue that hands keys over once no change came for debounce, or maxDelay after
// the earliest change pending.
func New[K comparable](debounce, maxDelay time.Duration) *Queue[K] {
	return &Queue[K]{debounce: debounce, maxDelay: maxDelay, pending: map[K]change{}, wake: make(chan struct{}, 1)}
}

// NewLeading returns a queue that hands a key over at once unless it was handed over within
// the window; then at the window's end.
func NewLeading[K comparable](window time.Duration) *Queue[K] {
	return &Queue[K]{window: window, pending: map[K]change{}, handed: map[K]time.Time{}, wake: make(chan struct{}, 1)}
}

// Add marks keys changed now.
func (q *Queue[K]) Add(keys ...K) {
	if len(keys) == 0 {
		return
	}
	now := time.Now()
	q.mu.Lock()
	if len(q.pending) == 0 {
		q.first = now
	}
	q.last = now
	for _, k := range keys {
		if _, ok := q.pending[k]; !ok {
			q.seq++
			q.pending[k] = change{at: now, seq: q.seq}
			heap.Push(&q.order, entry[K]{key: k, seq: q.seq})
		}
	}
	q.mu.Unlock()
	q.signal()
}

// Poke asks for a flush as soon as nothing is pending, with whatever is due then (possibly
// nothing): for work that depends on more than the keys.
func (q *Queue[K]) Poke() {
	q.mu.Lock()
	q.poked = true
	q.mu.Unlock()
	q.signal()
}

func (q *Queue[K]) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Run calls flush with every batch (key -> its earliest change) until ctx ends. Calls never
// overlap; keys marked during a flush go into the next batch.
func (q *Queue[K]) Run(ctx context.Context, flush func(batch map[K]time.Time)) {
	q.RunLimited(ctx, nil, flush)
}

// RunLimited is Run with batches of at most limit() keys (no limit when limit is nil or
// returns 0 or less): the keys with the earliest changes go first, in the order they were
// marked, and the others stay pending, due at once, with their earliest change. A consumer
// that can only take so much at a time gets every key in turn, each with its latest state
// when it is taken, instead of one batch whose keys all change again before its last one is
// done.
func (q *Queue[K]) RunLimited(ctx context.Context, limit func() int, flush func(batch map[K]time.Time)) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		n := 0
		if limit != nil {
			n = limit()
		}
		batch, wait, due := q.take(time.Now(), n)
		if due {
			flush(batch)
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// take returns the batch (at most limit keys when limit is positive) when it is due, or how
// long to wait for it.
func (q *Queue[K]) take(now time.Time, limit int) (batch map[K]time.Time, wait time.Duration, due bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		if !q.poked {
			return nil, time.Hour, false
		}
		q.poked = false
		return map[K]time.Time{}, 0, true
	}
	if q.window > 0 {
		return q.takeLeading(now, limit)
	}
	quiet, deadline := q.last.Add(q.debounce), q.first.Add(q.maxDelay)
	if now.Before(quiet) && now.Before(deadline) {
		return nil, min(quiet.Sub(now), deadline.Sub(now)), false
	}
	// Keys left over by a limit stay due: first, and so the deadline, are only reset once
	// nothing is pending.
	batch = q.takeOldest(func(K, change) bool { return true }, limit)
	q.poked = false
	return batch, 0, true
}

// takeOldest removes from pending and returns the keys eligible says may go, at most limit
// (when positive) of them, earliest change first; q.mu is held. eligible sees every pending
// key when the result is empty (takeLeading's wait depends on it), otherwise only those up to
// the last one taken.
func (q *Queue[K]) takeOldest(eligible func(K, change) bool, limit int) map[K]time.Time {
	if limit <= 0 || limit >= len(q.pending) {
		return q.takeAll(eligible)
	}
	batch := make(map[K]time.Time, limit)
	var skipped []entry[K]
	for len(batch) < limit && len(q.order) > 0 {
		e := heap.Pop(&q.order).(entry[K])
		c := q.pending[e.key]
		if !eligible(e.key, c) {
			skipped = append(skipped, e)
			continue
		}
		batch[e.key] = c.at
		delete(q.pending, e.key)
	}
	for _, e := range skipped {
		heap.Push(&q.order, e)
	}
	if len(batch) == 0 {
		return nil
	}
	return batch
}

// takeAll is takeOldest without a limit: one pass over pending, and the order rebuilt from
// the keys left.
func (q *Queue[K]) takeAll(eligible func(K, change) bool) map[K]time.Time {
	var batch map[K]time.Time
	for k, c := range q.pending {
		if !eligible(k, c) {
			continue
		}
		if batch == nil {
			batch = make(map[K]time.Time, len(q.pending))
		}
		batch[k] = c.at
		delete(q.pending, k)
	}
	if batch != nil {
		q.order = q.order[:0]
		for k, c := range q.pending {
			q.order = append(q.order, entry[K]{key: k, seq: c.seq})
		}
		heap.Init(&q.order)
	}
	return batch
}

// takeLeading hands over the keys not handed over within the window (at most limit of them
// when limit is positive), and says when the next of the others is due; q.mu is held.
func (q *Queue[K]) takeLeading(now time.Time, limit int) (batch map[K]time.Time, wait time.Duration, due bool) {
	wait = time.Hour
	batch = q.takeOldest(func(k K, _ change) bool {
		if last, ok := q.handed[k]; ok && now.Sub(last) < q.window {
			wait = min(wait, last.Add(q.window).Sub(now))
			return false
		}
		return true
	}, limit)
	if batch == nil {
		return nil, wait, false
	}
	// Hand-overs older than the window no longer hold anything back.
	for k, last := range q.handed {
		if now.Sub(last) >= q.window {
			delete(q.handed, k)
		}
	}
	for k := range batch {
		q.handed[k] = now
	}
	q.poked = false
	return batch, 0, true
}

// entry is a pending key in the order of its change.
type entry[K comparable] struct {
	key K
	seq uint64
}

// order is a min-heap of entries by seq (container/heap).
type order[K comparable] []entry[K]

func (h order[K]) Len() int           { return len(h) }
func (h order[K]) Less(i, j int) bool { return h[i].seq < h[j].seq }
func (h order[K]) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *order[K]) Push(x any)        { *h = append(*h, x.(entry[K])) }
func (h *order[K]) Pop() any {
	old := *h
	last := old[len(old)-1]
	old[len(old)-1] = entry[K]{} // drop the key's reference
	*h = old[:len(old)-1]
	return last
}
