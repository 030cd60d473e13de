package traffic

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/traffic/internal/wellknown"
)

// ValidateRouter checks a MetaRouter on its own (without looking at other objects). The CRD's
// schema catches most of this, but rules also come from files and from objects stored before
// the schema tightened; a MetaRouter with any of these errors is not applied at all.
func ValidateRouter(mr *mpv1.MetaRouter) []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	s := &mr.Spec
	if len(s.Hosts) == 0 {
		add("spec.hosts: at least one host is required")
	}
	for i, h := range s.Hosts {
		if msg := checkHost(h); msg != "" {
			add("spec.hosts[%d]: %s", i, msg)
		}
	}
	seen := map[string]int{}
	for i := range s.Routes {
		r := &s.Routes[i]
		at := routePath(i, r.Name)
		if r.Name != "" {
			if j, dup := seen[r.Name]; dup {
				add("%s: duplicate route name (also spec.routes[%d])", at, j)
			} else {
				seen[r.Name] = i
			}
		}
		errs = append(errs, checkMatch(at+".match", r.Match)...)
		switch len(r.Route) {
		case 0:
			add("%s.route: at least one destination is required", at)
		case 1:
		default:
			// Weights split the traffic in proportion, whatever their sum, as in Aeraki.
			var sum uint64
			for _, d := range r.Route {
				sum += uint64(d.Weight)
			}
			if sum == 0 {
				add("%s.route: several destinations need a positive weight among them", at)
			}
		}
		for j := range r.Route {
			if msg := checkDestination(&r.Route[j].Destination); msg != "" {
				add("%s.route[%d].destination: %s", at, j, msg)
			}
		}
		if r.Mirror != nil {
			if msg := checkDestination(r.Mirror); msg != "" {
				add("%s.mirror: %s", at, msg)
			}
		}
		if p := r.MirrorPercentage; p != nil {
			if r.Mirror == nil {
				add("%s.mirrorPercentage: set without mirror", at)
			}
			if p.Value < 0 || p.Value > 100 {
				add("%s.mirrorPercentage: %v is not within 0-100", at, p.Value)
			}
		}
		for j, kv := range slices.Concat(r.RequestMutation, r.ResponseMutation) {
			if kv.Key == "" {
				add("%s: mutation %d has an empty key", at, j)
			}
		}
		for j, h := range r.HashPolicy {
			if h == "" {
				add("%s.hashPolicy[%d]: empty attribute name", at, j)
			}
		}
	}
	if l := s.LocalRateLimit; l != nil {
		if l.TokenBucket == nil && len(l.Conditions) == 0 {
			add("spec.localRateLimit: set tokenBucket or at least one condition")
		}
		if l.TokenBucket != nil {
			errs = append(errs, checkBucket("spec.localRateLimit.tokenBucket", l.TokenBucket)...)
		}
		for i := range l.Conditions {
			at := fmt.Sprintf("spec.localRateLimit.conditions[%d]", i)
			errs = append(errs, checkMatch(at+".match", l.Conditions[i].Match)...)
			errs = append(errs, checkBucket(at+".tokenBucket", &l.Conditions[i].TokenBucket)...)
		}
	}
	if g := s.GlobalRateLimit; g != nil {
		errs = append(errs, checkMatch("spec.globalRateLimit.match", g.Match)...)
		if g.Domain == "" {
			add("spec.globalRateLimit.domain: required")
		}
		if g.RateLimitService == "" {
			add("spec.globalRateLimit.rateLimitService: required")
		}
		if len(g.Descriptors) == 0 {
			add("spec.globalRateLimit.descriptors: at least one descriptor is required")
		}
		for i, d := range g.Descriptors {
			if d.Property == "" || d.DescriptorKey == "" {
				add("spec.globalRateLimit.descriptors[%d]: property and descriptorKey are required", i)
			}
		}
		if g.RequestTimeout != nil && g.RequestTimeout.Duration < 0 {
			add("spec.globalRateLimit.requestTimeout: negative")
		}
	}
	for i, ns := range s.ExportTo {
		if ns != "." && ns != "*" && len(validation.IsDNS1123Label(ns)) > 0 {
			add("spec.exportTo[%d]: %q is neither \".\", \"*\" nor a namespace name", i, ns)
		}
	}
	return errs
}

func routePath(i int, name string) string {
	if name == "" {
		return fmt.Sprintf("spec.routes[%d]", i)
	}
	return fmt.Sprintf("spec.routes[%d] (%s)", i, name)
}

func checkHost(h string) string {
	switch {
	case h == "":
		return "empty host"
	case strings.Contains(h, "*"):
		return fmt.Sprintf("wildcard host %q is not supported: name one service", h)
	case len(validation.IsDNS1123Subdomain(h)) > 0:
		return fmt.Sprintf("%q is not a valid lower-case DNS name", h)
	}
	return ""
}

func checkDestination(d *mpv1.Destination) string {
	if msg := checkHost(d.Host); msg != "" {
		return "host: " + msg
	}
	if d.Port != nil && d.Port.Number > 65535 {
		return fmt.Sprintf("port %d is over 65535", d.Port.Number)
	}
	return ""
}

func checkMatch(at string, m *mpv1.MetaRouteMatch) []string {
	if m == nil {
		return nil
	}
	var errs []string
	for _, name := range sortedKeys(m.Attributes) {
		sm := m.Attributes[name]
		if name == "" {
			errs = append(errs, at+".attributes: empty attribute name")
		}
		set := 0
		for _, v := range []string{sm.Exact, sm.Prefix, sm.Regex} {
			if v != "" {
				set++
			}
		}
		if set > 1 {
			errs = append(errs, fmt.Sprintf("%s.attributes[%s]: at most one of exact, prefix and regex may be set", at, name))
		}
		if sm.Regex != "" && sm.Regex != "*" {
			if _, err := regexp.Compile(sm.Regex); err != nil {
				errs = append(errs, fmt.Sprintf("%s.attributes[%s].regex: %v", at, name, err))
			}
		}
	}
	return errs
}

func checkBucket(at string, b *mpv1.TokenBucket) []string {
	var errs []string
	if b.MaxTokens == 0 {
		errs = append(errs, at+".maxTokens: must be at least 1")
	}
	if b.TokensPerFill != nil && *b.TokensPerFill == 0 {
		errs = append(errs, at+".tokensPerFill: must be at least 1")
	}
	switch {
	case b.FillInterval == nil || b.FillInterval.Duration <= 0:
		errs = append(errs, at+".fillInterval: a positive duration is required")
	case b.FillInterval.Duration < wellknown.MinFillInterval:
		errs = append(errs, fmt.Sprintf("%s.fillInterval: %s is shorter than %s, which the MetaProtocol proxy refuses (with the whole listener)",
			at, b.FillInterval.Duration, wellknown.MinFillInterval))
	}
	return errs
}

// olderFirst orders objects by creation time, then namespace and name: when two objects claim
// the same thing, the older one keeps it, as in Istio.
func olderFirst(a, b *metav1.ObjectMeta) int {
	if c := a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}
