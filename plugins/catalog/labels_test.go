package catalog

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation"
)

var nameSyntaxCases = []string{
	"", "a", "A", "0", "-", "_", ".", "a-", "-a", "a.b", "a_b", "a-b", "a b", "a/b", "/a", "a/", "a//b",
	"example.com/a", "Example.com/a", "ex_ample.com/a", "-example.com/a", "example-.com/a", "a.b.c/d-e",
	"a..b/c", ".a/b", "a./b", "a/b/c", "app.kubernetes.io/name", "1.0.0", "fastjson2,hessian2", "ServiceBean:com.example.Svc",
	strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 253) + "/a", strings.Repeat("a", 254) + "/a",
	strings.Repeat("a.", 126) + "a/b", strings.Repeat("a", 253), strings.Repeat("a", 254),
	"ä", "a\x00b", "a\nb", "a\xffb",
}

// checkNameSyntax fails unless the fast checks decide s as apimachinery's validators do.
func checkNameSyntax(t *testing.T, s string) {
	if want := len(validation.IsQualifiedName(s)) == 0; IsLabelKey(s) != want {
		t.Errorf("IsLabelKey(%q) = %v, apimachinery says %v", s, !want, want)
	}
	if want := len(validation.IsValidLabelValue(s)) == 0; IsLabelValue(s) != want {
		t.Errorf("IsLabelValue(%q) = %v, apimachinery says %v", s, !want, want)
	}
	if want := len(validation.IsDNS1123Subdomain(s)) == 0; isDNSSubdomain(s) != want {
		t.Errorf("isDNSSubdomain(%q) = %v, apimachinery says %v", s, !want, want)
	}
}

func TestNameSyntaxMatchesKubernetes(t *testing.T) {
	for _, s := range nameSyntaxCases {
		checkNameSyntax(t, s)
	}
	// Short strings over the characters that matter find boundary cases the table misses.
	const alphabet = "aZ09-_./:é "
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, rnd.IntN(12))
		for i := range b {
			b[i] = alphabet[rnd.IntN(len(alphabet))]
		}
		checkNameSyntax(t, string(b))
	}
}

func FuzzNameSyntax(f *testing.F) {
	for _, s := range nameSyntaxCases {
		f.Add(s)
	}
	f.Fuzz(checkNameSyntax)
}

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"longer text", 6, "longer…"},
		{"añb", 2, "a…"}, // never inside a rune
		{"a\xffb", 10, "a\uFFFDb"},
		{"", 0, ""},
		{"abc", 0, "…"},
	} {
		got := Clip(tc.in, tc.n)
		if got != tc.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
		if !utf8.ValidString(got) {
			t.Errorf("Clip(%q, %d) = %q is not valid UTF-8", tc.in, tc.n, got)
		}
	}
}
