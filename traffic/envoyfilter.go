package traffic

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utiljson "k8s.io/apimachinery/pkg/util/json"

	"github.com/meltemi-mesh/meltemi/api/istio"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/traffic/internal/mpproto"
	"github.com/meltemi-mesh/meltemi/traffic/internal/wellknown"
)

// Envoy and MetaProtocol names used in the generated configuration.
const (
	MetaProtocolFilterName = wellknown.MetaProtocolFilter
	MetaProtocolTypeURL    = wellknown.MetaProtocolTypeURL
	DubboProxyFilterName   = wellknown.DubboProxyFilter
	ThriftProxyFilterName  = wellknown.ThriftProxyFilter
	tcpProxyFilterName     = wellknown.TCPProxyFilter
	typedStructTypeURL     = wellknown.TypedStructTypeURL

	routerFilter           = wellknown.MetaRouterFilter
	localRateLimitFilter   = wellknown.MetaLocalRateLimitFilter
	globalRateLimitFilter  = wellknown.MetaGlobalRateLimitFilter
	metadataExchangeFilter = wellknown.MetaMetadataExchangeFilter
	istioStatsFilter       = wellknown.MetaIstioStatsFilter

	// virtualInbound is the listener of Istio sidecars that receives all inbound traffic.
	virtualInbound = "virtualInbound"
)

// LabelComponent marks the objects written by the traffic translator, so that its reconciler
// owns exactly them (see OwnerLabels).
const LabelComponent = "meltemi.io/component"

// OwnerLabels are the labels, besides app.kubernetes.io/managed-by, that every EnvoyFilter of
// the translator carries; its writer should count only objects with them as its own.
func OwnerLabels() map[string]string { return map[string]string{LabelComponent: "traffic"} }

// envoyFilter is networking.istio.io/v1alpha3 EnvoyFilter with the fields Meltemi sets.
type envoyFilter struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   efMeta          `json:"metadata"`
	Spec       envoyFilterSpec `json:"spec"`
}

type efMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type envoyFilterSpec struct {
	WorkloadSelector *istio.WorkloadSelector `json:"workloadSelector,omitempty"`
	ConfigPatches    []configPatch           `json:"configPatches"`
}

type configPatch struct {
	ApplyTo string     `json:"applyTo"`
	Match   patchMatch `json:"match"`
	Patch   patchOp    `json:"patch"`
}

type patchMatch struct {
	Context  string         `json:"context"`
	Listener *listenerMatch `json:"listener,omitempty"`
	Cluster  *clusterMatch  `json:"cluster,omitempty"`
}

type clusterMatch struct {
	Name string `json:"name"`
}

type listenerMatch struct {
	Name        string           `json:"name"`
	FilterChain filterChainMatch `json:"filterChain"`
}

type filterChainMatch struct {
	DestinationPort uint32      `json:"destinationPort,omitempty"`
	Filter          filterMatch `json:"filter"`
}

type filterMatch struct {
	Name string `json:"name"`
}

type patchOp struct {
	Operation string          `json:"operation"`
	Value     json.RawMessage `json:"value,omitempty"`
}

// replaceTCPProxy is a patch replacing the TCP proxy of a listener with filter.
func replaceTCPProxy(context, listener string, destinationPort uint32, filter json.RawMessage) configPatch {
	return configPatch{
		ApplyTo: "NETWORK_FILTER",
		Match:   tcpProxyMatch(context, listener, destinationPort),
		Patch:   patchOp{Operation: "REPLACE", Value: filter},
	}
}

// insertBeforeTCPProxy is a patch inserting filter before the TCP proxy of a listener, which
// keeps forwarding the traffic.
func insertBeforeTCPProxy(context, listener string, destinationPort uint32, filter json.RawMessage) configPatch {
	return configPatch{
		ApplyTo: "NETWORK_FILTER",
		Match:   tcpProxyMatch(context, listener, destinationPort),
		Patch:   patchOp{Operation: "INSERT_BEFORE", Value: filter},
	}
}

