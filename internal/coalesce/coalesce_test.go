package coalesce

import (
	"context"
	"maps"
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
	for range 30 {
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
