// Package v1alpha1 is the meltemi.io/v1alpha1 API: ServiceRegistry objects configure which
// registries Meltemi reads, and the ownership labels every written object carries.
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and version of Meltemi's API.
const (
	Group   = "meltemi.io"
	Version = "v1alpha1"
)

// ServiceRegistryResource is the resource served for ServiceRegistry.
var ServiceRegistryResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "serviceregistries"}

// ServiceRegistry configures one external registry.
type ServiceRegistry struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ServiceRegistrySpec   `json:"spec"`
	Status            ServiceRegistryStatus `json:"status,omitempty"`
}

// ServiceRegistryList is a list of ServiceRegistry.
type ServiceRegistryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ServiceRegistry `json:"items"`
}

// ServiceRegistrySpec says which plugin serves the registry and how to reach it.
type ServiceRegistrySpec struct {
	// Kind selects the plugin binary meltemi-registry-<kind>.
	Kind string `json:"kind"`
	// Address of the registry, plugin specific (e.g. "zk1:2181,zk2:2181").
	Address string `json:"address"`
	// Options are passed to the plugin, which validates them.
	Options map[string]string `json:"options,omitempty"`
	// CredentialsSecretRef names a Secret in the registry's namespace whose keys are passed
	// to the plugin as secret options (e.g. username, password, token).
	CredentialsSecretRef *SecretReference `json:"credentialsSecretRef,omitempty"`
	// PluginSHA256 pins the plugin binary: a binary with another checksum is refused.
	PluginSHA256 string `json:"pluginSHA256,omitempty"`
	// KeepLastNonEmpty holds a service's last non-empty instance list when the registry
	// suddenly reports it empty or gone, guarding against registries that lose their data.
	KeepLastNonEmpty bool `json:"keepLastNonEmpty,omitempty"`
}

// SecretReference names a Secret.
type SecretReference struct {
	Name string `json:"name"`
}

// ServiceRegistryStatus is written by Meltemi.
type ServiceRegistryStatus struct {
	Connected     bool         `json:"connected"`
	Synced        bool         `json:"synced"`
	PluginVersion string       `json:"pluginVersion,omitempty"`
	Services      int          `json:"services"`
	Instances     int          `json:"instances"`
	Restarts      int          `json:"restarts,omitempty"`
	LastError     string       `json:"lastError,omitempty"`
	LastSyncTime  *metav1.Time `json:"lastSyncTime,omitempty"`
	// RejectedTotal counts the distinct registry items (item and reason) that could not be
	// used since this Meltemi process started.
	RejectedTotal int `json:"rejectedTotal,omitempty"`
	// RejectedItems lists the most recent of them (at most 20), and why.
	RejectedItems []RejectedItem `json:"rejectedItems,omitempty"`
	// Conflicts lists what objects Meltemi does not own keep from being published (at most
	// 20).
	Conflicts []Conflict `json:"conflicts,omitempty"`
	// ObservedGeneration is the generation of the spec the status describes.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions follow the Kubernetes API conventions: Ready, Connected, Synced.
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ServiceRegistry condition types.
const (
	// ConditionReady: the registry is configured, connected and its services are published.
	ConditionReady = "Ready"
	// ConditionConnected: its plugin runs and reaches the registry.
	ConditionConnected = "Connected"
	// ConditionSynced: a complete snapshot has been received (its services are served).
	ConditionSynced = "Synced"
)

// Conflict is an object or host of a registry that Meltemi cannot publish as it wants because
// objects it does not own are in the way, with what to do about it.
type Conflict struct {
	Object  string `json:"object"`
	Message string `json:"message"`
}

// RejectedItem is one registry item that was skipped.
type RejectedItem struct {
	Item   string `json:"item"`
	Reason string `json:"reason"`
}