func tcpProxyMatch(context, listener string, destinationPort uint32) patchMatch {
	return patchMatch{Context: context, Listener: &listenerMatch{Name: listener, FilterChain: filterChainMatch{
		DestinationPort: destinationPort, Filter: filterMatch{Name: tcpProxyFilterName},
	}}}
}

// addEnvoyFilter adds an EnvoyFilter with a deterministic name to the output, in each
// namespace the host's filters go to (filterNamespaces).
func (t *translator) addEnvoyFilter(host string, port uint32, direction string, selector map[string]string, patches []configPatch) error {
	if len(patches) == 0 {
		return nil
	}
	if !t.loadable(host, port, direction, selector, patches) {
		return nil
	}
	for _, ns := range t.filterNamespaces(host) {
		// The writer adds the ownership labels (managed-by, and OwnerLabels as its own).
		ef := envoyFilter{
			APIVersion: istio.EnvoyFilterKind.GroupVersion().String(),
			Kind:       istio.EnvoyFilterKind.Kind,
			Metadata: efMeta{
				Name: envoyFilterName(host, port, direction), Namespace: ns,
				Annotations: map[string]string{AnnotationService: fmt.Sprintf("%s:%d", host, port)},
			},
			Spec: envoyFilterSpec{ConfigPatches: patches},
		}
		if len(selector) > 0 {
			ef.Spec.WorkloadSelector = &istio.WorkloadSelector{Labels: selector}
		}
		raw, err := json.Marshal(ef)
		if err != nil {
			return fmt.Errorf("encoding EnvoyFilter %s: %w", ef.Metadata.Name, err)
		}
		u := &unstructured.Unstructured{}
		// utiljson decodes numbers as int64 where they fit, like objects read from the API server.
		if err := utiljson.Unmarshal(raw, &u.Object); err != nil {
			return fmt.Errorf("decoding EnvoyFilter %s: %w", ef.Metadata.Name, err)
		}
		t.out.EnvoyFilters = append(t.out.EnvoyFilters, u)
	}
	return nil
}

// loadable reports whether every extension the patches name exists in the proxies the filter
// reaches: those selected as MetaProtocol proxies when selector includes Options.ProxySelector,
// the stock proxy otherwise. A filter a proxy lacks would make it reject the whole listener, so
// such an EnvoyFilter is not produced; the port keeps Istio's own TCP handling, and the problem
// is reported on the service (and on the authorization policies it leaves unenforced).
func (t *translator) loadable(host string, port uint32, direction string, selector map[string]string, patches []configPatch) bool {
	target := t.stockProfile
	if len(t.opts.ProxySelector) > 0 && containsLabels(selector, t.opts.ProxySelector) {
		target = t.metaProtocolProfile
	}
	var missing []string
	for _, p := range patches {
		for _, m := range target.MissingInJSON(p.Patch.Value) {
			if !slices.Contains(missing, m) {
				missing = append(missing, m)
			}
		}
	}
	slices.Sort(missing)
	missing = slices.DeleteFunc(missing, func(ext string) bool {
		// A codec an ApplicationProtocol declares is in the user's own MetaProtocol build.
		return target.MetaProtocol && t.declaredCodec(ext)
	})
	if len(missing) == 0 {
		return true
	}
	metaProtocolOnly := !slices.ContainsFunc(missing, func(m string) bool { return !isMetaProtocolExtension(m) })
	what := strings.Join(missing, ", ")
	if metaProtocolOnly {
		what = "MetaProtocol filter"
	}
	msg := fmt.Sprintf("port %d (%s): not sent, since %s has no %s; the port keeps Istio's TCP handling", port, direction, target, what)
	if metaProtocolOnly && len(t.opts.ProxySelector) == 0 {
		// MetaProtocol is not enabled for any proxy: that is a choice, not a fault of each
		// service. A MetaRouter that wants the port says so; Finish counts the rest once.
		if rt, ok := t.routers[host]; ok {
			rt.res.warn("host %s %s (no proxy is selected as a MetaProtocol proxy)", host, msg)
		}
		t.metaProtocolOff++
		return false
	}
	if metaProtocolOnly {
		msg += " (MetaProtocol filters go only to proxies selected as MetaProtocol proxies: label those pods)"
	}
	svc, ok := t.services[host]
	if !ok {
		t.problem("EnvoyFilter", t.opts.Namespace, envoyFilterName(host, port, direction), SeverityWarning, "host %s %s", host, msg)
		return false
	}
	t.serviceProblem(svc.se, SeverityWarning, "host %s %s", host, msg)
	if slices.Contains(missing, wellknown.DubboRBACFilter) {
		for _, ap := range t.authz[svc.se.Namespace] {
			t.problem("DubboAuthorizationPolicy", ap.Namespace, ap.Name, SeverityError,
				"not enforced for host %s: %s", host, msg)
		}
	}
	return false
}

