package traffic

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	dubbov1 "github.com/meltemi-mesh/meltemi/api/dubbo/v1alpha1"
	"github.com/meltemi-mesh/meltemi/api/istio"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	redisv1 "github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
	"github.com/meltemi-mesh/meltemi/traffic/proxies"
)

// Input is everything a translation reads. Order does not matter: Translate sorts.
type Input struct {
	MetaRouters          []*mpv1.MetaRouter
	ApplicationProtocols []*mpv1.ApplicationProtocol
	DestinationRules     []*DestinationRule
	// ServiceEntries are Meltemi's and users' alike.
	ServiceEntries []*istio.ServiceEntry
	// VirtualServices route native Dubbo and Thrift ports (tcp-dubbo-…, tcp-thrift-…), as in
	// Aeraki.
	VirtualServices []*VirtualService
	// DubboAuthorizationPolicies guard the inbound side of native Dubbo ports.
	DubboAuthorizationPolicies []*dubbov1.DubboAuthorizationPolicy
	// Services are Kubernetes Services: their ports named by protocol are handled as those of a
	// ServiceEntry with host <name>.<namespace>.svc.<cluster domain>, the cluster IP as address
	// and the selector as workload selector, as Aeraki and Istio do.
	Services []*corev1.Service
	// RedisServices and RedisDestinations configure the tcp-redis-… ports.
	RedisServices     []*redisv1.RedisService
	RedisDestinations []*redisv1.RedisDestination
	// Secrets hold the data of the Secrets that RedisServices and RedisDestinations name (only
	// those: Decode leaves the others out).
	Secrets map[types.NamespacedName]map[string][]byte
	// Mesh is Istio's mesh config, for the proxies' telemetry; nil means Istio's defaults (no
	// access log, tracing at 1%).
	Mesh *MeshConfig
	// RouterErrors, when a MetaRouter has an entry, is what ValidateRouter found in it (nil:
	// valid), so a caller that validated MetaRouters already does not make Translate validate
	// them again. MetaRouters without an entry are validated by Translate.
	RouterErrors map[types.NamespacedName][]string
}

// VirtualService is the part of Istio's VirtualService that routes native Dubbo and Thrift
// ports: http routes, their first-class matches (method, headers) and weighted destinations.
type VirtualService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              VirtualServiceSpec `json:"spec"`
}

// VirtualServiceSpec is a VirtualService's spec.
type VirtualServiceSpec struct {
	Hosts    []string    `json:"hosts,omitempty"`
	Gateways []string    `json:"gateways,omitempty"`
	HTTP     []HTTPRoute `json:"http,omitempty"`
	ExportTo []string    `json:"exportTo,omitempty"`
}

// HTTPRoute is one route of a VirtualService.
type HTTPRoute struct {
	Name  string             `json:"name,omitempty"`
	Match []HTTPMatchRequest `json:"match,omitempty"`
	Route []HTTPRouteDest    `json:"route,omitempty"`
}

// HTTPMatchRequest holds the conditions of a match: the RPC method and headers (Dubbo
// attachments, Thrift headers). A route matches when any of its matches holds.
type HTTPMatchRequest struct {
	Name    string                      `json:"name,omitempty"`
	Method  *mpv1.StringMatch           `json:"method,omitempty"`
	Headers map[string]mpv1.StringMatch `json:"headers,omitempty"`
}

// HTTPRouteDest is a destination and its weight.
type HTTPRouteDest struct {
	Destination VSDestination `json:"destination"`
	Weight      int32         `json:"weight,omitempty"`
}

// VSDestination is a VirtualService destination.
type VSDestination struct {
	Host   string             `json:"host"`
	Subset string             `json:"subset,omitempty"`
	Port   *mpv1.PortSelector `json:"port,omitempty"`
}

// DestinationRule is the part of Istio's DestinationRule the translator reads: subset names and
// consistent-hash settings. Versions v1, v1beta1 and v1alpha3 share this shape.
type DestinationRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              DestinationRuleSpec `json:"spec"`
}

