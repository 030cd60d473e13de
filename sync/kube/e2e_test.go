package kube

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// These tests run against the real kube-apiserver with Istio's CRDs started by
// e2e/infra/up.sh kube-apiserver. Without it they skip, unless MELTEMI_E2E=1.

func (ke *kubeEnv) get(t testing.TB, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := ke.admin.Resource(seGVR).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get %s/%s: %v", ns, name, err)
	}
	return u
}

func (ke *kubeEnv) create(t testing.TB, u *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	out, err := ke.admin.Resource(seGVR).Namespace(u.GetNamespace()).Create(context.Background(), u, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create %s: %v", describe(u), err)
	}
	return out
}

func foreignEntry(ns, name string, labels map[string]string) *unstructured.Unstructured {
	u := serviceEntry(ns, name, 2, "foreign")
	l := map[string]string{noAutoallocate: "false"}
	maps.Copy(l, labels)
	u.SetLabels(l)
	return u
}

func endpointVersion(t testing.TB, u *unstructured.Unstructured) string {
	t.Helper()
	eps, _, _ := unstructured.NestedSlice(u.Object, "spec", "endpoints")
	if len(eps) == 0 {
		t.Fatalf("%s has no endpoints", describe(u))
	}
	v, _, _ := unstructured.NestedString(eps[0].(map[string]any), "labels", "version")
	return v
}

