package supervisor

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/serviceentries/store"
)

// Plugin directories built for the tests: one with the synthetic plugin, one with the same
// plugin built to serve protocol version 2.
var pluginDir, pluginDirV2 string

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "meltemi-host-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	pluginDir, pluginDirV2 = filepath.Join(tmp, "v1"), filepath.Join(tmp, "v2")
	const pkg = "./registries/synthetic/cmd/meltemi-registry-synthetic"
	for dir, ldflags := range map[string]string{
		pluginDir:   "",
		pluginDirV2: "-X github.com/meltemi-mesh/meltemi/plugins/protocol.servedVersion=2",
	} {
		cmd := exec.Command("go", "build", "-ldflags", ldflags, "-o", dir+string(filepath.Separator), pkg)
		cmd.Dir = filepath.Join("..", "..")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building the synthetic plugin:", err)
			return 1
		}
	}
	return m.Run()
}

// recordSink is a Sink over a real store that remembers everything it was told, and
// in particular every service that was ever removed.
type recordSink struct {
	mu       sync.Mutex
	store    *store.Store
	statuses []Status
	rejected []catalog.Rejection
	removed  []string // keys of services deleted or dropped by a Replace
	replaces int
	changed  []int // hosts changed by each Replace
	upserts  int
}

func newRecordSink() *recordSink { return &recordSink{store: store.New()} }

func (r *recordSink) Replace(registry string, services []catalog.Service, keep []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	before := r.keys(registry)
	r.changed = append(r.changed, len(r.store.Replace(registry, services, keep)))
	r.replaces++
	after := r.keys(registry)
	for k := range before {
		if _, ok := after[k]; !ok {
			r.removed = append(r.removed, k)
		}
	}
}

func (r *recordSink) keys(registry string) map[string]bool {
	out := map[string]bool{}
	for _, h := range r.store.Hosts() {
		for _, s := range r.store.ForHost(h) {
			if s.Registry == registry {
				out[s.Key] = true
			}
		}
	}
	return out
}

func (r *recordSink) Upsert(svc catalog.Service) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.upserts++
	r.store.Upsert(svc)
}

func (r *recordSink) Delete(registry, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed = append(r.removed, key)
	r.store.Delete(registry, key)
}

func (r *recordSink) Status(_ string, st Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses = append(r.statuses, st)
}

func (r *recordSink) Reject(rej catalog.Rejection) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rejected = append(r.rejected, rej)
	return true
}

// services returns the registry's services by key.
func (r *recordSink) services(registry string) map[string]catalog.Service {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]catalog.Service{}
	for _, h := range r.store.Hosts() {
		for _, s := range r.store.ForHost(h) {
			if s.Registry == registry {
				out[s.Key] = s
			}
		}
	}
	return out
}

func (r *recordSink) snapshot() (statuses []Status, rejected []catalog.Rejection, removed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.statuses), slices.Clone(r.rejected), slices.Clone(r.removed)
}

func (r *recordSink) lastStatus() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.statuses) == 0 {
		return Status{}
	}
	return r.statuses[len(r.statuses)-1]
}

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger logs JSON into a buffer that is printed when the test fails.
func testLogger(t *testing.T) (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("host log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// eventually polls fn until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processAlive reports whether pid is a running (not zombie) process.
func processAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
