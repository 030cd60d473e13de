package traffic

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	thriftv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/thrift_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meltemi-mesh/meltemi/api/istio"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/api/portname"
	"github.com/meltemi-mesh/meltemi/traffic/internal/wellknown"
)

// Attributes with a meaning of their own in native Dubbo and Thrift routes; every other
// attribute is matched as a header (Dubbo attachment, Thrift header).
const (
	attrInterface = "interface"
	attrMethod    = "method"
)

// Filter names inside Envoy's native proxies.
const (
	dubboRouterFilter  = wellknown.DubboRouterFilter
	thriftRouterFilter = wellknown.ThriftRouterFilter
	// AnnotationInterface on a ServiceEntry names the Dubbo interface its native Dubbo port
	// serves (dubbo2istio writes it); routes of that port match it.
	AnnotationInterface = "interface"
)

// nativeFilter adds the EnvoyFilters of a tcp-dubbo-… or tcp-thrift-… port: Envoy's own proxy
// filter with the routes inline (these filters have no RDS), so any Envoy sidecar can take it
// and no proxy selector is needed. Outbound routes come, as in Aeraki, from the host's
// VirtualService, else from its MetaRouter, else a default route to the host; the inbound side
// (for workloads known by label) routes to the workload itself, behind the Dubbo RBAC filters
// of the namespace's DubboAuthorizationPolicies.
func (t *translator) nativeFilter(svc *service, port istio.ServicePort, kind portname.Kind, rt *router) error {
	vs := t.virtualServices[svc.host]
	if vs != nil && rt != nil && len(rt.mr.Spec.Routes) > 0 {
		rt.res.warn("host %s port %d: routed by VirtualService %s/%s (as in Aeraki); the MetaRouter's routes do not apply there",
			svc.host, port.Number, vs.Namespace, vs.Name)
	}
	var out, in proxyConfig
	if kind == portname.Dubbo {
		iface := svc.se.Annotations[AnnotationInterface]
		if iface == "" {
			iface = "*"
		}
		out = t.dubboProxy(ClusterName(port.Number, "", svc.host), RouteConfigName(svc.host, port.Number), iface,
			t.dubboRoutes(svc, port.Number, rt, vs, iface), nil)
	} else {
		out = t.thriftProxy(ClusterName(port.Number, "", svc.host), RouteConfigName(svc.host, port.Number),
			t.thriftRoutes(svc, port.Number, rt, vs))
	}
	if rt != nil && vs == nil {
		unsupportedNative(rt, svc.host, kind)
	}
	if err := t.addNativeFilter(svc, port.Number, "outbound", nil, out, func(value json.RawMessage) []configPatch {
		return t.outboundPatches(svc, port.Number, rt, replaceTCPProxy, value)
	}); err != nil {
		return err
	}

	sel := inboundSelector(svc.se)
	if len(sel) == 0 {
		return nil
	}
	target := targetPort(port)
	inboundCluster := inboundClusterName(target)
	if kind == portname.Dubbo {
		defaultRoute := &dubbov3.Route{Match: &dubbov3.RouteMatch{Method: anyMethod()},
			Route: &dubbov3.RouteAction{ClusterSpecifier: &dubbov3.RouteAction_Cluster{Cluster: inboundCluster}}}
		rbac, err := t.dubboRBACFilters(svc)
		if err != nil {
			return err
		}
		in = t.dubboProxy(inboundStatPrefix(target, svc.host), inboundCluster, "*", []*dubbov3.Route{defaultRoute}, rbac)
	} else {
		in = t.thriftProxy(inboundStatPrefix(target, svc.host), inboundCluster, []*thriftv3.Route{{
			Match: &thriftv3.RouteMatch{MatchSpecifier: &thriftv3.RouteMatch_MethodName{MethodName: ""}},
			Route: &thriftv3.RouteAction{ClusterSpecifier: &thriftv3.RouteAction_Cluster{Cluster: inboundCluster}},
		}})
	}
	return t.addNativeFilter(svc, port.Number, "inbound", sel, in, func(value json.RawMessage) []configPatch {
		return []configPatch{replaceTCPProxy("SIDECAR_INBOUND", virtualInbound, target, value)}
	})
}

