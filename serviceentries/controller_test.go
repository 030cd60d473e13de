package serviceentries

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
	"github.com/meltemi-mesh/meltemi/serviceentries/convert"
	"github.com/meltemi-mesh/meltemi/serviceentries/store"
)

// recorder is a Writer that records what it is handed; the controller's contract with
// sync/kube is only SetGroup and AllowDeletes, so recording them tests the controller's logic
// completely. Objects a group no longer holds are recorded as unset, as the reconciler turns
// them into orphans.
type recorder struct {
	mu      sync.Mutex
	groups  map[string][]*unstructured.Unstructured
	objects map[string]*unstructured.Unstructured // kind/name -> last handed over
	sets    int
	order   []string // kind/name per object handed over, in order
	unsets  []string
	deletes bool
	// allowedWith is, per AllowDeletes call, the objects handed over by then.
	allowedWith []map[string]bool
}

func newRecorder() *recorder {
	return &recorder{groups: map[string][]*unstructured.Unstructured{}, objects: map[string]*unstructured.Unstructured{}}
}

func (r *recorder) SetGroup(group string, objs []*unstructured.Unstructured) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := map[string]bool{}
	for _, obj := range objs {
		id := obj.GetKind() + "/" + obj.GetName()
		now[id] = true
		r.objects[id] = obj
		r.sets++
		r.order = append(r.order, id)
	}
	for _, old := range r.groups[group] {
		if id := old.GetKind() + "/" + old.GetName(); !now[id] {
			delete(r.objects, id)
			r.unsets = append(r.unsets, id)
		}
	}
	r.groups[group] = objs
	return nil
}

func (r *recorder) AllowDeletes() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deletes = true
	have := map[string]bool{}
	for id := range r.objects {
		have[id] = true
	}
	r.allowedWith = append(r.allowedWith, have)
}

// allowedAfter reports whether AllowDeletes was called once object id had been handed over.
func (r *recorder) allowedAfter(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.allowedWith, func(m map[string]bool) bool { return m[id] })
}

func (r *recorder) snapshot() (map[string]*unstructured.Unstructured, int, []string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	objs := make(map[string]*unstructured.Unstructured, len(r.objects))
	for k, v := range r.objects {
		objs[k] = v
	}
	return objs, r.sets, slices.Clone(r.unsets), r.deletes
}

