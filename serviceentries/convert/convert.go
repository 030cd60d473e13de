// Package convert turns registry services into Istio objects. It is pure: the same input
// always gives byte-identical output, whatever order registries listed things in.
package convert

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meltemi-mesh/meltemi/api/istio"
	"github.com/meltemi-mesh/meltemi/api/portname"
	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// Options shape the output.
type Options struct {
	// Namespace receives the ServiceEntries.
	Namespace string
	// Protocols maps a registry protocol ("dubbo") to the port name prefix that selects the
	// mesh's protocol handling ("tcp-metaprotocol-dubbo"); merged over DefaultProtocols.
	Protocols map[string]string
	// UnknownProtocol is the prefix for protocols not in Protocols; "tcp" (opaque) by default.
	UnknownProtocol string
	// MaxInlineEndpoints is the most endpoints a ServiceEntry carries itself; above it the
	// instances become WorkloadEntries selected by the ServiceEntry's workloadSelector, which
	// keeps the object under Istio's 4096-endpoint and etcd's size limits. 0 means
	// DefaultMaxInlineEndpoints.
	MaxInlineEndpoints int
}

// DefaultMaxInlineEndpoints keeps ServiceEntries well below Istio's limit of 4096 endpoints.
const DefaultMaxInlineEndpoints = 1000

// Input is everything known about one mesh host.
type Input struct {
	Host string
	// Services are every registry service claiming Host, in registry and key order.
	Services []catalog.Service
	// VIP is the virtual IP allocated to the host; empty for none.
	VIP string
}

// Result is the desired state for one host: a ServiceEntry, and WorkloadEntries when the
// host has more instances than a ServiceEntry should carry inline.
type Result struct {
	ServiceEntry    *istio.ServiceEntry
	WorkloadEntries []*istio.WorkloadEntryObject
}

// DefaultProtocols follow Istio's and Aeraki's port-name protocol selection.
var DefaultProtocols = map[string]string{
	"dubbo":     portname.MetaProtocol("dubbo"),
	"thrift":    portname.MetaProtocol("thrift"),
	"tri":       "grpc-tri",
	"grpc":      "grpc",
	"http":      "http",
	"rest":      "http",
	"http2":     "http2",
	"redis":     "tcp-redis",
	"kafka":     "tcp-kafka",
	"zookeeper": "tcp-zookeeper",
	"tcp":       "tcp",
}

// Port namings: how Dubbo and Thrift ports are named, which selects the proxy that handles
// them.
const (
	// PortNamingMetaProtocol names them tcp-metaprotocol-<protocol>-…: the MetaProtocol proxy.
	PortNamingMetaProtocol = "metaprotocol"
	// PortNamingNative names them tcp-dubbo-… and tcp-thrift-…, as dubbo2istio does: Envoy's
	// own Dubbo and Thrift proxies (routed by VirtualServices).
	PortNamingNative = "dubbo2istio"
)

// ProtocolsFor returns the Protocols of a port naming.
func ProtocolsFor(naming string) (map[string]string, error) {
	switch naming {
	case "", PortNamingMetaProtocol:
		return nil, nil
	case PortNamingNative:
		return map[string]string{"dubbo": "tcp-dubbo", "thrift": "tcp-thrift"}, nil
	}
	return nil, fmt.Errorf("port naming %q: want %s or %s", naming, PortNamingMetaProtocol, PortNamingNative)
}

func (o Options) prefix(protocol string) string {
	if p, ok := o.Protocols[protocol]; ok {
		return p
	}
	if p, ok := DefaultProtocols[protocol]; ok {
		return p
	}
	return cmp.Or(o.UnknownProtocol, "tcp")
}

