// Package v1alpha1 is the metaprotocol.aeraki.io/v1alpha1 API: routing rules for RPC services
// (MetaRouter) and the codecs of MetaProtocol applications (ApplicationProtocol).
//
// Group, kinds and JSON field names are those of Aeraki's API, so YAML written for Aeraki keeps
// working. Fields Meltemi adds are marked as extensions.
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and version of the API.
const (
	Group   = "metaprotocol.aeraki.io"
	Version = "v1alpha1"
)

// Kinds and resources served.
var (
	MetaRouterKind              = schema.GroupVersionKind{Group: Group, Version: Version, Kind: "MetaRouter"}
	ApplicationProtocolKind     = schema.GroupVersionKind{Group: Group, Version: Version, Kind: "ApplicationProtocol"}
	MetaRouterResource          = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "metarouters"}
	ApplicationProtocolResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "applicationprotocols"}
)

// MetaRouter routes the requests of a MetaProtocol (or native Dubbo/Thrift) service by request
// attributes. It is mesh scoped: whatever its namespace, it applies to the services in hosts.
type MetaRouter struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              MetaRouterSpec   `json:"spec"`
	Status            MetaRouterStatus `json:"status,omitempty"`
}

// MetaRouterList is a list of MetaRouters.
type MetaRouterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MetaRouter `json:"items"`
}

// MetaRouterSpec is the routing policy of the services named in Hosts.
type MetaRouterSpec struct {
	// Hosts are the services (ServiceEntry hosts) the routes apply to.
	Hosts []string `json:"hosts"`
	// Gateways is not supported: routes apply to sidecars, and a MetaRouter naming gateways
	// says so in its status.
	Gateways []string `json:"gateways,omitempty"`
	// Routes are tried in order; the first whose match holds is used. A request no route
	// matches is refused ("no route"), as in Aeraki; without routes, every request goes to the
	// host itself.
	Routes []MetaRoute `json:"routes,omitempty"`
	// LocalRateLimit limits requests on the server side (inbound).
	LocalRateLimit *LocalRateLimit `json:"localRateLimit,omitempty"`
	// GlobalRateLimit asks a rate limit service on the server side (inbound).
	GlobalRateLimit *GlobalRateLimit `json:"globalRateLimit,omitempty"`
	// ExportTo lists the namespaces whose proxies get the hosts' EnvoyFilters ("." the
	// MetaRouter's own, "*" all: Istio's root namespace), as in Aeraki; empty means all.
	ExportTo []string `json:"exportTo,omitempty"`
}

// MetaRoute is one routing rule.
type MetaRoute struct {
	// Name identifies the route in the route table and in status; unique within the MetaRouter.
	Name string `json:"name,omitempty"`
	// Match must hold for the rule to apply; no match means every request.
	Match *MetaRouteMatch `json:"match,omitempty"`
	// Route lists the destinations; with several, Weight splits the traffic in proportion.
	Route []MetaRouteDestination `json:"route,omitempty"`
	// Mirror receives a copy of the requests (MirrorPercentage of them, default all).
	Mirror           *Destination `json:"mirror,omitempty"`
	MirrorPercentage *Percent     `json:"mirrorPercentage,omitempty"`
	// RequestMutation and ResponseMutation set key/value pairs on requests and responses; how
	// they are applied depends on the codec.
	RequestMutation  []KeyValue `json:"requestMutation,omitempty"`
	ResponseMutation []KeyValue `json:"responseMutation,omitempty"`
	// HashPolicy (Meltemi extension) names the attributes hashed for consistent-hash load
	// balancing. Without it, a DestinationRule's consistentHash.httpHeaderName is used.
	HashPolicy []string `json:"hashPolicy,omitempty"`
}

// MetaRouteMatch holds the conditions of a rule; all must hold.
type MetaRouteMatch struct {
	// Attributes maps a request attribute (e.g. interface, method, a header or attachment) to
	// its condition. A condition without exact, prefix or regex only requires the attribute.
	Attributes map[string]StringMatch `json:"attributes,omitempty"`
}

