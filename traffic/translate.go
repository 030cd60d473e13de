// Package traffic is the second pipeline's pure step: it translates routing rules into proxy
// configuration. Input (one snapshot of MetaRouters, ApplicationProtocols, DestinationRules,
// ServiceEntries, Kubernetes Services, VirtualServices, DubboAuthorizationPolicies,
// RedisServices, RedisDestinations, the Secrets those name, and Istio's mesh config) goes in;
// Output (Istio EnvoyFilters, route configurations for Meltemi's RDS server, each MetaRouter's
// result, and every problem found) comes out. It reads no cluster and keeps no state.
//
// Per port, by name (api/portname):
//   - tcp-metaprotocol-<app>-…: the MetaProtocol proxy replaces the TCP proxy, outbound on the
//     service's VIP listener for the proxies Options.ProxySelector selects, with routes over RDS
//     named <host>_<port>, and inbound for the service's own workloads (when its ServiceEntry
//     has a workload selector) with rate limits and telemetry;
//   - tcp-dubbo-… and tcp-thrift-…: Envoy's dubbo_proxy and thrift_proxy with inline routes from
//     VirtualServices, and Dubbo authorization on the inbound side;
//   - tcp-redis-…: Envoy's redis_proxy from RedisServices and RedisDestinations;
//   - tcp-kafka-… and tcp-zookeeper-…: Envoy's statistics filters before the TCP proxy.
//
// A MetaRouter that is invalid on its own (bad regex, weights, duplicate route names) is not
// applied (Input.RouterErrors carries a caller's own validation); one that names missing hosts,
// subsets or ports is applied and warned about, as Istio does with VirtualServices. Each host
// is routed by one MetaRouter: the oldest. Evaluate and EvaluateRedis answer, for `meltemi
// routes explain`, which route a request takes.
package traffic

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	redisv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/redis_proxy/v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	dubbov1 "github.com/meltemi-mesh/meltemi/api/dubbo/v1alpha1"
	"github.com/meltemi-mesh/meltemi/api/istio"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/api/portname"
	redisv1 "github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
	"github.com/meltemi-mesh/meltemi/traffic/proxies"
)

// Severity of a Problem.
type Severity string

const (
	// SeverityError: the object (or the part named) was left out.
	SeverityError Severity = "Error"
	// SeverityWarning: applied, but something it refers to is missing or unsupported.
	SeverityWarning Severity = "Warning"
)

// Problem is something wrong with one input object.
type Problem struct {
	Kind      string
	Namespace string
	Name      string
	Severity  Severity
	Message   string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s %s/%s: %s: %s", p.Kind, p.Namespace, p.Name, p.Severity, p.Message)
}

// RouterResult is the outcome of one MetaRouter, for its status.
type RouterResult struct {
	Generation int64
	// Errors make the MetaRouter invalid: it is not applied.
	Errors []string
	// Conflicts name hosts of the MetaRouter routed by an older MetaRouter instead.
	Conflicts []string
	// Warnings are references to missing hosts, subsets or ports, and features a port's proxy
	// does not support.
	Warnings []string
	// Unresolved are the clusters its routes send traffic to that do not exist (no such
	// host, port or subset): requests routed there fail. They are among the Warnings too.
	Unresolved []string
	// Unsupported are fields set that Meltemi does not apply (or not everywhere asked).
	Unsupported []string
	// Hosts it routes.
	Hosts []string
}

// Accepted reports whether the MetaRouter is applied to at least one of its hosts.
func (r *RouterResult) Accepted() bool { return len(r.Errors) == 0 && len(r.Hosts) > 0 }

func (r *RouterResult) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !slices.Contains(r.Warnings, msg) {
		r.Warnings = append(r.Warnings, msg)
	}
}

func (r *RouterResult) unsupported(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !slices.Contains(r.Unsupported, msg) {
		r.Unsupported = append(r.Unsupported, msg)
	}
}

// Output is the result of a translation.
type Output struct {
	// EnvoyFilters, sorted by name and namespace; the writer adds Meltemi's ownership labels.
	EnvoyFilters []*unstructured.Unstructured
	// Held are EnvoyFilters that could not be built this time because of bad input (a Redis
	// password that cannot be read): the writer keeps the existing ones unchanged instead of
	// withdrawing them.
	Held []types.NamespacedName
	// Routes are the route configurations served over RDS, by name (<host>_<port>).
	Routes map[string]*routev3.RouteConfiguration
	// RedisProxies are the outbound Redis proxy configs, by host and port (<host>_<port>), for
	// explaining where keys go.
	RedisProxies map[string]*redisv3.RedisProxy
	// Routers has the outcome of every MetaRouter of the input.
	Routers map[types.NamespacedName]*RouterResult
	// Problems lists everything wrong with the input, sorted.
	Problems []Problem
}

