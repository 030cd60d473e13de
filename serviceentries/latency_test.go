package serviceentries

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/meltemi-mesh/meltemi/api/istio"
)

// histogram returns the event-to-write histogram's sample count and sum.
func histogram(t *testing.T, l *WriteLatency) (uint64, float64) {
	t.Helper()
	var m dto.Metric
	if err := l.hist.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// waitSets waits until the writer has seen at least n Set calls.
func waitSets(t *testing.T, rec *recorder, n int) {
	t.Helper()
	eventually(t, "Set calls", func() bool { _, sets, _, _ := rec.snapshot(); return sets >= n })
}

func TestEventToWriteLatency(t *testing.T) {
	l := NewWriteLatency("ns")
	c, rec := start(t, Config{Latency: l})
	se := istio.ServiceEntryKind
	const h = "one.example"

	// A change whose ServiceEntry is written is observed once.
	c.Upsert(svc("a", "k1", h, "10.0.0.1"))
	waitSets(t, rec, 1)
	l.ObjectSynced(se, "ns", h, true)
	if n, _ := histogram(t, l); n != 1 {
		t.Fatalf("%d observations after one written change, want 1", n)
	}
	l.ObjectSynced(se, "ns", h, true) // a later write without a change (e.g. a repair)
	if n, _ := histogram(t, l); n != 1 {
		t.Fatalf("%d observations after a write without a change, want 1", n)
	}

	// A change that needs no write leaves no stale time behind.
	c.Upsert(svc("a", "k1", h, "10.0.0.1", "10.0.0.2"))
	waitSets(t, rec, 2)
	l.ObjectSynced(se, "ns", h, false)
	l.ObjectSynced(se, "ns", h, true)
	if n, _ := histogram(t, l); n != 1 {
		t.Fatalf("%d observations after a no-op, want 1", n)
	}

	// Other kinds, namespaces and names do not count; the earliest unwritten change does.
	c.Upsert(svc("a", "k1", h, "10.0.0.1"))
	waitSets(t, rec, 3)
	const gap = 40 * time.Millisecond
	time.Sleep(gap)
	c.Upsert(svc("a", "k1", h, "10.0.0.3"))
	waitSets(t, rec, 4)
	l.ObjectSynced(istio.WorkloadEntryKind, "ns", h, true)
	l.ObjectSynced(se, "other", h, true)
	l.ObjectSynced(se, "ns", "two.example", true)
	_, before := histogram(t, l)
	l.ObjectSynced(se, "ns", h, true)
	n, sum := histogram(t, l)
	if n != 2 {
		t.Fatalf("%d observations, want 2", n)
	}
	if got := time.Duration((sum - before) * float64(time.Second)); got < gap {
		t.Errorf("observed %v, want at least %v (time since the first of two unwritten changes)", got, gap)
	}

	// Removing the last instance unsets the ServiceEntry; its delete is observed too.
	c.Delete("a", "k1")
	eventually(t, "Unset", func() bool { _, _, unsets, _ := rec.snapshot(); return len(unsets) > 0 })
	l.ObjectSynced(se, "ns", h, true)
	if n, _ := histogram(t, l); n != 3 {
		t.Fatalf("%d observations after the delete, want 3", n)
	}
}

func TestUnwrittenSweep(t *testing.T) {
	l := NewWriteLatency("ns")
	now := time.Now()
	l.unwritten["old"] = now.Add(-unwrittenTTL - time.Second)
	l.unwritten["new"] = now
	l.Changed(nil) // within a minute of the last sweep: none yet
	if len(l.unwritten) != 2 {
		t.Fatalf("swept too early: %v", l.unwritten)
	}
	l.lastSweep = now.Add(-time.Minute)
	l.Changed(nil)
	if _, ok := l.unwritten["old"]; ok || len(l.unwritten) != 1 {
		t.Errorf("after sweep %v, want only new", l.unwritten)
	}
}