// DestinationRuleSpec is a DestinationRule's spec.
type DestinationRuleSpec struct {
	Host          string         `json:"host"`
	TrafficPolicy *TrafficPolicy `json:"trafficPolicy,omitempty"`
	Subsets       []Subset       `json:"subsets,omitempty"`
}

// Subset is a named subset of a host's endpoints.
type Subset struct {
	Name          string            `json:"name"`
	Labels        map[string]string `json:"labels,omitempty"`
	TrafficPolicy *TrafficPolicy    `json:"trafficPolicy,omitempty"`
}

// TrafficPolicy holds the load balancer settings the translator uses.
type TrafficPolicy struct {
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty"`
}

// LoadBalancer is Istio's LoadBalancerSettings.
type LoadBalancer struct {
	ConsistentHash *ConsistentHash `json:"consistentHash,omitempty"`
}

// ConsistentHash is Istio's ConsistentHashLB; only hashing by header maps onto request
// attributes.
type ConsistentHash struct {
	HTTPHeaderName string `json:"httpHeaderName,omitempty"`
}

// hashHeader returns the consistent-hash header of a policy, or "".
func (p *TrafficPolicy) hashHeader() string {
	if p == nil || p.LoadBalancer == nil || p.LoadBalancer.ConsistentHash == nil {
		return ""
	}
	return p.LoadBalancer.ConsistentHash.HTTPHeaderName
}

// Kinds of input objects, by group and kind (any version).
var (
	destinationRuleGK = schema.GroupKind{Group: istio.Group, Kind: "DestinationRule"}
	serviceEntryGK    = schema.GroupKind{Group: istio.Group, Kind: "ServiceEntry"}
	virtualServiceGK  = schema.GroupKind{Group: istio.Group, Kind: "VirtualService"}
	serviceGK         = schema.GroupKind{Kind: "Service"}
	secretGK          = schema.GroupKind{Kind: "Secret"}
)

// Decode sorts objects read from the API server or from YAML files into an Input. Objects of
// other kinds are ignored; an object that does not decode is left out and reported.
func Decode(objs []*unstructured.Unstructured) (Input, []Problem) {
	var in Input
	var problems []Problem
	secrets := map[types.NamespacedName]*unstructured.Unstructured{}
	for _, u := range objs {
		gk := u.GroupVersionKind().GroupKind()
		var err error
		switch gk {
		case mpv1.MetaRouterKind.GroupKind():
			var mr mpv1.MetaRouter
			if err = fromUnstructured(u, &mr); err == nil {
				in.MetaRouters = append(in.MetaRouters, &mr)
			}
		case mpv1.ApplicationProtocolKind.GroupKind():
			var ap mpv1.ApplicationProtocol
			if err = fromUnstructured(u, &ap); err == nil {
				in.ApplicationProtocols = append(in.ApplicationProtocols, &ap)
			}
		case destinationRuleGK:
			var dr DestinationRule
			if err = fromUnstructured(u, &dr); err == nil {
				in.DestinationRules = append(in.DestinationRules, &dr)
			}
		case serviceEntryGK:
			var se istio.ServiceEntry
			if err = fromUnstructured(u, &se); err == nil {
				in.ServiceEntries = append(in.ServiceEntries, &se)
			}
		case virtualServiceGK:
			var vs VirtualService
			if err = fromUnstructured(u, &vs); err == nil {
				in.VirtualServices = append(in.VirtualServices, &vs)
			}
		case dubbov1.DubboAuthorizationPolicyKind.GroupKind():
			var ap dubbov1.DubboAuthorizationPolicy
			if err = fromUnstructured(u, &ap); err == nil {
				in.DubboAuthorizationPolicies = append(in.DubboAuthorizationPolicies, &ap)
			}
		case serviceGK:
			var svc corev1.Service
			if err = fromUnstructured(u, &svc); err == nil {
				in.Services = append(in.Services, &svc)
			}
		case redisv1.RedisServiceKind.GroupKind():
			var rs redisv1.RedisService
			if err = fromUnstructured(u, &rs); err == nil {
				in.RedisServices = append(in.RedisServices, &rs)
			}
		case redisv1.RedisDestinationKind.GroupKind():
			var rd redisv1.RedisDestination
			if err = fromUnstructured(u, &rd); err == nil {
				in.RedisDestinations = append(in.RedisDestinations, &rd)
			}
		case secretGK:
			// Decoded below, and only when referenced: most Secrets are none of Meltemi's business.
			secrets[types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}] = u
			continue
		default:
			continue
		}
		if err != nil {
			problems = append(problems, Problem{Kind: gk.Kind, Namespace: u.GetNamespace(), Name: u.GetName(),
				Severity: SeverityError, Message: fmt.Sprintf("cannot be decoded, ignored: %v", err)})
		}
	}
	in.Secrets, problems = decodeSecrets(secrets, SecretRefs(in), problems)
	return in, problems
}