// outboundPatches patches each outbound listener of a host's port with filter (patch is
// replaceTCPProxy or insertBeforeTCPProxy).
func (t *translator) outboundPatches(svc *service, port uint32, rt *router,
	patch func(context, listener string, destinationPort uint32, filter json.RawMessage) configPatch, filter json.RawMessage) []configPatch {
	var patches []configPatch
	for _, l := range t.outboundListeners(svc, port, rt) {
		patches = append(patches, patch("SIDECAR_OUTBOUND", l, 0, filter))
	}
	return patches
}

// proxyConfig is a native proxy's filter config.
type proxyConfig struct {
	name string
	cfg  interface {
		proto.Message
		ValidateAll() error
	}
}

func (t *translator) addNativeFilter(svc *service, port uint32, direction string, selector map[string]string, p proxyConfig,
	patches func(json.RawMessage) []configPatch) error {
	if err := p.cfg.ValidateAll(); err != nil {
		return fmt.Errorf("generated %s %s config is invalid: %w", direction, p.name, err)
	}
	value, err := filterValue(p.name, p.cfg)
	if err != nil {
		return err
	}
	return t.addEnvoyFilter(svc.host, port, direction, selector, patches(value))
}

func (t *translator) dubboProxy(statPrefix, name, iface string, routes []*dubbov3.Route, filters []*dubbov3.DubboFilter) proxyConfig {
	return proxyConfig{DubboProxyFilterName, &dubbov3.DubboProxy{
		StatPrefix:        statPrefix,
		ProtocolType:      dubbov3.ProtocolType_Dubbo,
		SerializationType: dubbov3.SerializationType_Hessian2,
		RouteSpecifier: &dubbov3.DubboProxy_MultipleRouteConfig{MultipleRouteConfig: &dubbov3.MultipleRouteConfiguration{
			Name: name, RouteConfig: groupDubboRoutes(name, iface, routes),
		}},
		DubboFilters: append(filters, &dubbov3.DubboFilter{Name: dubboRouterFilter}),
	}}
}

func (t *translator) thriftProxy(statPrefix, name string, routes []*thriftv3.Route) proxyConfig {
	return proxyConfig{ThriftProxyFilterName, &thriftv3.ThriftProxy{
		StatPrefix:    statPrefix,
		Transport:     thriftv3.TransportType_AUTO_TRANSPORT,
		Protocol:      thriftv3.ProtocolType_AUTO_PROTOCOL,
		RouteConfig:   &thriftv3.RouteConfiguration{Name: name, Routes: routes},
		ThriftFilters: []*thriftv3.ThriftFilter{{Name: thriftRouterFilter}},
	}}
}

// inboundSelector is the workload selector of a service's inbound filters: the ServiceEntry's
// workloadSelector, else Aeraki's workloadSelector annotation ("name" for app=name, or
// "key:value"). Without one there is no inbound filter: it would take over the port of every
// workload in scope.
func inboundSelector(se *istio.ServiceEntry) map[string]string {
	if ws := se.Spec.WorkloadSelector; ws != nil && len(ws.Labels) > 0 {
		return maps.Clone(ws.Labels)
	}
	a := strings.ReplaceAll(se.Annotations["workloadSelector"], " ", "")
	if a == "" {
		return nil
	}
	if k, v, ok := strings.Cut(a, ":"); ok {
		if k == "" || strings.Contains(v, ":") {
			return nil
		}
		return map[string]string{k: v}
	}
	return map[string]string{"app": a}
}

func targetPort(p istio.ServicePort) uint32 {
	if p.TargetPort != 0 {
		return p.TargetPort
	}
	return p.Number
}

// inboundClusterName is Istio's inbound cluster of a workload port: named after the port alone.
func inboundClusterName(port uint32) string { return fmt.Sprintf("inbound|%d||", port) }

func inboundStatPrefix(port uint32, host string) string {
	return fmt.Sprintf("inbound|%d||%s", port, host)
}

func anyMethod() *dubbov3.MethodMatch {
	return &dubbov3.MethodMatch{Name: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
		SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}}
}

