// Package gctune keeps a process's garbage collector from running too often while its live
// heap is small. With a fixed GC percentage, a process with a few MiB of live data collects
// after every few MiB of allocation: under a stream of changes, dozens of times a second, at
// a fixed cost each time. A floor of headroom between collections removes most of that cost;
// a process with a large live heap keeps its percentage, so its memory is not affected.
package gctune

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// Keep sets the GC percentage to percent and, after every collection, raises it so that the
// next collection comes after at least headroom bytes of heap growth (never below percent).
// An operator's GOGC is left alone: Keep does nothing when it is set.
func Keep(percent int, headroom uint64) {
	if os.Getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(percent)
	t := &tuner{sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}, floor: percent, percent: percent, headroom: headroom}
	t.afterNextGC()
}

type tuner struct {
	sample         []metrics.Sample
	floor, percent int
	headroom       uint64
}

// sentinel is allocated for its finalizer, which runs after the collection that freed it.
// It holds a pointer so that it is never a tiny allocation (which may never be finalized).
type sentinel struct{ _ *int }

func (t *tuner) afterNextGC() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		t.tune()
		t.afterNextGC()
	})
}

func (t *tuner) tune() {
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	if p := Percent(t.sample[0].Value.Uint64(), t.floor, t.headroom); p != t.percent {
		t.percent = p
		debug.SetGCPercent(p)
	}
}

// Percent is the GC percentage, at least floor, that lets a heap of live bytes grow by at
// least headroom, rounded up to steps of 25 so that small changes of the live heap change
// nothing.
func Percent(live uint64, floor int, headroom uint64) int {
	const step, ceiling = 25, 10000
	if live == 0 || headroom*100 <= live*uint64(floor) {
		return floor
	}
	p := headroom * 100 / live
	p = (p + step - 1) / step * step
	return int(max(min(p, ceiling), uint64(floor)))
}
