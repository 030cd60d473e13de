// Package store holds the bridge's view of registry services: the last state every registry's
// plugin reported, validated, and indexed by the mesh host it becomes. It has no I/O.
package store

import (
	"cmp"
	"maps"
	"slices"
	"sync"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// Store holds the last known services of every registry, indexed by host. A registry that
// goes away keeps its services here until it delivers a new snapshot: an outage never deletes.
// Every mutation returns the hosts whose content really changed, so callers write only those.
type Store struct {
	mu         sync.RWMutex
	registries map[string]map[string]catalog.Service // registry -> key -> service
	hosts      map[string]map[ref]struct{}           // host -> services that claim it
}

type ref struct{ registry, key string }

// New returns an empty store.
func New() *Store {
	return &Store{registries: map[string]map[string]catalog.Service{}, hosts: map[string]map[ref]struct{}{}}
}

// Upsert replaces one service. It returns the hosts that changed: none for an identical
// upsert, two when a service moved from one host to another.
func (s *Store) Upsert(svc catalog.Service) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.upsertLocked(svc)
}

func (s *Store) upsertLocked(svc catalog.Service) []string {
	byKey := s.registries[svc.Registry]
	if byKey == nil {
		byKey = map[string]catalog.Service{}
		s.registries[svc.Registry] = byKey
	}
	old, existed := byKey[svc.Key]
	if existed && old.Equal(svc) {
		return nil
	}
	svc = shareLabels(svc)
	byKey[svc.Key] = svc
	r := ref{svc.Registry, svc.Key}
	if existed && old.Host != svc.Host {
		s.unindex(old.Host, r)
		s.index(svc.Host, r)
		return []string{old.Host, svc.Host}
	}
	s.index(svc.Host, r)
	return []string{svc.Host}
}

// Delete removes one service and returns the host it had, if it existed.
func (s *Store) Delete(registry, key string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleteLocked(registry, key)
}

func (s *Store) deleteLocked(registry, key string) []string {
	old, ok := s.registries[registry][key]
	if !ok {
		return nil
	}
	delete(s.registries[registry], key)
	s.unindex(old.Host, ref{registry, key})
	return []string{old.Host}
}

// Replace makes services the complete state of registry: services missing from it are
// deleted, except the keys in keep, which keep their previous state (a service that was sent
// but could not be used must not lose what was known of it). Only hosts whose content
// changed are returned, so a plugin restart that reports the same state changes nothing.
func (s *Store) Replace(registry string, services []catalog.Service, keep []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := map[string]struct{}{}
	seen := make(map[string]struct{}, len(services)+len(keep))
	for _, k := range keep {
		seen[k] = struct{}{}
	}
	for _, svc := range services {
		svc.Registry = registry
		seen[svc.Key] = struct{}{}
		for _, h := range s.upsertLocked(svc) {
			changed[h] = struct{}{}
		}
	}
	for key := range s.registries[registry] {
		if _, ok := seen[key]; ok {
			continue
		}
		for _, h := range s.deleteLocked(registry, key) {
			changed[h] = struct{}{}
		}
	}
	return slices.Sorted(maps.Keys(changed))
}

// RemoveRegistry forgets a registry that is no longer configured and returns its hosts.
func (s *Store) RemoveRegistry(registry string) []string {
	return s.Replace(registry, nil, nil)
}

// Get returns one service.
func (s *Store) Get(registry, key string) (catalog.Service, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	svc, ok := s.registries[registry][key]
	return svc, ok
}

// Keys returns the service keys of a registry, sorted.
func (s *Store) Keys(registry string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedKeys(s.registries[registry])
}

// ForHost returns every service that claims host, ordered by registry and key.
func (s *Store) ForHost(host string) []catalog.Service {
	s.mu.RLock()
	defer s.mu.RUnlock()
	refs := s.hosts[host]
	out := make([]catalog.Service, 0, len(refs))
	for r := range refs {
		out = append(out, s.registries[r.registry][r.key])
	}
	slices.SortFunc(out, func(a, b catalog.Service) int {
		return cmp.Or(cmp.Compare(a.Registry, b.Registry), cmp.Compare(a.Key, b.Key))
	})
	return out
}

// Hosts returns every host known, sorted.
func (s *Store) Hosts() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Sorted(maps.Keys(s.hosts))
}

// Counts returns how many services and instances a registry has.
func (s *Store) Counts(registry string) (services, instances int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, svc := range s.registries[registry] {
		services++
		instances += len(svc.Instances)
	}
	return services, instances
}

// sharedLabelSets bounds the distinct label sets shareLabels looks for in one service.
const sharedLabelSets = 8

// shareLabels returns svc with instances whose labels are equal holding one map between them:
// instances of a service mostly carry the same labels (version, group, application), and at
// 100,000 instances one map each is most of the store's memory. The instance slice is copied
// before any map is shared, so the caller's service is left as it was. Stored services are never modified in place.
func shareLabels(svc catalog.Service) catalog.Service {
	if len(svc.Instances) < 2 {
		return svc
	}
	var insts []catalog.Instance // the copy, made at the first shared map
	distinct := make([]map[string]string, 0, sharedLabelSets)
	for i, in := range svc.Instances {
		j := slices.IndexFunc(distinct, func(m map[string]string) bool { return maps.Equal(m, in.Labels) })
		switch {
		case j >= 0:
			if insts == nil {
				insts = slices.Clone(svc.Instances)
			}
			insts[i].Labels = distinct[j]
		case len(distinct) < sharedLabelSets:
			distinct = append(distinct, in.Labels)
		}
	}
	if insts != nil {
		svc.Instances = insts
	}
	return svc
}

func (s *Store) index(host string, r ref) {
	set := s.hosts[host]
	if set == nil {
		set = map[ref]struct{}{}
		s.hosts[host] = set
	}
	set[r] = struct{}{}
}

func (s *Store) unindex(host string, r ref) {
	set := s.hosts[host]
	delete(set, r)
	if len(set) == 0 {
		delete(s.hosts, host)
	}
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
