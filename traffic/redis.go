package traffic

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	redisclusterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/redis/v3"
	redisv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/redis_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meltemi-mesh/meltemi/api/istio"
	"github.com/meltemi-mesh/meltemi/api/portname"
	redisv1 "github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
	"github.com/meltemi-mesh/meltemi/traffic/internal/wellknown"
)

// Names and defaults of the Redis configuration, as Aeraki writes it.
const (
	RedisProxyFilterName = wellknown.RedisProxyFilter
	redisClusterType     = wellknown.RedisClusterType
	// Operation timeouts: outbound as Aeraki's default; inbound long, the client side times out.
	defaultRedisOpTimeout        = time.Minute
	defaultRedisInboundOpTimeout = time.Hour
	defaultRedisConnectTimeout   = 10 * time.Second
	// Keys of a Secret Aeraki reads when the reference names none.
	defaultPasswordKey  = "password"
	fallbackPasswordKey = "token"
	defaultUsernameKey  = "username"
)

// loadRedis gives each host to the oldest RedisService and the oldest RedisDestination naming it
// (short names are Services of the object's namespace); the younger ones are warned about.
func (t *translator) loadRedis(rss []*redisv1.RedisService, rds []*redisv1.RedisDestination, secrets map[types.NamespacedName]map[string][]byte) {
	t.secrets = secrets
	rss = slices.Clone(rss)
	slices.SortFunc(rss, func(a, b *redisv1.RedisService) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	for _, rs := range rss {
		if len(rs.Spec.Host) == 0 {
			t.problem("RedisService", rs.Namespace, rs.Name, SeverityError, "spec.host is empty")
		}
		for _, h := range rs.Spec.Host {
			h = t.fqdn(h, rs.Namespace)
			if prev, taken := t.redisServices[h]; taken {
				t.problem("RedisService", rs.Namespace, rs.Name, SeverityWarning,
					"host %s is configured by the older RedisService %s/%s, which is used", h, prev.Namespace, prev.Name)
				continue
			}
			t.redisServices[h] = rs
		}
	}
	rds = slices.Clone(rds)
	slices.SortFunc(rds, func(a, b *redisv1.RedisDestination) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	for _, rd := range rds {
		h := t.fqdn(rd.Spec.Host, rd.Namespace)
		if h == "" {
			t.problem("RedisDestination", rd.Namespace, rd.Name, SeverityError, "spec.host is empty")
			continue
		}
		if prev, taken := t.redisDests[h]; taken {
			t.problem("RedisDestination", rd.Namespace, rd.Name, SeverityWarning,
				"host %s is configured by the older RedisDestination %s/%s, which is used", h, prev.Namespace, prev.Name)
			continue
		}
		t.redisDests[h] = rd
	}
	for _, h := range sortedKeys(t.redisServices) {
		if !t.hasRedisPort(h) {
			rs := t.redisServices[h]
			t.problem("RedisService", rs.Namespace, rs.Name, SeverityWarning, "host %s: no ServiceEntry or Service with a tcp-redis port defines it", h)
		}
	}
	for _, h := range sortedKeys(t.redisDests) {
		if !t.hasRedisPort(h) {
			rd := t.redisDests[h]
			t.problem("RedisDestination", rd.Namespace, rd.Name, SeverityWarning, "host %s: no ServiceEntry or Service with a tcp-redis port defines it", h)
		}
	}
}

func (t *translator) hasRedisPort(host string) bool {
	svc := t.services[host]
	if svc == nil {
		return false
	}
	for _, p := range svc.se.Spec.Ports {
		if kind, _, _ := portname.Parse(p.Name); kind == portname.Redis {
			return true
		}
	}
	return false
}

// redisFilters adds the EnvoyFilters of a tcp-redis-… port: Envoy's redis_proxy replacing the
// TCP proxy on the outbound listener (routes, mirrors, faults, settings and downstream auth
// from the host's RedisService; a catch-all route to the host without one), and with a
// RedisDestination the host's cluster replaced by one with its connection settings, upstream
// auth and, in CLUSTER mode, Redis cluster discovery. Workloads of the service (known by
// label) get a redis_proxy on their inbound port. When the outbound side cannot be built (a
// password that cannot be read, a bad discovery endpoint) its EnvoyFilter is held: the one in
// the cluster stays as it is, and without one the port stays plain TCP.
func (t *translator) redisFilters(svc *service, port istio.ServicePort) error {
	patches, ok, err := t.redisOutboundPatches(svc, port.Number)
	if err != nil {
		return err
	}
	if !ok {
		t.hold(svc.host, port.Number, "outbound")
	} else if err := t.addEnvoyFilter(svc.host, port.Number, "outbound", nil, patches); err != nil {
		return err
	}

	sel := inboundSelector(svc.se)
	if len(sel) == 0 {
		return nil
	}
	target := targetPort(port)
	inboundCluster := inboundClusterName(target)
	in := &redisv3.RedisProxy{
		StatPrefix:   inboundStatPrefix(target, svc.host),
		Settings:     &redisv3.RedisProxy_ConnPoolSettings{OpTimeout: durationpb.New(defaultRedisInboundOpTimeout)},
		PrefixRoutes: &redisv3.RedisProxy_PrefixRoutes{CatchAllRoute: &redisv3.RedisProxy_PrefixRoutes_Route{Cluster: inboundCluster}},
	}
	return t.addNativeFilter(svc, port.Number, "inbound", sel, proxyConfig{RedisProxyFilterName, in}, func(value json.RawMessage) []configPatch {
		return []configPatch{replaceTCPProxy("SIDECAR_INBOUND", virtualInbound, target, value)}
	})
}

// redisOutboundPatches are the outbound patches of a Redis port; false when the host's Redis
// objects cannot be applied (reported).
func (t *translator) redisOutboundPatches(svc *service, port uint32) ([]configPatch, bool, error) {
	rs, rd := t.redisServices[svc.host], t.redisDests[svc.host]
	out, ok := t.redisOutbound(svc, port, rs)
	if !ok {
		return nil, false, nil
	}
	if err := out.ValidateAll(); err != nil {
		return nil, false, fmt.Errorf("generated outbound redis_proxy config is invalid: %w", err)
	}
	value, err := filterValue(RedisProxyFilterName, out)
	if err != nil {
		return nil, false, err
	}
	patches := t.outboundPatches(svc, port, nil, replaceTCPProxy, value)
	// Without a listener of its own no Redis proxy runs: Istio's cluster stays, as TCP needs it.
	if rd != nil && len(patches) > 0 {
		cl, ok := t.redisCluster(svc, port, rd)
		if !ok {
			return nil, false, nil
		}
		if err := cl.ValidateAll(); err != nil {
			return nil, false, fmt.Errorf("generated Redis cluster is invalid: %w", err)
		}
		patches = append(patches, replaceCluster(cl.Name, cl)...)
	}
	if rs != nil && rs.Spec.Settings != nil && cmp.Or(rs.Spec.Settings.ReadPolicy, redisv1.ReadPolicyMaster) != redisv1.ReadPolicyMaster &&
		(rd == nil || redisMode(rd.Spec.TrafficPolicy) != redisv1.ModeCluster) {
		t.problem("RedisService", rs.Namespace, rs.Name, SeverityWarning,
			"host %s: readPolicy %s only applies to a Redis cluster (RedisDestination mode CLUSTER)", svc.host, rs.Spec.Settings.ReadPolicy)
	}
	if len(patches) > 0 {
		t.out.RedisProxies[RouteConfigName(svc.host, port)] = out
	}
	return patches, true, nil
}

func redisMode(p *redisv1.TrafficPolicy) string {
	if p == nil || p.ConnectionPool == nil || p.ConnectionPool.Redis == nil {
		return redisv1.ModeProxy
	}
	return cmp.Or(p.ConnectionPool.Redis.Mode, redisv1.ModeProxy)
}

// redisOutbound is the client-side redis_proxy of a host's port; false when its RedisService
// cannot be applied (reported).
func (t *translator) redisOutbound(svc *service, port uint32, rs *redisv1.RedisService) (*redisv3.RedisProxy, bool) {
	own := ClusterName(port, "", svc.host)
	proxy := &redisv3.RedisProxy{
		StatPrefix:   own,
		Settings:     &redisv3.RedisProxy_ConnPoolSettings{OpTimeout: durationpb.New(defaultRedisOpTimeout)},
		PrefixRoutes: &redisv3.RedisProxy_PrefixRoutes{},
	}
	if rs == nil {
		proxy.PrefixRoutes.CatchAllRoute = &redisv3.RedisProxy_PrefixRoutes_Route{Cluster: own}
		return proxy, true
	}
	problem := func(sev Severity, format string, args ...any) {
		t.problem("RedisService", rs.Namespace, rs.Name, sev, "host %s: %s", svc.host, fmt.Sprintf(format, args...))
	}
	if s := rs.Spec.Settings; s != nil {
		cp := proxy.Settings
		if s.OpTimeout != nil {
			if s.OpTimeout.Duration <= 0 {
				problem(SeverityError, "settings.opTimeout must be positive; the default %s is used", defaultRedisOpTimeout)
			} else {
				cp.OpTimeout = durationpb.New(s.OpTimeout.Duration)
			}
		}
		cp.EnableCommandStats = s.EnableCommandStats
		cp.EnableHashtagging = s.EnableHashtagging
		cp.EnableRedirection = s.EnableRedirection
		cp.MaxBufferSizeBeforeFlush = s.MaxBufferSizeBeforeFlush
		if s.BufferFlushTimeout != nil {
			cp.BufferFlushTimeout = durationpb.New(s.BufferFlushTimeout.Duration)
		}
		if s.MaxUpstreamUnknownConnections != nil {
			cp.MaxUpstreamUnknownConnections = wrapperspb.UInt32(*s.MaxUpstreamUnknownConnections)
		}
		policy, known := readPolicies[cmp.Or(s.ReadPolicy, redisv1.ReadPolicyMaster)]
		if !known {
			problem(SeverityError, "settings.readPolicy %q is not one of MASTER, PREFER_MASTER, REPLICA, PREFER_REPLICA, ANY; MASTER is used", s.ReadPolicy)
		}
		cp.ReadPolicy = policy
		proxy.PrefixRoutes.CaseInsensitive = s.CaseInsensitive
		if s.Auth != nil {
			user, password, ok := t.credentials("RedisService", rs.Namespace, rs.Name, svc.host, "settings.auth", s.Auth)
			if !ok {
				return nil, false
			}
			proxy.DownstreamAuthPasswords = []*corev3.DataSource{inlineString(password)}
			if user != "" {
				proxy.DownstreamAuthUsername = inlineString(user)
			}
		}
	}
	for i, f := range rs.Spec.Faults {
		fault, err := redisFault(f)
		if err != nil {
			problem(SeverityError, "faults[%d]: %v; fault left out", i, err)
			continue
		}
		proxy.Faults = append(proxy.Faults, fault)
	}
	if len(rs.Spec.Redis) == 0 {
		proxy.PrefixRoutes.CatchAllRoute = &redisv3.RedisProxy_PrefixRoutes_Route{Cluster: own}
		return proxy, true
	}
	seen := map[string]int{} // prefix as the proxy compares it -> route index
	for i, r := range rs.Spec.Redis {
		route := &redisv3.RedisProxy_PrefixRoutes_Route{Cluster: t.redisDestination(rs, svc, port, r.Route, fmt.Sprintf("redis[%d].route", i))}
		for j, m := range r.Mirror {
			mirror := &redisv3.RedisProxy_PrefixRoutes_Route_RequestMirrorPolicy{
				Cluster:             t.redisDestination(rs, svc, port, m.Route, fmt.Sprintf("redis[%d].mirror[%d].route", i, j)),
				ExcludeReadCommands: m.ExcludeReadCommands,
			}
			if m.Percentage != nil {
				fp, err := fractionalPercent(m.Percentage.Value)
				if err != nil {
					problem(SeverityError, "redis[%d].mirror[%d].percentage: %v; mirror left out", i, j, err)
					continue
				}
				mirror.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: fp}
			}
			route.RequestMirrorPolicy = append(route.RequestMirrorPolicy, mirror)
		}
		if r.Match == nil || r.Match.Key == nil {
			if proxy.PrefixRoutes.CatchAllRoute != nil {
				problem(SeverityError, "redis[%d] has no key match, and an earlier route is already the catch-all; route left out", i)
				continue
			}
			proxy.PrefixRoutes.CatchAllRoute = route
			continue
		}
		key := r.Match.Key.Prefix
		if rs.Spec.Settings != nil && rs.Spec.Settings.CaseInsensitive {
			key = strings.ToLower(key)
		}
		if prev, dup := seen[key]; dup {
			// The proxy rejects the whole configuration for a repeated prefix.
			problem(SeverityError, "redis[%d]: prefix %q is already routed by redis[%d]; route left out", i, r.Match.Key.Prefix, prev)
			continue
		}
		for other, j := range seen {
			if strings.HasPrefix(key, other) || strings.HasPrefix(other, key) {
				short, long := min(i, j), max(i, j)
				problem(SeverityWarning, "the prefixes of redis[%d] and redis[%d] overlap: keys matching both take the longer prefix's route", short, long)
			}
		}
		seen[key] = i
		route.Prefix = r.Match.Key.Prefix
		route.RemovePrefix = r.Match.Key.RemovePrefix
		proxy.PrefixRoutes.Routes = append(proxy.PrefixRoutes.Routes, route)
	}
	if proxy.PrefixRoutes.CatchAllRoute == nil {
		problem(SeverityWarning, "no route without a key match: commands whose keys match no prefix fail")
	}
	return proxy, true
}

var readPolicies = map[string]redisv3.RedisProxy_ConnPoolSettings_ReadPolicy{
	redisv1.ReadPolicyMaster:        redisv3.RedisProxy_ConnPoolSettings_MASTER,
	redisv1.ReadPolicyPreferMaster:  redisv3.RedisProxy_ConnPoolSettings_PREFER_MASTER,
	redisv1.ReadPolicyReplica:       redisv3.RedisProxy_ConnPoolSettings_REPLICA,
	redisv1.ReadPolicyPreferReplica: redisv3.RedisProxy_ConnPoolSettings_PREFER_REPLICA,
	redisv1.ReadPolicyAny:           redisv3.RedisProxy_ConnPoolSettings_ANY,
}

// redisDestination is the cluster of a route's destination: the host's tcp-redis port the
// route names, else the one with the client's port number, else its first.
func (t *translator) redisDestination(rs *redisv1.RedisService, from *service, fromPort uint32, d redisv1.Destination, field string) string {
	host := t.fqdn(d.Host, rs.Namespace)
	if d.Port != 0 {
		return ClusterName(d.Port, "", host)
	}
	dest := t.services[host]
	if dest == nil {
		t.problem("RedisService", rs.Namespace, rs.Name, SeverityWarning, "host %s: %s: no ServiceEntry or Service defines host %s; port %d assumed",
			from.host, field, host, fromPort)
		return ClusterName(fromPort, "", host)
	}
	var first uint32
	for _, p := range dest.se.Spec.Ports {
		if kind, _, _ := portname.Parse(p.Name); kind != portname.Redis {
			continue
		}
		if p.Number == fromPort {
			return ClusterName(fromPort, "", host)
		}
		if first == 0 {
			first = p.Number
		}
	}
	if first == 0 {
		t.problem("RedisService", rs.Namespace, rs.Name, SeverityWarning, "host %s: %s: host %s has no tcp-redis port; port %d assumed",
			from.host, field, host, fromPort)
		return ClusterName(fromPort, "", host)
	}
	return ClusterName(first, "", host)
}

func redisFault(f redisv1.Fault) (*redisv3.RedisProxy_RedisFault, error) {
	out := &redisv3.RedisProxy_RedisFault{Commands: f.Commands}
	switch cmp.Or(f.Type, redisv1.FaultDelay) {
	case redisv1.FaultDelay:
		out.FaultType = redisv3.RedisProxy_RedisFault_DELAY
		if f.Delay == nil || f.Delay.Duration <= 0 {
			return nil, fmt.Errorf("a DELAY fault needs a positive delay")
		}
	case redisv1.FaultError:
		out.FaultType = redisv3.RedisProxy_RedisFault_ERROR
	default:
		return nil, fmt.Errorf("type %q is neither DELAY nor ERROR", f.Type)
	}
	if f.Delay != nil {
		out.Delay = durationpb.New(f.Delay.Duration)
	}
	value := 0.0
	if f.Percentage != nil {
		value = f.Percentage.Value
	}
	fp, err := fractionalPercent(value)
	if err != nil {
		return nil, fmt.Errorf("percentage: %w", err)
	}
	out.FaultEnabled = &corev3.RuntimeFractionalPercent{DefaultValue: fp}
	return out, nil
}

// fractionalPercent is a percentage in millionths, as Aeraki writes it.
func fractionalPercent(v float64) (*typev3.FractionalPercent, error) {
	if math.IsNaN(v) || v < 0 || v > 100 {
		return nil, fmt.Errorf("%v is not between 0 and 100", v)
	}
	return &typev3.FractionalPercent{Numerator: uint32(math.Round(v * 10000)), Denominator: typev3.FractionalPercent_MILLION}, nil
}

// heldNote ends the message of a problem that holds a Redis port's outbound EnvoyFilter.
const heldNote = "its outbound EnvoyFilter is kept as it is (none yet: the port stays plain TCP)"

// credentials reads a password (and user) written inline or from a Secret of the object's
// namespace. Problems name the Secret and key, never their content.
func (t *translator) credentials(kind, namespace, name, host, field string, a *redisv1.Auth) (user, password string, ok bool) {
	fail := func(format string, args ...any) (string, string, bool) {
		t.problem(kind, namespace, name, SeverityError, "host %s: %s: %s; %s", host, field, fmt.Sprintf(format, args...), heldNote)
		return "", "", false
	}
	switch {
	case a.Plain != nil && a.Secret != nil:
		return fail("set either plain or secret, not both")
	case a.Plain != nil:
		if a.Plain.Password == "" {
			return fail("plain.password is empty")
		}
		return a.Plain.Username, a.Plain.Password, true
	case a.Secret != nil:
		ref := types.NamespacedName{Namespace: namespace, Name: a.Secret.Name}
		data, found := t.secrets[ref]
		if !found {
			return fail("Secret %s does not exist, or Meltemi may not read Secrets (--redis-secrets, chart value traffic.redisSecrets)", ref)
		}
		key, keys := a.Secret.PasswordField, fmt.Sprintf("key %q", a.Secret.PasswordField)
		if key == "" {
			key, keys = defaultPasswordKey, fmt.Sprintf("key %q (nor %q)", defaultPasswordKey, fallbackPasswordKey)
			if _, has := data[key]; !has {
				key = fallbackPasswordKey
			}
		}
		// Secrets written by hand often end in a newline (echo | base64), as Aeraki's example does.
		p := strings.TrimSpace(string(data[key]))
		if p == "" {
			return fail("Secret %s has no %s with a password", ref, keys)
		}
		userKey := cmp.Or(a.Secret.UsernameField, defaultUsernameKey)
		u, has := data[userKey]
		if !has && a.Secret.UsernameField != "" {
			return fail("Secret %s has no key %q", ref, userKey)
		}
		return strings.TrimSpace(string(u)), p, true
	}
	return fail("neither plain nor secret is set")
}

func inlineString(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
}

// redisCluster is the cluster replacing Istio's outbound cluster of a host with a
// RedisDestination, as Aeraki builds it: EDS from istiod (PROXY) or Envoy's Redis cluster
// discovering the topology from the discovery endpoints (CLUSTER), with the TCP settings and
// the upstream password. It keeps Istio's name and service metadata, so routes and telemetry
// still find it; like Aeraki's it has no mTLS transport socket (the Redis proxy cannot use
// Istio's).
func (t *translator) redisCluster(svc *service, port uint32, rd *redisv1.RedisDestination) (*clusterv3.Cluster, bool) {
	name := ClusterName(port, "", svc.host)
	fail := func(format string, args ...any) (*clusterv3.Cluster, bool) {
		t.problem("RedisDestination", rd.Namespace, rd.Name, SeverityError, "host %s: %s; %s", svc.host, fmt.Sprintf(format, args...), heldNote)
		return nil, false
	}
	thresholds := &clusterv3.CircuitBreakers_Thresholds{
		MaxConnections: wrapperspb.UInt32(math.MaxUint32), MaxPendingRequests: wrapperspb.UInt32(math.MaxUint32),
		MaxRequests: wrapperspb.UInt32(math.MaxUint32), MaxRetries: wrapperspb.UInt32(math.MaxUint32),
	}
	cl := &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(defaultRedisConnectTimeout),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: name, EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}},
		LbPolicy:        clusterv3.Cluster_MAGLEV,
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{thresholds}},
		Metadata:        istioServiceMetadata(svc, port),
	}
	var pool redisv1.ConnectionPoolSettings
	if p := rd.Spec.TrafficPolicy; p != nil && p.ConnectionPool != nil {
		pool = *p.ConnectionPool
	}
	if tcp := pool.TCP; tcp != nil {
		if tcp.ConnectTimeout != nil {
			if tcp.ConnectTimeout.Duration <= 0 {
				return fail("trafficPolicy.connectionPool.tcp.connectTimeout must be positive")
			}
			cl.ConnectTimeout = durationpb.New(tcp.ConnectTimeout.Duration)
		}
		if tcp.MaxConnections > 0 {
			thresholds.MaxConnections = wrapperspb.UInt32(uint32(tcp.MaxConnections))
		}
		if k := tcp.TCPKeepalive; k != nil {
			ka := &corev3.TcpKeepalive{}
			if k.Probes > 0 {
				ka.KeepaliveProbes = wrapperspb.UInt32(k.Probes)
			}
			if k.Time != nil {
				ka.KeepaliveTime = wrapperspb.UInt32(seconds(k.Time))
			}
			if k.Interval != nil {
				ka.KeepaliveInterval = wrapperspb.UInt32(seconds(k.Interval))
			}
			cl.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: ka}
		}
	}
	if r := pool.Redis; r != nil {
		switch cmp.Or(r.Mode, redisv1.ModeProxy) {
		case redisv1.ModeProxy:
			if len(r.DiscoveryEndpoints) > 0 {
				t.problem("RedisDestination", rd.Namespace, rd.Name, SeverityWarning,
					"host %s: discoveryEndpoints only apply in mode CLUSTER; ignored", svc.host)
			}
		case redisv1.ModeCluster:
			cfg, err := anypb.New(&redisclusterv3.RedisClusterConfig{})
			if err != nil {
				return fail("encoding the Redis cluster config: %v", err)
			}
			cl.ClusterDiscoveryType = &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{
				Name: redisClusterType, TypedConfig: cfg,
			}}
			cl.EdsClusterConfig = nil
			cl.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
			endpoints := r.DiscoveryEndpoints
			if len(endpoints) == 0 {
				endpoints = []string{net.JoinHostPort(svc.host, strconv.FormatUint(uint64(port), 10))}
			}
			var lbs []*endpointv3.LbEndpoint
			for _, ep := range endpoints {
				addr, err := hostPort(ep, port)
				if err != nil {
					return fail("discoveryEndpoints: %v", err)
				}
				lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}}})
			}
			cl.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
		default:
			return fail("trafficPolicy.connectionPool.redis.mode %q is neither PROXY nor CLUSTER", r.Mode)
		}
		if r.Auth != nil {
			user, password, ok := t.credentials("RedisDestination", rd.Namespace, rd.Name, svc.host, "trafficPolicy.connectionPool.redis.auth", r.Auth)
			if !ok {
				return nil, false
			}
			opts := &redisv3.RedisProtocolOptions{AuthPassword: inlineString(password)}
			if user != "" {
				opts.AuthUsername = inlineString(user)
			}
			a, err := anypb.New(opts)
			if err != nil {
				return fail("encoding the Redis protocol options: %v", err)
			}
			cl.TypedExtensionProtocolOptions = map[string]*anypb.Any{RedisProxyFilterName: a}
		}
	}
	return cl, true
}