// RouteConfigName is the name of the route configuration of a host's port.
func RouteConfigName(host string, port uint32) string { return fmt.Sprintf("%s_%d", host, port) }

// ClusterName is Istio's name of an outbound cluster.
func ClusterName(port uint32, subset, host string) string {
	return fmt.Sprintf("outbound|%d|%s|%s", port, subset, host)
}

// Codecs of the application protocols known without an ApplicationProtocol object.
var builtinCodecs = map[string]string{
	"dubbo":  "aeraki.meta_protocol.codec.dubbo",
	"thrift": "aeraki.meta_protocol.codec.thrift",
}

// service is one host of a ServiceEntry.
type service struct {
	host string
	se   *istio.ServiceEntry
}

type router struct {
	mr  *mpv1.MetaRouter
	key types.NamespacedName
	res *RouterResult
}

type subsets struct {
	hashHeader string            // top-level consistent-hash header
	byName     map[string]string // subset -> its consistent-hash header ("" for none)
}

type translator struct {
	opts Options
	// stockProfile and metaProtocolProfile are the profiles of Options.Proxy and
	// Options.MetaProtocolProxy: what the proxies an EnvoyFilter reaches can load.
	stockProfile, metaProtocolProfile *proxies.Profile
	// metaProtocolOff counts the MetaProtocol EnvoyFilters not produced because no proxy is a
	// MetaProtocol proxy.
	metaProtocolOff int
	mesh            *MeshConfig
	out             *Output
	codecs          map[string]string
	subsets         map[string]*subsets // host -> subsets of its DestinationRules
	services        map[string]*service // host -> service
	routers         map[string]*router  // host -> the MetaRouter routing it
	listeners       map[string]string   // outbound listener name -> host whose filter replaces its TCP proxy
	// virtualServices: host -> the VirtualService routing its native Dubbo/Thrift ports.
	virtualServices map[string]*VirtualService
	// authz: namespace -> its DubboAuthorizationPolicies, oldest first.
	authz map[string][]*dubbov1.DubboAuthorizationPolicy
	// redisServices and redisDests: host -> the (oldest) RedisService, RedisDestination for it.
	redisServices map[string]*redisv1.RedisService
	redisDests    map[string]*redisv1.RedisDestination
	secrets       map[types.NamespacedName]map[string][]byte
}

// Translate turns the input into EnvoyFilters and route configurations. It never fails: what
// cannot be translated is left out and reported in Output.Problems and Output.Routers.
func Translate(in Input, opts Options) *Output {
	t := &translator{
		opts: opts.WithDefaults(),
		mesh: in.Mesh,
		out: &Output{
			Routes:       map[string]*routev3.RouteConfiguration{},
			RedisProxies: map[string]*redisv3.RedisProxy{},
			Routers:      map[types.NamespacedName]*RouterResult{},
		},
		codecs:    maps.Clone(builtinCodecs),
		subsets:   map[string]*subsets{},
		services:  map[string]*service{},
		routers:   map[string]*router{},
		listeners: map[string]string{},

		virtualServices: map[string]*VirtualService{},
		authz:           map[string][]*dubbov1.DubboAuthorizationPolicy{},
		redisServices:   map[string]*redisv1.RedisService{},
		redisDests:      map[string]*redisv1.RedisDestination{},
	}
	t.stockProfile = t.proxyProfile(t.opts.Proxy, proxies.DefaultStock)
	t.metaProtocolProfile = t.proxyProfile(t.opts.MetaProtocolProxy, proxies.DefaultMetaProtocol)
	t.loadProtocols(in.ApplicationProtocols)
	t.loadDestinationRules(in.DestinationRules)
	t.loadServices(slices.Concat(in.ServiceEntries, kubeServiceEntries(in.Services, t.opts.ClusterDomain)))
	t.loadRouters(in.MetaRouters, in.RouterErrors)
	t.loadVirtualServices(in.VirtualServices)
	t.loadAuthorizationPolicies(in.DubboAuthorizationPolicies)
	t.loadRedis(in.RedisServices, in.RedisDestinations, in.Secrets)

	// Oldest services first: when two hosts compete for one listener, the one that had it keeps it.
	services := slices.Collect(maps.Values(t.services))
	slices.SortFunc(services, func(a, b *service) int {
		return cmp.Or(olderFirst(&a.se.ObjectMeta, &b.se.ObjectMeta), strings.Compare(a.host, b.host))
	})
	for _, svc := range services {
		t.translateService(svc)
	}
	for _, host := range slices.Sorted(maps.Keys(t.routers)) {
		if _, ok := t.services[host]; !ok {
			t.routers[host].res.warn("host %s: no ServiceEntry defines it", host)
		}
	}
	t.finish()
	return t.out
}

