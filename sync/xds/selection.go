package xds

import (
	"maps"
	"slices"

	"google.golang.org/protobuf/types/known/anypb"
)

// wildcardName subscribes to every resource. Route configurations are not a wildcard type, so
// only an explicit "*" does this (an empty name list subscribes to nothing).
const wildcardName = "*"

// selection is what one stream subscribed to.
type selection struct {
	names    map[string]struct{}
	wildcard bool
}

// change subscribes to and unsubscribes from names and returns the names whose registration
// must be added and removed, and whether anything changed.
func (sel *selection) change(subscribe, unsubscribe []string) (add, remove []string, changed bool) {
	if sel.names == nil {
		sel.names = make(map[string]struct{})
	}
	for _, n := range subscribe {
		if n == wildcardName {
			changed = changed || !sel.wildcard
			sel.wildcard = true
			continue
		}
		if _, ok := sel.names[n]; !ok {
			sel.names[n] = struct{}{}
			add = append(add, n)
		}
	}
	for _, n := range unsubscribe {
		if n == wildcardName {
			changed = changed || sel.wildcard
			sel.wildcard = false
			continue
		}
		if _, ok := sel.names[n]; ok {
			delete(sel.names, n)
			remove = append(remove, n)
		}
	}
	return add, remove, changed || len(add) > 0 || len(remove) > 0
}

// replace makes the selection exactly names (a state-of-the-world request lists them all).
func (sel *selection) replace(names []string) (add, remove []string, changed bool) {
	want := make(map[string]struct{}, len(names))
	for _, n := range names {
		want[n] = struct{}{}
	}
	var unsubscribe []string
	for n := range sel.names {
		if _, ok := want[n]; !ok {
			unsubscribe = append(unsubscribe, n)
		}
	}
	if _, ok := want[wildcardName]; !ok && sel.wildcard {
		unsubscribe = append(unsubscribe, wildcardName)
	}
	return sel.change(names, unsubscribe)
}

// has reports whether name is selected.
func (sel *selection) has(name string) bool {
	_, ok := sel.names[name]
	return ok || sel.wildcard
}

// list returns the explicitly selected names.
func (sel *selection) list() []string { return slices.Collect(maps.Keys(sel.names)) }

// pick returns the selected resources that exist, by name.
func (sel *selection) pick(snap snapshot) []*resource {
	var out []*resource
	if sel.wildcard {
		out = slices.Collect(maps.Values(snap))
	} else {
		for n := range sel.names {
			if r := snap[n]; r != nil {
				out = append(out, r)
			}
		}
	}
	slices.SortFunc(out, byName)
	return out
}

func anys(rs []*resource) []*anypb.Any {
	out := make([]*anypb.Any, len(rs))
	for i, r := range rs {
		out[i] = r.any
	}
	return out
}