func TestE2ECreateNoopAndChange(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	client, wc := ke.countedClient(t)
	rr := newReconciler(t, client, ns, nil).start(t)

	const n = 20
	for i := range n {
		if err := rr.Set(serviceEntry(ns, fmt.Sprintf("svc-%d", i), 10, "1.0.0")); err != nil {
			t.Fatal(err)
		}
	}
	rr.waitIdle(t)
	if got := wc.snapshot(); got["PATCH"] != n || wc.total() != n {
		t.Fatalf("initial sync: writes %v, want %d PATCH (server-side apply) only", got, n)
	}
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		live := ke.get(t, ns, name)
		if live == nil {
			t.Fatalf("%s not created", name)
		}
		labels := live.GetLabels()
		if labels[v1alpha1.LabelManagedBy] != v1alpha1.ManagedByValue || labels[v1alpha1.LabelRegistry] != "zk-test" {
			t.Errorf("%s labels %v", name, labels)
		}
		d, err := normalize(serviceEntry(ns, name, 10, "1.0.0"), nil, DefaultMaxObjectBytes)
		if err != nil {
			t.Fatal(err)
		}
		if h := live.GetAnnotations()[v1alpha1.AnnotationContentHash]; h != d.hash || h != ContentHash(live) {
			t.Errorf("%s hash annotation %q, want %q (recomputed from live %q)", name, h, d.hash, ContentHash(live))
		}
		for _, mf := range live.GetManagedFields() {
			if mf.Manager != "meltemi" || mf.Operation != metav1.ManagedFieldsOperationApply {
				t.Errorf("%s has managed fields of %s/%s; want only meltemi/Apply", name, mf.Manager, mf.Operation)
			}
		}
	}
	if got := metric(t, rr.reg, "meltemi_sync_writes_total", map[string]string{"verb": "apply", "kind": "ServiceEntry"}); got != n {
		t.Errorf("meltemi_sync_writes_total{verb=apply} = %v, want %d", got, n)
	}

	// The same content again, right away (the informer may not have seen our writes yet) and
	// once the cache has caught up: no API writes at all.
	for round := range 2 {
		before := wc.total()
		noops := rr.Stats().Noops
		for i := range n {
			if err := rr.Set(serviceEntry(ns, fmt.Sprintf("svc-%d", i), 10, "1.0.0")); err != nil {
				t.Fatal(err)
			}
		}
		rr.waitIdle(t)
		if got := wc.total() - before; got != 0 {
			t.Fatalf("round %d: unchanged Set made %d writes (%v)", round, got, wc.snapshot())
		}
		if got := rr.Stats().Noops - noops; got < n {
			t.Errorf("round %d: %d no-ops counted, want >= %d", round, got, n)
		}
		rr.settle(t)
	}
	if got := metric(t, rr.reg, "meltemi_sync_noop_total", map[string]string{"kind": "ServiceEntry"}); got < 2*n {
		t.Errorf("meltemi_sync_noop_total = %v, want >= %d", got, 2*n)
	}

	// One changed object: one apply.
	before := wc.total()
	if err := rr.Set(serviceEntry(ns, "svc-3", 10, "2.0.0")); err != nil {
		t.Fatal(err)
	}
	rr.waitIdle(t)
	if got := wc.snapshot(); wc.total()-before != 1 || got["PATCH"] != n+1 {
		t.Fatalf("change: %d writes (%v), want exactly one apply", wc.total()-before, got)
	}
	live := ke.get(t, ns, "svc-3")
	if v := endpointVersion(t, live); v != "2.0.0" {
		t.Errorf("svc-3 endpoint version %q after change", v)
	}
	if live.GetAnnotations()[v1alpha1.AnnotationContentHash] != ContentHash(live) {
		t.Errorf("svc-3 hash annotation not updated")
	}
	if s := rr.Stats(); s.Applies != n+1 || s.Creates != n || s.Errors != 0 || s.Deletes != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestE2EDeletesOnlyAfterAllowDeletes(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	// A leftover of an earlier run: owned, desired by nobody now.
	leftover := serviceEntry(ns, "leftover", 1, "0.9")
	leftover.SetLabels(map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelRegistry: "zk-test", noAutoallocate: "false"})
	ke.create(t, leftover)

	client, wc := ke.countedClient(t)
	rr := newReconciler(t, client, ns, nil).start(t)
	for _, name := range []string{"keep", "drop"} {
		if err := rr.Set(serviceEntry(ns, name, 3, "1.0.0")); err != nil {
			t.Fatal(err)
		}
	}
	rr.settle(t)
	rr.unset(ServiceEntryKind().GVK, ns, "drop")
	rr.waitIdle(t)
	time.Sleep(200 * time.Millisecond) // give a wrong delete every chance to happen
	rr.waitIdle(t)
	for _, name := range []string{"keep", "drop", "leftover"} {
		if ke.get(t, ns, name) == nil {
			t.Fatalf("%s deleted before AllowDeletes", name)
		}
	}
	if got := wc.snapshot()["DELETE"]; got != 0 {
		t.Fatalf("%d deletes before AllowDeletes", got)
	}
	if s := rr.Stats(); s.PendingDeletes != 2 {
		t.Errorf("pending deletes %d, want 2 (drop, leftover)", s.PendingDeletes)
	}
	if got := metric(t, rr.reg, "meltemi_sync_pending_deletes", nil); got != 2 {
		t.Errorf("meltemi_sync_pending_deletes = %v, want 2", got)
	}

	rr.AllowDeletes()
	rr.waitIdle(t)
	eventually(t, 30*time.Second, func() error {
		for _, name := range []string{"drop", "leftover"} {
			if ke.get(t, ns, name) != nil {
				return fmt.Errorf("%s still exists", name)
			}
		}
		return nil
	})
	if ke.get(t, ns, "keep") == nil {
		t.Fatal("desired object deleted")
	}
	rr.settle(t)
	if got := wc.snapshot()["DELETE"]; got != 2 {
		t.Errorf("%d DELETE requests, want 2", got)
	}
	if s := rr.Stats(); s.Deletes != 2 || s.PendingDeletes != 0 {
		t.Errorf("stats %+v", s)
	}
	if got := metric(t, rr.reg, "meltemi_sync_pending_deletes", nil); got != 0 {
		t.Errorf("meltemi_sync_pending_deletes = %v after AllowDeletes", got)
	}
	if got := metric(t, rr.reg, "meltemi_sync_writes_total", map[string]string{"verb": "delete"}); got != 2 {
		t.Errorf("meltemi_sync_writes_total{verb=delete} = %v", got)
	}
}

