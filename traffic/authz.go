package traffic

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	dubbov1 "github.com/meltemi-mesh/meltemi/api/dubbo/v1alpha1"
	"github.com/meltemi-mesh/meltemi/traffic/internal/wellknown"
)

// The Dubbo RBAC filter of the Dubbo proxy: it matches a request's interface and method as
// dynamic metadata of its own name, keys "service" and "method". It exists in Aeraki's proxy
// builds, not in upstream Envoy.
const (
	DubboRBACFilterName  = wellknown.DubboRBACFilter
	dubboRBACStatPrefix  = "dubbo."
	spiffePrefix         = "spiffe://"
	dubboRBACServiceKey  = "service"
	dubboRBACMethodKey   = "method"
	authorizationPolicyK = "DubboAuthorizationPolicy"
)

// loadAuthorizationPolicies validates DubboAuthorizationPolicies and indexes the valid ones by
// namespace, oldest first. An invalid policy is left out entirely and reported: applying part
// of an ALLOW policy would deny more than it says, part of a DENY policy allow more.
func (t *translator) loadAuthorizationPolicies(aps []*dubbov1.DubboAuthorizationPolicy) {
	aps = slices.Clone(aps)
	slices.SortFunc(aps, func(a, b *dubbov1.DubboAuthorizationPolicy) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	for _, ap := range aps {
		if err := checkAuthorizationPolicy(ap); err != nil {
			t.problem(authorizationPolicyK, ap.Namespace, ap.Name, SeverityError, "%v; not applied", err)
			continue
		}
		t.authz[ap.Namespace] = append(t.authz[ap.Namespace], ap)
	}
}

func checkAuthorizationPolicy(ap *dubbov1.DubboAuthorizationPolicy) error {
	switch ap.Spec.Action {
	case "", dubbov1.ActionAllow, dubbov1.ActionDeny:
	default:
		return fmt.Errorf("spec.action %q: want ALLOW or DENY", ap.Spec.Action)
	}
	for i, r := range ap.Spec.Rules {
		for j, f := range r.From {
			if f.Source == nil {
				continue
			}
			for _, v := range slices.Concat(f.Source.Principals, f.Source.NotPrincipals, f.Source.Namespaces, f.Source.NotNamespaces) {
				if v == "" {
					return fmt.Errorf("spec.rules[%d].from[%d]: empty value", i, j)
				}
			}
			for _, ns := range slices.Concat(f.Source.Namespaces, f.Source.NotNamespaces) {
				if _, err := regexp.Compile(namespacePattern(ns)); err != nil {
					return fmt.Errorf("spec.rules[%d].from[%d]: namespace %q: %v", i, j, ns, err)
				}
			}
		}
		for j, to := range r.To {
			if to.Operation == nil {
				continue
			}
			o := to.Operation
			for _, v := range slices.Concat(o.Interfaces, o.NotInterfaces, o.Methods, o.NotMethods) {
				if v == "" {
					return fmt.Errorf("spec.rules[%d].to[%d]: empty value", i, j)
				}
			}
		}
	}
	return nil
}

// usesAuthorization reports whether a namespace has DubboAuthorizationPolicies.
func (t *translator) usesAuthorization(namespace string) bool { return len(t.authz[namespace]) > 0 }

// dubboRBACFilters are the Dubbo RBAC filters of the inbound side of a native Dubbo port, from
// the DubboAuthorizationPolicies of the service's namespace, as Aeraki builds them: one filter
// with the DENY policies, then one with the ALLOW policies.
func (t *translator) dubboRBACFilters(svc *service) ([]*dubbov3.DubboFilter, error) {
	var deny, allow []*dubbov1.DubboAuthorizationPolicy
	for _, ap := range t.authz[svc.se.Namespace] {
		if ap.Spec.Action == dubbov1.ActionDeny {
			deny = append(deny, ap)
		} else {
			allow = append(allow, ap)
		}
	}
	var out []*dubbov3.DubboFilter
	for _, set := range []struct {
		action   rbacv3.RBAC_Action
		policies []*dubbov1.DubboAuthorizationPolicy
	}{{rbacv3.RBAC_DENY, deny}, {rbacv3.RBAC_ALLOW, allow}} {
		if len(set.policies) == 0 {
			continue
		}
		rules := &rbacv3.RBAC{Action: set.action, Policies: map[string]*rbacv3.Policy{}}
		for _, ap := range set.policies {
			for i := range ap.Spec.Rules {
				rules.Policies[fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", ap.Namespace, ap.Name, i)] = rbacPolicy(&ap.Spec.Rules[i])
			}
		}
		cfg := &netrbacv3.RBAC{Rules: rules, StatPrefix: dubboRBACStatPrefix}
		if err := cfg.ValidateAll(); err != nil {
			return nil, fmt.Errorf("the Dubbo RBAC config of namespace %s: %w", svc.se.Namespace, err)
		}
		a, err := anypb.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("encoding Dubbo RBAC config: %w", err)
		}
		out = append(out, &dubbov3.DubboFilter{Name: DubboRBACFilterName, Config: a})
	}
	return out, nil
}

// rbacPolicy is one rule: any of its sources and any of its operations (each: every field set
// in it must hold; none set: any).
func rbacPolicy(r *dubbov1.Rule) *rbacv3.Policy {
	p := &rbacv3.Policy{}
	for _, to := range r.To {
		var and []*rbacv3.Permission
		if o := to.Operation; o != nil {
			and = appendPermission(and, dubboRBACServiceKey, o.Interfaces, false)
			and = appendPermission(and, dubboRBACServiceKey, o.NotInterfaces, true)
			and = appendPermission(and, dubboRBACMethodKey, o.Methods, false)
			and = appendPermission(and, dubboRBACMethodKey, o.NotMethods, true)
		}
		if len(and) == 0 {
			and = append(and, &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}})
		}
		p.Permissions = append(p.Permissions, &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: and}}})
	}
	if len(p.Permissions) == 0 {
		p.Permissions = []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}
	}
	for _, f := range r.From {
		var and []*rbacv3.Principal
		if s := f.Source; s != nil {
			and = appendPrincipal(and, s.Principals, false, principalMatcher)
			and = appendPrincipal(and, s.NotPrincipals, true, principalMatcher)
			and = appendPrincipal(and, s.Namespaces, false, namespaceMatcher)
			and = appendPrincipal(and, s.NotNamespaces, true, namespaceMatcher)
		}
		if len(and) == 0 {
			and = append(and, &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}})
		}
		p.Principals = append(p.Principals, &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: and}}})
	}
	if len(p.Principals) == 0 {
		p.Principals = []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}
	}
	return p
}

