package harness

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	// Envoy's own filter types, registered so that the sidecar decodes and validates them.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/redis_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/thrift_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/zookeeper_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// Endpoint is one endpoint of a cluster as a sidecar's EDS has it.
type Endpoint struct {
	Address string
	Port    uint32
	// Weight is the endpoint's load-balancing weight (0 when unset).
	Weight uint32
	// Locality is region/zone/subzone, empty parts left empty ("" when none is set).
	Locality string
}

func (e Endpoint) String() string {
	s := net.JoinHostPort(e.Address, strconv.FormatUint(uint64(e.Port), 10))
	if e.Weight != 0 {
		s += fmt.Sprintf(" weight=%d", e.Weight)
	}
	if e.Locality != "" {
		s += " locality=" + e.Locality
	}
	return s
}

// SortEndpoints orders endpoints by address, port, weight and locality, for comparing.
func SortEndpoints(eps []Endpoint) []Endpoint {
	eps = slices.Clone(eps)
	slices.SortFunc(eps, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Weight, b.Weight),
			cmp.Compare(a.Locality, b.Locality))
	})
	return eps
}

// EndpointsOf returns the endpoints EDS gives a cluster, sorted, and whether EDS has the
// cluster at all.
func (v *View) EndpointsOf(cluster string) ([]Endpoint, bool) {
	cla, ok := v.Endpoints[cluster]
	if !ok {
		return nil, false
	}
	var out []Endpoint
	for _, le := range cla.GetEndpoints() {
		loc := ""
		if l := le.GetLocality(); l != nil && (l.GetRegion() != "" || l.GetZone() != "" || l.GetSubZone() != "") {
			loc = l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubZone()
		}
		for _, lb := range le.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, Endpoint{Address: sa.GetAddress(), Port: sa.GetPortValue(),
				Weight: lb.GetLoadBalancingWeight().GetValue(), Locality: loc})
		}
	}
	return SortEndpoints(out), true
}

// Cluster returns a cluster or an error naming the clusters of the same host that exist.
func (v *View) Cluster(name string) (*clusterv3.Cluster, error) {
	if c, ok := v.Clusters[name]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("no cluster %s (clusters of that host: %v)", name, v.clustersLike(name))
}

func (v *View) clustersLike(name string) []string {
	host := name[strings.LastIndexByte(name, '|')+1:]
	var out []string
	for n := range v.Clusters {
		if strings.HasSuffix(n, "|"+host) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// FilterChain is a filter chain of a listener with the filters in order.
type FilterChain struct {
	Name string
	// DestinationPort is the chain's match, 0 when it matches any port.
	DestinationPort uint32
	Filters         []*listenerv3.Filter
}

// FilterNames are the names of the chain's filters, in order.
func (fc FilterChain) FilterNames() []string {
	var out []string
	for _, f := range fc.Filters {
		out = append(out, f.GetName())
	}
	return out
}

// FilterChains returns the filter chains of a listener (the default chain last).
func (v *View) FilterChains(listener string) ([]FilterChain, error) {
	l, ok := v.Listeners[listener]
	if !ok {
		return nil, fmt.Errorf("no listener %s", listener)
	}
	var out []FilterChain
	for _, fc := range allFilterChains(l) {
		out = append(out, FilterChain{Name: fc.GetName(), DestinationPort: fc.GetFilterChainMatch().GetDestinationPort().GetValue(),
			Filters: fc.GetFilters()})
	}
	return out, nil
}

// Filter returns the first network filter named name in a listener's chains (those matching
// destinationPort, when it is not 0).
func (v *View) Filter(listener string, destinationPort uint32, name string) (*listenerv3.Filter, error) {
	chains, err := v.FilterChains(listener)
	if err != nil {
		return nil, err
	}
	var seen []string
	for _, fc := range chains {
		if destinationPort != 0 && fc.DestinationPort != destinationPort {
			continue
		}
		for _, f := range fc.Filters {
			if f.GetName() == name {
				return f, nil
			}
			seen = append(seen, f.GetName())
		}
	}
	slices.Sort(seen)
	return nil, fmt.Errorf("listener %s (port %d): no filter %s (filters: %v)", listener, destinationPort, name, slices.Compact(seen))
}

// FilterJSON is a filter's typed config as JSON (for messages).
func FilterJSON(f *listenerv3.Filter) string {
	b, err := protojson.Marshal(f)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// UnappliedPatches checks the NETWORK_FILTER patches of EnvoyFilters that reach the sidecar
// (same namespace or the root namespace, and a workload selector its labels match) against its
// listeners: each patch's listener must exist and carry the filter the patch puts in; a cluster
// a CLUSTER patch adds must be in its CDS. It returns one line per patch that matched nothing —
// istiod ignores those silently.
func (s *Sidecar) UnappliedPatches(v *View, rootNamespace string, efs []*unstructured.Unstructured) []string {
	var out []string
	for _, ef := range efs {
		if ns := ef.GetNamespace(); ns != s.Namespace && ns != rootNamespace {
			continue
		}
		sel, _, _ := unstructured.NestedStringMap(ef.Object, "spec", "workloadSelector", "labels")
		if !selects(sel, s.Labels) {
			continue
		}
		patches, _, _ := unstructured.NestedSlice(ef.Object, "spec", "configPatches")
		for i, p := range patches {
			pm, _ := p.(map[string]any)
			applyTo, _, _ := unstructured.NestedString(pm, "applyTo")
			if op, _, _ := unstructured.NestedString(pm, "patch", "operation"); applyTo == "CLUSTER" && op == "ADD" {
				// An added cluster must reach the sidecar's CDS.
				if name, _, _ := unstructured.NestedString(pm, "patch", "value", "name"); name != "" {
					if _, err := v.Cluster(name); err != nil {
						out = append(out, fmt.Sprintf("EnvoyFilter %s/%s patch %d: added cluster %s not in CDS", ef.GetNamespace(), ef.GetName(), i, name))
					}
				}
				continue
			}
			if applyTo != "NETWORK_FILTER" {
				continue
			}
			listener, _, _ := unstructured.NestedString(pm, "match", "listener", "name")
			port, _, _ := unstructured.NestedInt64(pm, "match", "listener", "filterChain", "destinationPort")
			value, _, _ := unstructured.NestedMap(pm, "patch", "value")
			raw, _ := json.Marshal(value)
			var f struct {
				Name string `json:"name"`
			}
			_ = json.Unmarshal(raw, &f)
			if listener == "" || f.Name == "" {
				continue
			}
			if _, err := v.Filter(listener, uint32(port), f.Name); err != nil {
				out = append(out, fmt.Sprintf("EnvoyFilter %s/%s patch %d matched nothing: %v", ef.GetNamespace(), ef.GetName(), i, err))
			}
		}
	}
	return out
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