func isMetaProtocolExtension(name string) bool {
	return strings.HasPrefix(name, "aeraki.") || name == wellknown.MetaProtocolFilter
}

// declaredCodec reports whether an ApplicationProtocol (not the built-in set) names codec.
func (t *translator) declaredCodec(codec string) bool {
	for p, c := range t.codecs {
		if c == codec && builtinCodecs[p] != c {
			return true
		}
	}
	return false
}

func containsLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// hold records that a host's EnvoyFilter could not be built this time: the writer should keep
// the one it has (Output.Held) rather than withdraw a configuration that worked.
func (t *translator) hold(host string, port uint32, direction string) {
	for _, ns := range t.filterNamespaces(host) {
		t.out.Held = append(t.out.Held, types.NamespacedName{Namespace: ns, Name: envoyFilterName(host, port, direction)})
	}
}

// filterNamespaces are the namespaces a host's EnvoyFilters are written to: Options.Namespace,
// or, as in Aeraki, one per namespace its MetaRouter's exportTo names ("." the MetaRouter's
// own, "*" Options.Namespace) — those Options.ExportNamespaces permits; the others are
// reported on the MetaRouter.
func (t *translator) filterNamespaces(host string) []string {
	rt := t.routers[host]
	if rt == nil || len(rt.mr.Spec.ExportTo) == 0 {
		return []string{t.opts.Namespace}
	}
	var out []string
	for _, ns := range rt.mr.Spec.ExportTo {
		switch ns {
		case ".":
			ns = rt.mr.Namespace
		case "*":
			ns = t.opts.Namespace
		}
		if !t.opts.mayExportTo(ns) {
			rt.res.unsupported("exportTo %s: EnvoyFilters may not be written there (see --envoyfilter-export-namespaces); host %s is not exported there", ns, host)
			continue
		}
		if !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	slices.Sort(out)
	return out
}

// AnnotationService names the host and port an EnvoyFilter is for.
const AnnotationService = "meltemi.io/service"

// envoyFilterName is meltemi-<host>-<port>-<direction>, shortened with a hash to stay a valid
// object name.
func envoyFilterName(host string, port uint32, direction string) string {
	const maxLen = 253
	suffix := fmt.Sprintf("-%d-%s", port, direction)
	name := "meltemi-" + host + suffix
	if len(name) <= maxLen {
		return name
	}
	sum := sha256.Sum256([]byte(host))
	short := strings.TrimRight(host[:maxLen-len("meltemi-")-len(suffix)-9], ".-")
	return "meltemi-" + short + "-" + hex.EncodeToString(sum[:4]) + suffix
}

// metaProtocolFilters adds the EnvoyFilters of a MetaProtocol port.
func (t *translator) metaProtocolFilters(svc *service, port istio.ServicePort, app, codec string, rt *router) error {
	listeners := t.outboundListeners(svc, port.Number, rt)
	if len(listeners) > 0 {
		out, err := t.metaProtocolProxy(svc.host, app, codec, ClusterName(port.Number, "", svc.host), nil)
		if err != nil {
			return err
		}
		out.RouteSpecifier = &mpproto.MetaProtocolProxy_Rds{Rds: &mpproto.Rds{
			ConfigSource:    t.xdsConfigSource(),
			RouteConfigName: RouteConfigName(svc.host, port.Number),
		}}
		value, err := metaProtocolFilterValue(out)
		if err != nil {
			return err
		}
		var patches []configPatch
		for _, l := range listeners {
			patches = append(patches, replaceTCPProxy("SIDECAR_OUTBOUND", l, 0, value))
		}
		if err := t.addEnvoyFilter(svc.host, port.Number, "outbound", t.opts.ProxySelector, patches); err != nil {
			return err
		}
	}

	// Inbound: only for a service whose workloads are known by label; without a selector the
	// filter would take over the port of every scoped workload.
	if app == "dubbo" && t.usesAuthorization(svc.se.Namespace) {
		t.serviceProblem(svc.se, SeverityWarning,
			"port %d: the DubboAuthorizationPolicies of namespace %s are not enforced on MetaProtocol ports (the MetaProtocol proxy has no RBAC filter): name the port tcp-dubbo-… or use an Istio AuthorizationPolicy",
			port.Number, svc.se.Namespace)
	}
	sel := inboundSelector(svc.se)
	if len(sel) == 0 {
		if rt != nil && (rt.mr.Spec.LocalRateLimit != nil || rt.mr.Spec.GlobalRateLimit != nil) {
			rt.res.warn("host %s: rate limits apply on the server side, which needs a workloadSelector in its ServiceEntry; not applied", svc.host)
		}
		return nil
	}
	maps.Copy(sel, t.opts.ProxySelector)
	target := targetPort(port)
	filters, err := rateLimitFilters(svc.host, rt)
	if err != nil {
		return err
	}
	inboundCluster := inboundClusterName(target)
	in, err := t.metaProtocolProxy(svc.host, app, codec, inboundCluster, filters)
	if err != nil {
		return err
	}
	// MetaProtocol's own route configuration: one route, to the workload itself.
	in.RouteSpecifier = &mpproto.MetaProtocolProxy_RouteConfig{RouteConfig: &mpproto.RouteConfiguration{
		Name: inboundCluster,
		Routes: []*mpproto.Route{{
			Name:  defaultRouteName,
			Route: &mpproto.RouteAction{ClusterSpecifier: &mpproto.RouteAction_Cluster{Cluster: inboundCluster}},
		}},
	}}
	value, err := metaProtocolFilterValue(in)
	if err != nil {
		return err
	}
	return t.addEnvoyFilter(svc.host, port.Number, "inbound", sel,
		[]configPatch{replaceTCPProxy("SIDECAR_INBOUND", virtualInbound, target, value)})
}

// metaProtocolProxy is a MetaProtocol proxy config without its routes: the application
// protocol and codec in both forms (protocol for proxies since 1.3.1, application_protocol and
// codec, deprecated there, for the older ones, which require them), the filter chain —
// filters, then Istio-style telemetry (metadata exchange and stats for the host), then the
// router — and access log and tracing from the mesh config, as Aeraki builds it.
func (t *translator) metaProtocolProxy(host, app, codec, statPrefix string, filters []*mpproto.MetaProtocolFilter) (*mpproto.MetaProtocolProxy, error) {
	stats, err := anypb.New(&mpproto.IstioStats{DestinationService: host})
	if err != nil {
		panic(fmt.Sprintf("encoding IstioStats: %v", err)) // a constant message: cannot fail
	}
	chain := append(filters,
		&mpproto.MetaProtocolFilter{Name: metadataExchangeFilter},
		&mpproto.MetaProtocolFilter{Name: istioStatsFilter, Config: stats},
		&mpproto.MetaProtocolFilter{Name: routerFilter})
	mp := &mpproto.MetaProtocolProxy{
		StatPrefix:          statPrefix,
		Protocol:            &mpproto.ApplicationProtocol{Name: app, Codec: &mpproto.Codec{Name: codec}},
		MetaProtocolFilters: chain,
	}
	//lint:ignore SA1019 proxies before 1.3.1 read only the deprecated fields
	mp.ApplicationProtocol = app
	//lint:ignore SA1019 as above
	mp.Codec = &mpproto.Codec{Name: codec}
	if err := telemetry(mp, t.mesh); err != nil {
		return nil, fmt.Errorf("telemetry from the mesh config: %w", err)
	}
	return mp, nil
}

// xdsConfigSource points at Meltemi's RDS server through the configured cluster.
func (t *translator) xdsConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:             corev3.ApiConfigSource_GRPC,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: t.opts.XDSCluster},
			}}},
		}},
	}
}

