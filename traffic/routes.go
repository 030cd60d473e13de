package traffic

import (
	"fmt"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meltemi-mesh/meltemi/api/istio"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
)

// defaultRouteName names the route to the host itself, the whole table of a port no MetaRouter
// routes.
const defaultRouteName = "default"

// refuseRouteName names the route of a table that refuses every request. The proxy asserts on
// an empty table, so where the rules leave none, this one stands in: its match needs an
// attribute no client sends and its cluster does not exist, so requests get "no route".
const (
	refuseRouteName = "meltemi-refuse"
	refuseAttribute = "x-meltemi-refuse-all"
	// RefuseCluster is the cluster of the refusing route; it never exists.
	RefuseCluster = "meltemi-refused"
)

// routeConfig builds the RDS route configuration of a MetaProtocol port: exactly one virtual
// host. With a MetaRouter that has routes, those routes only — a request none matches is
// refused, as in Aeraki; otherwise the default route to the host itself. A table that would be
// empty gets the refusing route instead (the MetaProtocol proxy asserts on an empty one).
func (t *translator) routeConfig(svc *service, port istio.ServicePort, rt *router) *routev3.RouteConfiguration {
	name := RouteConfigName(svc.host, port.Number)
	var routes []*routev3.Route
	if rt != nil && len(rt.mr.Spec.Routes) > 0 {
		for i := range rt.mr.Spec.Routes {
			routes = append(routes, t.route(svc, port.Number, rt, i))
		}
	} else {
		routes = append(routes, t.defaultRoute(svc.host, port.Number))
	}
	rc := &routev3.RouteConfiguration{
		Name:         name,
		VirtualHosts: []*routev3.VirtualHost{{Name: name, Domains: []string{"*"}, Routes: routes}},
	}
	if err := rc.ValidateAll(); err != nil && rt != nil {
		// ValidateRouter should have caught whatever causes this; never serve it.
		rt.res.warn("port %d of %s: generated routes are invalid (%v); refusing requests", port.Number, svc.host, err)
		rc.VirtualHosts[0].Routes = nil
	}
	if len(rc.VirtualHosts[0].Routes) == 0 {
		rc.VirtualHosts[0].Routes = []*routev3.Route{refuseRoute()}
	}
	return rc
}

func refuseRoute() *routev3.Route {
	return &routev3.Route{
		Name: refuseRouteName,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{{
			Name: refuseAttribute, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true},
		}}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: RefuseCluster}}},
	}
}

func (t *translator) defaultRoute(host string, port uint32) *routev3.Route {
	action := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ClusterName(port, "", host)}}
	if s := t.subsets[host]; s != nil && s.hashHeader != "" {
		action.HashPolicy = hashPolicies([]string{s.hashHeader})
	}
	return &routev3.Route{
		Name:   defaultRouteName,
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: action},
	}
}

// routeName is the name of the i-th route of a MetaRouter in route tables.
func routeName(r *mpv1.MetaRoute, i int) string {
	if r.Name != "" {
		return r.Name
	}
	return fmt.Sprintf("route-%d", i)
}

func (t *translator) route(svc *service, port uint32, rt *router, i int) *routev3.Route {
	r := &rt.mr.Spec.Routes[i]
	action := &routev3.RouteAction{}
	if cluster, wc := t.clusters(rt, port, r); wc == nil {
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: cluster}
	} else {
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	hashes := r.HashPolicy
	if len(hashes) == 0 {
		for j := range r.Route {
			hashes = t.appendHash(hashes, &r.Route[j].Destination)
		}
	}
	action.HashPolicy = hashPolicies(hashes)
	if r.Mirror != nil {
		action.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{
			Cluster: t.cluster(rt, port, r.Mirror), RuntimeFraction: mirrorFraction(r),
		}}
	}
	return &routev3.Route{
		Name:                 routeName(r, i),
		Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: headerMatchers(r.Match)},
		Action:               &routev3.Route_Route{Route: action},
		RequestHeadersToAdd:  headersToAdd(r.RequestMutation),
		ResponseHeadersToAdd: headersToAdd(r.ResponseMutation),
	}
}