// unsupportedNative warns about MetaRouter features Envoy's native filters lack.
func unsupportedNative(rt *router, host string, kind portname.Kind) {
	proxy := "dubbo_proxy"
	if kind == portname.Thrift {
		proxy = "thrift_proxy"
	}
	s := &rt.mr.Spec
	if s.LocalRateLimit != nil || s.GlobalRateLimit != nil {
		rt.res.warn("host %s: rate limits are not supported by Envoy's %s; ignored on its %s ports", host, proxy, proxy)
	}
	for i := range s.Routes {
		r := &s.Routes[i]
		var what []string
		if len(r.RequestMutation) > 0 || len(r.ResponseMutation) > 0 {
			what = append(what, "mutations")
		}
		if len(r.HashPolicy) > 0 {
			what = append(what, "hashPolicy")
		}
		if r.Mirror != nil && kind == portname.Dubbo {
			what = append(what, "mirror")
		}
		if len(what) > 0 {
			rt.res.warn("host %s route %s: %s not supported by Envoy's %s; ignored on its %s ports",
				host, routeName(r, i), strings.Join(what, " and "), proxy, proxy)
		}
	}
}

// splitAttributes separates the interface and method conditions from the header conditions.
func splitAttributes(m *mpv1.MetaRouteMatch) (iface, method *mpv1.StringMatch, headers []*routev3.HeaderMatcher) {
	if m == nil {
		return nil, nil, nil
	}
	for _, name := range sortedKeys(m.Attributes) {
		sm := m.Attributes[name]
		switch name {
		case attrInterface:
			iface = &sm
		case attrMethod:
			method = &sm
		default:
			headers = append(headers, headerMatcher(name, sm))
		}
	}
	return iface, method, headers
}

// dubboRoutes renders the outbound routes of a native Dubbo port, each with the interface it
// matches ("*": any), in order: from the VirtualService, else the MetaRouter, else the default
// route. MetaRouter routes match the interface attribute; VirtualService routes, as in Aeraki,
// the port's interface (the ServiceEntry's interface annotation).
func (t *translator) dubboRoutes(svc *service, port uint32, rt *router, vs *VirtualService, iface string) []*dubbov3.Route {
	if vs != nil {
		return vsRoutes(t, svc, port, vs, func(m *HTTPMatchRequest, action clusterAction) (*dubbov3.Route, error) {
			mm := anyMethod()
			if m != nil && m.Method != nil {
				if sm := headerMatcher(attrMethod, *m.Method).GetStringMatch(); sm != nil {
					mm = &dubbov3.MethodMatch{Name: sm}
				}
			}
			r := &dubbov3.Route{Match: &dubbov3.RouteMatch{Method: mm}, Route: action.dubbo()}
			if m != nil {
				r.Match.Headers = headerMatchers(&mpv1.MetaRouteMatch{Attributes: m.Headers})
			}
			return r, nil
		})
	}
	var out []*dubbov3.Route
	if rt != nil && len(rt.mr.Spec.Routes) > 0 {
		for i := range rt.mr.Spec.Routes {
			r := &rt.mr.Spec.Routes[i]
			riface, method, headers := splitAttributes(r.Match)
			if riface != nil && riface.Exact == "" {
				rt.res.warn("host %s route %s: Envoy's dubbo_proxy matches the interface exactly; route left out there", svc.host, routeName(r, i))
				continue
			}
			if riface != nil && iface != "*" && riface.Exact != iface {
				rt.res.warn("host %s route %s: interface %s is not the port's (%s); route left out there", svc.host, routeName(r, i), riface.Exact, iface)
				continue
			}
			mm := anyMethod()
			if method != nil {
				if sm := headerMatcher(attrMethod, *method).GetStringMatch(); sm != nil { // nil: presence only, every request has a method
					mm = &dubbov3.MethodMatch{Name: sm}
				}
			}
			dr := &dubbov3.Route{Match: &dubbov3.RouteMatch{Method: mm, Headers: headers}, Route: t.metaRouteAction(rt, port, r).dubbo()}
			if riface != nil {
				// The interface of a MetaRouter route picks its route configuration (see groupDubboRoutes).
				dr.Match.Headers = append([]*routev3.HeaderMatcher{{Name: dubboInterfaceKey, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
					StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: riface.Exact}}}}}, dr.Match.Headers...)
			}
			out = append(out, dr)
		}
		if len(out) > 0 {
			return out
		}
	}
	return []*dubbov3.Route{{
		Match: &dubbov3.RouteMatch{Method: anyMethod()},
		Route: &dubbov3.RouteAction{ClusterSpecifier: &dubbov3.RouteAction_Cluster{Cluster: ClusterName(port, "", svc.host)}},
	}}
}

// dubboInterfaceKey marks, while routes are built, the interface a MetaRouter route matches;
// groupDubboRoutes turns it into the route configuration's interface.
const dubboInterfaceKey = ":meltemi-dubbo-interface"