func rateLimitFilters(host string, rt *router) ([]*mpproto.MetaProtocolFilter, error) {
	if rt == nil {
		return nil, nil
	}
	var out []*mpproto.MetaProtocolFilter
	if l := rt.mr.Spec.LocalRateLimit; l != nil {
		cfg := &mpproto.LocalRateLimit{StatPrefix: host}
		if l.TokenBucket != nil {
			cfg.TokenBucket = tokenBucket(l.TokenBucket)
		}
		for i := range l.Conditions {
			c := &l.Conditions[i]
			cfg.Conditions = append(cfg.Conditions, &mpproto.LocalRateLimitCondition{
				Match:       &mpproto.RouteMatch{Metadata: headerMatchers(c.Match)},
				TokenBucket: tokenBucket(&c.TokenBucket),
			})
		}
		a, err := anypb.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("encoding local rate limit: %w", err)
		}
		out = append(out, &mpproto.MetaProtocolFilter{Name: localRateLimitFilter, Config: a})
	}
	if g := rt.mr.Spec.GlobalRateLimit; g != nil {
		cfg := &mpproto.RateLimit{
			Match:           &mpproto.RouteMatch{Metadata: headerMatchers(g.Match)},
			Domain:          g.Domain,
			FailureModeDeny: g.DenyOnFail,
			RateLimitService: &ratelimitv3.RateLimitServiceConfig{
				GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: g.RateLimitService},
				}},
				TransportApiVersion: corev3.ApiVersion_V3,
			},
		}
		if g.RequestTimeout != nil {
			cfg.Timeout = durationpb.New(g.RequestTimeout.Duration)
		}
		for _, d := range g.Descriptors {
			cfg.Descriptors = append(cfg.Descriptors, &mpproto.Descriptor{Property: d.Property, DescriptorKey: d.DescriptorKey})
		}
		a, err := anypb.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("encoding global rate limit: %w", err)
		}
		out = append(out, &mpproto.MetaProtocolFilter{Name: globalRateLimitFilter, Config: a})
	}
	return out, nil
}