// clusters resolves the destinations of a route: one cluster, or weighted clusters when the
// route splits its traffic.
func (t *translator) clusters(rt *router, port uint32, r *mpv1.MetaRoute) (string, *routev3.WeightedCluster) {
	if len(r.Route) == 1 {
		return t.cluster(rt, port, &r.Route[0].Destination), nil
	}
	wc := &routev3.WeightedCluster{}
	for j := range r.Route {
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
			Name: t.cluster(rt, port, &r.Route[j].Destination), Weight: wrapperspb.UInt32(r.Route[j].Weight),
		})
	}
	return "", wc
}

// cluster names the outbound cluster of a destination (its port defaulting to the port the
// request came in on) and warns about references to what does not exist. Such a route is still
// served, as Istio serves a VirtualService naming a missing subset: requests to it fail until
// the subset appears, instead of silently going elsewhere.
func (t *translator) cluster(rt *router, port uint32, d *mpv1.Destination) string {
	if d.Port != nil && d.Port.Number != 0 {
		port = d.Port.Number
	}
	name := ClusterName(port, d.Subset, d.Host)
	unresolved := true
	if svc, ok := t.services[d.Host]; !ok {
		rt.res.warn("destination host %s: no ServiceEntry defines it", d.Host)
	} else if !slices.ContainsFunc(svc.se.Spec.Ports, func(p istio.ServicePort) bool { return p.Number == port }) {
		rt.res.warn("destination %s: the host has no port %d", d.Host, port)
	} else {
		unresolved = false
	}
	if d.Subset != "" {
		if s := t.subsets[d.Host]; s == nil {
			rt.res.warn("destination %s subset %s: no DestinationRule defines subsets of the host", d.Host, d.Subset)
			unresolved = true
		} else if _, ok := s.byName[d.Subset]; !ok {
			rt.res.warn("destination %s subset %s: unknown subset (DestinationRules define %v)", d.Host, d.Subset, sortedKeys(s.byName))
			unresolved = true
		}
	}
	if unresolved && !slices.Contains(rt.res.Unresolved, name) {
		rt.res.Unresolved = append(rt.res.Unresolved, name)
	}
	return name
}

// appendHash adds the consistent-hash header a DestinationRule sets for a destination (its
// subset's, else the rule's), once.
func (t *translator) appendHash(hashes []string, d *mpv1.Destination) []string {
	s := t.subsets[d.Host]
	if s == nil {
		return hashes
	}
	h := s.hashHeader
	if sh := s.byName[d.Subset]; sh != "" {
		h = sh
	}
	if h == "" || slices.Contains(hashes, h) {
		return hashes
	}
	return append(hashes, h)
}

// mirrorFraction is the share of requests a route mirrors (all without mirrorPercentage).
func mirrorFraction(r *mpv1.MetaRoute) *corev3.RuntimeFractionalPercent {
	pct := 100.0
	if r.MirrorPercentage != nil {
		pct = r.MirrorPercentage.Value
	}
	return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
		Numerator: uint32(pct*10000 + 0.5), Denominator: typev3.FractionalPercent_MILLION,
	}}
}

func hashPolicies(headers []string) []*routev3.RouteAction_HashPolicy {
	var out []*routev3.RouteAction_HashPolicy
	for _, h := range headers {
		out = append(out, &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h},
		}})
	}
	return out
}

func headersToAdd(kvs []mpv1.KeyValue) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, kv := range kvs {
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: kv.Key, Value: kv.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return out
}

// headerMatchers turns attribute conditions into header matchers, sorted by attribute, which is
// how the MetaProtocol proxy matches request attributes.
func headerMatchers(m *mpv1.MetaRouteMatch) []*routev3.HeaderMatcher {
	if m == nil {
		return nil
	}
	var out []*routev3.HeaderMatcher
	for _, name := range sortedKeys(m.Attributes) {
		out = append(out, headerMatcher(name, m.Attributes[name]))
	}
	return out
}

func headerMatcher(name string, sm mpv1.StringMatch) *routev3.HeaderMatcher {
	hm := &routev3.HeaderMatcher{Name: name}
	var sm3 *matcherv3.StringMatcher
	switch {
	case sm.Exact != "":
		sm3 = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: sm.Exact}}
	case sm.Prefix != "":
		sm3 = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: sm.Prefix}}
	case sm.Regex != "" && sm.Regex != "*":
		sm3 = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: sm.Regex}}}
	}
	if sm3 == nil {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	} else {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm3}
	}
	return hm
}
