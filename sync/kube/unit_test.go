package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/util/workqueue"
)

func mustNormalize(t *testing.T, u *unstructured.Unstructured) *desiredObject {
	t.Helper()
	d, err := normalize(u, nil, DefaultMaxObjectBytes)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// asLive returns what the API server would hand back for a desired object: decoded from JSON,
// with server fields added.
func asLive(t *testing.T, d *desiredObject) *unstructured.Unstructured {
	t.Helper()
	body, err := d.applyBody("")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := utiljson.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetUID("uid-1")
	u.SetResourceVersion("42")
	u.SetGeneration(1)
	u.SetCreationTimestamp(metav1.Now())
	return u
}

func TestContentHashCanonical(t *testing.T) {
	base := mustNormalize(t, serviceEntry("ns", "a", 3, "1.0.0"))

	// Go ints instead of int64, keys built in another order, server metadata and status:
	// same hash.
	other := serviceEntry("ns", "a", 3, "1.0.0")
	spec := other.Object["spec"].(map[string]any)
	spec["ports"] = []any{map[string]any{"protocol": "TCP", "name": "tcp-metaprotocol-dubbo-20880", "number": int(20880)}}
	other.SetResourceVersion("7")
	other.SetUID("x")
	other.SetGeneration(3)
	other.Object["status"] = map[string]any{"conditions": []any{}}
	other.SetAnnotations(map[string]string{v1alpha1.AnnotationContentHash: "stale"})
	if got := mustNormalize(t, other).hash; got != base.hash {
		t.Errorf("equivalent objects hash differently: %s vs %s", got, base.hash)
	}
	// The hash of a live copy equals the stored annotation.
	if got := ContentHash(asLive(t, base)); got != base.hash {
		t.Errorf("ContentHash(live) %s != desired %s", got, base.hash)
	}
	if asLive(t, base).GetAnnotations()[v1alpha1.AnnotationContentHash] != base.hash || base.annotations[v1alpha1.AnnotationContentHash] != base.hash {
		t.Errorf("hash annotation not set")
	}

	changes := map[string]func(u *unstructured.Unstructured){
		"spec value": func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(u.Object, "DNS", "spec", "resolution")
		},
		"label": func(u *unstructured.Unstructured) {
			u.SetLabels(map[string]string{v1alpha1.LabelRegistry: "other"})
		},
		"annotation": func(u *unstructured.Unstructured) {
			u.SetAnnotations(map[string]string{"meltemi.io/source": "x"})
		},
		"endpoint order": func(u *unstructured.Unstructured) {
			eps, _, _ := unstructured.NestedSlice(u.Object, "spec", "endpoints")
			eps[0], eps[1] = eps[1], eps[0]
			_ = unstructured.SetNestedSlice(u.Object, eps, "spec", "endpoints")
		},
		"number type": func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(u.Object, "20880", "spec", "ports")
		},
	}
	for name, change := range changes {
		u := serviceEntry("ns", "a", 3, "1.0.0")
		change(u)
		if mustNormalize(t, u).hash == base.hash {
			t.Errorf("%s: hash unchanged", name)
		}
	}
}

