package coalesce

import (
	"context"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// run runs q, recording its batches, until the test ends.
func run(t *testing.T, q *Queue[string]) func() []map[string]time.Time {
	t.Helper()
	var mu sync.Mutex
	var batches []map[string]time.Time
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		q.Run(ctx, func(b map[string]time.Time) {
			mu.Lock()
			batches = append(batches, b)
			mu.Unlock()
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []map[string]time.Time {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(batches)
	}
}

func waitBatches(t *testing.T, got func() []map[string]time.Time, n int) []map[string]time.Time {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(got()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d batches, want %d", len(got()), n)
		}
		time.Sleep(time.Millisecond)
	}
	return got()
}

func TestBurstIsOneBatchWithEarliestTimes(t *testing.T) {
	q := New[string](30*time.Millisecond, time.Second)
	got := run(t, q)
	begin := time.Now()
	for range 20 {
		q.Add("a", "b")
		q.Add("a")
	}
	b := waitBatches(t, got, 1)[0]
	if keys := slices.Sorted(maps.Keys(b)); !slices.Equal(keys, []string{"a", "b"}) {
		t.Fatalf("batch %v", keys)
	}
	if d := b["a"].Sub(begin); d < 0 || d > 10*time.Millisecond {
		t.Errorf("a's time is %v after the first change, want its first change's", d)
	}
	time.Sleep(60 * time.Millisecond)
	if n := len(got()); n != 1 {
		t.Fatalf("%d batches for one burst", n)
	}
}

func TestMaxDelayBoundsAStream(t *testing.T) {
	q := New[string](50*time.Millisecond, 100*time.Millisecond)
	got := run(t, q)
	begin := time.Now()
	for len(got()) == 0 && time.Since(begin) < time.Second {
		q.Add("k") // every 10 ms: never quiet for 50
		time.Sleep(10 * time.Millisecond)
	}
	if d := time.Since(begin); len(got()) == 0 || d > 300*time.Millisecond {
		t.Fatalf("first batch after %v of a steady stream, want about the 100 ms maximum delay", d)
	}
}

func TestPokeFlushesWithoutKeys(t *testing.T) {
	q := New[string](time.Hour, time.Hour)
	got := run(t, q)
	q.Poke()
	if b := waitBatches(t, got, 1)[0]; len(b) != 0 {
		t.Fatalf("poke flushed %v", b)
	}
	// With keys pending, a poke waits for them: it does not cut the debounce short.
	q2 := New[string](50*time.Millisecond, time.Second)
	got2 := run(t, q2)
	q2.Add("k")
	q2.Poke()
	b := waitBatches(t, got2, 1)
	if len(b[0]) != 1 {
		t.Fatalf("first batch %v, want k", b[0])
	}
	time.Sleep(20 * time.Millisecond)
	if n := len(got2()); n != 1 {
		t.Fatalf("%d batches: the poke made one of its own", n)
	}
}

func TestLeadingHandsAnIdleKeyOverAtOnce(t *testing.T) {
	q := NewLeading[string](100 * time.Millisecond)
	got := run(t, q)
	begin := time.Now()
	q.Add("a")
	waitBatches(t, got, 1)
	if d := time.Since(begin); d > 20*time.Millisecond {
		t.Fatalf("an idle key waited %v", d)
	}
}

// A burst of changes to one key within the window costs two hand-overs: the first change at
// once, everything after it at the window's end, in order.
func TestLeadingBurstIsAtMostTwoHandOvers(t *testing.T) {
	q := NewLeading[string](100 * time.Millisecond)
	got := run(t, q)
	begin := time.Now()
	q.Add("a")
	time.Sleep(5 * time.Millisecond)
	second := time.Now()
	// Bounded by time, not a count of sleeps: on a busy machine sleeps run long, and a burst
	// past the window is rightly three hand-overs.
	for time.Since(begin) < 60*time.Millisecond {
		q.Add("a")
		time.Sleep(2 * time.Millisecond)
	}
	b := waitBatches(t, got, 2)
	if d := b[1]["a"].Sub(second); d < 0 || d > 5*time.Millisecond {
		t.Errorf("the trailing hand-over carries the time %v after its first change, want that change's", d)
	}
	time.Sleep(150 * time.Millisecond)
	if n := len(got()); n != 2 {
		t.Fatalf("%d hand-overs for a burst within the window, want 2", n)
	}
	if d := time.Since(begin); d < 100*time.Millisecond {
		t.Fatal("test too fast to mean anything")
	}
	// Other keys are not held back by a's window.
	q.Add("a")
	q.Add("b")
	b = waitBatches(t, got, 3)
	if _, ok := b[2]["b"]; !ok {
		t.Errorf("b waited for a: %v", b[2])
	}
}

func keysOf(b map[string]time.Time) []string { return slices.Sorted(maps.Keys(b)) }

// TestLimitedTakesGoInOrderOfFirstChange: with a limit, the keys marked first go first; a key
// marked again while pending keeps its place, and one marked after it was taken goes behind
// every key pending then.
func TestLimitedTakesGoInOrderOfFirstChange(t *testing.T) {
	for _, tc := range []struct {
		name string
		q    *Queue[string]
	}{
		{"trailing", New[string](time.Millisecond, time.Second)},
		{"leading", NewLeading[string](time.Millisecond)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			for _, k := range []string{"c", "a", "e", "c", "b", "d"} {
				q.Add(k)
			}
			later := time.Now().Add(time.Minute)
			step := func(want ...string) {
				t.Helper()
				b, _, due := q.take(later, 2)
				if len(want) == 0 {
					if due && len(b) > 0 {
						t.Fatalf("took %v, want nothing", keysOf(b))
					}
					return
				}
				if !due || !slices.Equal(keysOf(b), want) {
					t.Fatalf("took %v (due %v), want %v", keysOf(b), due, want)
				}
				later = later.Add(time.Minute) // past the leading window of what was taken
			}
			step("a", "c")
			q.Add("c") // taken already: behind e, b, d
			step("b", "e")
			step("c", "d")
			step()
		})
	}
}

// TestRunLimitedKeepsBatchesWithinTheLimit: every batch is within the consumer's limit, and
// every key is handed over once.
func TestRunLimitedKeepsBatchesWithinTheLimit(t *testing.T) {
	q := New[int](time.Millisecond, 10*time.Millisecond)
	for i := range 25 {
		q.Add(i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := map[int]int{}
	var sizes []int
	done := make(chan struct{})
	go func() {
		q.RunLimited(ctx, func() int { return 4 }, func(b map[int]time.Time) {
			sizes = append(sizes, len(b))
			for k := range b {
				seen[k]++
			}
			if len(seen) == 25 {
				close(done)
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%d of 25 keys handed over", len(seen))
	}
	cancel()
	for _, n := range sizes {
		if n > 4 {
			t.Fatalf("batch sizes %v, want at most 4", sizes)
		}
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("key %d handed over %d times", k, n)
		}
	}
	if len(sizes) != 7 {
		t.Errorf("batch sizes %v, want 6 batches of 4 and one of 1", sizes)
	}
}

// TestLimitedTakesFollowTheOrderOfFirstChanges takes 1,000 keys in small batches while taken
// keys are marked again: every batch is the oldest pending keys, as a list in marking order
// says.
func TestLimitedTakesFollowTheOrderOfFirstChanges(t *testing.T) {
	q := New[int](time.Millisecond, time.Second)
	rnd := rand.New(rand.NewPCG(1, 2))
	var model []int // pending keys, first marked first
	mark := func(k int) {
		if !slices.Contains(model, k) {
			model = append(model, k)
		}
		q.Add(k)
	}
	for _, k := range rnd.Perm(1000) {
		mark(k)
	}
	later := time.Now().Add(time.Minute)
	for len(model) > 0 {
		limit := 1 + rnd.IntN(9)
		b, _, due := q.take(later, limit)
		want := model[:min(limit, len(model))]
		if !due || !slices.Equal(slices.Sorted(maps.Keys(b)), slices.Sorted(slices.Values(want))) {
			t.Fatalf("took %v, want %v", slices.Sorted(maps.Keys(b)), want)
		}
		model = slices.Clone(model[len(want):])
		if rnd.IntN(3) == 0 { // mark a taken key again, and one still pending (no effect)
			mark(want[0])
			if len(model) > 0 {
				mark(model[rnd.IntN(len(model))])
			}
		}
	}
}

// TestLeadingLimitedTakeSkipsKeysWithinTheirWindow: a key handed over within the window is
// passed over, keeps its place, and goes once its window ends.
func TestLeadingLimitedTakeSkipsKeysWithinTheirWindow(t *testing.T) {
	q := NewLeading[string](time.Hour)
	q.Add("a", "b", "c", "d")
	now := time.Now()
	take := func(at time.Time, limit int, want ...string) time.Duration {
		t.Helper()
		b, wait, due := q.take(at, limit)
		if got := keysOf(b); !slices.Equal(got, want) || due != (len(want) > 0) {
			t.Fatalf("took %v (due %v), want %v", got, due, want)
		}
		return wait
	}
	take(now, 1, "a")
	q.Add("a", "e") // a within its window, behind b, c, d; e after it
	take(now, 2, "b", "c")
	take(now, 2, "d", "e")
	if wait := take(now, 2); wait != time.Hour {
		t.Fatalf("wait %v for a's window, want 1h", wait)
	}
	take(now.Add(time.Hour), 2, "a")
}