func seconds(d *metav1.Duration) uint32 {
	return uint32(min(max(d.Duration/time.Second, 1), math.MaxUint32))
}

// hostPort parses host[:port] (port defaults to def) into an Envoy socket address.
func hostPort(s string, def uint32) (*corev3.Address, error) {
	host, portStr, err := net.SplitHostPort(s)
	port := def
	if err != nil {
		// No port: the whole string is the host.
		if strings.Contains(s, ":") && !strings.HasPrefix(s, "[") && strings.Count(s, ":") == 1 {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		host = strings.Trim(s, "[]")
	} else {
		p, perr := strconv.ParseUint(portStr, 10, 16)
		if perr != nil || p == 0 {
			return nil, fmt.Errorf("%q: port %q is not a port number", s, portStr)
		}
		port = uint32(p)
	}
	if host == "" {
		return nil, fmt.Errorf("%q has no host", s)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}, nil
}

// istioServiceMetadata is the "istio" metadata istiod puts on a service's clusters, which
// Istio's telemetry reads for the destination service.
func istioServiceMetadata(svc *service, port uint32) *corev3.Metadata {
	name := svc.host
	if svc.se.Kind == "Service" {
		name = svc.se.Name
	}
	md, err := structpb.NewStruct(map[string]any{
		"default_original_port": float64(port),
		"services":              []any{map[string]any{"host": svc.host, "name": name, "namespace": svc.se.Namespace}},
	})
	if err != nil {
		panic(fmt.Sprintf("istio metadata: %v", err)) // strings and a number: cannot fail
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": md}}
}

// replaceCluster are the patches replacing a cluster of istiod's with cl: remove it, add cl.
func replaceCluster(name string, cl *clusterv3.Cluster) []configPatch {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(cl)
	if err != nil {
		panic(fmt.Sprintf("encoding cluster %s: %v", name, err)) // a validated message: cannot fail
	}
	match := patchMatch{Context: "SIDECAR_OUTBOUND", Cluster: &clusterMatch{Name: name}}
	return []configPatch{
		{ApplyTo: "CLUSTER", Match: match, Patch: patchOp{Operation: "REMOVE"}},
		{ApplyTo: "CLUSTER", Match: patchMatch{Context: "SIDECAR_OUTBOUND"}, Patch: patchOp{Operation: "ADD", Value: raw}},
	}
}

// RedisDecision is where the Redis proxy sends a command with a key.
type RedisDecision struct {
	// Prefix is the matching route's prefix; CatchAll is set when no prefix matches and the
	// catch-all route takes it. Both empty/false: the command fails.
	Prefix   string
	CatchAll bool
	Cluster  string
	// Key is the key as sent on (without the prefix when the route removes it).
	Key     string
	Mirrors []RedisMirror
}

// RedisMirror is a cluster a command is copied to.
type RedisMirror struct {
	Cluster string
	Percent float64
	// WritesOnly: read commands are not mirrored.
	WritesOnly bool
}

// EvaluateRedis tells where the Redis proxy sends a command with key: the route of the
// longest matching prefix (compared case-insensitively when the routes are), else the
// catch-all route, as Envoy's redis_proxy does.
func EvaluateRedis(p *redisv3.RedisProxy, key string) RedisDecision {
	pr := p.GetPrefixRoutes()
	cmpKey := key
	if pr.GetCaseInsensitive() {
		cmpKey = strings.ToLower(key)
	}
	var best *redisv3.RedisProxy_PrefixRoutes_Route
	for _, r := range pr.GetRoutes() {
		prefix := r.GetPrefix()
		if pr.GetCaseInsensitive() {
			prefix = strings.ToLower(prefix)
		}
		if strings.HasPrefix(cmpKey, prefix) && (best == nil || len(prefix) > len(best.GetPrefix())) {
			best = r
		}
	}
	d := RedisDecision{Key: key}
	switch {
	case best != nil:
		d.Prefix = best.GetPrefix()
		if best.GetRemovePrefix() {
			d.Key = key[len(best.GetPrefix()):]
		}
	case pr.GetCatchAllRoute() != nil:
		best, d.CatchAll = pr.GetCatchAllRoute(), true
	default:
		return d
	}
	d.Cluster = best.GetCluster()
	for _, m := range best.GetRequestMirrorPolicy() {
		percent := 100.0
		if fp := m.GetRuntimeFraction().GetDefaultValue(); fp != nil {
			percent = float64(fp.GetNumerator()) / 10000
		}
		d.Mirrors = append(d.Mirrors, RedisMirror{Cluster: m.GetCluster(), Percent: percent, WritesOnly: m.GetExcludeReadCommands()})
	}
	return d
}