// groupDubboRoutes puts routes into Dubbo route configurations: Dubbo matches the interface per
// configuration, so consecutive routes on the same interface share one, in order (Envoy tries
// the configurations in order, as it tries routes).
func groupDubboRoutes(name, iface string, routes []*dubbov3.Route) []*dubbov3.RouteConfiguration {
	var configs []*dubbov3.RouteConfiguration
	for _, r := range routes {
		ri := iface
		if hs := r.GetMatch().GetHeaders(); len(hs) > 0 && hs[0].GetName() == dubboInterfaceKey {
			ri = hs[0].GetStringMatch().GetExact()
			r.Match.Headers = hs[1:]
		}
		if n := len(configs); n > 0 && configs[n-1].Interface == ri {
			configs[n-1].Routes = append(configs[n-1].Routes, r)
			continue
		}
		configs = append(configs, &dubbov3.RouteConfiguration{Name: fmt.Sprintf("%s-%d", name, len(configs)), Interface: ri, Routes: []*dubbov3.Route{r}})
	}
	return configs
}

// thriftRoutes renders the outbound routes of a native Thrift port: from the VirtualService,
// else the MetaRouter, else the default route. Thrift matches the method name exactly (an
// empty name matches every method).
func (t *translator) thriftRoutes(svc *service, port uint32, rt *router, vs *VirtualService) []*thriftv3.Route {
	if vs != nil {
		return vsRoutes(t, svc, port, vs, func(m *HTTPMatchRequest, action clusterAction) (*thriftv3.Route, error) {
			r := &thriftv3.Route{Match: &thriftv3.RouteMatch{MatchSpecifier: &thriftv3.RouteMatch_MethodName{}}, Route: action.thrift()}
			if m == nil {
				return r, nil
			}
			if m.Method != nil {
				if m.Method.Exact == "" {
					return nil, errors.New("the method must be matched exactly (Envoy's thrift_proxy has no other method match)")
				}
				r.Match.MatchSpecifier = &thriftv3.RouteMatch_MethodName{MethodName: m.Method.Exact}
			}
			r.Match.Headers = headerMatchers(&mpv1.MetaRouteMatch{Attributes: m.Headers})
			return r, nil
		})
	}
	var out []*thriftv3.Route
	if rt != nil {
		for i := range rt.mr.Spec.Routes {
			r := &rt.mr.Spec.Routes[i]
			iface, method, headers := splitAttributes(r.Match)
			if iface != nil {
				headers = append([]*routev3.HeaderMatcher{headerMatcher(attrInterface, *iface)}, headers...)
			}
			methodName := ""
			if method != nil {
				if method.Prefix != "" || (method.Regex != "" && method.Regex != "*") {
					rt.res.warn("host %s route %s: Envoy's thrift_proxy matches the method exactly; route left out there", svc.host, routeName(r, i))
					continue
				}
				methodName = method.Exact
			}
			action := t.metaRouteAction(rt, port, r).thrift()
			if r.Mirror != nil {
				action.RequestMirrorPolicies = []*thriftv3.RouteAction_RequestMirrorPolicy{{
					Cluster: t.cluster(rt, port, r.Mirror), RuntimeFraction: mirrorFraction(r),
				}}
			}
			out = append(out, &thriftv3.Route{
				Match: &thriftv3.RouteMatch{MatchSpecifier: &thriftv3.RouteMatch_MethodName{MethodName: methodName}, Headers: headers},
				Route: action,
			})
		}
		if len(rt.mr.Spec.Routes) > 0 && len(out) > 0 {
			return out
		}
	}
	return []*thriftv3.Route{{
		Match: &thriftv3.RouteMatch{MatchSpecifier: &thriftv3.RouteMatch_MethodName{MethodName: ""}},
		Route: &thriftv3.RouteAction{ClusterSpecifier: &thriftv3.RouteAction_Cluster{Cluster: ClusterName(port, "", svc.host)}},
	}}
}

// clusterAction is where a route sends requests: one cluster or weighted clusters.
type clusterAction struct {
	cluster  string
	weighted *routev3.WeightedCluster
}

func (a clusterAction) dubbo() *dubbov3.RouteAction {
	if a.weighted != nil {
		return &dubbov3.RouteAction{ClusterSpecifier: &dubbov3.RouteAction_WeightedClusters{WeightedClusters: a.weighted}}
	}
	return &dubbov3.RouteAction{ClusterSpecifier: &dubbov3.RouteAction_Cluster{Cluster: a.cluster}}
}