// SecretRefs are the Secrets the Redis objects of an input name.
func SecretRefs(in Input) []types.NamespacedName {
	var refs []types.NamespacedName
	add := func(ns string, a *redisv1.Auth) {
		if a != nil && a.Secret != nil && a.Secret.Name != "" {
			refs = append(refs, types.NamespacedName{Namespace: ns, Name: a.Secret.Name})
		}
	}
	for _, rs := range in.RedisServices {
		if rs.Spec.Settings != nil {
			add(rs.Namespace, rs.Spec.Settings.Auth)
		}
	}
	for _, rd := range in.RedisDestinations {
		if p := rd.Spec.TrafficPolicy; p != nil && p.ConnectionPool != nil && p.ConnectionPool.Redis != nil {
			add(rd.Namespace, p.ConnectionPool.Redis.Auth)
		}
	}
	return refs
}

// decodeSecrets decodes the data of the referenced Secrets. Messages never quote the data.
func decodeSecrets(all map[types.NamespacedName]*unstructured.Unstructured, refs []types.NamespacedName, problems []Problem) (map[types.NamespacedName]map[string][]byte, []Problem) {
	out := map[types.NamespacedName]map[string][]byte{}
	for _, ref := range refs {
		u, ok := all[ref]
		if !ok {
			continue
		}
		if _, done := out[ref]; done {
			continue
		}
		data := map[string][]byte{}
		raw, _, _ := unstructured.NestedMap(u.Object, "data")
		for k, v := range raw {
			s, _ := v.(string)
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				problems = append(problems, Problem{Kind: "Secret", Namespace: ref.Namespace, Name: ref.Name, Severity: SeverityError,
					Message: fmt.Sprintf("data key %q is not base64; key ignored", k)})
				continue
			}
			data[k] = b
		}
		// stringData only exists in objects read from files; the API server folds it into data.
		str, _, _ := unstructured.NestedStringMap(u.Object, "stringData")
		for k, v := range str {
			data[k] = []byte(v)
		}
		out[ref] = data
	}
	return out, problems
}

// ParseObjects reads Kubernetes objects from YAML (several documents) or JSON; List objects, as
// written by kubectl get -o yaml, are expanded.
func ParseObjects(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for i := 0; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			err := u.EachListItem(func(o runtime.Object) error {
				out = append(out, o.(*unstructured.Unstructured))
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", i+1, err)
			}
			continue
		}
		out = append(out, u)
	}
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}

