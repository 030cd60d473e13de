// Package hostguard knows which ServiceEntries define each host, Meltemi's and others'. The
// ServiceEntry controller asks it before writing a host: Istio merges the entries of one host,
// so a host only foreign entries define is withheld, and one defined by both is reported.
package hostguard

import (
	"context"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"

	"github.com/meltemi-mesh/meltemi/api/istio"
	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
)

// Index knows which ServiceEntries define each host, Meltemi's and foreign ones alike:
// Istio merges entries of one host, so a host Meltemi writes must not also be defined by an
// entry it does not own (dubbo2istio's aeraki-<host> entries, a user's own). It watches
// ServiceEntries in one namespace or all in two streams: the foreign ones whole (cut down to
// their identity and hosts), Meltemi's own as metadata only. Meltemi names each ServiceEntry
// after its host, so its names are all the index needs of them, and a metadata stream (in
// protobuf) costs the API server and the host a fraction of what decoding every one of the
// host's own writes whole again would.
type Index struct {
	foreignInf cache.SharedIndexInformer
	ownedInf   cache.SharedIndexInformer
	onChange   func(hosts []string)

	mu    sync.Mutex
	hosts map[string]map[string]struct{} // host -> "namespace/name" of the foreign entries defining it
}

const byName = "name"

// New returns an index of ServiceEntries in namespace ("" for all).
func New(client dynamic.Interface, metaClient metadata.Interface, namespace string) (*Index, error) {
	hi := &Index{hosts: map[string]map[string]struct{}{}}
	hi.foreignInf = dynamicinformer.NewFilteredDynamicInformer(client, istio.ServiceEntryResource, namespace, 0, cache.Indexers{},
		func(o *metav1.ListOptions) {
			o.LabelSelector = v1alpha1.LabelManagedBy + "!=" + v1alpha1.ManagedByValue
		}).Informer()
	hi.ownedInf = metadatainformer.NewFilteredMetadataInformer(metaClient, istio.ServiceEntryResource, namespace, 0,
		cache.Indexers{byName: func(obj any) ([]string, error) {
			m, err := meta.Accessor(obj)
			if err != nil {
				return nil, err
			}
			return []string{m.GetName()}, nil
		}},
		func(o *metav1.ListOptions) { o.LabelSelector = v1alpha1.LabelManagedBy + "=" + v1alpha1.ManagedByValue }).Informer()
	if err := hi.ownedInf.SetTransform(func(obj any) (any, error) {
		m, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			return obj, nil
		}
		return &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
			Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion}}, nil
	}); err != nil {
		return nil, err
	}
	if err := hi.foreignInf.SetTransform(func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil
		}
		hosts, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "hosts")
		slim := synckube.Identity(u)
		_ = unstructured.SetNestedStringSlice(slim.Object, hosts, "spec", "hosts")
		return slim, nil
	}); err != nil {
		return nil, err
	}
	// onChange hears of a host when the foreign entries defining it change: Meltemi's own
	// writes do not come back as work.
	update := func(old, obj any) {
		var touched []string
		for _, o := range []any{old, obj} {
			if u, ok := o.(*unstructured.Unstructured); ok {
				hosts, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "hosts")
				touched = append(touched, hosts...)
			}
		}
		hi.mu.Lock()
		before := map[string][]string{}
		for _, h := range touched {
			before[h] = hi.foreignLocked(h)
		}
		if u, ok := old.(*unstructured.Unstructured); ok {
			hi.remove(u)
		}
		if u, ok := obj.(*unstructured.Unstructured); ok {
			hi.add(u)
		}
		var changed []string
		for h, was := range before {
			if !slices.Equal(hi.foreignLocked(h), was) {
				changed = append(changed, h)
			}
		}
		hi.mu.Unlock()
		if len(changed) > 0 && hi.onChange != nil {
			slices.Sort(changed)
			hi.onChange(changed)
		}
	}
	if _, err := hi.foreignInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { update(nil, obj) },
		UpdateFunc: update,
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			update(obj, nil)
		},
	}); err != nil {
		return nil, err
	}
	return hi, nil
}

func entryID(u *unstructured.Unstructured) string { return u.GetNamespace() + "/" + u.GetName() }

func (hi *Index) add(u *unstructured.Unstructured) {
	hosts, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "hosts")
	for _, h := range hosts {
		if hi.hosts[h] == nil {
			hi.hosts[h] = map[string]struct{}{}
		}
		hi.hosts[h][entryID(u)] = struct{}{}
	}
}

func (hi *Index) remove(u *unstructured.Unstructured) {
	hosts, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "hosts")
	for _, h := range hosts {
		delete(hi.hosts[h], entryID(u))
		if len(hi.hosts[h]) == 0 {
			delete(hi.hosts, h)
		}
	}
}

// foreignLocked is the foreign entries of a host, sorted.
func (hi *Index) foreignLocked(host string) []string {
	ids := make([]string, 0, len(hi.hosts[host]))
	for id := range hi.hosts[host] {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Run fills the index until ctx ends; onChange is called with the hosts whose foreign
// definitions changed.
func (hi *Index) Run(ctx context.Context, onChange func(hosts []string)) {
	hi.onChange = onChange
	var wg sync.WaitGroup
	wg.Go(func() { hi.ownedInf.RunWithContext(ctx) })
	hi.foreignInf.RunWithContext(ctx)
	wg.Wait()
}

// Synced reports whether the index holds every ServiceEntry.
func (hi *Index) Synced() bool { return hi.foreignInf.HasSynced() && hi.ownedInf.HasSynced() }

// Lookup returns the foreign ServiceEntries ("namespace/name", sorted) defining host, and
// whether one of Meltemi's does.
func (hi *Index) Lookup(host string) (foreign []string, owned bool) {
	hi.mu.Lock()
	foreign = hi.foreignLocked(host)
	hi.mu.Unlock()
	named, _ := hi.ownedInf.GetIndexer().ByIndex(byName, host)
	return foreign, len(named) > 0
}
