package v1alpha1

// Ownership labels and annotations carried by every object Meltemi writes. Objects without
// LabelManagedBy=ManagedByValue are never modified or deleted.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedByValue = "meltemi"
	// LabelRegistry names the ServiceRegistry an object (or endpoint) comes from.
	LabelRegistry = "meltemi.io/registry"
	// AnnotationRegistries lists every registry of a host merged from several registries.
	AnnotationRegistries = "meltemi.io/registries"
	// AnnotationContentHash lets the reconciler detect no-op writes without calling the API.
	AnnotationContentHash = "meltemi.io/content-hash"
)

// LabelService marks the WorkloadEntries of one host; the host's ServiceEntry selects them
// with it when it has too many instances to carry them inline.
const LabelService = "meltemi.io/service"
