package traffictest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	redisv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/redis_proxy/v3"
	thriftv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/thrift_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meltemi-mesh/meltemi/traffic/internal/mpproto"
	"github.com/meltemi-mesh/meltemi/traffic/internal/wellknown"
)

// Rules the MetaProtocol proxy enforces that its message definitions do not say.
const (
	maxMutations    = 1000
	maxKeyValueLen  = 16384
	maxHashPolicies = 100
)

// CheckEnvoyFilter decodes every patch value of an EnvoyFilter the way a proxy would and
// validates it: the listener filter and its typed config with go-control-plane's validation,
// and MetaProtocol configs (TypedStructs) strictly — a field the proxy's messages do not
// declare is an error, not dropped as Envoy drops it — with the proxy's own rules
// (CheckMetaProtocol). It works on objects read back from the API server too.
func CheckEnvoyFilter(u *unstructured.Unstructured) error {
	filters, err := patchFilters(u)
	if err != nil {
		return err
	}
	for i, f := range filters {
		if err := CheckListenerFilter(f); err != nil {
			return fmt.Errorf("configPatches[%d]: %w", i, err)
		}
	}
	return nil
}

// ConfigSourceClusters lists the clusters through which the filters of an EnvoyFilter reach a
// config server (the MetaProtocol proxy's RDS). Envoy takes each only if the proxy's bootstrap
// defines it statically.
func ConfigSourceClusters(u *unstructured.Unstructured) ([]string, error) {
	filters, err := patchFilters(u)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, f := range filters {
		cfg, err := f.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("configPatches[%d]: %w", i, err)
		}
		ts, ok := cfg.(*udpatypev1.TypedStruct)
		if !ok {
			continue
		}
		mp, err := DecodeMetaProtocol(ts)
		if err != nil {
			return nil, fmt.Errorf("configPatches[%d]: %w", i, err)
		}
		if rds := mp.GetRds(); rds != nil {
			name, err := ConfigSourceCluster(rds.GetConfigSource())
			if err != nil {
				return nil, fmt.Errorf("configPatches[%d]: %w", i, err)
			}
			out = append(out, name)
		}
	}
	return out, nil
}

