package traffic

import (
	"fmt"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// Decision is where a route table sends a request.
type Decision struct {
	// Route is the first route whose match holds, and Index its position in the table.
	Route *routev3.Route
	Index int
	// Clusters the request goes to; several when the route splits traffic by weight.
	Clusters []WeightedCluster
	// Mirrors receive a copy of the request.
	Mirrors []WeightedCluster
}

// WeightedCluster is a cluster and its share of requests, in percent.
type WeightedCluster struct {
	Name    string
	Percent float64
}

// Evaluate finds the route a request with the given attributes takes in a route configuration,
// matching attributes as the MetaProtocol proxy does: as request headers, against the header
// matchers of the one virtual host's routes, first match wins.
func Evaluate(rc *routev3.RouteConfiguration, attrs map[string]string) (Decision, error) {
	if len(rc.GetVirtualHosts()) != 1 {
		return Decision{}, fmt.Errorf("route configuration %s has %d virtual hosts, want exactly 1", rc.GetName(), len(rc.GetVirtualHosts()))
	}
	for i, r := range rc.GetVirtualHosts()[0].GetRoutes() {
		ok, err := HeadersMatch(r.GetMatch().GetHeaders(), attrs)
		if err != nil {
			return Decision{}, fmt.Errorf("route %s: %w", r.GetName(), err)
		}
		if !ok {
			continue
		}
		d := Decision{Route: r, Index: i}
		action := r.GetRoute()
		if c := action.GetCluster(); c != "" {
			d.Clusters = []WeightedCluster{{Name: c, Percent: 100}}
		}
		if wc := action.GetWeightedClusters(); wc != nil {
			var total float64
			for _, c := range wc.GetClusters() {
				total += float64(c.GetWeight().GetValue())
			}
			for _, c := range wc.GetClusters() {
				pct := 0.0
				if total > 0 {
					pct = 100 * float64(c.GetWeight().GetValue()) / total
				}
				d.Clusters = append(d.Clusters, WeightedCluster{Name: c.GetName(), Percent: pct})
			}
		}
		for _, m := range action.GetRequestMirrorPolicies() {
			pct := 100.0
			if f := m.GetRuntimeFraction().GetDefaultValue(); f != nil {
				pct = fractionPercent(f)
			}
			d.Mirrors = append(d.Mirrors, WeightedCluster{Name: m.GetCluster(), Percent: pct})
		}
		return d, nil
	}
	return Decision{Index: -1}, nil
}

func fractionPercent(f *typev3.FractionalPercent) float64 {
	switch f.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		return float64(f.GetNumerator()) / 100
	case typev3.FractionalPercent_MILLION:
		return float64(f.GetNumerator()) / 10000
	}
	return float64(f.GetNumerator())
}

// HeadersMatch reports whether attributes satisfy every header matcher, with Envoy's semantics:
// a missing attribute matches only an inverted matcher; regexes must match the whole value.
func HeadersMatch(hms []*routev3.HeaderMatcher, attrs map[string]string) (bool, error) {
	for _, hm := range hms {
		ok, err := headerMatches(hm, attrs)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

func headerMatches(hm *routev3.HeaderMatcher, attrs map[string]string) (bool, error) {
	v, present := attrs[hm.GetName()]
	var ok bool
	switch spec := hm.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		ok = present == spec.PresentMatch
	case *routev3.HeaderMatcher_StringMatch:
		if present || hm.GetTreatMissingHeaderAsEmpty() {
			var err error
			if ok, err = stringMatches(spec.StringMatch, v); err != nil {
				return false, fmt.Errorf("attribute %s: %w", hm.GetName(), err)
			}
		}
	case nil:
		ok = present
	default:
		return false, fmt.Errorf("attribute %s: unsupported matcher %T", hm.GetName(), spec)
	}
	return ok != hm.GetInvertMatch(), nil
}

func stringMatches(sm *matcherv3.StringMatcher, v string) (bool, error) {
	fold := func(s string) string { return s }
	if sm.GetIgnoreCase() {
		fold = strings.ToLower
	}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return fold(v) == fold(p.Exact), nil
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(fold(v), fold(p.Prefix)), nil
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(fold(v), fold(p.Suffix)), nil
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(fold(v), fold(p.Contains)), nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return false, err
		}
		return re.MatchString(v), nil
	}
	return false, fmt.Errorf("unsupported string matcher %T", sm.GetMatchPattern())
}

// DescribeMatch renders header matchers for people, e.g. `method exact "sayHello", x present`.
func DescribeMatch(hms []*routev3.HeaderMatcher) string {
	if len(hms) == 0 {
		return "every request"
	}
	var parts []string
	for _, hm := range hms {
		var d string
		switch spec := hm.GetHeaderMatchSpecifier().(type) {
		case *routev3.HeaderMatcher_PresentMatch:
			d = "present"
			if !spec.PresentMatch {
				d = "absent"
			}
		case *routev3.HeaderMatcher_StringMatch:
			switch p := spec.StringMatch.GetMatchPattern().(type) {
			case *matcherv3.StringMatcher_Exact:
				d = fmt.Sprintf("exact %q", p.Exact)
			case *matcherv3.StringMatcher_Prefix:
				d = fmt.Sprintf("prefix %q", p.Prefix)
			case *matcherv3.StringMatcher_Suffix:
				d = fmt.Sprintf("suffix %q", p.Suffix)
			case *matcherv3.StringMatcher_Contains:
				d = fmt.Sprintf("contains %q", p.Contains)
			case *matcherv3.StringMatcher_SafeRegex:
				d = fmt.Sprintf("regex %q", p.SafeRegex.GetRegex())
			}
		default:
			d = fmt.Sprintf("%T", spec)
		}
		if hm.GetInvertMatch() {
			d = "not " + d
		}
		parts = append(parts, hm.GetName()+" "+d)
	}
	return strings.Join(parts, ", ")
}