// Convert builds the desired objects for one host from every service that claims it. It
// returns nil when no instance is left: then no object for the host should exist.
func Convert(in Input, opt Options) *Result {
	host, services := in.Host, in.Services
	registries := map[string]struct{}{}
	portUse := map[string]map[uint32]int{} // prefix -> port -> instances using it
	var total int
	for _, svc := range services {
		for _, in := range svc.Instances {
			registries[svc.Registry] = struct{}{}
			p := opt.prefix(in.Protocol)
			if portUse[p] == nil {
				portUse[p] = map[uint32]int{}
			}
			portUse[p][in.Port]++
			total++
		}
	}
	if total == 0 {
		return nil
	}

	// One service port per protocol, numbered by the port most instances use; instances on
	// another port keep theirs through the endpoint's port map, so none is lost.
	ports := make([]istio.ServicePort, 0, len(portUse))
	number := map[string]uint32{}
	taken := map[uint32]bool{}
	for _, p := range slices.Sorted(maps.Keys(portUse)) {
		n := mostUsed(portUse[p])
		number[p] = n
		// Two protocols on one number would make Istio reject the object; the first keeps it
		// and the other protocol's instances are served through it (see portName).
		if taken[n] {
			continue
		}
		taken[n] = true
		ports = append(ports, istio.ServicePort{Number: n, Protocol: portname.IstioProtocol(p), Name: portname.Name(p, n)})
	}

	endpoints := buildEndpoints(services, opt, ports, number)
	setWeights(endpoints)

	names := slices.Sorted(maps.Keys(registries))
	se := &istio.ServiceEntry{
		TypeMeta: metav1.TypeMeta{APIVersion: istio.ServiceEntryKind.GroupVersion().String(), Kind: istio.ServiceEntryKind.Kind},
		ObjectMeta: metav1.ObjectMeta{
			Name:      host, // a valid host is a valid object name
			Namespace: opt.Namespace,
			// The writer adds the ownership labels; which registries it comes from is ours.
			Labels: map[string]string{v1alpha1.LabelRegistry: registryLabel(names)},
		},
		Spec: istio.ServiceEntrySpec{
			Hosts:      []string{host},
			Ports:      ports,
			Location:   istio.MeshInternal,
			Resolution: istio.ResolutionStatic,
		},
	}
	if in.VIP != "" {
		se.Spec.Addresses = []string{in.VIP}
	}
	if len(names) > 1 {
		se.Annotations = map[string]string{v1alpha1.AnnotationRegistries: strings.Join(names, ",")}
	}
	limit := opt.MaxInlineEndpoints
	if limit <= 0 {
		limit = DefaultMaxInlineEndpoints
	}
	if len(endpoints) <= limit {
		se.Spec.Endpoints = endpoints
		return &Result{ServiceEntry: se}
	}
	selector := map[string]string{v1alpha1.LabelService: labelValue(host)}
	se.Spec.WorkloadSelector = &istio.WorkloadSelector{Labels: selector}
	return &Result{ServiceEntry: se, WorkloadEntries: workloadEntries(se, endpoints, selector)}
}

// workloadEntries turns endpoints into WorkloadEntry objects named stably by what identifies
// an endpoint (registry, address and port map), so a changed label updates the same object.
func workloadEntries(se *istio.ServiceEntry, endpoints []istio.WorkloadEntry, selector map[string]string) []*istio.WorkloadEntryObject {
	out := make([]*istio.WorkloadEntryObject, 0, len(endpoints))
	seen := map[string]int{}
	for _, ep := range endpoints {
		id := ep.Labels[v1alpha1.LabelRegistry] + "|" + ep.Address
		for _, k := range slices.Sorted(maps.Keys(ep.Ports)) {
			id += fmt.Sprintf("|%s=%d", k, ep.Ports[k])
		}
		// Identical endpoints (same address, ports and registry, other labels) stay distinct.
		seen[id]++
		if n := seen[id]; n > 1 {
			id += fmt.Sprintf("|#%d", n)
		}
		sum := sha256.Sum256([]byte(id))
		ep.Labels = withLabels(ep.Labels, selector)
		out = append(out, &istio.WorkloadEntryObject{
			TypeMeta: metav1.TypeMeta{APIVersion: istio.WorkloadEntryKind.GroupVersion().String(), Kind: istio.WorkloadEntryKind.Kind},
			ObjectMeta: metav1.ObjectMeta{
				Name:        truncateName(se.Name, 253-11) + "-" + hex.EncodeToString(sum[:5]),
				Namespace:   se.Namespace,
				Labels:      withLabels(se.Labels, selector),
				Annotations: maps.Clone(se.Annotations),
			},
			Spec: ep,
		})
	}
	return out
}