// patchFilters decodes the listener filter of every NETWORK_FILTER patch of an EnvoyFilter;
// CLUSTER patches are checked on the way (CheckCluster).
func patchFilters(u *unstructured.Unstructured) ([]*listenerv3.Filter, error) {
	patches, _, err := unstructured.NestedSlice(u.Object, "spec", "configPatches")
	if err != nil {
		return nil, fmt.Errorf("spec.configPatches: %w", err)
	}
	if len(patches) == 0 {
		return nil, errors.New("no configPatches")
	}
	var out []*listenerv3.Filter
	for i, p := range patches {
		m, _ := p.(map[string]any)
		applyTo, _, _ := unstructured.NestedString(m, "applyTo")
		op, _, _ := unstructured.NestedString(m, "patch", "operation")
		value, hasValue, _ := unstructured.NestedMap(m, "patch", "value")
		if applyTo == "CLUSTER" && op == "REMOVE" {
			if name, _, _ := unstructured.NestedString(m, "match", "cluster", "name"); name == "" {
				return nil, fmt.Errorf("configPatches[%d]: a cluster REMOVE without a cluster name removes every cluster", i)
			}
			continue
		}
		if !hasValue {
			return nil, fmt.Errorf("configPatches[%d]: no patch.value", i)
		}
		raw, err := json.Marshal(value)
		if err != nil {
			return nil, fmt.Errorf("configPatches[%d]: %w", i, err)
		}
		switch applyTo {
		case "CLUSTER":
			cl := &clusterv3.Cluster{}
			if err := protojson.Unmarshal(raw, cl); err != nil {
				return nil, fmt.Errorf("configPatches[%d]: decoding cluster: %w", i, err)
			}
			if err := CheckCluster(cl); err != nil {
				return nil, fmt.Errorf("configPatches[%d]: %w", i, err)
			}
			continue
		case "NETWORK_FILTER":
		default:
			return nil, fmt.Errorf("configPatches[%d]: applyTo %q is not one Meltemi writes", i, applyTo)
		}
		f := &listenerv3.Filter{}
		if err := protojson.Unmarshal(raw, f); err != nil {
			return nil, fmt.Errorf("configPatches[%d]: decoding listener filter: %w", i, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// CheckCluster validates a cluster as Envoy takes it: go-control-plane's validation, the typed
// configs inside (validation does not look into an Any), and the rules of Envoy's Redis
// cluster, which its messages do not say: lb_policy CLUSTER_PROVIDED and endpoints to discover
// the topology from; an EDS cluster needs its config source.
func CheckCluster(cl *clusterv3.Cluster) error {
	if err := cl.ValidateAll(); err != nil {
		return fmt.Errorf("cluster %s: %w", cl.GetName(), err)
	}
	for name, opts := range cl.GetTypedExtensionProtocolOptions() {
		m, err := opts.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("cluster %s: protocol options %s: %w", cl.GetName(), name, err)
		}
		if _, ok := m.(*redisv3.RedisProtocolOptions); name == wellknown.RedisProxyFilter && !ok {
			return fmt.Errorf("cluster %s: protocol options %s are a %T, want RedisProtocolOptions", cl.GetName(), name, m)
		}
		if v, ok := m.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				return fmt.Errorf("cluster %s: protocol options %s: %w", cl.GetName(), name, err)
			}
		}
	}
	switch {
	case cl.GetClusterType() != nil:
		ct := cl.GetClusterType()
		if ct.GetName() != wellknown.RedisClusterType {
			return fmt.Errorf("cluster %s: custom cluster type %s is not one Meltemi writes", cl.GetName(), ct.GetName())
		}
		if _, err := ct.GetTypedConfig().UnmarshalNew(); err != nil {
			return fmt.Errorf("cluster %s: Redis cluster config: %w", cl.GetName(), err)
		}
		if cl.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED {
			return fmt.Errorf("cluster %s: a Redis cluster needs lb_policy CLUSTER_PROVIDED, not %s", cl.GetName(), cl.GetLbPolicy())
		}
		if len(cl.GetLoadAssignment().GetEndpoints()) == 0 || len(cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()) == 0 {
			return fmt.Errorf("cluster %s: a Redis cluster needs discovery endpoints in load_assignment", cl.GetName())
		}
	case cl.GetType() == clusterv3.Cluster_EDS:
		if cl.GetEdsClusterConfig().GetEdsConfig() == nil {
			return fmt.Errorf("cluster %s: an EDS cluster needs eds_cluster_config.eds_config", cl.GetName())
		}
	}
	return nil
}

// CheckListenerFilter validates a network filter as a proxy would take it: Envoy's rules for
// the filter and its typed config and, for a MetaProtocol proxy's TypedStruct, a strict decode
// and CheckMetaProtocol. Filters of istiod's LDS go through it in the conformance tests.
func CheckListenerFilter(f *listenerv3.Filter) error {
	if err := f.ValidateAll(); err != nil {
		return fmt.Errorf("listener filter %s: %w", f.GetName(), err)
	}
	cfg, err := f.GetTypedConfig().UnmarshalNew()
	if err != nil {
		return fmt.Errorf("filter %s: typed config: %w", f.GetName(), err)
	}
	if v, ok := cfg.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("filter %s: %w", f.GetName(), err)
		}
	}
	switch c := cfg.(type) {
	case *dubbov3.DubboProxy:
		return checkNativeFilters(f.GetName(), len(c.GetDubboFilters()), func(i int) (string, *anypb.Any) {
			return c.GetDubboFilters()[i].GetName(), c.GetDubboFilters()[i].GetConfig()
		}, wellknown.DubboRouterFilter)
	case *thriftv3.ThriftProxy:
		return checkNativeFilters(f.GetName(), len(c.GetThriftFilters()), func(i int) (string, *anypb.Any) {
			return c.GetThriftFilters()[i].GetName(), c.GetThriftFilters()[i].GetTypedConfig()
		}, wellknown.ThriftRouterFilter)
	case *redisv3.RedisProxy:
		return checkRedisProxy(c)
	}
	ts, ok := cfg.(*udpatypev1.TypedStruct)
	if !ok {
		return nil
	}
	mp, err := DecodeMetaProtocol(ts)
	if err != nil {
		return fmt.Errorf("filter %s: %w", f.GetName(), err)
	}
	if err := CheckMetaProtocol(mp); err != nil {
		return fmt.Errorf("filter %s: %w", f.GetName(), err)
	}
	return nil
}

