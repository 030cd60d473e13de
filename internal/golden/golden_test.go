package golden

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recordingT records failures instead of failing the test; Fatalf ends its goroutine.
type recordingT struct {
	testing.TB
	failures []string
}

func (r *recordingT) Helper() {}
func (r *recordingT) Errorf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}
func (r *recordingT) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	panic(fatal{})
}

type fatal struct{}

// check runs Check against a recordingT and returns its failures.
func check(t *testing.T, path string, got []byte) (failures []string) {
	r := &recordingT{TB: t}
	defer func() {
		if v := recover(); v != nil && v != (fatal{}) {
			panic(v)
		}
		failures = r.failures
	}()
	Check(r, path, got)
	return nil
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.golden")
	if err := os.WriteFile(path, []byte("a\nb\nc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if f := check(t, path, []byte("a\nb\nc\n")); len(f) != 0 {
		t.Errorf("equal output failed: %q", f)
	}
	f := check(t, path, []byte("a\nB\nc\n"))
	if len(f) != 1 || !strings.Contains(f[0], path) || !strings.HasSuffix(f[0], "\n@@ line 2\n-b\n+B\n") {
		t.Errorf("changed line: failures %q, want a diff naming the file", f)
	}
	// Byte for byte: a missing final newline is a difference.
	if f := check(t, path, []byte("a\nb\nc")); len(f) != 1 || !strings.HasSuffix(f[0], "\n@@ line 3\n-c\n+c (no newline at the end)\n") {
		t.Errorf("missing newline: failures %q", f)
	}
	if f := check(t, filepath.Join(dir, "missing.golden"), nil); len(f) != 1 || !strings.Contains(f[0], "-update creates it") {
		t.Errorf("missing file: failures %q", f)
	}
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct{ want, got, diff string }{
		{"a\nb\nc\nd\n", "a\nx\nc\nd\ne\n", "@@ line 2\n-b\n+x\n c\n d\n+e\n"},
		{"", "new\n", "@@ line 1\n+new\n"},
		{"k: 1\nl: 2\nm: 3\n", "k: 1\nm: 3\n", "@@ line 2\n-l: 2\n"},
	} {
		if got := diff([]byte(tc.want), []byte(tc.got)); got != tc.diff {
			t.Errorf("diff(%q, %q) =\n%s\nwant\n%s", tc.want, tc.got, got, tc.diff)
		}
	}
}

func TestUpdateWrites(t *testing.T) {
	*update = true
	t.Cleanup(func() { *update = false })
	path := filepath.Join(t.TempDir(), "new", "out.golden")
	if f := check(t, path, []byte("fresh\n")); len(f) != 0 {
		t.Fatalf("update failed: %q", f)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "fresh\n" {
		t.Errorf("written %q, %v", got, err)
	}
	*update = false
	if f := check(t, path, []byte("other\n")); len(f) != 1 {
		t.Errorf("after update, other output passed: %q", f)
	}
}
