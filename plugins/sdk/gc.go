package sdk

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// heapHeadroom is the least heap growth a plugin is allowed between garbage collections.
// With the default GOGC=100 a plugin with a small live heap (a few MiB of registry state)
// collects after every few MiB of allocation: during churn, dozens of times a second, for
// a fixed cost each time. Allowing it this much headroom takes about a fifth of the CPU a
// stream of upserts costs the plugin; plugins with large heaps keep GOGC=100.
const heapHeadroom = 64 << 20

// keepHeapHeadroom sets the GC percentage after every collection so that the next one
// comes after max(live heap, heapHeadroom) bytes of growth. An operator's GOGC is left
// alone.
func keepHeapHeadroom() {
	if os.Getenv("GOGC") != "" {
		return
	}
	t := &gcTuner{sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}, percent: 100}
	t.afterNextGC()
}

type gcTuner struct {
	sample  []metrics.Sample
	percent int
}

// sentinel is allocated for its finalizer, which runs after the collection that freed it.
// It holds a pointer so that it is never a tiny allocation (which may never be finalized).
type sentinel struct{ _ *int }

func (t *gcTuner) afterNextGC() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		t.tune()
		t.afterNextGC()
	})
}

func (t *gcTuner) tune() {
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	if p := gcPercent(t.sample[0].Value.Uint64(), heapHeadroom); p != t.percent {
		t.percent = p
		debug.SetGCPercent(p)
	}
}

// gcPercent is the GC percentage that lets a heap of live bytes grow by at least headroom,
// rounded to steps of 25 so that small changes of the live heap change nothing.
func gcPercent(live, headroom uint64) int {
	const step, ceiling = 25, 10000
	if live == 0 || headroom <= live {
		return 100
	}
	p := headroom * 100 / live
	p = (p + step - 1) / step * step
	return int(min(p, ceiling))
}