// appendPermission adds "the metadata key matches any of values" (or, negated, none of them).
func appendPermission(and []*rbacv3.Permission, key string, values []string, not bool) []*rbacv3.Permission {
	if len(values) == 0 {
		return and
	}
	var or []*rbacv3.Permission
	for _, v := range values {
		// The Dubbo RBAC filter reads metadata, not its newer replacement sourced_metadata.
		//lint:ignore SA1019 the Dubbo RBAC filter predates sourced_metadata
		or = append(or, &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: &matcherv3.MetadataMatcher{
			Filter: DubboRBACFilterName,
			Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: key}}},
			Value:  &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: wildcardMatcher(v, "")}},
		}}})
	}
	p := &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: or}}}
	if not {
		p = &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
	}
	return append(and, p)
}

func appendPrincipal(and []*rbacv3.Principal, values []string, not bool, match func(string) *matcherv3.StringMatcher) []*rbacv3.Principal {
	if len(values) == 0 {
		return and
	}
	var or []*rbacv3.Principal
	for _, v := range values {
		or = append(or, &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
			Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: match(v)}}})
	}
	p := &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: or}}}
	if not {
		p = &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}}
	}
	return append(and, p)
}

// principalMatcher matches a workload identity (trust domain/ns/…/sa/…) as the SPIFFE URI of
// the peer certificate.
func principalMatcher(v string) *matcherv3.StringMatcher { return wildcardMatcher(v, spiffePrefix) }

// namespaceMatcher matches the identities of a namespace ("*" in it matches anything).
func namespaceMatcher(ns string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: namespacePattern(ns)}}}
}

func namespacePattern(ns string) string {
	return ".*/ns/" + strings.ReplaceAll(regexp.QuoteMeta(ns), `\*`, ".*") + "/.*"
}

// wildcardMatcher matches prefix+v, where v may be "*" (anything), start with "*" (a suffix)
// or end with "*" (a prefix), as in Istio's and Aeraki's authorization policies.
func wildcardMatcher(v, prefix string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".+"}}}
	case strings.HasPrefix(v, "*"):
		if prefix == "" {
			return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v[1:]}}
		}
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
			Regex: regexp.QuoteMeta(prefix) + ".*" + regexp.QuoteMeta(v[1:])}}}
	case strings.HasSuffix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix + strings.TrimSuffix(v, "*")}}
	default:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: prefix + v}}
	}
}