// StringMatch matches a string: at most one of the fields is set. Regex is RE2 syntax and must
// match the whole value. A regex of "*" (Aeraki's catch-all) requires presence only.
type StringMatch struct {
	Exact  string `json:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	Regex  string `json:"regex,omitempty"`
}

// MetaRouteDestination is a destination and its share of the traffic.
type MetaRouteDestination struct {
	Destination Destination `json:"destination"`
	// Weight is the destination's share of the traffic: weight / the sum of the route's weights
	// (percentages when they sum to 100); ignored for a single destination.
	Weight uint32 `json:"weight,omitempty"`
}

// Destination is a service (a ServiceEntry host), optionally one subset of it (defined in a
// DestinationRule) and a port (default: the port the request came in on).
type Destination struct {
	Host   string        `json:"host"`
	Subset string        `json:"subset,omitempty"`
	Port   *PortSelector `json:"port,omitempty"`
}

// PortSelector selects a port by number.
type PortSelector struct {
	Number uint32 `json:"number,omitempty"`
}

// Percent is a percentage in [0, 100].
type Percent struct {
	Value float64 `json:"value,omitempty"`
}

// KeyValue is one mutation.
type KeyValue struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// LocalRateLimit limits requests with token buckets held by each server proxy: the first
// condition that matches picks the bucket, other requests use TokenBucket (or are not limited
// when it is unset).
type LocalRateLimit struct {
	TokenBucket *TokenBucket              `json:"tokenBucket,omitempty"`
	Conditions  []LocalRateLimitCondition `json:"conditions,omitempty"`
}

// LocalRateLimitCondition is a bucket for the requests that match.
type LocalRateLimitCondition struct {
	Match       *MetaRouteMatch `json:"match,omitempty"`
	TokenBucket TokenBucket     `json:"tokenBucket"`
}

// TokenBucket holds at most MaxTokens; TokensPerFill (default 1) are added every FillInterval.
type TokenBucket struct {
	MaxTokens     uint32           `json:"maxTokens"`
	TokensPerFill *uint32          `json:"tokensPerFill,omitempty"`
	FillInterval  *metav1.Duration `json:"fillInterval"`
}

// GlobalRateLimit asks an external rate limit service (an Envoy cluster) about each matching
// request, passing the listed request properties as descriptors.
type GlobalRateLimit struct {
	Match            *MetaRouteMatch       `json:"match,omitempty"`
	Domain           string                `json:"domain"`
	RequestTimeout   *metav1.Duration      `json:"requestTimeout,omitempty"`
	DenyOnFail       bool                  `json:"denyOnFail,omitempty"`
	RateLimitService string                `json:"rateLimitService"`
	Descriptors      []RateLimitDescriptor `json:"descriptors"`
}

// RateLimitDescriptor maps a request property to a descriptor key of the rate limit service.
type RateLimitDescriptor struct {
	Property      string `json:"property"`
	DescriptorKey string `json:"descriptorKey"`
}

// MetaRouterStatus is written by Meltemi.
type MetaRouterStatus struct {
	// ObservedGeneration is the generation the conditions describe.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Accepted (the spec is valid and applied), ResolvedRefs (every host, subset
	// and port it names exists) and Supported (every field set is applied as asked).
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types and reasons of MetaRouterStatus.
const (
	ConditionAccepted     = "Accepted"
	ConditionResolvedRefs = "ResolvedRefs"
	ConditionSupported    = "Supported"

	ReasonAccepted       = "Accepted"
	ReasonInvalid        = "Invalid"
	ReasonConflict       = "Conflict"
	ReasonResolved       = "ResolvedRefs"
	ReasonUnresolvedRefs = "UnresolvedRefs"
	ReasonSupported      = "Supported"
	ReasonUnsupported    = "UnsupportedField"
)

// ApplicationProtocol names the codec of an application protocol carried by MetaProtocol, e.g.
// protocol dubbo, codec aeraki.meta_protocol.codec.dubbo. Service ports named
// tcp-metaprotocol-<protocol>-… use it.
type ApplicationProtocol struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ApplicationProtocolSpec `json:"spec"`
}

// ApplicationProtocolList is a list of ApplicationProtocols.
type ApplicationProtocolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ApplicationProtocol `json:"items"`
}

// ApplicationProtocolSpec maps a protocol name to its codec.
type ApplicationProtocolSpec struct {
	Protocol string `json:"protocol"`
	Codec    string `json:"codec"`
}
