package sdk

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestGCPercentKeepsHeadroom(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, 100},            // nothing known yet
		{64 * mib, 100},     // the default already grows by the headroom
		{1024 * mib, 100},   // large heaps keep the default
		{32 * mib, 200},     // live + 64 MiB
		{30 * mib, 225},     // rounded up to a step
		{8 * mib, 800},      //
		{1024, 10000},       // bounded
		{63*mib + 1, 125},   // just under the headroom
		{640 * 1024, 10000}, // at the bound
	} {
		if got := gcPercent(tc.live, 64*mib); got != tc.want {
			t.Errorf("gcPercent(%d) = %d, want %d", tc.live, got, tc.want)
		}
	}
}

func TestHeapHeadroomIsSetAfterACollection(t *testing.T) {
	t.Setenv("GOGC", "")
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	keepHeapHeadroom()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // finalizers run in their own goroutine
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		if p > 100 { // this test binary's live heap is far below the headroom
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GC percent still %d", p)
		}
	}
}
