// Package harness connects Go e2e tests to the real servers started by e2e/infra/up.sh.
//
// A test calls Load, then RequireComponent for each server it talks to:
//
//	env := harness.Load(t)
//	env.RequireComponent(t, "zookeeper")
//	conn, _, err := zk.Connect([]string{env.ZKAddr}, time.Second)
//
// Without MELTEMI_E2E=1 a missing server skips the test; with it (as `make test` sets) a missing
// server fails the test, so a broken setup can never pass as "all skipped".
package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Components known to e2e/infra/up.sh.
const (
	Etcd          = "etcd"
	KubeAPIServer = "kube-apiserver"
	ZooKeeper     = "zookeeper"
	EtcdRegistry  = "etcd-registry"
	Consul        = "consul"
	Polaris       = "polaris" // serves the Nacos protocol
	Istiod        = "istiod"  // Istio's control plane (pilot-discovery)
)

// Env describes the running e2e servers. Addresses are host:port unless noted.
type Env struct {
	State            string // state directory of the infra scripts
	Kubeconfig       string // admin kubeconfig (token auth, TLS verification off)
	KubeAPI          string // https URL of the kube-apiserver
	KubeEtcdAddr     string // etcd behind the kube-apiserver
	ZKAddr           string
	ConsulAddr       string // Consul HTTP API
	NacosAddr        string // Nacos HTTP API (Polaris)
	NacosGRPCAddr    string // Nacos 2.x gRPC (Polaris)
	EtcdRegistryAddr string // etcd used as a Dubbo registry
	IstiodXDSAddr    string // istiod's plaintext xDS (gRPC)
	IstiodHTTPAddr   string // istiod's HTTP port: /ready, /debug/...
	IstiodMonitoring string // istiod's Prometheus metrics
	IstiodLog        string // file istiod logs to
	IstiodVersion    string // the istio.io/istio version running
	IstiodDebounce   string // istiod's PILOT_DEBOUNCE_AFTER in milliseconds

	components []string
	root       string
}

// Variables of the env file.
var envKeys = []string{
	"MELTEMI_E2E_STATE", "MELTEMI_E2E_COMPONENTS", "KUBECONFIG", "MELTEMI_KUBE_API",
	"MELTEMI_KUBE_ETCD_ADDR", "MELTEMI_ZK_ADDR", "MELTEMI_CONSUL_ADDR", "MELTEMI_NACOS_ADDR",
	"MELTEMI_NACOS_GRPC_ADDR", "MELTEMI_ETCD_REGISTRY_ADDR", "MELTEMI_ISTIOD_XDS_ADDR", "MELTEMI_ISTIOD_HTTP_ADDR",
	"MELTEMI_ISTIOD_MONITORING_ADDR", "MELTEMI_ISTIOD_LOG", "MELTEMI_ISTIOD_VERSION", "MELTEMI_ISTIOD_DEBOUNCE_MS",
}

// Load reads $MELTEMI_E2E_STATE/env (default state /tmp/meltemi-e2e); MELTEMI_* variables in
// the process environment fill in what the file does not name. It skips the test when no servers are described,
// or fails it when MELTEMI_E2E=1.
func Load(t testing.TB) *Env {
	t.Helper()
	state := os.Getenv("MELTEMI_E2E_STATE")
	if state == "" {
		state = "/tmp/meltemi-e2e"
	}
	vals, err := readEnvFile(filepath.Join(state, "env"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		missing(t, "reading e2e env file: %v", err)
	}
	// The file, written by the scripts, describes what is actually running; variables from the
	// process environment only fill in what it lacks (servers started by other means).
	// A KUBECONFIG that is merely set in a developer's shell points at some other cluster: it
	// is only taken together with MELTEMI_KUBE_API.
	for _, k := range envKeys {
		if v := os.Getenv(k); v != "" && vals[k] == "" {
			if k == "KUBECONFIG" && (vals["MELTEMI_KUBE_API"] != "" || os.Getenv("MELTEMI_KUBE_API") == "") {
				continue
			}
			vals[k] = v
		}
	}
	e := &Env{
		State:            state,
		Kubeconfig:       vals["KUBECONFIG"],
		KubeAPI:          vals["MELTEMI_KUBE_API"],
		KubeEtcdAddr:     vals["MELTEMI_KUBE_ETCD_ADDR"],
		ZKAddr:           vals["MELTEMI_ZK_ADDR"],
		ConsulAddr:       vals["MELTEMI_CONSUL_ADDR"],
		NacosAddr:        vals["MELTEMI_NACOS_ADDR"],
		NacosGRPCAddr:    vals["MELTEMI_NACOS_GRPC_ADDR"],
		EtcdRegistryAddr: vals["MELTEMI_ETCD_REGISTRY_ADDR"],
		IstiodXDSAddr:    vals["MELTEMI_ISTIOD_XDS_ADDR"],
		IstiodHTTPAddr:   vals["MELTEMI_ISTIOD_HTTP_ADDR"],
		IstiodMonitoring: vals["MELTEMI_ISTIOD_MONITORING_ADDR"],
		IstiodLog:        vals["MELTEMI_ISTIOD_LOG"],
		IstiodVersion:    vals["MELTEMI_ISTIOD_VERSION"],
		IstiodDebounce:   vals["MELTEMI_ISTIOD_DEBOUNCE_MS"],
		components:       strings.Fields(vals["MELTEMI_E2E_COMPONENTS"]),
	}
	if v := vals["MELTEMI_E2E_STATE"]; v != "" {
		e.State = v
	}
	// Servers described only by address variables (started by other means) still count.
	for name, addr := range map[string]string{
		KubeAPIServer: e.KubeAPI, ZooKeeper: e.ZKAddr, Consul: e.ConsulAddr,
		Polaris: e.NacosAddr, EtcdRegistry: e.EtcdRegistryAddr, Etcd: e.KubeEtcdAddr, Istiod: e.IstiodXDSAddr,
	} {
		if addr != "" && !slices.Contains(e.components, name) {
			e.components = append(e.components, name)
		}
	}
	if len(e.components) == 0 {
		missing(t, "no e2e servers are up (no %s/env and no MELTEMI_* address variables)", state)
	}
	return e
}

// Has reports whether a component is up according to the env file.
func (e *Env) Has(name string) bool { return slices.Contains(e.components, canonical(name)) }

// RequireComponent skips (or, with MELTEMI_E2E=1, fails) the test unless the component is up
// and accepting connections.
func (e *Env) RequireComponent(t testing.TB, name string) {
	t.Helper()
	name = canonical(name)
	if !e.Has(name) {
		missing(t, "e2e component %q is not up (up: %v); run e2e/infra/up.sh %s", name, e.components, name)
	}
	addr := e.addr(name)
	if addr == "" {
		missing(t, "e2e component %q is up but its address is not set in %s/env", name, e.State)
	}
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		missing(t, "e2e component %q at %s does not accept connections: %v (log: %s)",
			name, addr, err, filepath.Join(e.State, "logs", name+".log"))
	}
	_ = conn.Close()
}

