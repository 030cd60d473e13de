// Package v1alpha1 is the dubbo.aeraki.io/v1alpha1 API: access control for native Dubbo
// services (DubboAuthorizationPolicy). Group, kind and JSON field names are Aeraki's, so YAML
// written for Aeraki keeps working.
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and version of the API.
const (
	Group   = "dubbo.aeraki.io"
	Version = "v1alpha1"
)

// Kinds and resources served.
var (
	DubboAuthorizationPolicyKind     = schema.GroupVersionKind{Group: Group, Version: Version, Kind: "DubboAuthorizationPolicy"}
	DubboAuthorizationPolicyResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "dubboauthorizationpolicies"}
)

// DubboAuthorizationPolicy allows or denies Dubbo calls to the services of its namespace by
// caller identity (principal, namespace) and operation (interface, method). It applies on the
// server side: the inbound Dubbo filter of the namespace's ServiceEntries with workloads.
type DubboAuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              DubboAuthorizationPolicySpec `json:"spec"`
}

// DubboAuthorizationPolicyList is a list of DubboAuthorizationPolicies.
type DubboAuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DubboAuthorizationPolicy `json:"items"`
}

// Actions of a policy.
const (
	ActionAllow = "ALLOW"
	ActionDeny  = "DENY"
)

// DubboAuthorizationPolicySpec is a policy's spec. With Action ALLOW (the default), a request
// is allowed when a rule of an ALLOW policy matches it and no DENY policy's rule does; with
// ALLOW policies present, every other request is denied.
type DubboAuthorizationPolicySpec struct {
	Rules  []Rule `json:"rules,omitempty"`
	Action string `json:"action,omitempty"`
}

// Rule matches requests from any of From and to any of To (each list empty: any).
type Rule struct {
	From []RuleFrom `json:"from,omitempty"`
	To   []RuleTo   `json:"to,omitempty"`
}

// RuleFrom holds a source.
type RuleFrom struct {
	Source *Source `json:"source,omitempty"`
}

// RuleTo holds an operation.
type RuleTo struct {
	Operation *Operation `json:"operation,omitempty"`
}

// Source matches callers: every set field must hold. Values may start or end with "*".
type Source struct {
	// Principals are workload identities, e.g. cluster.local/ns/shop/sa/orders.
	Principals    []string `json:"principals,omitempty"`
	NotPrincipals []string `json:"notPrincipals,omitempty"`
	Namespaces    []string `json:"namespaces,omitempty"`
	NotNamespaces []string `json:"notNamespaces,omitempty"`
}

// Operation matches calls: every set field must hold. Values may start or end with "*".
type Operation struct {
	Interfaces    []string `json:"interfaces,omitempty"`
	NotInterfaces []string `json:"notInterfaces,omitempty"`
	Methods       []string `json:"methods,omitempty"`
	NotMethods    []string `json:"notMethods,omitempty"`
}
