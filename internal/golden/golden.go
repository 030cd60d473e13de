// Package golden compares test output with golden files kept next to the tests.
//
// When a change to the output is intended, regenerate the files and review the difference:
//
//	go test ./serviceentries/convert/ -run TestServiceEntryGolden -update
//	git diff -- serviceentries/convert/testdata
//
// Import it only from tests: it registers the -update flag on the test binary's command line.
package golden

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files with the tests' output instead of comparing")

// Check compares got with the contents of the golden file at path, byte for byte, and fails
// the test with a line diff when they differ. With -update it writes got to path instead
// (creating its directory) and passes.
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("golden file %s: %v", path, err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatalf("golden file %s: %v", path, err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file %s: %v (go test -update creates it)", path, err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("output differs from golden file %s (-want +got; go test -update rewrites it after checking the change):\n%s",
			path, diff(want, got))
	}
}

// diff renders the lines that differ between want and got, "-" for want's and "+" for got's,
// after the number of the first line that differs.
func diff(want, got []byte) string {
	w, g := lines(want), lines(got)
	// The common prefix and suffix are left out; the rest is aligned by a longest common
	// subsequence, which is fine for golden files of a few thousand lines.
	pre := 0
	for pre < len(w) && pre < len(g) && w[pre] == g[pre] {
		pre++
	}
	suf := 0
	for suf < len(w)-pre && suf < len(g)-pre && w[len(w)-1-suf] == g[len(g)-1-suf] {
		suf++
	}
	w, g = w[pre:len(w)-suf], g[pre:len(g)-suf]
	lcs := make([][]int, len(w)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(g)+1)
	}
	for i := len(w) - 1; i >= 0; i-- {
		for j := len(g) - 1; j >= 0; j-- {
			if w[i] == g[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "@@ line %d\n", pre+1)
	i, j := 0, 0
	for i < len(w) || j < len(g) {
		switch {
		case i < len(w) && j < len(g) && w[i] == g[j]:
			fmt.Fprintf(&b, " %s\n", show(w[i]))
			i, j = i+1, j+1
		case j == len(g) || i < len(w) && lcs[i+1][j] >= lcs[i][j+1]:
			fmt.Fprintf(&b, "-%s\n", show(w[i]))
			i++
		default:
			fmt.Fprintf(&b, "+%s\n", show(g[j]))
			j++
		}
	}
	return b.String()
}

// lines splits text after each newline; a last line without one stays as it is.
func lines(b []byte) []string {
	l := strings.SplitAfter(string(b), "\n")
	if l[len(l)-1] == "" {
		l = l[:len(l)-1]
	}
	return l
}

// show renders a line without its newline, and says so when it has none.
func show(line string) string {
	if s, ok := strings.CutSuffix(line, "\n"); ok {
		return s
	}
	return line + " (no newline at the end)"
}