func TestNormalize(t *testing.T) {
	in := serviceEntry("ns", "a", 2, "1.0.0")
	in.SetLabels(map[string]string{v1alpha1.LabelRegistry: "zk", v1alpha1.LabelManagedBy: "someone"})
	in.SetFinalizers([]string{"x"})
	d, err := normalize(in, map[string]string{"meltemi.io/instance": "prod"}, DefaultMaxObjectBytes)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{v1alpha1.LabelRegistry: "zk", v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, "meltemi.io/instance": "prod"}
	obj := asLive(t, d)
	if got := obj.GetLabels(); len(got) != len(want) || got[v1alpha1.LabelManagedBy] != v1alpha1.ManagedByValue || got["meltemi.io/instance"] != "prod" || got[v1alpha1.LabelRegistry] != "zk" {
		t.Errorf("labels %v, want %v", got, want)
	}
	if !maps.Equal(d.labels, obj.GetLabels()) || !maps.Equal(d.annotations, obj.GetAnnotations()) {
		t.Errorf("kept labels %v and annotations %v differ from the body's %v, %v", d.labels, d.annotations, obj.GetLabels(), obj.GetAnnotations())
	}
	body, _ := d.applyBody("")
	var md map[string]any
	if err := utiljson.Unmarshal(body, &md); err != nil {
		t.Fatal(err)
	}
	for k := range md["metadata"].(map[string]any) {
		switch k {
		case "name", "namespace", "labels", "annotations":
		default:
			t.Errorf("metadata field %q kept", k)
		}
	}
	if in.GetLabels()[v1alpha1.LabelManagedBy] != "someone" {
		t.Errorf("normalize modified the caller's object")
	}
	if _, ok := obj.Object["spec"].(map[string]any)["ports"].([]any)[0].(map[string]any)["number"].(int64); !ok {
		t.Errorf("numbers not normalised to int64")
	}
	withRV, err := d.applyBody("123")
	if err != nil {
		t.Fatal(err)
	}
	var conditional map[string]any
	if err := utiljson.Unmarshal(withRV, &conditional); err != nil {
		t.Fatalf("apply body with a resourceVersion is not JSON: %v\n%s", err, withRV)
	}
	cmd := conditional["metadata"].(map[string]any)
	if cmd["resourceVersion"] != "123" || cmd["name"] != "a" || len(cmd) != len(md["metadata"].(map[string]any))+1 {
		t.Errorf("apply body with the resourceVersion precondition has metadata %v", cmd)
	}
	delete(cmd, "resourceVersion")
	if !reflect.DeepEqual(conditional, md) {
		t.Errorf("the precondition changed more than metadata.resourceVersion:\n%s\n%s", withRV, body)
	}
	if again, _ := d.applyBody(""); string(again) != string(body) {
		t.Errorf("applyBody modified the desired object")
	}

	_, err = normalize(serviceEntry("ns", "big", 200, "1.0.0"), nil, 4096)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "ServiceEntry ns/big") {
		t.Errorf("oversized object: %v", err)
	}
}