func start(t *testing.T, cfg Config) (*Controller, *recorder) {
	t.Helper()
	rec := newRecorder()
	if cfg.Debounce == 0 {
		cfg.Debounce = 5 * time.Millisecond
	}
	cfg.Convert.Namespace = "ns"
	c := New(cfg, store.New(), rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, rec
}

func svc(registry, key, host string, addrs ...string) catalog.Service {
	s := catalog.Service{Registry: registry, Key: key, Host: host}
	for _, a := range addrs {
		s.Instances = append(s.Instances, catalog.Instance{Address: a, Port: 20880, Protocol: "dubbo"})
	}
	return s
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func endpointCount(obj *unstructured.Unstructured) int {
	eps, _, _ := unstructured.NestedSlice(obj.Object, "spec", "endpoints")
	return len(eps)
}

// holds is what the delete policy says of an object naming registries (one name: the
// registry label; several: the annotation).
func holds(p *Policy, registries ...string) bool {
	labels, annotations := map[string]string{}, map[string]string{}
	switch len(registries) {
	case 0:
	case 1:
		labels[v1alpha1.LabelRegistry] = registries[0]
	default:
		labels[v1alpha1.LabelRegistry] = v1alpha1.MultiRegistryPrefix + "0123456789ab"
		annotations[v1alpha1.AnnotationRegistries] = strings.Join(registries, ",")
	}
	return p.HoldsDelete(labels, annotations)
}

func TestDeletesWaitPerRegistry(t *testing.T) {
	policy := &Policy{}
	c, rec := start(t, Config{Policy: policy})
	if !holds(policy, "gone") {
		t.Fatal("deletes not held before the registries are known")
	}
	c.SetRegistries([]supervisor.Registration{{Name: "a"}, {Name: "b"}})
	if !holds(policy, "a") {
		t.Fatal("deletes not held before any registry synced")
	}
	c.Replace("a", []catalog.Service{svc("a", "k1", "one.example", "10.0.0.1")}, nil)
	c.Synced("a")
	// The writer may be told to allow deletes in the batch that carries a's host, before the
	// batch with a's synced mark: wait for a's hand-over itself too.
	eventually(t, "AllowDeletes after a's state was handed over", func() bool {
		return rec.allowedAfter("ServiceEntry/one.example") && !policy.Pending("a")
	})
	for _, tc := range []struct {
		registries []string
		want       bool
	}{
		{[]string{"a"}, false},
		{[]string{"b"}, true},
		{[]string{"a", "b"}, true}, // merged: b's endpoints are in it
		{[]string{"removed"}, false},
		{nil, true}, // names nothing it can tell: waits for every registry
	} {
		if got := holds(policy, tc.registries...); got != tc.want {
			t.Errorf("after a synced: HoldsDelete(%v) = %v, want %v", tc.registries, got, tc.want)
		}
	}
	if c.DeletesAllowed() {
		t.Fatal("DeletesAllowed true before every registry synced")
	}
	c.Synced("b")
	eventually(t, "DeletesAllowed", c.DeletesAllowed)
	for _, regs := range [][]string{{"a"}, {"b"}, {"a", "b"}, nil} {
		if holds(policy, regs...) {
			t.Errorf("after every registry synced: HoldsDelete(%v) = true", regs)
		}
	}
}

// cache is an ObjectCache over fixed objects.
type cache map[string]*unstructured.Unstructured

func (c cache) Cached(_ schema.GroupVersionKind, namespace, name string) *unstructured.Unstructured {
	return c[namespace+"/"+name]
}

// TestMergedHostWaitsForItsPendingRegistry: after a restart, a host whose entry in the cluster
// merges a registry that has not synced is not rewritten without it; once it syncs, the host is
// written (with both) before its deletes are allowed.
func TestMergedHostWaitsForItsPendingRegistry(t *testing.T) {
	live := &unstructured.Unstructured{}
	live.SetLabels(map[string]string{v1alpha1.LabelRegistry: v1alpha1.MultiRegistryPrefix + "0123456789ab"})
	live.SetAnnotations(map[string]string{v1alpha1.AnnotationRegistries: "a,b"})
	c, rec := start(t, Config{Cluster: cache{"ns/merged.example": live}})
	c.SetRegistries([]supervisor.Registration{{Name: "a"}, {Name: "b"}})
	c.Replace("a", []catalog.Service{
		svc("a", "k1", "merged.example", "10.0.0.1"),
		svc("a", "k2", "only-a.example", "10.0.0.2"),
	}, nil)
	c.Synced("a")
	eventually(t, "AllowDeletes after a synced", func() bool { return rec.allowedAfter("ServiceEntry/only-a.example") })
	objs, _, _, _ := rec.snapshot()
	if objs["ServiceEntry/only-a.example"] == nil {
		t.Fatal("a host of a alone not written")
	}
	if objs["ServiceEntry/merged.example"] != nil {
		t.Fatal("merged host rewritten without the registry that has not synced")
	}
	if got := c.Waiting(); got["merged.example"] != "b" {
		t.Errorf("Waiting() = %v, want merged.example waiting for b", got)
	}
	c.Replace("b", []catalog.Service{svc("b", "k1", "merged.example", "10.0.1.1")}, nil)
	c.Synced("b")
	eventually(t, "merged host written", func() bool {
		objs, _, _, _ := rec.snapshot()
		return objs["ServiceEntry/merged.example"] != nil && endpointCount(objs["ServiceEntry/merged.example"]) == 2
	})
	if got := c.Waiting(); len(got) != 0 {
		t.Errorf("Waiting() = %v after b synced", got)
	}
}

// startWaitingForB starts a controller whose host merged.example, in the cluster from a and
// b, waits for b after a synced.
func startWaitingForB(t *testing.T) (*Controller, *recorder) {
	t.Helper()
	live := &unstructured.Unstructured{}
	live.SetAnnotations(map[string]string{v1alpha1.AnnotationRegistries: "a,b"})
	c, rec := start(t, Config{Cluster: cache{"ns/merged.example": live}})
	c.SetRegistries([]supervisor.Registration{{Name: "a"}, {Name: "b"}})
	c.Replace("a", []catalog.Service{svc("a", "k1", "merged.example", "10.0.0.1")}, nil)
	c.Synced("a")
	eventually(t, "merged host waiting for b", func() bool { return c.Waiting()["merged.example"] == "b" })
	return c, rec
}

// TestMergedHostLeftByThePendingRegistryWaits: the pending registry's snapshot no longer has
// the host; it is written without it only once that registry is handed over — in the same
// flush, before deletes are allowed.
func TestMergedHostLeftByThePendingRegistryWaits(t *testing.T) {
	c, rec := startWaitingForB(t)
	c.Replace("b", nil, nil)
	c.Synced("b")
	eventually(t, "DeletesAllowed", c.DeletesAllowed)
	objs, _, _, _ := rec.snapshot()
	if se := objs["ServiceEntry/merged.example"]; se == nil || endpointCount(se) != 1 {
		t.Fatalf("merged host not written with a's endpoint when b synced without it: %v", se)
	}
	if !rec.allowedAfter("ServiceEntry/merged.example") {
		t.Fatal("deletes allowed before the merged host was written")
	}
}

func TestDeletesAllowedWithNoRegistries(t *testing.T) {
	c, rec := start(t, Config{})
	c.SetRegistries(nil)
	eventually(t, "DeletesAllowed", c.DeletesAllowed)
	if _, _, _, d := rec.snapshot(); !d {
		t.Fatal("writer not told deletes are allowed")
	}
}

// TestWaitingHostResumesWhenItsRegistryIsRemoved: a host that waited for a pending registry
// is written once that registry is no longer configured.
func TestWaitingHostResumesWhenItsRegistryIsRemoved(t *testing.T) {
	c, rec := startWaitingForB(t)
	c.SetRegistries([]supervisor.Registration{{Name: "a"}})
	c.RemoveRegistry("b")
	eventually(t, "DeletesAllowed", c.DeletesAllowed)
	if objs, _, _, _ := rec.snapshot(); objs["ServiceEntry/merged.example"] == nil {
		t.Fatal("host still not written after the registry it waited for was removed")
	}
}

func TestNoDeletesBeforeRegistriesAreKnown(t *testing.T) {
	c, rec := start(t, Config{})
	time.Sleep(30 * time.Millisecond)
	if _, _, _, deletes := rec.snapshot(); deletes || c.DeletesAllowed() {
		t.Fatal("deletes allowed before the registry configuration was loaded")
	}
}

func TestBurstIsCoalescedPerHost(t *testing.T) {
	c, rec := start(t, Config{Debounce: 40 * time.Millisecond, MaxDelay: time.Second})
	c.SetRegistries([]supervisor.Registration{{Name: "zk"}})
	addrs := []string{}
	for i := range 50 {
		addrs = append(addrs, fmt.Sprintf("10.0.0.%d", i+1))
		c.Upsert(svc("zk", "k", "burst.example", addrs...))
	}
	eventually(t, "50 endpoints", func() bool {
		objs, _, _, _ := rec.snapshot()
		o := objs["ServiceEntry/burst.example"]
		return o != nil && endpointCount(o) == 50
	})
	if _, sets, _, _ := rec.snapshot(); sets != 1 {
		t.Fatalf("50 changes to one host made %d writes, want 1", sets)
	}
}

func TestMaxDelayBoundsAStreamOfChanges(t *testing.T) {
	c, rec := start(t, Config{Debounce: 50 * time.Millisecond, MaxDelay: 100 * time.Millisecond})
	c.SetRegistries([]supervisor.Registration{{Name: "zk"}})
	begin := time.Now()
	written := false
	for i := 0; time.Since(begin) < 400*time.Millisecond; i++ {
		c.Upsert(svc("zk", "k", "stream.example", fmt.Sprintf("10.0.%d.%d", i/200, i%200+1)))
		time.Sleep(10 * time.Millisecond) // always inside the debounce window
		if objs, _, _, _ := rec.snapshot(); objs["ServiceEntry/stream.example"] != nil {
			written = true
			break
		}
	}
	if !written {
		t.Fatal("a steady stream of changes postponed the write past MaxDelay")
	}
}

func TestIdenticalSnapshotWritesNothing(t *testing.T) {
	c, rec := start(t, Config{})
	c.SetRegistries([]supervisor.Registration{{Name: "zk"}})
	services := []catalog.Service{svc("zk", "a", "a.example", "10.0.0.1"), svc("zk", "b", "b.example", "10.0.0.2")}
	c.Replace("zk", services, nil)
	eventually(t, "two ServiceEntries", func() bool { objs, _, _, _ := rec.snapshot(); return len(objs) == 2 })
	_, before, _, _ := rec.snapshot()
	c.Replace("zk", services, nil) // e.g. a restarted plugin's first snapshot
	time.Sleep(30 * time.Millisecond)
	if _, after, _, _ := rec.snapshot(); after != before {
		t.Fatalf("identical snapshot made %d writes", after-before)
	}
}

func TestSnapshotRemovesMissingAndKeepsUnusable(t *testing.T) {
	c, rec := start(t, Config{})
	c.SetRegistries([]supervisor.Registration{{Name: "zk"}})
	c.Replace("zk", []catalog.Service{svc("zk", "a", "a.example", "10.0.0.1"), svc("zk", "b", "b.example", "10.0.0.2"), svc("zk", "c", "c.example", "10.0.0.3")}, nil)
	eventually(t, "three ServiceEntries", func() bool { objs, _, _, _ := rec.snapshot(); return len(objs) == 3 })
	// b is gone; c was sent but unusable this time and must keep its state.
	c.Replace("zk", []catalog.Service{svc("zk", "a", "a.example", "10.0.0.1")}, []string{"c"})
	eventually(t, "b unset", func() bool {
		_, _, unsets, _ := rec.snapshot()
		return slices.Contains(unsets, "ServiceEntry/b.example")
	})
	objs, _, unsets, _ := rec.snapshot()
	if objs["ServiceEntry/c.example"] == nil || slices.Contains(unsets, "ServiceEntry/c.example") {
		t.Fatal("a service sent unusable in a snapshot lost its state")
	}
}

func TestKeepLastNonEmpty(t *testing.T) {
	c, rec := start(t, Config{})
	c.SetRegistries([]supervisor.Registration{{Name: "guarded", KeepLastNonEmpty: true}, {Name: "plain"}})
	c.Replace("guarded", []catalog.Service{svc("guarded", "g", "g.example", "10.0.0.1")}, nil)
	c.Replace("plain", []catalog.Service{svc("plain", "p", "p.example", "10.0.0.2")}, nil)
	eventually(t, "two ServiceEntries", func() bool { objs, _, _, _ := rec.snapshot(); return len(objs) == 2 })

	c.Upsert(svc("guarded", "g", "g.example")) // suddenly empty
	c.Delete("guarded", "g")                   // suddenly gone
	c.Replace("guarded", nil, nil)             // a snapshot without it
	c.Upsert(svc("plain", "p", "p.example"))   // the unguarded registry really empties
	eventually(t, "p unset", func() bool {
		_, _, unsets, _ := rec.snapshot()
		return slices.Contains(unsets, "ServiceEntry/p.example")
	})
	objs, _, _, _ := rec.snapshot()
	if o := objs["ServiceEntry/g.example"]; o == nil || endpointCount(o) != 1 {
		t.Fatalf("guarded service lost its last instances: %v", o)
	}
	// A real change (non-empty) still goes through.
	c.Upsert(svc("guarded", "g", "g.example", "10.0.0.7", "10.0.0.8"))
	eventually(t, "guarded update", func() bool {
		objs, _, _, _ := rec.snapshot()
		o := objs["ServiceEntry/g.example"]
		return o != nil && endpointCount(o) == 2
	})
}

func TestMergedHostAndRegistryRemoval(t *testing.T) {
	c, rec := start(t, Config{})
	c.SetRegistries([]supervisor.Registration{{Name: "nacos"}, {Name: "zk"}})
	c.Upsert(svc("zk", "a", "shared.example", "10.0.0.1"))
	c.Upsert(svc("nacos", "b", "shared.example", "10.0.0.2"))
	eventually(t, "merged endpoints", func() bool {
		objs, _, _, _ := rec.snapshot()
		o := objs["ServiceEntry/shared.example"]
		return o != nil && endpointCount(o) == 2
	})
	c.SetRegistries([]supervisor.Registration{{Name: "zk"}})
	c.RemoveRegistry("nacos")
	eventually(t, "nacos endpoints gone", func() bool {
		objs, _, _, _ := rec.snapshot()
		o := objs["ServiceEntry/shared.example"]
		return o != nil && endpointCount(o) == 1
	})
}

func TestWorkloadEntriesFollowInstances(t *testing.T) {
	c, rec := start(t, Config{Convert: convert.Options{MaxInlineEndpoints: 2}})
	c.SetRegistries([]supervisor.Registration{{Name: "zk"}})
	c.Upsert(svc("zk", "big", "big.example", "10.0.0.1", "10.0.0.2", "10.0.0.3"))
	countWE := func() int {
		objs, _, _, _ := rec.snapshot()
		n := 0
		for k := range objs {
			if len(k) > 14 && k[:14] == "WorkloadEntry/" {
				n++
			}
		}
		return n
	}
	eventually(t, "3 WorkloadEntries", func() bool { return countWE() == 3 })
	c.Upsert(svc("zk", "big", "big.example", "10.0.0.1", "10.0.0.2"))
	eventually(t, "back inline", func() bool {
		objs, _, _, _ := rec.snapshot()
		o := objs["ServiceEntry/big.example"]
		return countWE() == 0 && o != nil && endpointCount(o) == 2
	})
}

func TestRegistryCountMetrics(t *testing.T) {
	c, _ := start(t, Config{})
	reg := prometheus.NewRegistry()
	if err := c.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	c.SetRegistries([]supervisor.Registration{{Name: "zk"}, {Name: "empty"}})
	c.Replace("zk", []catalog.Service{svc("zk", "a", "a.example", "10.0.0.1", "10.0.0.2"), svc("zk", "b", "b.example", "10.0.0.3")}, nil)
	want := `
# HELP meltemi_registry_instances Instances a registry currently provides (last known state while it is down).
# TYPE meltemi_registry_instances gauge
meltemi_registry_instances{registry="empty"} 0
meltemi_registry_instances{registry="zk"} 3
# HELP meltemi_registry_services Services a registry currently provides (last known state while it is down).
# TYPE meltemi_registry_services gauge
meltemi_registry_services{registry="empty"} 0
meltemi_registry_services{registry="zk"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "meltemi_registry_services", "meltemi_registry_instances"); err != nil {
		t.Fatal(err)
	}
}

// With a write window, the first change of a quiet host is written at once, the rest of a
// burst in one more write at the window's end, and that write has the last state.
func TestWriteWindowLeadingAndTrailing(t *testing.T) {
	c, rec := start(t, Config{Window: 100 * time.Millisecond})
	c.SetRegistries([]supervisor.Registration{{Name: "zk"}})
	begin := time.Now()
	c.Upsert(svc("zk", "k", "w.example", "10.0.0.1"))
	eventually(t, "the first write", func() bool { objs, _, _, _ := rec.snapshot(); return objs["ServiceEntry/w.example"] != nil })
	if d := time.Since(begin); d > 50*time.Millisecond {
		t.Errorf("the first change of a quiet host waited %v", d)
	}
	// Rapid changes of the same endpoint, ending with it removed, then back with a second one.
	for i := range 20 {
		if i%2 == 0 {
			c.Upsert(svc("zk", "k", "w.example", "10.0.0.1", "10.0.0.9"))
		} else {
			c.Upsert(svc("zk", "k", "w.example", "10.0.0.1"))
		}
	}
	c.Upsert(svc("zk", "k", "w.example", "10.0.0.2", "10.0.0.3"))
	eventually(t, "the last state", func() bool {
		objs, _, _, _ := rec.snapshot()
		o := objs["ServiceEntry/w.example"]
		return o != nil && endpointCount(o) == 2 && strings.Contains(fmt.Sprint(o.Object["spec"]), "10.0.0.3")
	})
	time.Sleep(150 * time.Millisecond)
	if _, sets, _, _ := rec.snapshot(); sets != 2 {
		t.Fatalf("%d writes for a burst within the window, want 2 (leading and trailing)", sets)
	}
}

// hostTable is a HostLookup the test sets.
type hostTable struct {
	mu      sync.Mutex
	foreign map[string][]string
	owned   map[string]bool
}

func (h *hostTable) Lookup(host string) ([]string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.foreign[host]), h.owned[host]
}

func (h *hostTable) set(host string, foreign []string, owned bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.foreign[host], h.owned[host] = foreign, owned
}

// A host only foreign ServiceEntries define is withheld (counted) until they are gone; one
// Meltemi already has an entry for is kept up to date next to the foreign one.
func TestHostGuard(t *testing.T) {
	hosts := &hostTable{foreign: map[string][]string{}, owned: map[string]bool{}}
	hosts.set("legacy.example", []string{"apps/aeraki-legacy.example"}, false)
	hosts.set("shared.example", []string{"apps/mine-too"}, true)
	c, rec := start(t, Config{Hosts: hosts})
	c.Upsert(svc("zk", "a", "legacy.example", "10.0.0.1"))
	c.Upsert(svc("zk", "b", "shared.example", "10.0.0.2"))
	c.Upsert(svc("zk", "c", "fresh.example", "10.0.0.3"))
	eventually(t, "fresh and shared hosts written", func() bool {
		objs, _, _, _ := rec.snapshot()
		return objs["ServiceEntry/fresh.example"] != nil && objs["ServiceEntry/shared.example"] != nil
	})
	if objs, _, _, _ := rec.snapshot(); objs["ServiceEntry/legacy.example"] != nil {
		t.Fatal("a host only a foreign ServiceEntry defines was written")
	}
	if w := c.Withheld(); len(w) != 1 || w["legacy.example"][0] != "apps/aeraki-legacy.example" {
		t.Errorf("withheld %v", w)
	}
	hosts.set("legacy.example", nil, false)
	c.Recheck("legacy.example")
	eventually(t, "legacy host written once the foreign entry is gone", func() bool {
		objs, _, _, _ := rec.snapshot()
		return objs["ServiceEntry/legacy.example"] != nil
	})
	if w := c.Withheld(); len(w) != 0 {
		t.Errorf("still withheld: %v", w)
	}
}

// TestUnusableRegistryKeepsItsObjects: a registry declared but not runnable (its spec cannot
// be used, e.g. its credentials Secret is missing after a restart) never syncs: its objects are
// kept, not deleted as a removed registry's would be.
func TestUnusableRegistryKeepsItsObjects(t *testing.T) {
	policy := &Policy{}
	c, rec := start(t, Config{Policy: policy})
	c.SetRegistries([]supervisor.Registration{{Name: "a"}}, "b")
	c.Replace("a", []catalog.Service{svc("a", "k1", "one.example", "10.0.0.1")}, nil)
	c.Synced("a")
	eventually(t, "AllowDeletes after a synced", func() bool { return rec.allowedAfter("ServiceEntry/one.example") })
	if !holds(policy, "b") || !holds(policy, "a", "b") {
		t.Error("the unusable registry's objects are not held")
	}
	if holds(policy, "a") || holds(policy, "removed") {
		t.Error("objects of a synced or a removed registry held")
	}
	if c.DeletesAllowed() {
		t.Error("DeletesAllowed with a declared registry that never synced")
	}
}

// pacedRecorder is a writer that is behind while its gate is closed (WaitBacklog blocks), and
// takes limit hosts at once (0: any number).
type pacedRecorder struct {
	*recorder
	gate  chan struct{}
	limit int
}

func (p *pacedRecorder) HandOverLimit() int { return p.limit }

func (p *pacedRecorder) WaitBacklog(ctx context.Context) {
	select {
	case <-p.gate:
	case <-ctx.Done():
	}
}

// runBehindWriter runs a controller whose writer is behind until p.gate is closed.
func runBehindWriter(t *testing.T) (*pacedRecorder, *Controller) {
	t.Helper()
	p := &pacedRecorder{recorder: newRecorder(), gate: make(chan struct{})}
	c := New(Config{Convert: convert.Options{Namespace: "ns"}, Window: 10 * time.Millisecond, Pacer: p}, store.New(), p)
	runController(t, c)
	return p, c
}

// runController runs c until the test ends.
func runController(t *testing.T, c *Controller) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// checkOrder fails the test unless the ServiceEntries of hosts were handed over in that order.
func checkOrder(t *testing.T, p *pacedRecorder, hosts ...string) {
	t.Helper()
	var want []string
	for _, h := range hosts {
		want = append(want, "ServiceEntry/"+h+".svc")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Equal(p.order, want) {
		t.Errorf("handed over in the order %v, want the order of the first changes %v", p.order, want)
	}
}

// TestBehindWriterGetsEachHostOnceWithItsLatestState: while the writer is behind, changes
// coalesce in the controller; once it catches up each changed host is converted and handed
// over once, with its latest state.
func TestBehindWriterGetsEachHostOnceWithItsLatestState(t *testing.T) {
	p, c := runBehindWriter(t)
	c.Upsert(svc("zk", "a", "a.svc", "10.0.0.1"))
	eventually(t, "the first change handed over at once", func() bool { _, sets, _, _ := p.snapshot(); return sets == 1 })
	// The writer is behind now: 50 changes to two hosts wait in the controller.
	for i := range 50 {
		c.Upsert(svc("zk", "a", "a.svc", fmt.Sprintf("10.0.1.%d", i)))
		c.Upsert(svc("zk", "b", "b.svc", fmt.Sprintf("10.0.2.%d", i)))
	}
	time.Sleep(50 * time.Millisecond)
	if _, sets, _, _ := p.snapshot(); sets != 1 {
		t.Fatalf("%d objects handed over while the writer was behind, want only the first", sets)
	}
	close(p.gate)
	eventually(t, "both hosts handed over", func() bool { _, sets, _, _ := p.snapshot(); return sets >= 3 })
	time.Sleep(50 * time.Millisecond)
	objs, sets, _, _ := p.snapshot()
	if sets != 3 {
		t.Errorf("%d objects handed over for 100 changes to 2 hosts behind a slow writer, want 1 each (3 with the first)", sets)
	}
	for host, want := range map[string]string{"a.svc": "10.0.1.49", "b.svc": "10.0.2.49"} {
		obj := objs["ServiceEntry/"+host]
		if obj == nil {
			t.Fatalf("no ServiceEntry for %s", host)
		}
		eps, _, _ := unstructured.NestedSlice(obj.Object, "spec", "endpoints")
		if len(eps) != 1 || eps[0].(map[string]any)["address"] != want {
			t.Errorf("%s endpoints %v, want only the latest %s", host, eps, want)
		}
	}
}

// TestBehindWriterGetsTheOldestChangeFirst: a batch is handed over in the order its hosts
// changed, not by name, so a host changed just after a batch was taken is not also last in
// the next one while the writer works through its queue in order.
func TestBehindWriterGetsTheOldestChangeFirst(t *testing.T) {
	p, c := runBehindWriter(t)
	c.Upsert(svc("zk", "first", "first.svc", "10.0.0.1"))
	eventually(t, "the first change handed over at once", func() bool { _, sets, _, _ := p.snapshot(); return sets == 1 })
	for _, h := range []string{"c", "a", "d", "b"} {
		c.Upsert(svc("zk", h, h+".svc", "10.0.0.2"))
		time.Sleep(2 * time.Millisecond) // distinct change times
	}
	c.Upsert(svc("zk", "c", "c.svc", "10.0.0.3")) // a later change keeps c's first place
	close(p.gate)
	eventually(t, "every host handed over", func() bool { _, sets, _, _ := p.snapshot(); return sets == 5 })
	checkOrder(t, p, "first", "c", "a", "d", "b")
}

// TestBehindWriterTakesHostsInTurnWithinItsLimit: a writer that takes two hosts at a time gets
// the changed hosts two by two in the order they first changed, and a host changed again
// while it waits is handed over with that latest state when its turn comes.
func TestBehindWriterTakesHostsInTurnWithinItsLimit(t *testing.T) {
	p := &pacedRecorder{recorder: newRecorder(), gate: make(chan struct{}), limit: 2}
	c := New(Config{Convert: convert.Options{Namespace: "ns"}, Window: 10 * time.Millisecond, Pacer: p}, store.New(), p)
	for _, h := range []string{"d", "a", "c", "b", "e"} {
		c.Upsert(svc("zk", h, h+".svc", "10.0.0.1"))
		time.Sleep(2 * time.Millisecond)
	}
	c.Upsert(svc("zk", "e", "e.svc", "10.0.0.9")) // waiting: handed over with this state
	runController(t, c)
	eventually(t, "the first two hosts handed over", func() bool { _, sets, _, _ := p.snapshot(); return sets == 2 })
	time.Sleep(50 * time.Millisecond)
	if _, sets, _, _ := p.snapshot(); sets != 2 {
		t.Fatalf("%d hosts handed over to a writer behind that takes 2 at once", sets)
	}
	close(p.gate)
	eventually(t, "every host handed over", func() bool { _, sets, _, _ := p.snapshot(); return sets == 5 })
	checkOrder(t, p, "d", "a", "c", "b", "e")
	p.mu.Lock()
	defer p.mu.Unlock()
	eps, _, _ := unstructured.NestedSlice(p.objects["ServiceEntry/e.svc"].Object, "spec", "endpoints")
	if len(eps) != 1 || eps[0].(map[string]any)["address"] != "10.0.0.9" {
		t.Errorf("e.svc endpoints %v, want its latest state 10.0.0.9", eps)
	}
}
