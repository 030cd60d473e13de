package host

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation"
)

// invalidLabels returns the labels that cannot be Kubernetes labels, with the reason. The
// common case (every label fine) is decided by a scan without regular expressions: this runs
// for every instance of every upsert.
func invalidLabels(labels map[string]string) map[string]string {
	var bad map[string]string
	for k, v := range labels {
		if isLabelKey(k) && isLabelValue(v) {
			continue
		}
		var reasons []string
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			reasons = append(reasons, "key: "+strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			reasons = append(reasons, fmt.Sprintf("value of %d bytes: %s", len(v), strings.Join(errs, "; ")))
		}
		if len(reasons) == 0 {
			continue // the fast check is stricter than Kubernetes somewhere; Kubernetes decides
		}
		if bad == nil {
			bad = map[string]string{}
		}
		bad[k] = strings.Join(reasons, "; ")
	}
	return bad
}

// isLabelValue is Kubernetes' label value rule: at most 63 characters, alphanumeric at both
// ends, '-', '_' and '.' inside; empty is allowed.
func isLabelValue(v string) bool {
	return v == "" || isLabelName(v)
}

// isLabelKey is Kubernetes' qualified name rule: [prefix/]name, the prefix a lower-case DNS
// subdomain of at most 253 characters.
func isLabelKey(k string) bool {
	prefix, name, found := strings.Cut(k, "/")
	if !found {
		return isLabelName(k)
	}
	return isLabelName(name) && isDNSSubdomain(prefix)
}

func isLabelName(s string) bool {
	if s == "" || len(s) > validation.LabelValueMaxLength || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func isDNSSubdomain(s string) bool {
	if s == "" || len(s) > validation.DNS1123SubdomainMaxLength {
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

func isAlnum(c byte) bool { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// clip shortens untrusted text for an item name or message, on a rune boundary.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
