package nacos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// recorder is an sdk.Emitter that keeps the state the host would have.
type recorder struct {
	mu        sync.Mutex
	state     map[string]sdk.Service
	snapshots int
	upserts   int
	deletes   int
	healthy   bool
	healthMsg string
	rejected  map[string]string
	log       []string
	changed   chan struct{}
}

func newRecorder() *recorder {
	return &recorder{state: map[string]sdk.Service{}, rejected: map[string]string{}, changed: make(chan struct{})}
}

func (r *recorder) update(line string, f func()) {
	r.mu.Lock()
	f()
	r.log = append(r.log, time.Now().Format("15:04:05.000 ")+line)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *recorder) Snapshot(services []sdk.Service) {
	r.update(fmt.Sprintf("snapshot of %d services", len(services)), func() {
		clear(r.state)
		for _, s := range services {
			r.state[s.Key] = s
		}
		r.snapshots++
	})
}

func (r *recorder) Upsert(s sdk.Service) {
	r.update(fmt.Sprintf("upsert %s host=%s instances=%d", s.Key, s.Host, len(s.Instances)), func() {
		r.state[s.Key] = s
		r.upserts++
	})
}

func (r *recorder) Delete(key string) {
	r.update("delete "+key, func() { delete(r.state, key); r.deletes++ })
}

func (r *recorder) Health(ok bool, msg string) {
	r.update(fmt.Sprintf("health %v %q", ok, msg), func() { r.healthy, r.healthMsg = ok, msg })
}

func (r *recorder) Reject(item, reason string) {
	r.update(fmt.Sprintf("reject %s: %s", item, reason), func() { r.rejected[item] = reason })
}

// wait blocks until cond holds (it is called with the recorder locked).
func (r *recorder) wait(t testing.TB, timeout time.Duration, what string, cond func(r *recorder) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ok, ch := cond(r), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out after %s waiting for %s; events:\n  %s", timeout, what, strings.Join(r.log, "\n  "))
		}
	}
}

// service returns a copy of a service's current state.
func (r *recorder) service(key string) (sdk.Service, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.state[key]
	return s, ok
}

// addrs lists a service's endpoints as ip:port.
func addrs(s sdk.Service) []string {
	out := make([]string, len(s.Instances))
	for i, in := range s.Instances {
		out[i] = net.JoinHostPort(in.Address, strconv.Itoa(int(in.Port)))
	}
	return out
}

// hasEndpoints is a wait condition: key exists with exactly these endpoints (sorted ip:port).
func hasEndpoints(key string, want ...string) func(*recorder) bool {
	return func(r *recorder) bool {
		s, ok := r.state[key]
		return ok && strings.Join(addrs(s), ",") == strings.Join(want, ",")
	}
}

func absent(key string) func(*recorder) bool {
	return func(r *recorder) bool { _, ok := r.state[key]; return !ok }
}

// nacosAddr returns the Nacos-protocol server of the e2e environment.
func nacosAddr(t testing.TB) string {
	t.Helper()
	env := harness.Load(t)
	env.RequireComponent(t, harness.Polaris)
	return env.NacosAddr
}

// uniqueName returns a name of the test's own, so tests never see each other's services.
func uniqueName(prefix string) string { return fmt.Sprintf("%s-%08x", prefix, rand.Uint32()) }

// running is the plugin watching in process.
type running struct {
	p    *Plugin
	rec  *recorder
	done chan error
}

// startPlugin configures the plugin and runs Watch until the test ends.
func startPlugin(t testing.TB, address string, options map[string]string) *running {
	t.Helper()
	p := New().(*Plugin)
	if err := p.Configure(context.Background(), sdk.Config{Registry: "nacos-test", Address: address, Options: options}); err != nil {
		t.Fatalf("configure: %v", err)
	}
	r := &running{p: p, rec: newRecorder(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { r.done <- p.Watch(ctx, r.rec) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("watch returned %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("watch did not return within 30s of cancel")
		}
	})
	return r
}

func sdkConfig(addr string, options map[string]string) sdk.Config {
	return sdk.Config{Registry: "nacos-test", Address: addr, Options: options}
}
