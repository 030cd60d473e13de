package kube

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
)

var (
	seGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "serviceentries"}
)

// serviceEntry builds a valid Istio ServiceEntry with n endpoints, labelled like the host does.
// noAutoallocate opts a ServiceEntry out of istiod's address allocation: istiod runs beside
// these tests and would write status.addresses into every entry without addresses, changing
// resourceVersions that the tests compare.
const noAutoallocate = "networking.istio.io/enable-autoallocate-ip"

func serviceEntry(ns, name string, n int, version string) *unstructured.Unstructured {
	eps := make([]any, n)
	for i := range eps {
		eps[i] = map[string]any{
			"address": fmt.Sprintf("10.1.%d.%d", i/250, i%250+1),
			"labels":  map[string]any{"version": version},
		}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "ServiceEntry",
		"metadata": map[string]any{
			"name":      name,
			"namespace": ns,
			"labels":    map[string]any{v1alpha1.LabelRegistry: "zk-test", noAutoallocate: "false"},
		},
		"spec": map[string]any{
			"hosts":      []any{name + ".dubbo.svc"},
			"location":   "MESH_INTERNAL",
			"resolution": "STATIC",
			"ports": []any{map[string]any{
				"number": 20880, "name": "tcp-metaprotocol-dubbo-20880", "protocol": "TCP",
			}},
			"endpoints": eps,
		},
	}}
}

// writeCounter counts requests that are not reads (anything but GET, which also carries
// LIST and WATCH), and separately those the server accepted.
type writeCounter struct {
	mu       sync.Mutex
	counts   map[string]int
	accepted int
}

func (c *writeCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method == http.MethodGet || req.Method == http.MethodHead {
			return rt.RoundTrip(req)
		}
		resp, err := rt.RoundTrip(req)
		c.mu.Lock()
		if c.counts == nil {
			c.counts = map[string]int{}
		}
		c.counts[req.Method]++
		if err == nil && resp.StatusCode/100 == 2 {
			c.accepted++
		}
		c.mu.Unlock()
		return resp, err
	})
}

func (c *writeCounter) acceptedWrites() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.accepted
}

func (c *writeCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.counts {
		n += v
	}
	return n
}

func (c *writeCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// kubeEnv is a connection to the shared e2e kube-apiserver.
type kubeEnv struct {
	env   *harness.Env
	cfg   *rest.Config
	admin dynamic.Interface // uncounted client for setup and checks
}

func loadKube(t testing.TB) *kubeEnv {
	t.Helper()
	env := harness.Load(t)
	cfg := env.RestConfig(t)
	admin, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ke := &kubeEnv{env: env, cfg: cfg, admin: admin}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.Resource(seGVR).Namespace("default").List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		t.Fatalf("the e2e kube-apiserver does not serve Istio ServiceEntries (CRDs missing?): %v", err)
	}
	return ke
}

// countedClient returns a dynamic client whose writes are counted.
func (ke *kubeEnv) countedClient(t testing.TB) (dynamic.Interface, *writeCounter) {
	t.Helper()
	wc := &writeCounter{}
	cfg := rest.CopyConfig(ke.cfg)
	cfg.WrapTransport = wc.wrap
	c, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, wc
}

// namespace creates a unique namespace, removed with its ServiceEntries when the test ends.
func (ke *kubeEnv) namespace(t testing.TB) string {
	t.Helper()
	return harness.Namespace(t, ke.admin, "sync")
}

// running is a Reconciler started by a test.
type running struct {
	*Reconciler
	reg    *prometheus.Registry
	events *eventLog
	cancel context.CancelFunc
	done   chan error
}

type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) record(obj runtime.Object, eventType, reason, message string) {
	u, _ := obj.(*unstructured.Unstructured)
	name := ""
	if u != nil {
		name = u.GetNamespace() + "/" + u.GetName()
	}
	l.mu.Lock()
	l.events = append(l.events, fmt.Sprintf("%s %s %s: %s", eventType, reason, name, message))
	l.mu.Unlock()
}

func (l *eventLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("MELTEMI_SYNC_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newReconciler builds a Reconciler for ServiceEntries in ns; tweak may adjust the config.
func newReconciler(t testing.TB, client dynamic.Interface, ns string, tweak func(*Config)) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	ev := &eventLog{}
	cfg := Config{
		Client:     client,
		Kinds:      []Kind{ServiceEntryKind()},
		Namespace:  ns,
		Registerer: reg,
		Logger:     testLogger(t),
		Recorder:   ev.record,
		QPS:        1000,
		Burst:      1000,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &running{Reconciler: r, reg: reg, events: ev}
}

// start runs the reconciler until the test ends (or stop is called).
func (rr *running) start(t testing.TB) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rr.cancel = cancel
	rr.done = make(chan error, 1)
	go func() { rr.done <- rr.Run(ctx) }()
	t.Cleanup(func() { rr.stop(t) })
	return rr
}

func (rr *running) stop(t testing.TB) {
	t.Helper()
	if rr.cancel == nil {
		return
	}
	rr.cancel()
	rr.cancel = nil
	select {
	case err := <-rr.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("Run did not return within 30s of cancel")
	}
}

func (rr *running) waitIdle(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := rr.WaitIdle(ctx); err != nil {
		t.Fatalf("WaitIdle: %v (stats %+v)", err, rr.Stats())
	}
}

// metric returns the value of a counter or gauge, or a histogram's count, with the given
// labels (0 if absent).
func metric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// eventually polls fn until it returns nil.
func eventually(t testing.TB, timeout time.Duration, fn func() error) {
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

// settle waits until the reconciler's informer cache shows every object it wrote, so that
// later checks see a quiet system.
func (rr *running) settle(t testing.TB) {
	t.Helper()
	eventually(t, time.Minute, func() error {
		if err := rr.WaitIdle(context.Background()); err != nil {
			return err
		}
		rr.mu.RLock()
		n := len(rr.lastWrite)
		rr.mu.RUnlock()
		if n > 0 {
			return fmt.Errorf("%d writes not yet seen by the informer", n)
		}
		return nil
	})
	rr.waitIdle(t)
}
