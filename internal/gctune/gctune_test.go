package gctune

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercentKeepsHeadroom(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		live     uint64
		floor    int
		headroom uint64
		want     int
	}{
		{0, 100, 64 * mib, 100},            // nothing known yet
		{64 * mib, 100, 64 * mib, 100},     // the floor already grows by the headroom
		{1024 * mib, 100, 64 * mib, 100},   // large heaps keep the floor
		{32 * mib, 100, 64 * mib, 200},     // live + 64 MiB
		{30 * mib, 100, 64 * mib, 225},     // rounded up to a step
		{8 * mib, 100, 64 * mib, 800},      //
		{1024, 100, 64 * mib, 10000},       // bounded
		{63*mib + 1, 100, 64 * mib, 125},   // just under the headroom
		{640 * 1024, 100, 64 * mib, 10000}, // at the bound
		{0, 50, 48 * mib, 50},              // the host's setting: nothing known yet
		{120 * mib, 50, 48 * mib, 50},      // 100,000 instances: half the live heap is more than the headroom
		{96 * mib, 50, 48 * mib, 50},       // exactly the headroom at the floor
		{90 * mib, 50, 48 * mib, 75},       // 53%, rounded up
		{40 * mib, 50, 48 * mib, 125},      // a small heap under churn
	} {
		if got := Percent(tc.live, tc.floor, tc.headroom); got != tc.want {
			t.Errorf("Percent(%d, %d, %d) = %d, want %d", tc.live, tc.floor, tc.headroom, got, tc.want)
		}
	}
}

func TestKeepRaisesThePercentAfterACollection(t *testing.T) {
	t.Setenv("GOGC", "")
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	Keep(50, 64<<20)
	if p := currentPercent(); p != 50 {
		t.Fatalf("GC percent %d right after Keep, want the floor 50", p)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // finalizers run in their own goroutine
		p := currentPercent()
		if p > 100 { // this test binary's live heap is far below the headroom
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GC percent still %d", p)
		}
	}
}

func TestKeepLeavesAnOperatorsGOGC(t *testing.T) {
	t.Setenv("GOGC", "80")
	defer debug.SetGCPercent(debug.SetGCPercent(80))
	Keep(50, 64<<20)
	if p := currentPercent(); p != 80 {
		t.Fatalf("GC percent %d with GOGC=80 set, want 80 kept", p)
	}
}

// currentPercent reads the GC percentage (setting it is the only way to read it).
func currentPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}