// checkRedisProxy applies the Redis proxy's rules its message does not say: every prefix once
// (compared case-insensitively when the routes are), and somewhere to send commands.
func checkRedisProxy(p *redisv3.RedisProxy) error {
	pr := p.GetPrefixRoutes()
	if pr == nil {
		return errors.New("redis_proxy: no prefix_routes: every command would fail")
	}
	if len(pr.GetRoutes()) == 0 && pr.GetCatchAllRoute() == nil {
		return errors.New("redis_proxy: neither routes nor a catch_all_route: every command would fail")
	}
	seen := map[string]bool{}
	for _, r := range pr.GetRoutes() {
		key := r.GetPrefix()
		if pr.GetCaseInsensitive() {
			key = strings.ToLower(key)
		}
		if seen[key] {
			return fmt.Errorf("redis_proxy: prefix %q appears twice; the proxy rejects the configuration", r.GetPrefix())
		}
		seen[key] = true
	}
	return nil
}

// checkNativeFilters validates the filter chain of Envoy's Dubbo or Thrift proxy: the router
// last, and each filter's config (validation does not look into an Any).
func checkNativeFilters(proxy string, n int, filter func(int) (string, *anypb.Any), router string) error {
	if n > 0 {
		if name, _ := filter(n - 1); name != router {
			return fmt.Errorf("filter %s: the filter chain must end with %s", proxy, router)
		}
	}
	for i := range n {
		name, cfg := filter(i)
		if cfg == nil {
			continue
		}
		m, err := cfg.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("filter %s: %s config: %w", proxy, name, err)
		}
		if v, ok := m.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				return fmt.Errorf("filter %s: %s config: %w", proxy, name, err)
			}
		}
		if _, ok := m.(*netrbacv3.RBAC); name == wellknown.DubboRBACFilter && !ok {
			return fmt.Errorf("filter %s: %s config is a %T, want a network RBAC config", proxy, name, m)
		}
	}
	return nil
}

// MetaProtocolProxy is the MetaProtocol proxy's config message, as DecodeMetaProtocol returns it.
type MetaProtocolProxy = mpproto.MetaProtocolProxy

// DecodeMetaProtocol decodes a TypedStruct's value into the MetaProtocol proxy's message,
// strictly: unknown fields, in the proxy's config or in any filter config it holds, are errors.
func DecodeMetaProtocol(ts *udpatypev1.TypedStruct) (*mpproto.MetaProtocolProxy, error) {
	if ts.GetTypeUrl() != wellknown.MetaProtocolTypeURL {
		return nil, fmt.Errorf("TypedStruct of type %s, want %s", ts.GetTypeUrl(), wellknown.MetaProtocolTypeURL)
	}
	js, err := protojson.Marshal(ts.GetValue())
	if err != nil {
		return nil, err
	}
	mp := &mpproto.MetaProtocolProxy{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, mp); err != nil {
		return nil, fmt.Errorf("decoding MetaProtocolProxy: %w", err)
	}
	return mp, nil
}

