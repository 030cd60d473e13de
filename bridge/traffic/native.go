package traffic

import (
	"fmt"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	thriftv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/thrift_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meltemi-mesh/meltemi/api/istio"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/api/portname"
)

// Attributes with a meaning of their own in native Dubbo and Thrift routes; every other
// attribute is matched as a header (Dubbo attachment, Thrift header).
const (
	attrInterface = "interface"
	attrMethod    = "method"
)

// nativeFilter adds the outbound EnvoyFilter of a tcp-dubbo-… or tcp-thrift-… port: Envoy's own
// proxy filter with the routes inline (these filters have no RDS), so any Envoy sidecar can
// take it and no proxy selector is needed.
func (t *translator) nativeFilter(svc *service, port istio.ServicePort, kind portname.Kind, rt *router) error {
	var name string
	var cfg interface {
		proto.Message
		ValidateAll() error
	}
	statPrefix := ClusterName(port.Number, "", svc.host)
	if kind == portname.Dubbo {
		name = DubboProxyFilterName
		cfg = &dubbov3.DubboProxy{
			StatPrefix:        statPrefix,
			ProtocolType:      dubbov3.ProtocolType_Dubbo,
			SerializationType: dubbov3.SerializationType_Hessian2,
			RouteSpecifier: &dubbov3.DubboProxy_MultipleRouteConfig{MultipleRouteConfig: &dubbov3.MultipleRouteConfiguration{
				Name: RouteConfigName(svc.host, port.Number), RouteConfig: t.dubboRoutes(svc, port.Number, rt),
			}},
		}
	} else {
		name = ThriftProxyFilterName
		cfg = &thriftv3.ThriftProxy{
			StatPrefix:  statPrefix,
			Transport:   thriftv3.TransportType_AUTO_TRANSPORT,
			Protocol:    thriftv3.ProtocolType_AUTO_PROTOCOL,
			RouteConfig: t.thriftRoutes(svc, port.Number, rt),
		}
	}
	if rt != nil {
		unsupportedNative(rt, svc.host, kind)
	}
	if err := cfg.ValidateAll(); err != nil {
		return fmt.Errorf("generated %s config is invalid: %w", name, err)
	}
	value, err := filterValue(name, cfg)
	if err != nil {
		return err
	}
	var patches []configPatch
	for _, l := range t.outboundListeners(svc, port.Number, rt) {
		patches = append(patches, replaceTCPProxy("SIDECAR_OUTBOUND", l, 0, value))
	}
	return t.addEnvoyFilter(svc.host, port.Number, "outbound", nil, patches)
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

// dubboRoutes renders a MetaRouter as Dubbo route configurations. Dubbo matches the interface
// per route configuration, so consecutive routes on the same interface share one, in order
// (Envoy tries the configurations in order, as it tries routes); "*" matches every interface.
func (t *translator) dubboRoutes(svc *service, port uint32, rt *router) []*dubbov3.RouteConfiguration {
	var configs []*dubbov3.RouteConfiguration
	appendRoute := func(iface string, r *dubbov3.Route) {
		if n := len(configs); n > 0 && configs[n-1].Interface == iface {
			configs[n-1].Routes = append(configs[n-1].Routes, r)
			return
		}
		configs = append(configs, &dubbov3.RouteConfiguration{
			Name: fmt.Sprintf("%s-%d", RouteConfigName(svc.host, port), len(configs)), Interface: iface, Routes: []*dubbov3.Route{r},
		})
	}
	anyMethod := &dubbov3.MethodMatch{Name: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
		SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}}
	if rt != nil {
		for i := range rt.mr.Spec.Routes {
			r := &rt.mr.Spec.Routes[i]
			iface, method, headers := splitAttributes(r.Match)
			ifaceName := "*"
			if iface != nil {
				if iface.Exact == "" {
					rt.res.warn("host %s route %s: Envoy's dubbo_proxy matches the interface exactly; route left out there", svc.host, routeName(r, i))
					continue
				}
				ifaceName = iface.Exact
			}
			mm := anyMethod
			if method != nil {
				mm = &dubbov3.MethodMatch{Name: headerMatcher(attrMethod, *method).GetStringMatch()}
				if mm.Name == nil { // presence only: every request has a method
					mm = anyMethod
				}
			}
			action := &dubbov3.RouteAction{}
			if cluster, wc := t.clusters(rt, port, r); wc == nil {
				action.ClusterSpecifier = &dubbov3.RouteAction_Cluster{Cluster: cluster}
			} else {
				action.ClusterSpecifier = &dubbov3.RouteAction_WeightedClusters{WeightedClusters: wc}
			}
			appendRoute(ifaceName, &dubbov3.Route{Match: &dubbov3.RouteMatch{Method: mm, Headers: headers}, Route: action})
		}
	}
	appendRoute("*", &dubbov3.Route{
		Match: &dubbov3.RouteMatch{Method: anyMethod},
		Route: &dubbov3.RouteAction{ClusterSpecifier: &dubbov3.RouteAction_Cluster{Cluster: ClusterName(port, "", svc.host)}},
	})
	return configs
}

// thriftRoutes renders a MetaRouter as a Thrift route configuration. Thrift matches the method
// name exactly (an empty name matches every method).
func (t *translator) thriftRoutes(svc *service, port uint32, rt *router) *thriftv3.RouteConfiguration {
	rc := &thriftv3.RouteConfiguration{Name: RouteConfigName(svc.host, port)}
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
			action := &thriftv3.RouteAction{}
			if cluster, wc := t.clusters(rt, port, r); wc == nil {
				action.ClusterSpecifier = &thriftv3.RouteAction_Cluster{Cluster: cluster}
			} else {
				// Thrift has a weighted cluster type of its own, with the same fields.
				twc := &thriftv3.WeightedCluster{}
				for _, c := range wc.GetClusters() {
					twc.Clusters = append(twc.Clusters, &thriftv3.WeightedCluster_ClusterWeight{Name: c.GetName(), Weight: c.GetWeight()})
				}
				action.ClusterSpecifier = &thriftv3.RouteAction_WeightedClusters{WeightedClusters: twc}
			}
			if r.Mirror != nil {
				action.RequestMirrorPolicies = []*thriftv3.RouteAction_RequestMirrorPolicy{{
					Cluster: t.cluster(rt, port, r.Mirror), RuntimeFraction: mirrorFraction(r),
				}}
			}
			rc.Routes = append(rc.Routes, &thriftv3.Route{
				Match: &thriftv3.RouteMatch{MatchSpecifier: &thriftv3.RouteMatch_MethodName{MethodName: methodName}, Headers: headers},
				Route: action,
			})
		}
	}
	rc.Routes = append(rc.Routes, &thriftv3.Route{
		Match: &thriftv3.RouteMatch{MatchSpecifier: &thriftv3.RouteMatch_MethodName{MethodName: ""}},
		Route: &thriftv3.RouteAction{ClusterSpecifier: &thriftv3.RouteAction_Cluster{Cluster: ClusterName(port, "", svc.host)}},
	})
	return rc
}