func TestE2EForeignObjectWithDesiredName(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	foreign := ke.create(t, foreignEntry(ns, "taken", map[string]string{"team": "payments"}))

	client, wc := ke.countedClient(t)
	rr := newReconciler(t, client, ns, nil).start(t)
	for _, name := range []string{"taken", "free"} {
		if err := rr.Set(serviceEntry(ns, name, 3, "1.0.0")); err != nil {
			t.Fatal(err)
		}
	}
	rr.AllowDeletes()
	rr.waitIdle(t)
	// The conflicting key is retried with backoff; let a few retries happen.
	eventually(t, 10*time.Second, func() error {
		if n := rr.Stats().ForeignConflicts; n < 3 {
			return fmt.Errorf("%d conflicts so far", n)
		}
		return nil
	})
	if ke.get(t, ns, "free") == nil {
		t.Fatal("the conflict blocked another object")
	}
	live := ke.get(t, ns, "taken")
	if live.GetResourceVersion() != foreign.GetResourceVersion() || live.GetLabels()[v1alpha1.LabelManagedBy] != "" {
		t.Fatalf("foreign object modified: rv %s -> %s, labels %v", foreign.GetResourceVersion(), live.GetResourceVersion(), live.GetLabels())
	}
	if got := wc.total(); got != 1 {
		t.Errorf("%d writes (%v), want 1 (free)", got, wc.snapshot())
	}
	if got := metric(t, rr.reg, "meltemi_sync_conflicts_total", map[string]string{"kind": "ServiceEntry"}); got < 3 {
		t.Errorf("meltemi_sync_conflicts_total = %v", got)
	}
	events := rr.events.list()
	if len(events) != 1 || !strings.Contains(events[0], ReasonForeignObject) || !strings.Contains(events[0], ns+"/taken") {
		t.Errorf("events %q, want one %s for taken", events, ReasonForeignObject)
	}
	if s := rr.Stats(); s.Errors != 0 {
		t.Errorf("conflicts counted as errors: %+v", s)
	}

	// The foreign object goes away: the desired one is created promptly.
	if err := ke.admin.Resource(seGVR).Namespace(ns).Delete(context.Background(), "taken", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		u := ke.get(t, ns, "taken")
		if u == nil || u.GetLabels()[v1alpha1.LabelManagedBy] != v1alpha1.ManagedByValue {
			return errors.New("taken not yet created by the reconciler")
		}
		return nil
	})
}