// proxyProfile returns the named proxy profile, or the fallback with a problem when there is
// no such profile (Options.Validate refuses it at start).
func (t *translator) proxyProfile(name, fallback string) *proxies.Profile {
	p, err := proxies.Get(name)
	if err == nil {
		return p
	}
	t.problem("Options", "", "", SeverityError, "%v; using %s", err, fallback)
	p, _ = proxies.Get(fallback)
	return p
}

func (t *translator) problem(kind, namespace, name string, sev Severity, format string, args ...any) {
	t.out.Problems = append(t.out.Problems, Problem{Kind: kind, Namespace: namespace, Name: name, Severity: sev,
		Message: fmt.Sprintf(format, args...)})
}

// serviceProblem reports a problem of a ServiceEntry, or of the Kubernetes Service taken as one.
func (t *translator) serviceProblem(se *istio.ServiceEntry, sev Severity, format string, args ...any) {
	t.problem(cmp.Or(se.Kind, "ServiceEntry"), se.Namespace, se.Name, sev, format, args...)
}

func (t *translator) loadProtocols(aps []*mpv1.ApplicationProtocol) {
	aps = slices.Clone(aps)
	slices.SortFunc(aps, func(a, b *mpv1.ApplicationProtocol) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	from := map[string]string{} // protocol -> object that set it
	for _, ap := range aps {
		p, c := strings.ToLower(ap.Spec.Protocol), ap.Spec.Codec
		if p == "" || c == "" {
			t.problem("ApplicationProtocol", ap.Namespace, ap.Name, SeverityError, "protocol and codec are required")
			continue
		}
		if prev, ok := from[p]; ok {
			if t.codecs[p] != c {
				t.problem("ApplicationProtocol", ap.Namespace, ap.Name, SeverityWarning,
					"protocol %s already has codec %s from %s; %s is ignored", p, t.codecs[p], prev, c)
			}
			continue
		}
		from[p] = ap.Namespace + "/" + ap.Name
		t.codecs[p] = c
	}
}

// loadDestinationRules indexes subsets by host. Several DestinationRules of one host are
// merged: the first definition (oldest rule) of a subset or of the top-level policy wins.
func (t *translator) loadDestinationRules(drs []*DestinationRule) {
	drs = slices.Clone(drs)
	slices.SortFunc(drs, func(a, b *DestinationRule) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	for _, dr := range drs {
		host := dr.Spec.Host
		if host == "" {
			t.problem("DestinationRule", dr.Namespace, dr.Name, SeverityError, "spec.host is empty")
			continue
		}
		if !strings.Contains(host, ".") {
			// A short name is a Kubernetes Service of the rule's namespace, as in Istio.
			host = fmt.Sprintf("%s.%s.svc.%s", host, dr.Namespace, t.opts.ClusterDomain)
		}
		s := t.subsets[host]
		if s == nil {
			s = &subsets{hashHeader: dr.Spec.TrafficPolicy.hashHeader(), byName: map[string]string{}}
			t.subsets[host] = s
		}
		for _, sub := range dr.Spec.Subsets {
			if _, dup := s.byName[sub.Name]; dup || sub.Name == "" {
				continue
			}
			s.byName[sub.Name] = sub.TrafficPolicy.hashHeader()
		}
	}
}

// loadServices indexes ServiceEntries by host. A host defined by several ServiceEntries is
// taken from the oldest; the others are reported.
func (t *translator) loadServices(ses []*istio.ServiceEntry) {
	ses = slices.Clone(ses)
	slices.SortFunc(ses, func(a, b *istio.ServiceEntry) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	for _, se := range ses {
		relevant := false
		for _, p := range se.Spec.Ports {
			kind, _, err := portname.Parse(p.Name)
			if err != nil {
				t.serviceProblem(se, SeverityError, "port %d: %v; port ignored", p.Number, err)
			}
			relevant = relevant || kind != portname.Other
		}
		if !relevant {
			continue
		}
		for _, h := range se.Spec.Hosts {
			if msg := checkHost(h); msg != "" {
				t.serviceProblem(se, SeverityError, "host %s ignored: %s", h, msg)
				continue
			}
			if prev, dup := t.services[h]; dup {
				t.serviceProblem(se, SeverityWarning,
					"host %s is also defined by ServiceEntry %s/%s, which is used", h, prev.se.Namespace, prev.se.Name)
				continue
			}
			t.services[h] = &service{host: h, se: se}
		}
	}
}

// loadRouters validates the MetaRouters not validated already and gives each host to the oldest valid one naming it.
func (t *translator) loadRouters(mrs []*mpv1.MetaRouter, validated map[types.NamespacedName][]string) {
	mrs = slices.Clone(mrs)
	slices.SortFunc(mrs, func(a, b *mpv1.MetaRouter) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	for _, mr := range mrs {
		key := types.NamespacedName{Namespace: mr.Namespace, Name: mr.Name}
		errs, ok := validated[key]
		if !ok {
			errs = ValidateRouter(mr)
		}
		res := &RouterResult{Generation: mr.Generation, Errors: errs}
		t.out.Routers[key] = res
		if len(res.Errors) > 0 {
			continue
		}
		if len(mr.Spec.Gateways) > 0 {
			res.unsupported("spec.gateways %v: MetaRouters on gateways are not supported; the routes apply to sidecars only", mr.Spec.Gateways)
		}
		for _, h := range mr.Spec.Hosts {
			if prev, taken := t.routers[h]; taken {
				if prev.key != key {
					res.Conflicts = append(res.Conflicts, fmt.Sprintf("host %s is routed by the older MetaRouter %s", h, prev.key))
				}
				continue
			}
			t.routers[h] = &router{mr: mr, key: key, res: res}
			res.Hosts = append(res.Hosts, h)
		}
	}
}

// loadVirtualServices gives each host to the oldest VirtualService for sidecars naming it
// (short names are Services of the VirtualService's namespace, as in Istio). Only native Dubbo
// and Thrift ports use them; a VirtualService of gateways only is Istio's alone.
func (t *translator) loadVirtualServices(vss []*VirtualService) {
	vss = slices.Clone(vss)
	slices.SortFunc(vss, func(a, b *VirtualService) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	for _, vs := range vss {
		if len(vs.Spec.Gateways) > 0 && !slices.Contains(vs.Spec.Gateways, "mesh") {
			continue
		}
		for _, h := range vs.Spec.Hosts {
			h = t.fqdn(h, vs.Namespace)
			if _, taken := t.virtualServices[h]; !taken {
				t.virtualServices[h] = vs
			}
		}
	}
}

func (t *translator) translateService(svc *service) {
	ports := slices.Clone(svc.se.Spec.Ports)
	slices.SortFunc(ports, func(a, b istio.ServicePort) int { return cmp.Compare(a.Number, b.Number) })
	rt := t.routers[svc.host]
	for _, p := range ports {
		kind, app, err := portname.Parse(p.Name)
		if err != nil || kind == portname.Other {
			continue // reported by loadServices
		}
		if p.Number == 0 || p.Number > 65535 {
			t.serviceProblem(svc.se, SeverityError, "port %q: number %d is out of range; port ignored", p.Name, p.Number)
			continue
		}
		switch kind {
		case portname.MetaProtocolKind:
			codec, ok := t.codecs[app]
			if !ok {
				t.serviceProblem(svc.se, SeverityError,
					"port %s: no ApplicationProtocol defines the codec of protocol %q; port ignored", p.Name, app)
				continue
			}
			t.out.Routes[RouteConfigName(svc.host, p.Number)] = t.routeConfig(svc, p, rt)
			err = t.metaProtocolFilters(svc, p, app, codec, rt)
		case portname.Dubbo, portname.Thrift:
			err = t.nativeFilter(svc, p, kind, rt)
		case portname.Redis:
			err = t.redisFilters(svc, p)
		case portname.Kafka, portname.ZooKeeper:
			err = t.statsFilters(svc, p, kind)
		}
		if err != nil {
			t.serviceProblem(svc.se, SeverityError, "host %s port %d: %v; no EnvoyFilter", svc.host, p.Number, err)
		}
	}
}

// outboundListeners returns the names of the outbound listeners of a port: <vip>_<port> for
// each address of the host — the ServiceEntry's own, else those istiod allocated (status).
// A host without one gets none: its port shares Istio's wildcard listener 0.0.0.0_<port> with
// every TCP service on that port, which is never patched. A listener already patched for
// another host is left out and reported: one TCP proxy can only be replaced by one filter.
func (t *translator) outboundListeners(svc *service, port uint32, rt *router) []string {
	var vips []string
	for _, a := range svc.se.Spec.Addresses {
		ip, ok := strings.CutSuffix(a, "/32")
		if !ok && strings.Contains(a, "/") {
			t.serviceProblem(svc.se, SeverityWarning,
				"address %s of host %s is a CIDR range; its listener is not patched", a, svc.host)
			continue
		}
		vips = append(vips, ip)
	}
	if len(svc.se.Spec.Addresses) == 0 && svc.se.Status != nil {
		// istiod allocates an IPv4 and an IPv6 address; the proxy's listener is named after the
		// one of its family, the other is an extra address of the same listener. Proxies here
		// are IPv4 unless the host has only an IPv6 address.
		var v6 string
		for _, a := range svc.se.Status.Addresses {
			if (a.Host != "" && a.Host != svc.host) || a.Value == "" || strings.Contains(a.Value, "/") {
				continue
			}
			if strings.Contains(a.Value, ":") {
				v6 = cmp.Or(v6, a.Value)
				continue
			}
			vips = append(vips, a.Value)
			break
		}
		if len(vips) == 0 && v6 != "" {
			vips = append(vips, v6)
		}
	}
	if len(vips) == 0 {
		msg := fmt.Sprintf("host %s port %d has no address (VIP), so no listener of its own: no outbound filter "+
			"(set spec.addresses or let Istio allocate one; the wildcard listener 0.0.0.0_%d is never patched)", svc.host, port, port)
		t.serviceProblem(svc.se, SeverityWarning, "%s", msg)
		if rt != nil {
			rt.res.warn("%s", msg)
		}
		return nil
	}
	var names []string
	for _, vip := range vips {
		name := fmt.Sprintf("%s_%d", vip, port)
		if other, taken := t.listeners[name]; taken && other != svc.host {
			t.serviceProblem(svc.se, SeverityError,
				"host %s: listener %s already carries the filter of host %s (give the hosts their own addresses); not patched for %s",
				svc.host, name, other, svc.host)
			continue
		}
		t.listeners[name] = svc.host
		names = append(names, name)
	}
	return names
}

func (t *translator) finish() {
	if t.metaProtocolOff > 0 {
		t.problem("Options", "", "", SeverityWarning, "ports named tcp-metaprotocol-… keep Istio's TCP handling: "+
			"%s has no MetaProtocol filter and no proxy is selected as a MetaProtocol proxy "+
			"(traffic.proxySelector in the chart, --metaprotocol-proxy-selector)", t.stockProfile)
	}
	for key, res := range t.out.Routers {
		for _, e := range res.Errors {
			t.problem("MetaRouter", key.Namespace, key.Name, SeverityError, "%s", e)
		}
		for _, c := range res.Conflicts {
			t.problem("MetaRouter", key.Namespace, key.Name, SeverityWarning, "%s", c)
		}
		for _, w := range slices.Concat(res.Warnings, res.Unsupported) {
			t.problem("MetaRouter", key.Namespace, key.Name, SeverityWarning, "%s", w)
		}
	}
	slices.SortFunc(t.out.Problems, func(a, b Problem) int {
		return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Namespace, b.Namespace),
			strings.Compare(a.Name, b.Name), strings.Compare(a.Message, b.Message))
	})
	t.out.Problems = slices.Compact(t.out.Problems)
	slices.SortFunc(t.out.Held, func(a, b types.NamespacedName) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Namespace, b.Namespace))
	})
	slices.SortFunc(t.out.EnvoyFilters, func(a, b *unstructured.Unstructured) int {
		return cmp.Or(strings.Compare(a.GetName(), b.GetName()), strings.Compare(a.GetNamespace(), b.GetNamespace()))
	})
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
