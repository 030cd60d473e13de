package kube

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// syncLog records OnSynced calls.
type syncLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *syncLog) record(gvk schema.GroupVersionKind, namespace, name string, wrote bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, fmt.Sprintf("%s %s/%s %t", gvk.Kind, namespace, name, wrote))
}

func (l *syncLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.calls...)
}

// count returns how many calls equal want.
func (l *syncLog) count(want string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.calls {
		if c == want {
			n++
		}
	}
	return n
}

func TestOnSyncedReportsWritesAndNoops(t *testing.T) {
	c := newFakeCluster(t)
	log := &syncLog{}
	rr := newReconciler(t, c, "ns", func(cfg *Config) { cfg.OnSynced = log.record })
	rr.start(t)
	const wrote, noop = "ServiceEntry ns/a true", "ServiceEntry ns/a false"

	if err := rr.Set(serviceEntry("ns", "a", 2, "1.0.0")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if log.count(wrote) != 1 {
			return fmt.Errorf("calls %v, want one write of ns/a", log.all())
		}
		return nil
	})
	rr.settle(t)

	// The same content again: reported as synced without a write.
	noopsBefore := log.count(noop)
	if err := rr.Set(serviceEntry("ns", "a", 2, "1.0.0")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if log.count(noop) <= noopsBefore {
			return fmt.Errorf("calls %v, want a no-op report for ns/a", log.all())
		}
		return nil
	})
	if n := log.count(wrote); n != 1 {
		t.Errorf("%d write reports after an unchanged Set, want 1", n)
	}

	// Deleting counts as a write.
	rr.unset(ServiceEntryKind().GVK, "ns", "a")
	rr.AllowDeletes()
	eventually(t, 5*time.Second, func() error {
		if log.count(wrote) != 2 {
			return fmt.Errorf("calls %v, want the delete of ns/a reported", log.all())
		}
		return nil
	})
	if c.get(t, "ns", "a") != nil {
		t.Error("ns/a not deleted")
	}
}