func TestInSync(t *testing.T) {
	d := mustNormalize(t, serviceEntry("ns", "a", 3, "1.0.0"))
	if !inSync(d, asLive(t, d)) {
		t.Fatal("live copy of the desired object is not in sync")
	}
	tolerated := map[string]func(u *unstructured.Unstructured){
		"server default in spec": func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedStringSlice(u.Object, []string{"*"}, "spec", "exportTo")
		},
		"default inside list item": func(u *unstructured.Unstructured) {
			eps, _, _ := unstructured.NestedSlice(u.Object, "spec", "endpoints")
			eps[0].(map[string]any)["weight"] = int64(1)
			_ = unstructured.SetNestedSlice(u.Object, eps, "spec", "endpoints")
		},
		"extra label and annotation": func(u *unstructured.Unstructured) {
			l := u.GetLabels()
			l["team"] = "x"
			u.SetLabels(l)
			a := u.GetAnnotations()
			a["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
			u.SetAnnotations(a)
		},
		"float for int": func(u *unstructured.Unstructured) {
			ports, _, _ := unstructured.NestedSlice(u.Object, "spec", "ports")
			ports[0].(map[string]any)["number"] = float64(20880)
			_ = unstructured.SetNestedSlice(u.Object, ports, "spec", "ports")
		},
		"status": func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"x": "y"}
		},
	}
	// Each case as the API server returns the object (inSync), and as the informer cache keeps
	// it (compareCached): from the cache, a tolerated difference in the content is undecided
	// (the reconciler then reads the object whole), never drift; drift is never in sync.
	cached := func(live *unstructured.Unstructured) syncState { return compareCached(d, compactLive(live.DeepCopy())) }
	if got := cached(asLive(t, d)); got != inSyncNow {
		t.Errorf("cached copy of the desired object: %v, want in sync", got)
	}
	for name, change := range tolerated {
		live := asLive(t, d)
		change(live)
		if !inSync(d, live) {
			t.Errorf("%s: reported as drift", name)
		}
		if got := cached(live); got == drifted {
			t.Errorf("%s (cached): reported as drift", name)
		}
	}
	for _, name := range []string{"extra label and annotation", "status"} {
		live := asLive(t, d)
		tolerated[name](live)
		if got := cached(live); got != inSyncNow {
			t.Errorf("%s (cached): %v; outside the content it needs no read", name, got)
		}
	}
	drift := map[string]func(u *unstructured.Unstructured){
		"spec value": func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(u.Object, "MESH_EXTERNAL", "spec", "location")
		},
		"endpoint removed": func(u *unstructured.Unstructured) {
			eps, _, _ := unstructured.NestedSlice(u.Object, "spec", "endpoints")
			_ = unstructured.SetNestedSlice(u.Object, eps[1:], "spec", "endpoints")
		},
		"endpoint added": func(u *unstructured.Unstructured) {
			eps, _, _ := unstructured.NestedSlice(u.Object, "spec", "endpoints")
			_ = unstructured.SetNestedSlice(u.Object, append(eps, map[string]any{"address": "1.1.1.1"}), "spec", "endpoints")
		},
		"nested value": func(u *unstructured.Unstructured) {
			eps, _, _ := unstructured.NestedSlice(u.Object, "spec", "endpoints")
			eps[2].(map[string]any)["labels"].(map[string]any)["version"] = "9"
			_ = unstructured.SetNestedSlice(u.Object, eps, "spec", "endpoints")
		},
		"spec removed": func(u *unstructured.Unstructured) { delete(u.Object, "spec") },
		"label removed": func(u *unstructured.Unstructured) {
			l := u.GetLabels()
			delete(l, v1alpha1.LabelRegistry)
			u.SetLabels(l)
		},
		"label changed": func(u *unstructured.Unstructured) {
			l := u.GetLabels()
			l[v1alpha1.LabelRegistry] = "other"
			u.SetLabels(l)
		},
		"hash annotation": func(u *unstructured.Unstructured) {
			u.SetAnnotations(map[string]string{v1alpha1.AnnotationContentHash: "x"})
		},
		"number": func(u *unstructured.Unstructured) {
			ports, _, _ := unstructured.NestedSlice(u.Object, "spec", "ports")
			ports[0].(map[string]any)["number"] = int64(20881)
			_ = unstructured.SetNestedSlice(u.Object, ports, "spec", "ports")
		},
	}
	for name, change := range drift {
		live := asLive(t, d)
		change(live)
		if inSync(d, live) {
			t.Errorf("%s: not detected as drift", name)
		}
		if got := cached(live); got == inSyncNow {
			t.Errorf("%s (cached): not detected as drift", name)
		}
	}
}

// TestCompactLive: the cache keeps an owned object's identity, labels and annotations as they
// are and a digest of its content in place of it, drops managedFields and status, and stays a
// valid JSON value (DeepCopy works).
func TestCompactLive(t *testing.T) {
	d := mustNormalize(t, serviceEntry("ns", "a", 3, "1.0.0"))
	live := asLive(t, d)
	live.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "meltemi", Operation: metav1.ManagedFieldsOperationApply}})
	live.Object["status"] = map[string]any{"x": "y"}
	c := compactLive(live.DeepCopy()).DeepCopy()
	if c.GetName() != "a" || c.GetNamespace() != "ns" || c.GetUID() != live.GetUID() || c.GetResourceVersion() != live.GetResourceVersion() ||
		!maps.Equal(c.GetLabels(), live.GetLabels()) || !maps.Equal(c.GetAnnotations(), live.GetAnnotations()) || c.GetKind() != "ServiceEntry" {
		t.Errorf("identity or metadata lost: %v", c.Object["metadata"])
	}
	if c.GetManagedFields() != nil || c.Object["status"] != nil || c.Object["spec"] != nil {
		t.Errorf("managedFields, status or content kept: %v", c.Object)
	}
	if c.Object[liveDigestKey] != d.contentHash {
		t.Errorf("digest %v, want the desired content's %s", c.Object[liveDigestKey], d.contentHash)
	}
	// Numbers as Go ints or floats of whole values digest like int64: the form a decode yields.
	other := serviceEntry("ns", "a", 3, "1.0.0")
	other.Object["spec"].(map[string]any)["ports"] = []any{map[string]any{"protocol": "TCP", "name": "tcp-metaprotocol-dubbo-20880", "number": int(20880)}}
	if od := mustNormalize(t, other); od.contentHash != d.contentHash {
		t.Errorf("equivalent content digests differently")
	}
}

