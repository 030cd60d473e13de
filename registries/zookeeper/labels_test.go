package zookeeper

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

var labelSyntaxCases = []string{
	"", "a", "A", "0", "-", "_", ".", "a-", "-a", "a.b", "a_b", "a-b", "a b", "a/b", "/a", "a/", "a//b",
	"example.com/a", "Example.com/a", "ex_ample.com/a", "-example.com/a", "example-.com/a", "a.b.c/d-e",
	"a/b/c", "app.kubernetes.io/name", "1.0.0", "fastjson2,hessian2", "ServiceBean:com.example.Svc",
	strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 253) + "/a", strings.Repeat("a.", 126) + "a/b",
	"ä", "a\x00b", "a\nb",
}

// TestLabelSyntaxMatchesKubernetes compares the fast checks with apimachinery's.
func TestLabelSyntaxMatchesKubernetes(t *testing.T) {
	for _, s := range labelSyntaxCases {
		checkLabelSyntax(t, s)
	}
}

func FuzzLabelSyntax(f *testing.F) {
	for _, s := range labelSyntaxCases {
		f.Add(s)
	}
	f.Fuzz(checkLabelSyntax)
}

func checkLabelSyntax(t *testing.T, s string) {
	if want := len(validation.IsQualifiedName(s)) == 0; isLabelKey(s) != want {
		t.Errorf("isLabelKey(%q) = %v, apimachinery says %v", s, !want, want)
	}
	if want := len(validation.IsValidLabelValue(s)) == 0; isLabelValue(s) != want {
		t.Errorf("isLabelValue(%q) = %v, apimachinery says %v", s, !want, want)
	}
}
