package kube

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/metadata"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
)

// entryFor is a ServiceEntry named name defining hosts, Meltemi's when owned.
func entryFor(ns, name string, owned bool, hosts ...string) *unstructured.Unstructured {
	u := serviceEntry(ns, name, 1, "1")
	_ = unstructured.SetNestedStringSlice(u.Object, hosts, "spec", "hosts")
	if owned {
		l := u.GetLabels()
		l[v1alpha1.LabelManagedBy] = v1alpha1.ManagedByValue
		u.SetLabels(l)
	}
	return u
}

// changeLog collects the hosts a HostIndex reports.
type changeLog struct {
	mu    sync.Mutex
	calls [][]string
}

func (l *changeLog) add(hosts []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, slices.Clone(hosts))
}

func (l *changeLog) take() [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.calls
	l.calls = nil
	return out
}

func TestE2EHostIndexForeignAndOwnedEntries(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	ke.create(t, entryFor(ns, "legacy", false, "a.example", "b.example"))
	ke.create(t, entryFor(ns, "b.example", true, "b.example"))
	ke.create(t, entryFor(ns, "c.example", true, "c.example"))

	meta, err := metadata.NewForConfig(ke.cfg)
	if err != nil {
		t.Fatal(err)
	}
	hi, err := NewHostIndex(ke.admin, meta, ns)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := &changeLog{}
	go hi.Run(ctx, changes.add)
	eventually(t, 30*time.Second, func() error {
		if !hi.Synced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	lookup := func(host string, wantForeign []string, wantOwned bool) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			foreign, owned := hi.Lookup(host)
			if !slices.Equal(foreign, wantForeign) || owned != wantOwned {
				return fmt.Errorf("Lookup(%s) = %v, %v; want %v, %v", host, foreign, owned, wantForeign, wantOwned)
			}
			return nil
		})
	}
	legacy := ns + "/legacy"
	lookup("a.example", []string{legacy}, false)
	lookup("b.example", []string{legacy}, true)
	lookup("c.example", nil, true)
	lookup("d.example", nil, false)
	// The initial list adds the one foreign entry: one call, for its hosts.
	if got := changes.take(); !slices.EqualFunc(got, [][]string{{"a.example", "b.example"}}, slices.Equal) {
		t.Errorf("initial changes %v, want the foreign entry's hosts once", got)
	}

	// Meltemi's own writes are no work for the index's listener.
	owned := ke.get(t, ns, "c.example")
	owned.SetAnnotations(map[string]string{"touched": "yes"})
	if _, err := ke.admin.Resource(seGVR).Namespace(ns).Update(context.Background(), owned, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A foreign entry's change is: the entry is deleted.
	if err := ke.admin.Resource(seGVR).Namespace(ns).Delete(context.Background(), "legacy", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	lookup("b.example", nil, true)
	lookup("a.example", nil, false)
	if got := changes.take(); !slices.EqualFunc(got, [][]string{{"a.example", "b.example"}}, slices.Equal) {
		t.Errorf("changes %v, want the deleted foreign entry's hosts only", got)
	}

	// An entry that stops being Meltemi's becomes foreign, under its own name.
	taken := ke.get(t, ns, "b.example")
	l := taken.GetLabels()
	delete(l, v1alpha1.LabelManagedBy)
	taken.SetLabels(l)
	if _, err := ke.admin.Resource(seGVR).Namespace(ns).Update(context.Background(), taken, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	lookup("b.example", []string{ns + "/b.example"}, false)
	if got := changes.take(); !slices.EqualFunc(got, [][]string{{"b.example"}}, slices.Equal) {
		t.Errorf("changes %v, want b.example once", got)
	}
}