func withLabels(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

func truncateName(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.TrimRight(s[:n], ".-")
}

// labelValue is host as a valid label value: itself when it fits in 63 characters,
// otherwise a prefix and a hash.
func labelValue(host string) string {
	if len(host) <= 63 {
		return host
	}
	sum := sha256.Sum256([]byte(host))
	return strings.TrimRight(host[:50], ".-") + "-" + hex.EncodeToString(sum[:6])
}

// buildEndpoints makes one endpoint per workload: the instances of one registry at one address
// with the same labels share an endpoint whose port map lists each protocol's port (only
// where it differs from the service port). A second instance of the same protocol at that
// address (two processes on one machine) gets an endpoint of its own.
func buildEndpoints(services []catalog.Service, opt Options, ports []istio.ServicePort, number map[string]uint32) []istio.WorkloadEntry {
	type workload struct {
		registry, address, labels, locality string
		weight                              uint32
	}
	groups := map[workload][]int{} // -> indexes into endpoints
	var endpoints []istio.WorkloadEntry
	var served []map[string]bool // port names each endpoint already serves
	for _, svc := range services {
		for _, in := range svc.Instances {
			p := opt.prefix(in.Protocol)
			name := portName(ports, number[p], p)
			key := workload{svc.Registry, in.Address, catalog.LabelString(in.Labels), in.Locality, in.Weight}
			idx := -1
			for _, i := range groups[key] {
				if !served[i][name] {
					idx = i
					break
				}
			}
			if idx < 0 {
				ep := istio.WorkloadEntry{Address: in.Address, Locality: in.Locality, Weight: in.Weight}
				ep.Labels = make(map[string]string, len(in.Labels)+1)
				maps.Copy(ep.Labels, in.Labels)
				ep.Labels[v1alpha1.LabelRegistry] = svc.Registry
				endpoints = append(endpoints, ep)
				served = append(served, map[string]bool{})
				idx = len(endpoints) - 1
				groups[key] = append(groups[key], idx)
			}
			served[idx][name] = true
			if in.Port != servicePort(ports, name) {
				if endpoints[idx].Ports == nil {
					endpoints[idx].Ports = map[string]uint32{}
				}
				endpoints[idx].Ports[name] = in.Port
			}
		}
	}
	// Input is already in registry, key and instance order; a stable sort by address keeps
	// that order among equal addresses, so output is canonical.
	slices.SortStableFunc(endpoints, compareEndpoints)
	return endpoints
}

// setWeights gives every endpoint its weight (the default for instances without one) when the
// weights differ, and none when they are all equal: the mesh then balances evenly, as it would
// with the weights, and the objects stay smaller.
func setWeights(endpoints []istio.WorkloadEntry) {
	effective := func(w uint32) uint32 { return cmp.Or(w, catalog.DefaultWeight) }
	uniform := true
	for i := range endpoints {
		if effective(endpoints[i].Weight) != effective(endpoints[0].Weight) {
			uniform = false
			break
		}
	}
	for i := range endpoints {
		if uniform {
			endpoints[i].Weight = 0
		} else {
			endpoints[i].Weight = effective(endpoints[i].Weight)
		}
	}
}

func servicePort(ports []istio.ServicePort, name string) uint32 {
	for _, p := range ports {
		if p.Name == name {
			return p.Number
		}
	}
	return 0
}

func portName(ports []istio.ServicePort, n uint32, prefix string) string {
	want := portname.Name(prefix, n)
	for _, p := range ports {
		if p.Name == want {
			return want
		}
	}
	for _, p := range ports {
		if p.Number == n {
			return p.Name
		}
	}
	return want
}

func mostUsed(use map[uint32]int) uint32 {
	var best uint32
	for port, n := range use {
		if best == 0 || n > use[best] || n == use[best] && port < best {
			best = port
		}
	}
	return best
}

func compareEndpoints(a, b istio.WorkloadEntry) int {
	return cmp.Or(
		cmp.Compare(a.Address, b.Address),
		cmp.Compare(firstPort(a.Ports), firstPort(b.Ports)),
	)
}

func firstPort(m map[string]uint32) uint32 {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		return m[k]
	}
	return 0
}

// registryLabel is a valid label value naming the registries of an object: the name itself
// for one registry, a short hash for several (the full list is in an annotation).
func registryLabel(names []string) string {
	if len(names) == 1 {
		return names[0]
	}
	sum := sha256.Sum256([]byte(strings.Join(names, ",")))
	return v1alpha1.MultiRegistryPrefix + hex.EncodeToString(sum[:6])
}
