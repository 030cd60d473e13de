package traffic

import (
	"fmt"
	"maps"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
)

// Owned reports whether an object carries Meltemi's ownership labels.
func Owned(u *unstructured.Unstructured) bool {
	return u.GetLabels()[v1alpha1.LabelManagedBy] == v1alpha1.ManagedByValue
}

// ListenerConflicts finds EnvoyFilters Meltemi does not own that patch a listener one of
// ours patches (a still running Aeraki does): istiod applies both, in creation order, and
// what the proxy ends up with is neither's intent. One problem per foreign EnvoyFilter.
func ListenerConflicts(ours, others []*unstructured.Unstructured) []Problem {
	patchedBy := map[string]string{} // listener -> our EnvoyFilter
	for _, ef := range ours {
		for _, l := range PatchedListeners(ef) {
			if _, ok := patchedBy[l]; !ok {
				patchedBy[l] = ef.GetNamespace() + "/" + ef.GetName()
			}
		}
	}
	var out []Problem
	for _, ef := range others {
		if Owned(ef) {
			continue
		}
		hits := map[string]string{}
		for _, l := range PatchedListeners(ef) {
			if mine, ok := patchedBy[l]; ok {
				hits[l] = mine
			}
		}
		if len(hits) == 0 {
			continue
		}
		l := slices.Sorted(maps.Keys(hits))[0]
		out = append(out, Problem{Kind: "EnvoyFilter", Namespace: ef.GetNamespace(), Name: ef.GetName(), Severity: SeverityWarning,
			Message: fmt.Sprintf("patches listener %s (and %d more), which Meltemi's EnvoyFilter %s patches too; istiod applies both "+
				"(is Aeraki still running? scale it down and delete its EnvoyFilters)", l, len(hits)-1, hits[l])})
	}
	return out
}

// PatchedListeners lists the listener names an EnvoyFilter's patches match.
func PatchedListeners(ef *unstructured.Unstructured) []string {
	patches, _, _ := unstructured.NestedSlice(ef.Object, "spec", "configPatches")
	var out []string
	for _, p := range patches {
		m, _ := p.(map[string]any)
		name, _, _ := unstructured.NestedString(m, "match", "listener", "name")
		if name == "" {
			continue
		}
		if name == virtualInbound {
			port, _, _ := unstructured.NestedInt64(m, "match", "listener", "filterChain", "destinationPort")
			name = fmt.Sprintf("%s:%d", name, port)
		}
		out = append(out, name)
	}
	return out
}
