package serviceentries

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meltemi-mesh/meltemi/api/istio"
)

// WriteLatency observes how long a registry change takes to reach the cluster: the
// controller tells it when each host it hands over first changed (Changed), the reconciler
// when an object is in line with its desired state (ObjectSynced, sync/kube's
// Config.OnSynced). Its histogram is meltemi_registry_event_to_write_seconds.
type WriteLatency struct {
	namespace string // of the ServiceEntries
	hist      prometheus.Histogram

	mu sync.Mutex
	// unwritten holds, per host handed to the writer, the time of its earliest change whose
	// ServiceEntry write has not been confirmed yet; lastSweep bounds how long an entry the
	// writer never reports on can linger.
	unwritten map[string]time.Time
	lastSweep time.Time
}

// unwrittenTTL is how long a change time waits for the writer's report before it is dropped;
// it only guards against hosts the writer never reports on (a Set it refused outright).
const unwrittenTTL = 10 * time.Minute

// NewWriteLatency returns an observer of the ServiceEntries written into namespace.
func NewWriteLatency(namespace string) *WriteLatency {
	return &WriteLatency{
		namespace: namespace, unwritten: map[string]time.Time{}, lastSweep: time.Now(),
		hist: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meltemi_registry_event_to_write_seconds",
			Help: "Time from a registry change reaching the host to the ServiceEntry it changed being written (applied or deleted); changes that need no write are not observed.",
			// 5 ms to ~40 s: debounce and write latency at the low end, backlogs at the top.
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}
}

// Collector returns the histogram, for registering.
func (l *WriteLatency) Collector() prometheus.Collector { return l.hist }

// Changed records hosts handed to the writer with their earliest change. A host still waiting
// for an earlier write keeps that earlier time: the next write of its ServiceEntry carries
// both changes.
func (l *WriteLatency) Changed(hosts map[string]time.Time) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for h, t := range hosts {
		if prev, ok := l.unwritten[h]; !ok || t.Before(prev) {
			l.unwritten[h] = t
		}
	}
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for h, t := range l.unwritten {
		if now.Sub(t) > unwrittenTTL {
			delete(l.unwritten, h)
		}
	}
}

// ObjectSynced observes, for a host's ServiceEntry written, the time since the host's
// earliest unwritten change, and drops that time either way, so a change that needed no write
// leaves nothing behind.
func (l *WriteLatency) ObjectSynced(gvk schema.GroupVersionKind, namespace, name string, wrote bool) {
	if gvk != istio.ServiceEntryKind || namespace != l.namespace {
		return
	}
	l.mu.Lock()
	t, ok := l.unwritten[name] // a ServiceEntry is named after its host
	delete(l.unwritten, name)
	l.mu.Unlock()
	if ok && wrote {
		l.hist.Observe(time.Since(t).Seconds())
	}
}