// The idle accounting WaitIdle relies on: the workqueue calls the metrics provider once per key
// that becomes dirty and once per finished key, under its lock.
func TestQueueIdleAccounting(t *testing.T) {
	qm := &queueMetrics{depth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "d"})}
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Millisecond, time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "t", MetricsProvider: qm})
	defer q.ShutDown()
	check := func(step string, want int64) {
		t.Helper()
		if got := qm.outstanding.Load(); got != want {
			t.Fatalf("%s: outstanding %d, want %d", step, got, want)
		}
	}
	q.Add("a")
	q.Add("a")
	q.Add("b")
	check("two keys, one added twice", 2)
	k, _ := q.Get()
	check("one in flight", 2)
	q.Add(k) // dirty again while processing
	check("re-added while in flight", 3)
	q.Done(k)
	check("done, re-queued", 2)
	for range 2 {
		k, _ := q.Get()
		q.Done(k)
	}
	check("all done", 0)
	q.AddAfter("c", time.Hour)
	q.AddRateLimited("d")
	check("delayed keys are not outstanding", 0)
	time.Sleep(20 * time.Millisecond) // "d" becomes ready
	check("ready retry", 1)
}

// fakeCluster is a fake dynamic client whose server-side apply upserts the applied object.
type fakeCluster struct {
	*fake.FakeDynamicClient
	mu      sync.Mutex
	applies []string
	deletes []string
}

func newFakeCluster(t *testing.T, objs ...runtime.Object) *fakeCluster {
	t.Helper()
	// Seed objects as decoded from JSON (int64 numbers), as the tracker deep-copies them.
	for i, o := range objs {
		b, err := o.(*unstructured.Unstructured).MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(b); err != nil {
			t.Fatal(err)
		}
		objs[i] = u
	}
	c := &fakeCluster{FakeDynamicClient: fake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{seGVR: "ServiceEntryList"}, objs...)}
	tracker := c.Tracker()
	c.PrependReactor("patch", "serviceentries", func(a clienttesting.Action) (bool, runtime.Object, error) {
		pa := a.(clienttesting.PatchAction)
		if pa.GetPatchType() != types.ApplyPatchType {
			return false, nil, nil
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(pa.GetPatch()); err != nil {
			return true, nil, err
		}
		u.SetResourceVersion("")
		c.mu.Lock()
		c.applies = append(c.applies, pa.GetNamespace()+"/"+pa.GetName())
		c.mu.Unlock()
		_, err := tracker.Get(seGVR, pa.GetNamespace(), pa.GetName())
		switch {
		case apierrors.IsNotFound(err):
			u.SetUID(types.UID("uid-" + pa.GetName()))
			err = tracker.Create(seGVR, u, pa.GetNamespace())
		case err == nil:
			err = tracker.Update(seGVR, u, pa.GetNamespace())
		}
		if err != nil {
			return true, nil, err
		}
		out, err := tracker.Get(seGVR, pa.GetNamespace(), pa.GetName())
		return true, out, err
	})
	c.PrependReactor("delete", "serviceentries", func(a clienttesting.Action) (bool, runtime.Object, error) {
		c.mu.Lock()
		c.deletes = append(c.deletes, a.(clienttesting.DeleteAction).GetNamespace()+"/"+a.(clienttesting.DeleteAction).GetName())
		c.mu.Unlock()
		return false, nil, nil
	})
	return c
}

func (c *fakeCluster) writes() (applies, deletes []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.applies...), append([]string(nil), c.deletes...)
}