// Options tune a translation.
type Options struct {
	// Namespace receives the EnvoyFilters. In Istio's root namespace (istio-system by default)
	// they reach every namespace; elsewhere only that namespace's proxies. Default istio-system.
	Namespace string `json:"namespace,omitempty"`
	// ProxySelector are the labels of workloads whose proxy carries the MetaProtocol filter;
	// MetaProtocol EnvoyFilters select only them, so plain sidecars never receive a filter they
	// would reject together with the listener. Empty (the default, as in Aeraki): every proxy
	// in Namespace's scope, no pod label needed.
	ProxySelector map[string]string `json:"proxySelector,omitempty"`
	// XDSCluster is the Envoy cluster through which MetaProtocol proxies reach Meltemi's xDS
	// server for routes. Envoy takes it only if the proxy's bootstrap defines it statically
	// (the chart's bootstrap override does). Default DefaultXDSCluster.
	XDSCluster string `json:"xdsCluster,omitempty"`
	// ClusterDomain completes short host names of DestinationRules (<name>.<namespace>.svc.
	// <domain>), as Istio does. Default cluster.local.
	ClusterDomain string `json:"clusterDomain,omitempty"`
	// ExportNamespaces are the namespaces besides Namespace a MetaRouter's exportTo may put
	// EnvoyFilters in; "*" permits any. Default none: exportTo names only Namespace.
	ExportNamespaces []string `json:"exportNamespaces,omitempty"`
	// Proxy is the profile (traffic/proxies) of the proxies an EnvoyFilter reaches unless it
	// selects MetaProtocol proxies: the stock istio-proxy of the running Istio (the default,
	// proxies.DefaultStock), or a MetaProtocol profile where every proxy in scope runs the
	// MetaProtocol image (Aeraki's set-up, chosen explicitly).
	Proxy string `json:"proxy,omitempty"`
	// MetaProtocolProxy is the profile of the proxies ProxySelector selects. Default
	// proxies.DefaultMetaProtocol.
	MetaProtocolProxy string `json:"metaProtocolProxy,omitempty"`
}

// mayExportTo reports whether EnvoyFilters may be written to a namespace.
func (o Options) mayExportTo(ns string) bool {
	return ns == o.Namespace || slices.Contains(o.ExportNamespaces, "*") || slices.Contains(o.ExportNamespaces, ns)
}

// WriterNamespace is the namespace the EnvoyFilter writer must cover: Namespace, or every
// namespace ("") when MetaRouters may export elsewhere.
func (o Options) WriterNamespace() string {
	o = o.WithDefaults()
	if len(o.ExportNamespaces) > 0 {
		return ""
	}
	return o.Namespace
}

// Defaults of Options.
const (
	DefaultNamespace  = "istio-system"
	DefaultXDSCluster = "meltemi-xds"
)

// WithDefaults returns the options with defaults filled in.
func (o Options) WithDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.XDSCluster == "" {
		o.XDSCluster = DefaultXDSCluster
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	if o.Proxy == "" {
		o.Proxy = proxies.DefaultStock
	}
	if o.MetaProtocolProxy == "" {
		o.MetaProtocolProxy = proxies.DefaultMetaProtocol
	}
	return o
}

// Validate reports options the translation cannot work with.
func (o Options) Validate() error {
	for k, v := range o.ProxySelector {
		if k == "" || strings.ContainsAny(k+v, " ,=") {
			return fmt.Errorf("invalid proxy selector label %q=%q", k, v)
		}
	}
	for _, ns := range o.ExportNamespaces {
		if ns != "*" && len(validation.IsDNS1123Label(ns)) > 0 {
			return fmt.Errorf("export namespace %q is neither \"*\" nor a namespace name", ns)
		}
	}
	o = o.WithDefaults()
	if _, err := proxies.Get(o.Proxy); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	if p, err := proxies.Get(o.MetaProtocolProxy); err != nil {
		return fmt.Errorf("MetaProtocol proxy: %w", err)
	} else if !p.MetaProtocol {
		return fmt.Errorf("MetaProtocol proxy %s has no MetaProtocol filter", o.MetaProtocolProxy)
	}
	if strings.ContainsAny(o.XDSCluster, " |") {
		return fmt.Errorf("xDS cluster %q: the name of a static cluster of the proxies' bootstrap, not an Istio outbound cluster (Envoy takes RDS only through a static one)", o.XDSCluster)
	}
	return nil
}
