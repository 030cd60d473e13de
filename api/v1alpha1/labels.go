package v1alpha1

import "strings"

// Ownership labels and annotations carried by every object Meltemi writes. Objects without
// LabelManagedBy=ManagedByValue are never modified or deleted.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedByValue = "meltemi"
	// LabelRegistry names the ServiceRegistry an object (or endpoint) comes from.
	LabelRegistry = "meltemi.io/registry"
	// AnnotationRegistries lists every registry of a host merged from several registries;
	// their LabelRegistry is MultiRegistryPrefix and a hash of the list.
	AnnotationRegistries = "meltemi.io/registries"
	MultiRegistryPrefix  = "multi-"
	// AnnotationContentHash lets the reconciler detect no-op writes without calling the API.
	AnnotationContentHash = "meltemi.io/content-hash"
)

// LabelService marks the WorkloadEntries of one host; the host's ServiceEntry selects them
// with it when it has too many instances to carry them inline.
const LabelService = "meltemi.io/service"

// Registries returns the registries an object Meltemi wrote names: the AnnotationRegistries
// list for a merged host, else the LabelRegistry value; nil when it names none it can tell.
func Registries(labels, annotations map[string]string) []string {
	if list := annotations[AnnotationRegistries]; list != "" {
		return strings.Split(list, ",")
	}
	if name := labels[LabelRegistry]; name != "" && !strings.HasPrefix(name, MultiRegistryPrefix) {
		return []string{name}
	}
	return nil
}