func (c *fakeCluster) get(t *testing.T, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := c.Resource(seGVR).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestFakeOwnershipDecisions(t *testing.T) {
	foreign := serviceEntry("ns", "foreign-same-name", 1, "f")
	foreign.SetLabels(map[string]string{"team": "x"})
	helm := serviceEntry("ns", "helm", 1, "f")
	helm.SetLabels(map[string]string{v1alpha1.LabelManagedBy: "Helm"})
	orphan := serviceEntry("ns", "orphan", 1, "old")
	orphan.SetLabels(map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue})
	orphan.SetUID("uid-orphan")
	c := newFakeCluster(t, foreign, helm, orphan)

	rr := newReconciler(t, c, "ns", nil)
	for _, name := range []string{"foreign-same-name", "new"} {
		if err := rr.Set(serviceEntry("ns", name, 2, "1.0.0")); err != nil {
			t.Fatal(err)
		}
	}
	rr.start(t)
	rr.waitIdle(t)
	eventually(t, 5*time.Second, func() error {
		if rr.Stats().ForeignConflicts == 0 {
			return errors.New("no conflict counted")
		}
		return nil
	})
	applies, deletes := c.writes()
	if len(applies) != 1 || applies[0] != "ns/new" || len(deletes) != 0 {
		t.Fatalf("applies %v deletes %v; want only ns/new applied", applies, deletes)
	}
	if got := c.get(t, "ns", "new"); got.GetLabels()[v1alpha1.LabelManagedBy] != v1alpha1.ManagedByValue || got.GetAnnotations()[v1alpha1.AnnotationContentHash] == "" {
		t.Errorf("written object lacks ownership label or hash: %v %v", got.GetLabels(), got.GetAnnotations())
	}
	if s := rr.Stats(); s.PendingDeletes != 1 {
		t.Errorf("pending deletes %d, want 1 (orphan)", s.PendingDeletes)
	}

	rr.AllowDeletes()
	eventually(t, 5*time.Second, func() error {
		if c.get(t, "ns", "orphan") != nil {
			return errors.New("orphan not deleted")
		}
		return nil
	})
	rr.settle(t)
	applies, deletes = c.writes()
	if len(applies) != 1 || len(deletes) != 1 || deletes[0] != "ns/orphan" {
		t.Errorf("applies %v deletes %v; want only ns/orphan deleted", applies, deletes)
	}
	for _, name := range []string{"foreign-same-name", "helm"} {
		if c.get(t, "ns", name) == nil {
			t.Errorf("foreign %s deleted", name)
		}
	}
	if got := c.get(t, "ns", "foreign-same-name"); got.GetLabels()[v1alpha1.LabelManagedBy] != "" {
		t.Errorf("foreign object modified")
	}
}

func TestFakeOwnerLabelsNarrowOwnership(t *testing.T) {
	// Owned by another Meltemi instance: managed-by=meltemi but another instance label.
	other := serviceEntry("ns", "other-instance", 1, "x")
	other.SetLabels(map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, "meltemi.io/instance": "b"})
	c := newFakeCluster(t, other)
	rr := newReconciler(t, c, "ns", func(cfg *Config) { cfg.OwnerLabels = map[string]string{"meltemi.io/instance": "a"} })
	if err := rr.Set(serviceEntry("ns", "mine", 1, "1")); err != nil {
		t.Fatal(err)
	}
	rr.start(t)
	rr.AllowDeletes()
	rr.settle(t)
	if c.get(t, "ns", "other-instance") == nil {
		t.Fatal("another instance's object deleted")
	}
	if got := c.get(t, "ns", "mine").GetLabels()["meltemi.io/instance"]; got != "a" {
		t.Errorf("owner label not written: %q", got)
	}
}

