package catalog

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Kubernetes name syntax, checked without regular expressions: every label of every instance
// of every upsert passes here, and apimachinery's regexp-based validators cost more than the
// rest of the host's receive path together. These accept exactly what apimachinery's
// IsQualifiedName, IsValidLabelValue and IsDNS1123Subdomain accept (labels_test.go compares
// them, also by fuzzing), without linking apimachinery into plugin binaries.

// labelValueMaxLength is Kubernetes' limit for a label value and a key's name part.
const labelValueMaxLength = 63

// IsLabelKey reports whether k is a valid label key: a name, optionally prefixed by a
// lower-case DNS subdomain and '/'.
func IsLabelKey(k string) bool {
	prefix, name, found := strings.Cut(k, "/")
	if !found {
		return isLabelName(k)
	}
	return isLabelName(name) && isDNSSubdomain(prefix)
}

// IsLabelValue reports whether v is a valid label value: empty, or at most 63 characters of
// [A-Za-z0-9_.-] starting and ending with an alphanumeric.
func IsLabelValue(v string) bool {
	return v == "" || isLabelName(v)
}

// isLabelName is a non-empty label value, the name part of a label key.
func isLabelName(s string) bool {
	if s == "" || len(s) > labelValueMaxLength || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// isDNSSubdomain: at most 253 characters of dot-separated labels of [a-z0-9-], each starting
// and ending with an alphanumeric.
func isDNSSubdomain(s string) bool {
	if s == "" || len(s) > maxHostLength {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || !isLowerAlnum(label[0]) || !isLowerAlnum(label[len(label)-1]) {
			return false
		}
		for i := 1; i < len(label)-1; i++ {
			if c := label[i]; !isLowerAlnum(c) && c != '-' {
				return false
			}
		}
	}
	return true
}

func isAlnum(c byte) bool      { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }
func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// Quote renders untrusted text for a message: quoted, at most n bytes, valid UTF-8.
func Quote(s string, n int) string { return strconv.Quote(Clip(s, n)) }

// Clip shortens untrusted registry text for an item name, a reason or a log line: at most n
// bytes, cut on a rune boundary and marked with "…", and valid UTF-8 (what reaches the API
// server as status or events must be).
func Clip(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= n {
		return s
	}
	cut := max(n, 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// keyProblem says why k is not a label key (IsLabelKey is false).
func keyProblem(k string) string {
	prefix, name, found := strings.Cut(k, "/")
	switch {
	case !found:
		return "name part " + nameProblem(k)
	case strings.Contains(name, "/"):
		return "a key holds at most one '/', between an optional DNS prefix and the name"
	case !isDNSSubdomain(prefix):
		return "prefix part " + subdomainProblem(prefix)
	}
	return "name part " + nameProblem(name)
}

// nameProblem says why s is not a label name (a label value or a key's name part).
func nameProblem(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > labelValueMaxLength:
		return fmt.Sprintf("must be no more than %d bytes", labelValueMaxLength)
	}
	return "must consist of letters, digits, '-', '_' or '.', and start and end with a letter or digit"
}

// subdomainProblem says why s is not a lower-case DNS subdomain.
func subdomainProblem(s string) string {
	if len(s) > maxHostLength {
		return fmt.Sprintf("must be no more than %d characters", maxHostLength)
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" {
			return "must not have an empty part between dots"
		}
	}
	return "must be dot-separated parts of lower-case letters, digits and '-', each starting and ending with a letter or digit"
}
