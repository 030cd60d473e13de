package model

import (
	"strings"
	"unicode/utf8"
)

// Kubernetes name syntax, checked without regular expressions: every label of every instance
// of every upsert passes here, and apimachinery's regexp-based validators cost more than the
// rest of the host's receive path together. These accept exactly what apimachinery's
// IsQualifiedName, IsValidLabelValue and IsDNS1123Subdomain accept (labels_test.go compares
// them, also by fuzzing); apimachinery is only asked for its wording when something is wrong.

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