// CheckMetaProtocol applies the MetaProtocol proxy's rules: its validation annotations, what
// its code asserts (a route table is never empty), and what the supported versions need (the
// protocol in both its current and its deprecated fields).
func CheckMetaProtocol(mp *mpproto.MetaProtocolProxy) error {
	if mp.GetStatPrefix() == "" {
		return errors.New("MetaProtocolProxy: empty stat_prefix")
	}
	p := mp.GetProtocol()
	if p.GetName() == "" || p.GetCodec().GetName() == "" {
		return errors.New("MetaProtocolProxy: protocol name and codec name are required")
	}
	//lint:ignore SA1019 proxies before 1.3.1 read only the deprecated fields: both forms are written
	if mp.GetApplicationProtocol() != p.GetName() || mp.GetCodec().GetName() != p.GetCodec().GetName() {
		return errors.New("MetaProtocolProxy: application_protocol and codec (for proxies before 1.3.1) must be set and agree with protocol")
	}
	switch rs := mp.GetRouteSpecifier().(type) {
	case *mpproto.MetaProtocolProxy_Rds:
		if rs.Rds.GetRouteConfigName() == "" || rs.Rds.GetConfigSource() == nil {
			return errors.New("MetaProtocolProxy: rds needs route_config_name and config_source")
		}
		if err := rs.Rds.GetConfigSource().ValidateAll(); err != nil {
			return fmt.Errorf("MetaProtocolProxy rds: %w", err)
		}
		if _, err := ConfigSourceCluster(rs.Rds.GetConfigSource()); err != nil {
			return fmt.Errorf("MetaProtocolProxy rds: %w", err)
		}
	case *mpproto.MetaProtocolProxy_RouteConfig:
		if err := checkMetaRoutes(rs.RouteConfig); err != nil {
			return fmt.Errorf("MetaProtocolProxy route_config: %w", err)
		}
	default:
		return errors.New("MetaProtocolProxy: neither rds nor route_config")
	}
	for _, al := range mp.GetAccessLog() {
		if err := al.ValidateAll(); err != nil {
			return fmt.Errorf("MetaProtocolProxy access_log: %w", err)
		}
		cfg, err := al.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return fmt.Errorf("MetaProtocolProxy access_log %s: %w", al.GetName(), err)
		}
		if v, ok := cfg.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				return fmt.Errorf("MetaProtocolProxy access_log %s: %w", al.GetName(), err)
			}
		}
	}
	if tr := mp.GetTracing(); tr != nil {
		for _, p := range []*typev3.Percent{tr.GetClientSampling(), tr.GetRandomSampling(), tr.GetOverallSampling()} {
			if err := p.ValidateAll(); err != nil {
				return fmt.Errorf("MetaProtocolProxy tracing: %w", err)
			}
		}
	}
	filters := mp.GetMetaProtocolFilters()
	if len(filters) == 0 || filters[len(filters)-1].GetName() != wellknown.MetaRouterFilter {
		return errors.New("MetaProtocolProxy: the filter chain must end with the router")
	}
	for _, f := range filters {
		if f.GetName() == "" {
			return errors.New("MetaProtocolProxy: a filter without a name")
		}
		if f.GetConfig() == nil {
			continue
		}
		cfg, err := f.GetConfig().UnmarshalNew()
		if err != nil {
			return fmt.Errorf("MetaProtocol filter %s: %w", f.GetName(), err)
		}
		if err := checkFilterConfig(f.GetName(), cfg); err != nil {
			return fmt.Errorf("MetaProtocol filter %s: %w", f.GetName(), err)
		}
	}
	return nil
}

// ConfigSourceCluster is the cluster a gRPC config source reaches its server through. Envoy
// accepts it for a filter's RDS only when the bootstrap defines it statically.
func ConfigSourceCluster(cs *corev3.ConfigSource) (string, error) {
	api := cs.GetApiConfigSource()
	if api == nil || api.GetApiType() != corev3.ApiConfigSource_GRPC || len(api.GetGrpcServices()) != 1 {
		return "", errors.New("config source must be one gRPC service")
	}
	name := api.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
	if name == "" {
		return "", errors.New("config source must name an Envoy cluster (envoy_grpc)")
	}
	return name, nil
}

func checkMetaRoutes(rc *mpproto.RouteConfiguration) error {
	if len(rc.GetRoutes()) == 0 {
		return fmt.Errorf("route configuration %s has no routes (the proxy asserts on an empty table)", rc.GetName())
	}
	for i, r := range rc.GetRoutes() {
		if err := checkMetaRoute(r); err != nil {
			return fmt.Errorf("route %d (%s): %w", i, r.GetName(), err)
		}
	}
	return nil
}

func checkMetaRoute(r *mpproto.Route) error {
	if err := checkMetaMatch(r.GetMatch()); err != nil {
		return err
	}
	a := r.GetRoute()
	if a == nil {
		return errors.New("no route action")
	}
	switch cs := a.GetClusterSpecifier().(type) {
	case *mpproto.RouteAction_Cluster:
		if cs.Cluster == "" {
			return errors.New("empty cluster")
		}
	case *mpproto.RouteAction_WeightedClusters:
		if err := cs.WeightedClusters.ValidateAll(); err != nil {
			return err
		}
	default:
		return errors.New("route action without a cluster")
	}
	if len(a.GetHashPolicy()) > maxHashPolicies {
		return fmt.Errorf("%d hash policies, more than %d", len(a.GetHashPolicy()), maxHashPolicies)
	}
	for _, m := range a.GetRequestMirrorPolicies() {
		if m.GetCluster() == "" {
			return errors.New("mirror policy without a cluster")
		}
		if rf := m.GetRuntimeFraction(); rf != nil {
			if err := rf.ValidateAll(); err != nil {
				return err
			}
		}
	}
	for _, kvs := range [][]*mpproto.KeyValue{r.GetRequestMutation(), r.GetResponseMutation()} {
		if len(kvs) > maxMutations {
			return fmt.Errorf("%d mutations, more than %d", len(kvs), maxMutations)
		}
		for _, kv := range kvs {
			if kv.GetKey() == "" || len(kv.GetKey()) > maxKeyValueLen || len(kv.GetValue()) > maxKeyValueLen {
				return fmt.Errorf("mutation %q: key of 1 to %d bytes and a value of at most %d", kv.GetKey(), maxKeyValueLen, maxKeyValueLen)
			}
		}
	}
	return nil
}