func tokenBucket(b *mpv1.TokenBucket) *typev3.TokenBucket {
	tb := &typev3.TokenBucket{MaxTokens: b.MaxTokens}
	if b.FillInterval != nil {
		tb.FillInterval = durationpb.New(b.FillInterval.Duration)
	}
	if b.TokensPerFill != nil {
		tb.TokensPerFill = wrapperspb.UInt32(*b.TokensPerFill)
	}
	return tb
}

// metaProtocolFilterValue is the listener filter carrying a MetaProtocolProxy config, as a
// udpa.type.v1.TypedStruct: the config is not among the types Istio knows. The TypedStruct's
// JSON is written directly: its value is the config's own JSON object.
func metaProtocolFilterValue(cfg *mpproto.MetaProtocolProxy) (json.RawMessage, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding MetaProtocolProxy: %w", err)
	}
	type typedStruct struct {
		Type    string          `json:"@type"`
		TypeURL string          `json:"type_url"`
		Value   json.RawMessage `json:"value"`
	}
	f := struct {
		Name        string      `json:"name"`
		TypedConfig typedStruct `json:"typed_config"`
	}{MetaProtocolFilterName, typedStruct{typedStructTypeURL, MetaProtocolTypeURL, raw}}
	return json.Marshal(f)
}

// filterValue is the JSON of a listener filter with a typed config, as an EnvoyFilter patch
// value (proto field names, as in Envoy's documentation; Istio accepts both spellings).
func filterValue(name string, cfg proto.Message) (json.RawMessage, error) {
	a, err := anypb.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding filter %s: %w", name, err)
	}
	f := &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encoding filter %s: %w", name, err)
	}
	return raw, nil
}
