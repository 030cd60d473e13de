package kube

import (
	"context"
	"slices"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/meltemi-mesh/meltemi/api/istio"
	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
)

// HostIndex knows which ServiceEntries define each host, Meltemi's and foreign ones alike:
// Istio merges entries of one host, so a host Meltemi writes must not also be defined by an
// entry it does not own (dubbo2istio's aeraki-<host> entries, a user's own). It watches
// ServiceEntries in one namespace or all, keeping only their identity and hosts.
type HostIndex struct {
	informer cache.SharedIndexInformer
	onChange func(hosts []string)

	mu    sync.Mutex
	hosts map[string]map[string]bool // host -> "namespace/name" -> owned by Meltemi
}

// NewHostIndex returns an index of ServiceEntries in namespace ("" for all).
func NewHostIndex(client dynamic.Interface, namespace string) (*HostIndex, error) {
	hi := &HostIndex{hosts: map[string]map[string]bool{}}
	hi.informer = dynamicinformer.NewFilteredDynamicInformer(client, istio.ServiceEntryResource, namespace, 0, cache.Indexers{}, nil).Informer()
	if err := hi.informer.SetTransform(func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil
		}
		hosts, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "hosts")
		slim := identity(u)
		_ = unstructured.SetNestedStringSlice(slim.Object, hosts, "spec", "hosts")
		return slim, nil
	}); err != nil {
		return nil, err
	}
	// onChange hears of a host only when the foreign entries defining it change: Meltemi's own
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
		before := map[string]string{}
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
			if hi.foreignLocked(h) != was {
				changed = append(changed, h)
			}
		}
		hi.mu.Unlock()
		if len(changed) > 0 && hi.onChange != nil {
			slices.Sort(changed)
			hi.onChange(changed)
		}
	}
	if _, err := hi.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
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

// foreignLocked is the foreign entries of a host, as one string to compare.
func (hi *HostIndex) foreignLocked(host string) string {
	var ids []string
	for id, own := range hi.hosts[host] {
		if !own {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return strings.Join(ids, ",")
}

func (hi *HostIndex) add(u *unstructured.Unstructured) {
	hosts, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "hosts")
	owned := u.GetLabels()[v1alpha1.LabelManagedBy] == v1alpha1.ManagedByValue
	for _, h := range hosts {
		if hi.hosts[h] == nil {
			hi.hosts[h] = map[string]bool{}
		}
		hi.hosts[h][entryID(u)] = owned
	}
}

func (hi *HostIndex) remove(u *unstructured.Unstructured) {
	hosts, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "hosts")
	for _, h := range hosts {
		delete(hi.hosts[h], entryID(u))
		if len(hi.hosts[h]) == 0 {
			delete(hi.hosts, h)
		}
	}
}

// Run fills the index until ctx ends; onChange is called with the hosts whose foreign
// definitions changed.
func (hi *HostIndex) Run(ctx context.Context, onChange func(hosts []string)) {
	hi.onChange = onChange
	hi.informer.RunWithContext(ctx)
}

// Synced reports whether the index holds every ServiceEntry.
func (hi *HostIndex) Synced() bool { return hi.informer.HasSynced() }

// Lookup returns the foreign ServiceEntries ("namespace/name", sorted) defining host, and
// whether one of Meltemi's does.
func (hi *HostIndex) Lookup(host string) (foreign []string, owned bool) {
	hi.mu.Lock()
	defer hi.mu.Unlock()
	for id, own := range hi.hosts[host] {
		if own {
			owned = true
		} else {
			foreign = append(foreign, id)
		}
	}
	slices.Sort(foreign)
	return foreign, owned
}

// Conflicts maps every host defined both by one of Meltemi's ServiceEntries and by a foreign
// one to the entries ("namespace/name") defining it.
func (hi *HostIndex) Conflicts() map[string][]string {
	hi.mu.Lock()
	defer hi.mu.Unlock()
	out := map[string][]string{}
	for h, ids := range hi.hosts {
		var all []string
		owned, foreign := false, false
		for id, own := range ids {
			owned, foreign = owned || own, foreign || !own
			all = append(all, id)
		}
		if owned && foreign {
			slices.Sort(all)
			out[h] = all
		}
	}
	return out
}
