package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
)

var (
	serviceEntries  = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "serviceentries"}
	serviceRegistry = schema.GroupVersionResource{Group: "meltemi.io", Version: "v1alpha1", Resource: "serviceregistries"}
)

// cluster is a test's view of the API server: clients and a namespace of its own.
type cluster struct {
	env       *harness.Env
	dyn       dynamic.Interface
	kube      kubernetes.Interface
	namespace string
}

func newCluster(t testing.TB, env *harness.Env) *cluster {
	t.Helper()
	env.RequireComponent(t, harness.KubeAPIServer)
	cfg := env.RestConfig(t)
	c := &cluster{env: env, dyn: dynamic.NewForConfigOrDie(cfg), kube: kubernetes.NewForConfigOrDie(cfg)}
	// 32 random bits: the test API server keeps deleted namespaces (no namespace controller),
	// so over many runs 16 bits came to collide with one of them.
	c.namespace = fmt.Sprintf("e2e-%s-%08x", strings.ToLower(sanitize(t.Name())), rand.Uint32())
	ctx := context.Background()
	if _, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		// The test API server runs no namespace controller: a deleted namespace keeps its
		// objects. Delete the bulky ones, so that benchmarks' tens of thousands of objects do
		// not slow down the tests and benchmarks after them, and the Istio configuration, which
		// istiod would otherwise keep serving to (and reporting about for) later tests.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		for _, gvr := range []schema.GroupVersionResource{serviceEntries, workloadEntries, destinationRules, envoyFiltersGVR, virtualServicesGVR} {
			if err := c.dyn.Resource(gvr).Namespace(c.namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
				t.Logf("cleanup: deleting %s in %s: %v", gvr.Resource, c.namespace, err)
			}
		}
		_ = c.kube.CoreV1().Namespaces().Delete(ctx, c.namespace, metav1.DeleteOptions{})
	})
	return c
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
		if b.Len() >= 30 {
			break
		}
	}
	return b.String()
}

func (c *cluster) serviceEntries(t *testing.T) map[string]*unstructured.Unstructured {
	t.Helper()
	list, err := c.dyn.Resource(serviceEntries).Namespace(c.namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing ServiceEntries: %v", err)
	}
	out := map[string]*unstructured.Unstructured{}
	for i := range list.Items {
		out[list.Items[i].GetName()] = &list.Items[i]
	}
	return out
}

func (c *cluster) getServiceEntry(name string) (*unstructured.Unstructured, error) {
	return c.dyn.Resource(serviceEntries).Namespace(c.namespace).Get(context.Background(), name, metav1.GetOptions{})
}

func (c *cluster) create(t testing.TB, gvr schema.GroupVersionResource, obj *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	out, err := c.dyn.Resource(gvr).Namespace(c.namespace).Create(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating %s %s: %v", obj.GetKind(), obj.GetName(), err)
	}
	return out
}

// bridge is a running meltemi host process.
type bridge struct {
	cmd     *exec.Cmd
	addr    string
	logs    *syncBuffer
	stopped chan struct{}
}

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

// startBridge runs meltemi with args (plus kubeconfig, namespace, plugin dir and a free
// listen port) until the test ends; its log is printed when the test fails.
func startBridge(t testing.TB, c *cluster, args ...string) *bridge {
	t.Helper()
	return startBridgeAs(t, c, c.env.Kubeconfig, args...)
}

// startBridgeAs is startBridge with another identity's kubeconfig.
func startBridgeAs(t testing.TB, c *cluster, kubeconfig string, args ...string) *bridge {
	t.Helper()
	addr := freeAddr(t)
	all := append([]string{"run", "--kubeconfig", kubeconfig, "--namespace", c.namespace,
		"--plugin-dir", binDir, "--listen", addr, "--log-format", "text", "--log-level", "debug"}, args...)
	// By default the traffic translator watches the whole cluster and serves xDS on a fixed
	// port: only hosts of tests that configure it (their namespace, a free port) get it.
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--traffic") || strings.HasPrefix(a, "--xds-") }) {
		all = append(all, "--traffic=false")
	}
	cmd := exec.Command(filepath.Join(binDir, "meltemi"), all...)
	b := &bridge{cmd: cmd, addr: addr, logs: &syncBuffer{}, stopped: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = b.logs, b.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting meltemi: %v", err)
	}
	go func() { _ = cmd.Wait(); close(b.stopped) }()
	t.Cleanup(func() {
		b.stop(t)
		if t.Failed() {
			t.Logf("meltemi log:\n%s", b.logs.String())
		}
	})
	return b
}

func (b *bridge) stop(t testing.TB) {
	select {
	case <-b.stopped:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.stopped:
	case <-time.After(15 * time.Second):
		t.Errorf("meltemi did not stop within 15s of SIGTERM; its goroutines are in its log (SIGQUIT)")
		_ = b.cmd.Process.Signal(syscall.SIGQUIT) // the Go runtime prints every goroutine and exits
		select {
		case <-b.stopped:
		case <-time.After(5 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.stopped
		}
	}
}

// waitReady waits for /readyz to answer ok.
func (b *bridge) waitReady(t testing.TB, env *harness.Env) {
	t.Helper()
	env.Eventually(t, 60*time.Second, func() error {
		select {
		case <-b.stopped:
			t.Fatalf("meltemi exited: %v\n%s", b.cmd.ProcessState, b.logs.String())
		default:
		}
		resp, err := http.Get("http://" + b.addr + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d: %s", resp.StatusCode, body)
		}
		return nil
	})
}

func (b *bridge) metrics(t testing.TB) string {
	t.Helper()
	resp, err := http.Get("http://" + b.addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
