package hostguard

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"

	"github.com/meltemi-mesh/meltemi/api/istio"
	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
)

// entryFor is a ServiceEntry named name defining hosts, Meltemi's when owned.
func entryFor(ns, name string, owned bool, hosts ...string) *unstructured.Unstructured {
	labels := map[string]any{}
	if owned {
		labels[v1alpha1.LabelManagedBy] = v1alpha1.ManagedByValue
	}
	h := make([]any, len(hosts))
	for i, host := range hosts {
		h[i] = host
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "ServiceEntry",
		"metadata":   map[string]any{"name": name, "namespace": ns, "labels": labels},
		"spec": map[string]any{
			"hosts": h, "location": "MESH_INTERNAL", "resolution": "STATIC",
			"ports": []any{map[string]any{"number": 20880, "name": "tcp-20880", "protocol": "TCP"}},
		},
	}}
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
	env := harness.Load(t)
	cfg := env.RestConfig(t)
	admin, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ns := harness.Namespace(t, admin, "guard")
	entries := admin.Resource(istio.ServiceEntryResource).Namespace(ns)
	for _, u := range []*unstructured.Unstructured{
		entryFor(ns, "legacy", false, "a.example", "b.example"),
		entryFor(ns, "b.example", true, "b.example"),
		entryFor(ns, "c.example", true, "c.example"),
	} {
		if _, err := entries.Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	get := func(name string) *unstructured.Unstructured {
		t.Helper()
		u, err := entries.Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}

	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hi, err := New(admin, meta, ns)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := &changeLog{}
	go hi.Run(ctx, changes.add)
	env.Eventually(t, 30*time.Second, func() error {
		if !hi.Synced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	lookup := func(host string, wantForeign []string, wantOwned bool) {
		t.Helper()
		env.Eventually(t, 10*time.Second, func() error {
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
	owned := get("c.example")
	owned.SetAnnotations(map[string]string{"touched": "yes"})
	if _, err := entries.Update(context.Background(), owned, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A foreign entry's change is: the entry is deleted.
	if err := entries.Delete(context.Background(), "legacy", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	lookup("b.example", nil, true)
	lookup("a.example", nil, false)
	if got := changes.take(); !slices.EqualFunc(got, [][]string{{"a.example", "b.example"}}, slices.Equal) {
		t.Errorf("changes %v, want the deleted foreign entry's hosts only", got)
	}

	// An entry that stops being Meltemi's becomes foreign, under its own name.
	taken := get("b.example")
	l := taken.GetLabels()
	delete(l, v1alpha1.LabelManagedBy)
	taken.SetLabels(l)
	if _, err := entries.Update(context.Background(), taken, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	lookup("b.example", []string{ns + "/b.example"}, false)
	if got := changes.take(); !slices.EqualFunc(got, [][]string{{"b.example"}}, slices.Equal) {
		t.Errorf("changes %v, want b.example once", got)
	}
}