func checkMetaMatch(m *mpproto.RouteMatch) error {
	for _, hm := range m.GetMetadata() {
		if err := hm.ValidateAll(); err != nil {
			return err
		}
	}
	return nil
}

func checkFilterConfig(name string, cfg proto.Message) error {
	switch c := cfg.(type) {
	case *mpproto.LocalRateLimit:
		if name != wellknown.MetaLocalRateLimitFilter {
			return fmt.Errorf("a LocalRateLimit config in filter %s", name)
		}
		if c.GetStatPrefix() == "" || (c.GetTokenBucket() == nil && len(c.GetConditions()) == 0) {
			return errors.New("local rate limit needs stat_prefix and a token bucket or conditions")
		}
		if c.GetTokenBucket() != nil {
			if err := checkTokenBucket(c.GetTokenBucket()); err != nil {
				return err
			}
		}
		for _, cond := range c.GetConditions() {
			if cond.GetMatch() == nil || cond.GetTokenBucket() == nil {
				return errors.New("a condition needs match and token_bucket")
			}
			if err := checkMetaMatch(cond.GetMatch()); err != nil {
				return err
			}
			if err := checkTokenBucket(cond.GetTokenBucket()); err != nil {
				return err
			}
		}
	case *mpproto.RateLimit:
		if name != wellknown.MetaGlobalRateLimitFilter {
			return fmt.Errorf("a RateLimit config in filter %s", name)
		}
		if c.GetDomain() == "" || len(c.GetDescriptors()) == 0 || c.GetRateLimitService() == nil {
			return errors.New("rate limit needs domain, rate_limit_service and descriptors")
		}
		if err := c.GetRateLimitService().ValidateAll(); err != nil {
			return err
		}
		for _, d := range c.GetDescriptors() {
			if d.GetProperty() == "" || d.GetDescriptorKey() == "" {
				return errors.New("a descriptor needs property and descriptor_key")
			}
		}
		return checkMetaMatch(c.GetMatch())
	case *mpproto.IstioStats:
		if name != wellknown.MetaIstioStatsFilter {
			return fmt.Errorf("an IstioStats config in filter %s", name)
		}
	case *mpproto.MetadataExchange, *mpproto.Router:
	default:
		return fmt.Errorf("unexpected config %T", cfg)
	}
	return nil
}

func checkTokenBucket(b *typev3.TokenBucket) error {
	if err := b.ValidateAll(); err != nil {
		return err
	}
	if d := b.GetFillInterval().AsDuration(); d < wellknown.MinFillInterval {
		return fmt.Errorf("fill_interval %s is shorter than %s: the proxy rejects the listener", d, wellknown.MinFillInterval)
	}
	return nil
}

// CheckRouteConfig validates a route configuration served over RDS (Envoy's type, which the
// MetaProtocol proxy subscribes to) and what the proxy's conversion of it into its own route
// table asserts or drops: exactly one virtual host, a non-empty route list, every route a
// route action (not a redirect or a direct response), hash policies by header only.
func CheckRouteConfig(rc *routev3.RouteConfiguration) error {
	if err := rc.ValidateAll(); err != nil {
		return err
	}
	if len(rc.GetVirtualHosts()) != 1 || len(rc.GetVirtualHosts()[0].GetRoutes()) == 0 {
		return fmt.Errorf("route configuration %s needs exactly one virtual host with routes", rc.GetName())
	}
	for i, r := range rc.GetVirtualHosts()[0].GetRoutes() {
		a := r.GetRoute()
		if a == nil {
			return fmt.Errorf("route configuration %s: route %d (%s) has no route action", rc.GetName(), i, r.GetName())
		}
		for _, h := range a.GetHashPolicy() {
			if h.GetHeader() == nil {
				return fmt.Errorf("route configuration %s: route %d (%s): the proxy hashes by header only", rc.GetName(), i, r.GetName())
			}
		}
	}
	return nil
}