func (a clusterAction) thrift() *thriftv3.RouteAction {
	if a.weighted == nil {
		return &thriftv3.RouteAction{ClusterSpecifier: &thriftv3.RouteAction_Cluster{Cluster: a.cluster}}
	}
	// Thrift has a weighted cluster type of its own, with the same fields.
	twc := &thriftv3.WeightedCluster{}
	for _, c := range a.weighted.GetClusters() {
		twc.Clusters = append(twc.Clusters, &thriftv3.WeightedCluster_ClusterWeight{Name: c.GetName(), Weight: c.GetWeight()})
	}
	return &thriftv3.RouteAction{ClusterSpecifier: &thriftv3.RouteAction_WeightedClusters{WeightedClusters: twc}}
}

func (t *translator) metaRouteAction(rt *router, port uint32, r *mpv1.MetaRoute) clusterAction {
	cluster, wc := t.clusters(rt, port, r)
	return clusterAction{cluster: cluster, weighted: wc}
}

// vsRoutes renders the http routes of a VirtualService for a native port: one route per match
// (a VirtualService route matches when any of its matches holds), or one matching everything.
// build returns the route, or an error leaving that match out (reported on the
// VirtualService). There is no route after them, as in Aeraki: a request none matches gets
// "no route".
func vsRoutes[R any](t *translator, svc *service, port uint32, vs *VirtualService,
	build func(m *HTTPMatchRequest, action clusterAction) (R, error)) []R {
	var out []R
	for i := range vs.Spec.HTTP {
		h := &vs.Spec.HTTP[i]
		action, err := t.vsAction(svc, port, vs, h)
		if err != nil {
			t.problem("VirtualService", vs.Namespace, vs.Name, SeverityWarning, "http[%d] (%s): %v; route left out for host %s port %d",
				i, h.Name, err, svc.host, port)
			continue
		}
		matches := []*HTTPMatchRequest{nil}
		if len(h.Match) > 0 {
			matches = nil
			for j := range h.Match {
				matches = append(matches, &h.Match[j])
			}
		}
		for j, m := range matches {
			r, err := build(m, action)
			if err != nil {
				t.problem("VirtualService", vs.Namespace, vs.Name, SeverityWarning, "http[%d] (%s) match[%d]: %v; left out for host %s port %d",
					i, h.Name, j, err, svc.host, port)
				continue
			}
			out = append(out, r)
		}
	}
	return out
}

// vsAction resolves the destinations of a VirtualService route: hosts as in Istio (a short
// name is a Service of the VirtualService's namespace), the port defaulting to the port the
// request came in on, several destinations weighted.
func (t *translator) vsAction(svc *service, port uint32, vs *VirtualService, h *HTTPRoute) (clusterAction, error) {
	if len(h.Route) == 0 {
		return clusterAction{}, fmt.Errorf("no destination (redirects and direct responses are not supported by Envoy's Dubbo and Thrift proxies)")
	}
	cluster := func(d *VSDestination) string {
		p := port
		if d.Port != nil && d.Port.Number != 0 {
			p = d.Port.Number
		}
		host := d.Host
		if host == "" {
			host = svc.host
		}
		return ClusterName(p, d.Subset, t.fqdn(host, vs.Namespace))
	}
	if len(h.Route) == 1 {
		return clusterAction{cluster: cluster(&h.Route[0].Destination)}, nil
	}
	wc := &routev3.WeightedCluster{}
	var sum int64
	for j := range h.Route {
		w := h.Route[j].Weight
		if w < 0 {
			return clusterAction{}, fmt.Errorf("route[%d]: negative weight %d", j, w)
		}
		sum += int64(w)
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: cluster(&h.Route[j].Destination), Weight: wrapperspb.UInt32(uint32(w))})
	}
	if sum == 0 {
		return clusterAction{}, fmt.Errorf("several destinations without a positive weight")
	}
	return clusterAction{weighted: wc}, nil
}

// fqdn completes a short host name with the namespace, as Istio does.
func (t *translator) fqdn(host, namespace string) string {
	if strings.Contains(host, ".") || host == "" {
		return host
	}
	return fmt.Sprintf("%s.%s.svc.%s", host, namespace, t.opts.ClusterDomain)
}