func TestSetValidation(t *testing.T) {
	c := newFakeCluster(t)
	rr := newReconciler(t, c, "ns", func(cfg *Config) { cfg.MaxObjectBytes = 4096 })
	wrongKind := serviceEntry("ns", "a", 1, "1")
	wrongKind.SetAPIVersion("networking.istio.io/v1beta1")
	noNS := serviceEntry("", "a", 1, "1")
	otherNS := serviceEntry("elsewhere", "a", 1, "1")
	noName := serviceEntry("ns", "", 1, "1")
	for name, u := range map[string]*unstructured.Unstructured{"kind": wrongKind, "no namespace": noNS, "other namespace": otherNS, "no name": noName} {
		if err := rr.Set(u); err == nil {
			t.Errorf("%s: Set accepted it", name)
		}
	}
	if err := rr.Set(serviceEntry("ns", "big", 200, "1")); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized: %v", err)
	}
	rr.start(t)
	rr.AllowDeletes()
	rr.settle(t)
	if applies, deletes := c.writes(); len(applies)+len(deletes) != 0 {
		t.Errorf("writes %v %v", applies, deletes)
	}
	if s := rr.Stats(); s.Errors != 1 {
		t.Errorf("stats %+v", s)
	}
	if _, err := New(Config{Client: c, Kinds: []Kind{ServiceEntryKind()}, Registerer: rr.reg}); err == nil {
		t.Errorf("second reconciler on the same registry accepted")
	}
}