func (e *Env) addr(name string) string {
	switch name {
	case KubeAPIServer:
		if u, err := url.Parse(e.KubeAPI); err == nil {
			return u.Host
		}
		return ""
	case Etcd:
		return e.KubeEtcdAddr
	case ZooKeeper:
		return e.ZKAddr
	case Consul:
		return e.ConsulAddr
	case Polaris:
		return e.NacosAddr
	case EtcdRegistry:
		return e.EtcdRegistryAddr
	case Istiod:
		return e.IstiodXDSAddr
	}
	return ""
}

func canonical(name string) string {
	switch name {
	case "kube", "apiserver":
		return KubeAPIServer
	case "zk":
		return ZooKeeper
	case "nacos":
		return Polaris
	case "istio", "pilot":
		return Istiod
	}
	return name
}

// PID returns the process ID of a component the scripts started, or 0.
func (e *Env) PID(name string) int {
	data, err := os.ReadFile(filepath.Join(e.State, "pids", canonical(name)+".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// Stop stops a component with SIGTERM, keeping its data. The env file still lists it.
func (e *Env) Stop(t testing.TB, name string) { t.Helper(); e.ctl(t, "stop", name) }

// Start starts a stopped component on its previous ports and waits until it is ready.
func (e *Env) Start(t testing.TB, name string) { t.Helper(); e.ctl(t, "start", name) }

// Kill kills a component with SIGKILL, keeping its data.
func (e *Env) Kill(t testing.TB, name string) { t.Helper(); e.ctl(t, "kill", name) }

// Restart stops a component and starts it again, waiting until it is ready.
func (e *Env) Restart(t testing.TB, name string) { t.Helper(); e.ctl(t, "restart", name) }

func (e *Env) ctl(t testing.TB, op, name string) {
	t.Helper()
	root, err := e.repoRoot()
	if err != nil {
		t.Fatalf("ctl %s %s: %v", op, name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "e2e", "infra", "ctl.sh"), op, canonical(name))
	cmd.Env = append(os.Environ(), "MELTEMI_E2E_STATE="+e.State)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The servers ctl.sh starts do not keep our pipes open, but never hang on it if one did.
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("e2e/infra/ctl.sh %s %s: %v\n%s", op, name, err, out.String())
	}
	t.Logf("ctl.sh %s %s took %v", op, name, time.Since(start).Round(time.Millisecond))
}

// repoRoot walks up from the working directory (the test's package directory) to go.mod.
func (e *Env) repoRoot() (string, error) {
	if e.root != "" {
		return e.root, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			e.root = dir
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// RestConfig returns a client-go config for the admin kubeconfig.
func (e *Env) RestConfig(t testing.TB) *rest.Config {
	t.Helper()
	e.RequireComponent(t, KubeAPIServer)
	if e.Kubeconfig == "" {
		missing(t, "KUBECONFIG is not set in %s/env", e.State)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", e.Kubeconfig)
	if err != nil {
		t.Fatalf("loading kubeconfig %s: %v", e.Kubeconfig, err)
	}
	// client-go's default 5 QPS would dominate the timings of tests that write many objects.
	cfg.QPS, cfg.Burst = 200, 400
	return cfg
}

// Eventually calls fn until it returns nil, failing the test with the last error when timeout
// passes. Polls every 50 ms at first, backing off to 500 ms.
func (e *Env) Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v (%d attempts); last error: %v", timeout, attempt, err)
		}
		time.Sleep(min(wait, time.Until(deadline)+time.Millisecond))
		wait = min(wait*2, 500*time.Millisecond)
	}
}

// missing fails the test under MELTEMI_E2E=1 and skips it otherwise.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if on, _ := strconv.ParseBool(os.Getenv("MELTEMI_E2E")); on {
		t.Fatalf("%s (MELTEMI_E2E is set, so this is a failure)", msg)
	}
	t.Skipf("e2e servers not running; run make test (%s)", msg)
}

// readEnvFile parses the `export NAME=value` lines written by the infra scripts.
func readEnvFile(path string) (map[string]string, error) {
	vals := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return vals, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line, ok := strings.CutPrefix(line, "export ")
		if !ok {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		vals[strings.TrimSpace(k)] = v
	}
	return vals, sc.Err()
}