func TestE2EForeignObjectsElsewhereUntouched(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	plain := ke.create(t, foreignEntry(ns, "someone-else", nil))
	other := ke.create(t, foreignEntry(ns, "helm-owned", map[string]string{v1alpha1.LabelManagedBy: "Helm", v1alpha1.LabelRegistry: "zk-test"}))

	client, wc := ke.countedClient(t)
	rr := newReconciler(t, client, ns, nil).start(t)
	if err := rr.Set(serviceEntry(ns, "mine", 3, "1.0.0")); err != nil {
		t.Fatal(err)
	}
	rr.AllowDeletes()
	rr.settle(t)
	rr.resync() // a periodic full pass must not touch them either
	rr.settle(t)
	for _, want := range []*unstructured.Unstructured{plain, other} {
		live := ke.get(t, ns, want.GetName())
		if live == nil || live.GetResourceVersion() != want.GetResourceVersion() {
			t.Errorf("foreign %s modified or deleted", want.GetName())
		}
	}
	if got := wc.total(); got != 1 {
		t.Errorf("%d writes (%v), want 1", got, wc.snapshot())
	}
	if s := rr.Stats(); s.PendingDeletes != 0 || s.ForeignConflicts != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestE2EDriftReverted(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	client, _ := ke.countedClient(t)
	rr := newReconciler(t, client, ns, nil).start(t)
	if err := rr.Set(serviceEntry(ns, "drifty", 3, "1.0.0")); err != nil {
		t.Fatal(err)
	}
	rr.settle(t)

	edits := []struct {
		name string
		edit func(u *unstructured.Unstructured)
	}{
		{"spec value", func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(u.Object, "MESH_EXTERNAL", "spec", "location")
		}},
		{"endpoint removed", func(u *unstructured.Unstructured) {
			eps, _, _ := unstructured.NestedSlice(u.Object, "spec", "endpoints")
			_ = unstructured.SetNestedSlice(u.Object, eps[1:], "spec", "endpoints")
		}},
		{"registry label removed", func(u *unstructured.Unstructured) {
			l := u.GetLabels()
			delete(l, v1alpha1.LabelRegistry)
			u.SetLabels(l)
		}},
		{"hash annotation changed", func(u *unstructured.Unstructured) {
			a := u.GetAnnotations()
			a[v1alpha1.AnnotationContentHash] = "tampered"
			u.SetAnnotations(a)
		}},
	}
	for _, e := range edits {
		applies := rr.Stats().Applies
		live := ke.get(t, ns, "drifty")
		e.edit(live)
		if _, err := ke.admin.Resource(seGVR).Namespace(ns).Update(context.Background(), live, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		eventually(t, 10*time.Second, func() error {
			u := ke.get(t, ns, "drifty")
			d, _ := normalize(serviceEntry(ns, "drifty", 3, "1.0.0"), nil, DefaultMaxObjectBytes)
			if !inSync(d, u) {
				return fmt.Errorf("%s: not reverted yet", e.name)
			}
			return nil
		})
		rr.settle(t)
		if got := rr.Stats().Applies - applies; got != 1 {
			t.Errorf("%s: %d applies to revert, want 1", e.name, got)
		}
	}
}

func TestE2EDeletedDesiredObjectRecreated(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	client, _ := ke.countedClient(t)
	rr := newReconciler(t, client, ns, nil).start(t)
	if err := rr.Set(serviceEntry(ns, "phoenix", 3, "1.0.0")); err != nil {
		t.Fatal(err)
	}
	rr.settle(t)
	old := ke.get(t, ns, "phoenix")
	if err := ke.admin.Resource(seGVR).Namespace(ns).Delete(context.Background(), "phoenix", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		u := ke.get(t, ns, "phoenix")
		if u == nil || u.GetUID() == old.GetUID() {
			return errors.New("not recreated yet")
		}
		if u.GetLabels()[v1alpha1.LabelManagedBy] != v1alpha1.ManagedByValue {
			return errors.New("recreated without the ownership label")
		}
		return nil
	})
	rr.settle(t)
	if s := rr.Stats(); s.Creates != 2 || s.Deletes != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestE2ERestartMakesNoWrites(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	const n = 50
	setAll := func(r *running) {
		for i := range n {
			if err := r.Set(serviceEntry(ns, fmt.Sprintf("svc-%d", i), 10, "1.0.0")); err != nil {
				t.Fatal(err)
			}
		}
	}
	client1, wc1 := ke.countedClient(t)
	first := newReconciler(t, client1, ns, nil).start(t)
	setAll(first)
	first.AllowDeletes()
	first.settle(t)
	first.stop(t)
	if wc1.total() != n {
		t.Fatalf("first run: %d writes", wc1.total())
	}

	// A new process: desired state delivered before and after the caches sync.
	client2, wc2 := ke.countedClient(t)
	second := newReconciler(t, client2, ns, nil)
	setAll(second)
	second.start(t)
	second.waitIdle(t)
	setAll(second)
	second.AllowDeletes()
	second.settle(t)
	if got := wc2.total(); got != 0 {
		t.Fatalf("restart with unchanged desired state made %d writes (%v)", got, wc2.snapshot())
	}
	if s := second.Stats(); s.Noops < 2*n || s.Applies != 0 || s.Deletes != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestE2EBurstOfSetsMakesOneWrite(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	client, wc := ke.countedClient(t)
	rr := newReconciler(t, client, ns, nil)
	for v := range 50 {
		if err := rr.Set(serviceEntry(ns, "bursty", 3, fmt.Sprintf("1.0.%d", v))); err != nil {
			t.Fatal(err)
		}
	}
	rr.start(t)
	rr.settle(t)
	if got := wc.total(); got != 1 {
		t.Fatalf("%d writes for a burst of 50 Sets, want 1", got)
	}
	if v := endpointVersion(t, ke.get(t, ns, "bursty")); v != "1.0.49" {
		t.Errorf("version %q, want the latest 1.0.49", v)
	}
}

func TestE2EObjectThatStopsBeingOwned(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	client, wc := ke.countedClient(t)
	rr := newReconciler(t, client, ns, nil).start(t)
	for _, name := range []string{"adopted", "orphan"} {
		if err := rr.Set(serviceEntry(ns, name, 3, "1.0.0")); err != nil {
			t.Fatal(err)
		}
	}
	rr.settle(t)
	writes := wc.acceptedWrites()
	// Someone takes both objects over by dropping the ownership label.
	taken := map[string]string{}
	for _, name := range []string{"adopted", "orphan"} {
		u := ke.get(t, ns, name)
		u.SetLabels(map[string]string{"team": "payments", noAutoallocate: "false"})
		out, err := ke.admin.Resource(seGVR).Namespace(ns).Update(context.Background(), u, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		taken[name] = out.GetResourceVersion()
	}
	rr.unset(ServiceEntryKind().GVK, ns, "orphan")
	rr.AllowDeletes()
	eventually(t, 10*time.Second, func() error {
		if rr.Stats().ForeignConflicts == 0 {
			return errors.New("no conflict yet")
		}
		return nil
	})
	rr.settle(t)
	for name, rv := range taken {
		if u := ke.get(t, ns, name); u == nil || u.GetResourceVersion() != rv {
			t.Errorf("%s touched after it stopped being owned", name)
		}
	}
	// A write decided on a cache that had not seen the takeover yet is rejected by its
	// precondition; none may succeed.
	if got := wc.acceptedWrites() - writes; got != 0 {
		t.Errorf("%d writes to objects no longer owned succeeded (requests %v)", got, wc.snapshot())
	}
}

func TestE2EOversizedObjectRefused(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	client, wc := ke.countedClient(t)
	rr := newReconciler(t, client, ns, func(c *Config) { c.MaxObjectBytes = 4096 }).start(t)
	if err := rr.Set(serviceEntry(ns, "big", 3, "1.0.0")); err != nil {
		t.Fatal(err)
	}
	rr.settle(t)
	err := rr.Set(serviceEntry(ns, "big", 200, "2.0.0"))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "WorkloadEntries") {
		t.Fatalf("Set of an oversized object: %v", err)
	}
	rr.AllowDeletes()
	rr.settle(t)
	if got := wc.total(); got != 1 {
		t.Errorf("%d writes, want 1 (the first, small version)", got)
	}
	if u := ke.get(t, ns, "big"); u == nil || endpointVersion(t, u) != "1.0.0" {
		t.Errorf("the existing object was changed or deleted after a refused Set")
	}
	if got := metric(t, rr.reg, "meltemi_sync_refused_total", map[string]string{"reason": "too_large"}); got != 1 {
		t.Errorf("meltemi_sync_refused_total = %v", got)
	}
	if got := metric(t, rr.reg, "meltemi_sync_errors_total", nil); got != 1 {
		t.Errorf("meltemi_sync_errors_total = %v", got)
	}
	if ev := rr.events.list(); len(ev) != 1 || !strings.Contains(ev[0], ReasonObjectTooLarge) {
		t.Errorf("events %q", ev)
	}
}

// The write preconditions the safety argument rests on, checked against the real server:
// an update carries the resourceVersion it was decided on, a create is not forced.
func TestE2EWritePreconditions(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	client, _ := ke.countedClient(t)
	rr := newReconciler(t, client, ns, nil).start(t)
	if err := rr.Set(serviceEntry(ns, "racy", 3, "1.0.0")); err != nil {
		t.Fatal(err)
	}
	rr.settle(t)
	rr.stop(t) // the checks below call apply directly; no worker may race them
	stale := ke.get(t, ns, "racy")
	// Someone else changes it after we read it.
	fresh := stale.DeepCopy()
	fresh.SetLabels(map[string]string{"team": "payments", noAutoallocate: "false"})
	if _, err := ke.admin.Resource(seGVR).Namespace(ns).Update(context.Background(), fresh, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d, _ := normalize(serviceEntry(ns, "racy", 3, "2.0.0"), nil, DefaultMaxObjectBytes)
	k := objKey{kind: 0, namespace: ns, name: "racy"}
	if _, err := rr.apply(context.Background(), k, d, true, stale.GetResourceVersion()); !errors.Is(err, errStale) {
		t.Fatalf("update with a stale resourceVersion: %v, want a conflict", err)
	}
	// A foreign object appears under a name the cache had as free.
	foreign := ke.create(t, foreignEntry(ns, "raced", map[string]string{"team": "payments"}))
	d2, _ := normalize(serviceEntry(ns, "raced", 3, "1.0.0"), nil, DefaultMaxObjectBytes)
	if _, err := rr.apply(context.Background(), objKey{kind: 0, namespace: ns, name: "raced"}, d2, false, ""); !errors.Is(err, errStale) {
		t.Fatalf("create over a foreign object: %v, want a conflict", err)
	}
	if u := ke.get(t, ns, "raced"); u.GetResourceVersion() != foreign.GetResourceVersion() {
		t.Errorf("foreign object modified by an unforced create")
	}
	// An owned object deleted by someone else while we thought it existed: the server ignores
	// the resourceVersion of an apply that creates, so the desired object is simply created
	// again (what the reconciler wants anyway). A foreign object created in between would
	// have another resourceVersion and fail the apply, as above.
	if err := ke.admin.Resource(seGVR).Namespace(ns).Delete(context.Background(), "racy", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rr.apply(context.Background(), k, d, true, stale.GetResourceVersion()); err != nil {
		t.Errorf("conditional apply to a deleted object: %v", err)
	}
	if u := ke.get(t, ns, "racy"); u == nil || u.GetLabels()[v1alpha1.LabelManagedBy] != v1alpha1.ManagedByValue {
		t.Errorf("conditional apply to a deleted object did not create it")
	}
	// Deletes carry the UID they were decided on.
	uid := types.UID("00000000-0000-0000-0000-000000000000")
	err := client.Resource(seGVR).Namespace(ns).Delete(context.Background(), "raced", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if !apierrors.IsConflict(err) {
		t.Errorf("delete with a wrong UID precondition: %v, want a conflict", err)
	}
}

// A desired object the server rejects (a field the CRD schema does not know): retried with
// backoff, one event, other objects unaffected; a corrected version goes through.
func TestE2ERejectedObjectRetriedWithBackoff(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	client, wc := ke.countedClient(t)
	rr := newReconciler(t, client, ns, nil).start(t)
	odd := serviceEntry(ns, "odd", 2, "1.0.0")
	_ = unstructured.SetNestedField(odd.Object, "x", "spec", "notAField")
	if err := rr.Set(odd); err != nil {
		t.Fatal(err)
	}
	if err := rr.Set(serviceEntry(ns, "fine", 2, "1.0.0")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	rr.waitIdle(t)
	if ke.get(t, ns, "fine") == nil {
		t.Fatal("a rejected object blocked another one")
	}
	if ke.get(t, ns, "odd") != nil {
		t.Fatal("object with an unknown field was written")
	}
	attempts := wc.snapshot()["PATCH"] - 1
	// Backoff from 10 ms doubling: about 7 attempts in 1.5 s; a hot loop would make hundreds.
	if attempts < 2 || attempts > 10 {
		t.Errorf("%d attempts in 1.5s, want a few (exponential backoff)", attempts)
	}
	if got := metric(t, rr.reg, "meltemi_sync_errors_total", map[string]string{"kind": "ServiceEntry"}); got != float64(attempts) {
		t.Errorf("meltemi_sync_errors_total = %v, want %d", got, attempts)
	}
	if ev := rr.events.list(); len(ev) != 1 || !strings.Contains(ev[0], ReasonWriteFailed) || !strings.Contains(ev[0], "notAField") {
		t.Errorf("events %q, want one %s", ev, ReasonWriteFailed)
	}
	if err := rr.Set(serviceEntry(ns, "odd", 2, "1.0.0")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if ke.get(t, ns, "odd") == nil {
			return errors.New("corrected object not created")
		}
		return nil
	})
}

// TestE2EGroups: a group handed over whole keeps exactly its objects; an object another group
// took over stays.
func TestE2EGroups(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	client, _ := ke.countedClient(t)
	rr := newReconciler(t, client, ns, nil).start(t)
	rr.AllowDeletes()
	set := func(group string, names ...string) {
		t.Helper()
		var objs []*unstructured.Unstructured
		for _, n := range names {
			objs = append(objs, serviceEntry(ns, n, 1, "1.0.0"))
		}
		if errs := rr.SetGroup(group, objs); len(errs) > 0 {
			t.Fatal(errs)
		}
		rr.waitIdle(t)
	}
	exist := func(want map[string]bool) {
		t.Helper()
		eventually(t, 30*time.Second, func() error {
			for name, ok := range want {
				if got := ke.get(t, ns, name) != nil; got != ok {
					return fmt.Errorf("%s exists: %v, want %v", name, got, ok)
				}
			}
			return nil
		})
	}
	set("h1", "a", "a-1", "a-2")
	set("h2", "b")
	exist(map[string]bool{"a": true, "a-1": true, "a-2": true, "b": true})
	set("h1", "a", "a-1")
	exist(map[string]bool{"a": true, "a-1": true, "a-2": false, "b": true})
	// a-1 moves to h2; h1 then drops it: it stays, h2 wants it.
	set("h2", "b", "a-1")
	set("h1", "a")
	exist(map[string]bool{"a": true, "a-1": true, "b": true})
	set("h2")
	exist(map[string]bool{"a": true, "a-1": false, "b": false})
	// An object the writer refuses (here: of a kind it does not manage) is reported by name;
	// the rest of the group is taken.
	bad := serviceEntry(ns, "c", 1, "1.0.0")
	bad.SetKind("WorkloadEntry")
	errs := rr.SetGroup("h3", []*unstructured.Unstructured{bad, serviceEntry(ns, "d", 1, "1.0.0")})
	var oe *ObjectError
	if len(errs) != 1 || !errors.As(errs[0], &oe) || oe.Name != "c" || oe.Kind != "WorkloadEntry" {
		t.Fatalf("errors %v, want one for WorkloadEntry c", errs)
	}
	rr.waitIdle(t)
	exist(map[string]bool{"d": true})
}

// TestE2EWritesResumeWhenTheServerAnswers: writes that failed because the API server could not
// be reached wait out their backoff while it is away — counted in the queue depth — and go out
// as soon as it answers again, not when their backoff (grown to seconds) ends.
func TestE2EWritesResumeWhenTheServerAnswers(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	var down atomic.Bool
	cfg := rest.CopyConfig(ke.cfg)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if down.Load() {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
			}
			return rt.RoundTrip(req)
		})
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rr := newReconciler(t, client, ns, nil).start(t)
	rr.waitIdle(t)

	down.Store(true)
	for _, name := range []string{"a", "b"} {
		if err := rr.Set(serviceEntry(ns, name, 1, "1.0.0")); err != nil {
			t.Fatal(err)
		}
	}
	// Backoff doubles from 10 ms: after 12 s of failures the next attempt is ~8 s away.
	time.Sleep(12 * time.Second)
	if got := metric(t, rr.reg, "meltemi_sync_queue_depth", nil); got != 2 {
		t.Errorf("meltemi_sync_queue_depth = %v during the outage, want 2 (keys waiting out a backoff)", got)
	}
	if s := rr.Stats(); s.QueueDepth != 2 {
		t.Errorf("Stats().QueueDepth = %d during the outage, want 2", s.QueueDepth)
	}
	down.Store(false)
	back := time.Now()
	eventually(t, 10*time.Second, func() error {
		for _, name := range []string{"a", "b"} {
			if ke.get(t, ns, name) == nil {
				return fmt.Errorf("%s not written yet", name)
			}
		}
		return nil
	})
	if took := time.Since(back); took > 2*time.Second {
		t.Errorf("writes landed %v after the server answered again, want within 2s (probe every %v)", took, probeInterval)
	}
	rr.waitIdle(t)
	if got := metric(t, rr.reg, "meltemi_sync_queue_depth", nil); got != 0 {
		t.Errorf("meltemi_sync_queue_depth = %v after recovery, want 0", got)
	}
}

// TestE2EHeldDeletesWaitForTheirSource: after AllowDeletes, an orphan HoldDelete holds stays
// (and counts as pending) while the others go; once the hold lifts, the next AllowDeletes
// deletes it.
func TestE2EHeldDeletesWaitForTheirSource(t *testing.T) {
	ke := loadKube(t)
	ns := ke.namespace(t)
	for _, reg := range []string{"synced", "unsynced"} {
		o := serviceEntry(ns, "from-"+reg, 1, "0.9")
		o.SetLabels(map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelRegistry: reg, noAutoallocate: "false"})
		ke.create(t, o)
	}
	var held atomic.Bool
	held.Store(true)
	rr := newReconciler(t, ke.admin, ns, func(c *Config) {
		c.HoldDelete = func(labels, _ map[string]string) bool {
			return held.Load() && labels[v1alpha1.LabelRegistry] == "unsynced"
		}
	}).start(t)
	rr.AllowDeletes()
	eventually(t, 30*time.Second, func() error {
		if ke.get(t, ns, "from-synced") != nil {
			return errors.New("orphan of the synced source not deleted")
		}
		return nil
	})
	rr.waitIdle(t)
	time.Sleep(200 * time.Millisecond) // give a wrong delete every chance to happen
	if ke.get(t, ns, "from-unsynced") == nil {
		t.Fatal("held orphan deleted")
	}
	if s := rr.Stats(); s.PendingDeletes != 1 {
		t.Errorf("pending deletes %d, want 1 (the held orphan)", s.PendingDeletes)
	}
	held.Store(false)
	rr.AllowDeletes()
	eventually(t, 30*time.Second, func() error {
		if ke.get(t, ns, "from-unsynced") != nil {
			return errors.New("orphan not deleted once its hold lifted")
		}
		return nil
	})
}
