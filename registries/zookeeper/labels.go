package zookeeper

import "strings"

// Kubernetes label syntax, checked without regular expressions: provider URLs carry a dozen
// parameters each and registries hold a hundred thousand providers. These implement exactly
// what k8s.io/apimachinery's IsQualifiedName and IsValidLabelValue accept (labels_test.go
// compares them), which is what model.FilterLabels applies.

// isLabelValue reports whether v is a valid label value: empty, or at most 63 characters of
// [A-Za-z0-9_.-] starting and ending with an alphanumeric.
func isLabelValue(v string) bool {
	return v == "" || isLabelName(v)
}

// isLabelName is a non-empty label value: the name part of a label key.
func isLabelName(s string) bool {
	if s == "" || len(s) > 63 || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// isLabelKey reports whether k is a valid label key: a name, optionally prefixed by a DNS
// subdomain and '/'.
func isLabelKey(k string) bool {
	prefix, name, found := strings.Cut(k, "/")
	if !found {
		return isLabelName(k)
	}
	return isDNSSubdomain(prefix) && isLabelName(name)
}

// isDNSSubdomain: at most 253 characters of dot-separated labels of [a-z0-9-], each starting
// and ending with an alphanumeric.
func isDNSSubdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || !isLowerAlnum(label[0]) || !isLowerAlnum(label[len(label)-1]) {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isLowerAlnum(c) && c != '-' {
				return false
			}
		}
	}
	return true
}

func isAlnum(c byte) bool      { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }
func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
