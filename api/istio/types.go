// Package istio holds the parts of Istio's networking API that Meltemi writes, as plain Go
// structs with the CRDs' JSON field names. Writing them as unstructured objects keeps the
// Istio client libraries out of the build; the real API server validates them against
// Istio's own CRD schema in the e2e tests.
package istio

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and version of Istio's networking API.
const (
	Group   = "networking.istio.io"
	Version = "v1"
)

// Kinds written by Meltemi, and their resources.
var (
	ServiceEntryKind  = schema.GroupVersionKind{Group: Group, Version: Version, Kind: "ServiceEntry"}
	WorkloadEntryKind = schema.GroupVersionKind{Group: Group, Version: Version, Kind: "WorkloadEntry"}
	EnvoyFilterKind   = schema.GroupVersionKind{Group: Group, Version: "v1alpha3", Kind: "EnvoyFilter"}

	ServiceEntryResource  = ServiceEntryKind.GroupVersion().WithResource("serviceentries")
	WorkloadEntryResource = WorkloadEntryKind.GroupVersion().WithResource("workloadentries")
	EnvoyFilterResource   = EnvoyFilterKind.GroupVersion().WithResource("envoyfilters")
	// DestinationRuleResource and VirtualServiceResource are read, never written.
	DestinationRuleResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "destinationrules"}
	VirtualServiceResource  = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "virtualservices"}
)

// ServiceEntry is networking.istio.io/v1 ServiceEntry.
type ServiceEntry struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ServiceEntrySpec `json:"spec"`
	// Status is istiod's; Meltemi only reads it.
	Status *ServiceEntryStatus `json:"status,omitempty"`
}

// ServiceEntryStatus holds the addresses istiod allocates to an entry without any (Istio 1.25
// and later).
type ServiceEntryStatus struct {
	Addresses []ServiceEntryAddress `json:"addresses,omitempty"`
}

// ServiceEntryAddress is one allocated address of a host.
type ServiceEntryAddress struct {
	Value string `json:"value"`
	Host  string `json:"host,omitempty"`
}

// ServiceEntrySpec is the subset of the spec Meltemi sets.
type ServiceEntrySpec struct {
	Hosts            []string          `json:"hosts"`
	Addresses        []string          `json:"addresses,omitempty"`
	Ports            []ServicePort     `json:"ports,omitempty"`
	Location         string            `json:"location,omitempty"`
	Resolution       string            `json:"resolution,omitempty"`
	Endpoints        []WorkloadEntry   `json:"endpoints,omitempty"`
	WorkloadSelector *WorkloadSelector `json:"workloadSelector,omitempty"`
	ExportTo         []string          `json:"exportTo,omitempty"`
}

// ServicePort is one port of a ServiceEntry.
type ServicePort struct {
	Number     uint32 `json:"number"`
	Protocol   string `json:"protocol,omitempty"`
	Name       string `json:"name"`
	TargetPort uint32 `json:"targetPort,omitempty"`
}

// WorkloadEntry is both a ServiceEntry endpoint and the spec of a WorkloadEntry object.
type WorkloadEntry struct {
	Address        string            `json:"address,omitempty"`
	Ports          map[string]uint32 `json:"ports,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Network        string            `json:"network,omitempty"`
	Locality       string            `json:"locality,omitempty"`
	Weight         uint32            `json:"weight,omitempty"`
	ServiceAccount string            `json:"serviceAccount,omitempty"`
}

// WorkloadSelector selects WorkloadEntries by label.
type WorkloadSelector struct {
	Labels map[string]string `json:"labels"`
}

// WorkloadEntryObject is networking.istio.io/v1 WorkloadEntry.
type WorkloadEntryObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              WorkloadEntry `json:"spec"`
}

// ServiceEntry locations and resolutions.
const (
	MeshInternal     = "MESH_INTERNAL"
	ResolutionStatic = "STATIC"
)