func TestQueueDepthMetricAndOptionalHooks(t *testing.T) {
	c := newFakeCluster(t)
	reg := prometheus.NewRegistry()
	r, err := New(Config{Client: c, Kinds: []Kind{ServiceEntryKind()}, Registerer: reg}) // no Logger, no Recorder
	if err != nil {
		t.Fatal(err)
	}
	rr := &running{Reconciler: r, reg: reg}
	for _, name := range []string{"a", "b", "c"} {
		if err := rr.Set(serviceEntry("ns", name, 1, "1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := rr.Set(serviceEntry("ns", "a", 1, "2")); err != nil { // same key: deduplicated
		t.Fatal(err)
	}
	if got := metric(t, reg, "meltemi_sync_queue_depth", nil); got != 3 {
		t.Errorf("meltemi_sync_queue_depth = %v before Run, want 3", got)
	}
	if s := rr.Stats(); s.QueueDepth != 3 {
		t.Errorf("Stats().QueueDepth = %d", s.QueueDepth)
	}
	big := serviceEntry("ns", "big", 1, strings.Repeat("x", DefaultMaxObjectBytes))
	if err := rr.Set(big); !errors.Is(err, ErrTooLarge) { // refused with no Recorder set
		t.Errorf("oversized: %v", err)
	}
	rr.start(t)
	rr.settle(t)
	if got := metric(t, reg, "meltemi_sync_queue_depth", nil); got != 0 {
		t.Errorf("meltemi_sync_queue_depth = %v when idle", got)
	}
	if applies, _ := c.writes(); len(applies) != 3 {
		t.Errorf("applies %v, want 3", applies)
	}
	if v := endpointVersion(t, c.get(t, "ns", "a")); v != "2" {
		t.Errorf("a has version %q, want the latest (2)", v)
	}
	if err := rr.Run(context.Background()); err == nil {
		t.Errorf("second Run accepted")
	}
}

func TestServerUnavailable(t *testing.T) {
	gr := schema.GroupResource{Group: "networking.istio.io", Resource: "serviceentries"}
	call := func(err error) error { return fmt.Errorf("apply: %w", &callError{err}) }
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", call(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), true},
		{"cut off", call(io.ErrUnexpectedEOF), true},
		{"503", call(apierrors.NewServiceUnavailable("starting")), true},
		{"429", call(apierrors.NewTooManyRequests("slow down", 1)), true},
		{"server timeout", call(apierrors.NewServerTimeout(gr, "patch", 1)), true},
		{"gateway timeout", call(apierrors.NewTimeoutError("etcd", 1)), true},
		{"500 on the object", call(apierrors.NewInternalError(errors.New("failed to create typed patch object"))), false},
		{"invalid", call(apierrors.NewInvalid(schema.GroupKind{Kind: "ServiceEntry"}, "x", nil)), false},
		{"conflict", call(apierrors.NewConflict(gr, "x", errors.New("changed"))), false},
		{"shutting down", call(context.Canceled), false},
		{"not an API call", errors.New("encoding the body"), false},
	} {
		if got := serverUnavailable(tc.err); got != tc.want {
			t.Errorf("%s: serverUnavailable = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestFakeDefaultedObjectIsReadOnceNotRewritten: an owned object whose stored content differs
// from the desired one only by a value the server added (a default) is read whole once, found
// in sync and not written, and not read again while it stays unchanged; one whose content
// drifted is read and written back.
func TestFakeDefaultedObjectIsReadOnceNotRewritten(t *testing.T) {
	stored := func(name string, change func(u *unstructured.Unstructured)) *unstructured.Unstructured {
		u := asLive(t, mustNormalize(t, serviceEntry("ns", name, 2, "1.0.0")))
		u.SetUID(types.UID("uid-" + name))
		change(u)
		return u
	}
	defaulted := stored("defaulted", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedStringSlice(u.Object, []string{"*"}, "spec", "exportTo")
	})
	drifted := stored("drifted", func(u *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(u.Object, "MESH_EXTERNAL", "spec", "location")
	})
	exact := stored("exact", func(*unstructured.Unstructured) {})
	c := newFakeCluster(t, defaulted, drifted, exact)
	rr := newReconciler(t, c, "ns", nil)
	for _, name := range []string{"defaulted", "drifted", "exact"} {
		if err := rr.Set(serviceEntry("ns", name, 2, "1.0.0")); err != nil {
			t.Fatal(err)
		}
	}
	rr.start(t)
	rr.waitIdle(t)
	rr.settle(t)
	applies, _ := c.writes()
	if !slices.Equal(applies, []string{"ns/drifted"}) {
		t.Errorf("applies %v, want only the drifted object written back", applies)
	}
	if got := rr.Stats().Reads; got != 2 {
		t.Errorf("%d reads, want 2 (the defaulted and the drifted object; the exact one is decided from the cache)", got)
	}
	rr.resync()
	rr.waitIdle(t)
	if got := rr.Stats().Reads; got != 2 {
		t.Errorf("%d reads after a resync, want still 2: the defaulted object is known in sync at its resourceVersion", got)
	}
	if applies, _ := c.writes(); len(applies) != 1 {
		t.Errorf("applies after a resync %v", applies)
	}
}

// TestWaitBacklogHoldsWhileTheQueueOutgrowsTheWorkers: with the writes stuck, more keys are
// queued than there are workers and WaitBacklog blocks; it returns once they drain, and at
// once while the workers are not running. Each write is timed in meltemi_sync_write_seconds.
func TestWaitBacklogHoldsWhileTheQueueOutgrowsTheWorkers(t *testing.T) {
	c := newFakeCluster(t)
	gate := make(chan struct{})
	c.PrependReactor("patch", "serviceentries", func(clienttesting.Action) (bool, runtime.Object, error) {
		<-gate
		return false, nil, nil
	})
	rr := newReconciler(t, c, "ns", func(cfg *Config) { cfg.Workers = 2 })
	for i := range 10 {
		if err := rr.Set(serviceEntry("ns", fmt.Sprintf("se-%d", i), 1, "1")); err != nil {
			t.Fatal(err)
		}
	}
	waited := func() <-chan struct{} {
		done := make(chan struct{})
		go func() { rr.WaitBacklog(context.Background()); close(done) }()
		return done
	}
	select {
	case <-waited():
	case <-time.After(5 * time.Second):
		t.Fatal("WaitBacklog blocked before Run: nothing would ever drain the queue")
	}
	rr.start(t)
	eventually(t, 5*time.Second, func() error {
		if !rr.Synced() {
			return errors.New("caches not synced")
		}
		return nil
	})
	behind := waited()
	select {
	case <-behind:
		t.Fatalf("WaitBacklog returned with %d keys queued for 2 workers", rr.queue.Len())
	case <-time.After(100 * time.Millisecond):
	}
	close(gate)
	select {
	case <-behind:
	case <-time.After(5 * time.Second):
		t.Fatal("WaitBacklog still blocked after the writes went through")
	}
	rr.settle(t)
	if got := metric(t, rr.reg, "meltemi_sync_write_seconds", map[string]string{"verb": "apply"}); got != 10 {
		t.Errorf("meltemi_sync_write_seconds counts %v applies, want 10", got)
	}
}
