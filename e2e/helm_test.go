package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/e2e/dubbo"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden helm template output in testdata/helm")

const (
	chartDir      = "../charts/meltemi"
	helmTestdata  = "testdata/helm"
	goldenRelease = "meltemi"
	goldenNS      = "meltemi-system"
)

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helmBin returns the helm built from the module proxy by e2e/infra/tools.sh, building it on
// first use (a no-op when it is cached).
func helmBin(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		tools := filepath.Join("infra", "tools.sh")
		if out, err := exec.Command(tools, "helm").CombinedOutput(); err != nil {
			helmErr = fmt.Errorf("building helm: %v\n%s", err, out)
			return
		}
		out, err := exec.Command(tools, "path", "helm").Output()
		if err != nil {
			helmErr = fmt.Errorf("locating helm: %v", err)
			return
		}
		helmPath = strings.TrimSpace(string(out))
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

// helm runs helm with its state kept in the test's temporary directory.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := helmBin(t)
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// helmCases are the values files in testdata/helm, by case name.
func helmCases(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(helmTestdata, "*.values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files in %s (%v)", helmTestdata, err)
	}
	out := map[string]string{}
	for _, f := range files {
		out[strings.TrimSuffix(filepath.Base(f), ".values.yaml")] = f
	}
	return out
}

func helmTemplate(t *testing.T, valuesFile string) string {
	t.Helper()
	out, err := helm(t, "template", goldenRelease, chartDir, "--namespace", goldenNS, "--kube-version", "1.35.0", "-f", valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHelmLint(t *testing.T) {
	for name, values := range helmCases(t) {
		t.Run(name, func(t *testing.T) {
			out, err := helm(t, "lint", "--strict", chartDir, "-f", values)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Errorf("helm lint:\n%s", out)
			}
		})
	}
}

// TestHelmTemplateGolden compares `helm template` with testdata/helm/<case>.golden.yaml;
// go test ./e2e -run TestHelmTemplateGolden -update rewrites them.
func TestHelmTemplateGolden(t *testing.T) {
	for name, values := range helmCases(t) {
		t.Run(name, func(t *testing.T) {
			got := helmTemplate(t, values)
			golden := filepath.Join(helmTestdata, name+".golden.yaml")
			if *updateGolden {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("helm template differs from %s (run with -update to accept):\n%s", golden, lineDiff(string(want), got))
			}
		})
	}
}

// lineDiff shows the first lines that differ, enough to see what changed.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 20; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want: %s\n  got:  %s\n", i+1, wl, gl)
			shown++
		}
	}
	return b.String()
}

// renderedObjects splits helm template output into objects.
func renderedObjects(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(manifest, -1) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("rendered document does not parse: %v\n%s", err, doc)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
	return out
}

func typed[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &out, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return &out
}

// TestHelmChartPolicy checks properties every rendering must keep, whatever the golden files
// say: least-privilege RBAC, and a hardened, probed Deployment passing only flags the host has.
func TestHelmChartPolicy(t *testing.T) {
	writeVerbs := []string{"create", "update", "patch", "delete", "deletecollection"}
	known := hostFlags(t)
	for name, values := range helmCases(t) {
		t.Run(name, func(t *testing.T) {
			objs := renderedObjects(t, helmTemplate(t, values))
			valuesText, err := os.ReadFile(values)
			if err != nil {
				t.Fatal(err)
			}
			var deployments int
			for _, u := range objs {
				switch u.GetKind() {
				case "ClusterRole", "Role":
					for _, r := range typed[rbacv1.ClusterRole](t, u).Rules {
						where := fmt.Sprintf("%s %s rule %v %v %v", u.GetKind(), u.GetName(), r.APIGroups, r.Resources, r.Verbs)
						if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") || len(r.NonResourceURLs) > 0 {
							t.Errorf("%s: wildcard or non-resource rule", where)
						}
						for _, res := range r.Resources {
							if res == "namespaces" || res == "pods" || res == "deployments" {
								t.Errorf("%s: the host needs no access to %s", where, res)
							}
							// Only Istio's mesh config, read by name.
							if res == "configmaps" && (len(r.ResourceNames) != 1 || slices.ContainsFunc(r.Verbs, func(v string) bool { return slices.Contains(writeVerbs, v) }) ||
								u.GetKind() != "Role") {
								t.Errorf("%s: ConfigMaps may only be read by name, in a namespaced Role", where)
							}
							// Registry credentials by name; Redis passwords (traffic.redisSecrets, off by
							// default, documented) by watching, read-only, in the traffic role alone.
							redisSecrets := slices.Equal(r.APIGroups, []string{""}) && slices.Equal(r.Resources, []string{"secrets"}) &&
								slices.Equal(r.Verbs, []string{"get", "list", "watch"}) && strings.Contains(string(valuesText), "redisSecrets: true")
							if res == "secrets" && !redisSecrets && (len(r.ResourceNames) == 0 || !slices.Equal(r.Verbs, []string{"get"}) || u.GetKind() != "Role") {
								t.Errorf("%s: Secrets must be read with get, by name, in a namespaced Role", where)
							}
							// Cluster-wide, only the status of rules and Events on them are written.
							clusterWriteOK := strings.HasSuffix(res, "/status") || res == "events"
							for _, v := range r.Verbs {
								if u.GetKind() == "ClusterRole" && slices.Contains(writeVerbs, v) && !clusterWriteOK {
									t.Errorf("%s: cluster-wide write", where)
								}
							}
						}
					}
				case "Deployment":
					deployments++
					checkDeployment(t, typed[appsv1.Deployment](t, u), known)
				}
			}
			if deployments != 1 {
				t.Errorf("%d Deployments rendered, want 1", deployments)
			}
		})
	}
}

func checkDeployment(t *testing.T, d *appsv1.Deployment, known func(string) bool) {
	t.Helper()
	pod := d.Spec.Template.Spec
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("pod does not require a non-root user")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container security context is not hardened: %+v", sc)
	}
	for probe, want := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz", c.StartupProbe: "/healthz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want {
			t.Errorf("probe %+v, want GET %s", probe, want)
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}
	// go-plugin needs a writable TMPDIR under the read-only root.
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/tmp" && !m.ReadOnly }) {
		t.Errorf("no writable /tmp mount: %+v", c.VolumeMounts)
	}
	if len(c.Args) == 0 || c.Args[0] != "run" {
		t.Fatalf("container args %v do not start with run", c.Args)
	}
	for _, a := range c.Args[1:] {
		if flag, _, _ := strings.Cut(a, "="); !known(flag) {
			t.Errorf("the chart passes %s, which `meltemi run` does not know", a)
		}
	}
	if *d.Spec.Replicas > 1 && !slices.Contains(c.Args, "--leader-elect=true") {
		t.Errorf("%d replicas without --leader-elect=true: %v", *d.Spec.Replicas, c.Args)
	}
}

// TestHelmValuesSchemaRejects shows that bad values fail the install with a message naming
// the problem, instead of rendering something broken.
func TestHelmValuesSchemaRejects(t *testing.T) {
	for _, tc := range []struct{ name, values, want string }{
		{"misspelt top-level key", "replicas: 3\n", "additional properties 'replicas'"},
		{"registry without address", "registries: [{name: zk, kind: zookeeper}]\n", "missing property 'address'"},
		{"registry kind not a DNS label", "registries: [{name: zk, kind: ZooKeeper, address: 'zk:2181'}]\n", "/registries/0/kind"},
		{"inline credentials", "registries: [{name: zk, kind: zookeeper, address: 'zk:2181', password: hunter2}]\n", "additional properties 'password'"},
		{"registry name with upper case", "registries: [{name: ZK, kind: zookeeper, address: 'zk:2181'}]\n", "/registries/0/name"},
		{"bad plugin checksum", "registries: [{name: zk, kind: zookeeper, address: 'zk:2181', pluginSHA256: abc}]\n", "/registries/0/pluginSHA256"},
		{"unknown log level", "config: {logLevel: verbose}\n", "/config/logLevel"},
		{"debounce not a duration", "config: {debounce: soon}\n", "/config/debounce"},
		{"no replicas", "replicaCount: 0\n", "/replicaCount"},
		{"replicas as a string", "replicaCount: two\n", "/replicaCount"},
		{"extra args that are not flags", "config: {extraArgs: [oops]}\n", "/config/extraArgs/0"},
		{"several writers without leader election", "replicaCount: 2\nleaderElection: {enabled: false}\n", "leaderElection.enabled must be true"},
		{"two registries with one name", "registries: [{name: zk, kind: zookeeper, address: 'a:2181'}, {name: zk, kind: nacos, address: 'b:8848'}]\n", `the name "zk" is used twice`},
		{"registry name too long", "registries: [{name: " + strings.Repeat("z", 64) + ", kind: zookeeper, address: 'zk:2181'}]\n", "/registries/0/name"},
		{"password in plain options", "registries: [{name: nacos, kind: nacos, address: 'n:8848', options: {password: hunter2}}]\n", "invalid propertyName 'password'"},
		{"token in plain options", "registries: [{name: consul, kind: consul, address: 'c:8500', options: {aclToken: abc}}]\n", "invalid propertyName 'aclToken'"},
		{"volume mount without a path", "extraVolumeMounts: [{name: tls}]\n", "/extraVolumeMounts/0"},
		{"plugin image without a name", "plugins: {extra: [{image: x, binary: /meltemi-registry-x}]}\n", "missing property 'name'"},
		{"plugin copied without its binary's path", "plugins: {extra: [{name: x, image: x}]}\n", `plugins.extra "x": mode initContainer needs binary`},
		{"plugin binary not a plugin", "plugins: {extra: [{name: x, image: x, binary: /bin/sh}]}\n", "/plugins/extra/0/binary"},
		{"image volume given a binary", "plugins: {extra: [{name: x, image: x, mode: imageVolume, binary: /meltemi-registry-x}]}\n", "binary is for mode initContainer"},
		{"unknown plugin mode", "plugins: {extra: [{name: x, image: x, mode: sidecar}]}\n", "/plugins/extra/0/mode"},
		{"two plugins with one name", "plugins: {extra: [{name: x, image: a, binary: /meltemi-registry-a}, {name: x, image: b, binary: /meltemi-registry-b}]}\n", `the name "x" is used twice`},
		{"plugin name too long", "plugins: {extra: [{name: " + strings.Repeat("p", 51) + ", image: a, binary: /meltemi-registry-a}]}\n", "/plugins/extra/0/name"},
		{"plugin directory list in builtinDir", "plugins: {builtinDir: '/a:/b'}\n", "/plugins/builtinDir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helm(t, "template", goldenRelease, chartDir, "--namespace", goldenNS, "-f", writeFile(t, "values.yaml", tc.values))
			if err == nil {
				t.Fatalf("values accepted:\n%s", tc.values)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not name %q:\n%v", tc.want, err)
			}
		})
	}
}

// TestHelmDashboardMetricsDefined checks that every metric the Grafana dashboard queries is
// defined by the code, so a renamed metric cannot leave an empty panel behind.
func TestHelmDashboardMetricsDefined(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "meltemi.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.UID == "" {
		t.Error("dashboard has no uid: re-imports would duplicate it")
	}
	defined := definedMetrics(t, "..")
	metricRef := regexp.MustCompile(`\bmeltemi_[a-z0-9_]+`)
	undefined := map[string][]string{} // metric -> panels
	var queried int
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range metricRef.FindAllString(tg.Expr, -1) {
				queried++
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(m, suffix); ok && defined[b] {
						base = b
					}
				}
				if !defined[base] && !slices.Contains(undefined[m], p.Title) {
					undefined[m] = append(undefined[m], p.Title)
				}
			}
		}
	}
	if queried == 0 {
		t.Fatal("the dashboard queries no meltemi metric")
	}
	for _, m := range slices.Sorted(maps.Keys(undefined)) {
		t.Errorf("%s is queried by panels %q but no Go source defines it", m, undefined[m])
	}
}

// definedMetrics collects the metric names spelt out in non-test Go sources under root.
func definedMetrics(t *testing.T, root string) map[string]bool {
	t.Helper()
	name := regexp.MustCompile(`"(meltemi_[a-z0-9_]+)"`)
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "charts") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range name.FindAllSubmatch(src, -1) {
			out[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// hostFlags reports which flags `meltemi run` has, from its help.
func hostFlags(t *testing.T) func(flag string) bool {
	t.Helper()
	help, _ := exec.Command(filepath.Join(binDir, "meltemi"), "run", "-h").CombinedOutput()
	if !strings.Contains(string(help), "-kubeconfig") {
		t.Fatalf("meltemi run -h does not list flags:\n%s", help)
	}
	return func(flag string) bool {
		return regexp.MustCompile(`(?m)^\s+-{1,2}` + regexp.QuoteMeta(strings.TrimLeft(flag, "-")) + `\b`).Match(help)
	}
}

// TestHelmInstallLeastPrivilege installs the chart into the real API server (RBAC on), runs
// the host out of cluster with a token of the chart's ServiceAccount and the Deployment's own
// arguments, and shows that syncing works with exactly the chart's permissions while writes
// outside them are denied.
func TestHelmInstallLeastPrivilege(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	ctx := context.Background()

	// The registry's root is readable only with digest credentials, which the host can only
	// have read from the Secret the chart's Role names.
	user, pass := "meltemi", fmt.Sprintf("pw-%016x", rand.Uint64())
	if err := conn.AddAuth("digest", []byte(user+":"+pass)); err != nil {
		t.Fatal(err)
	}
	// A host of this run's own: hosts with MetaRouters in the cluster's leftovers would conflict.
	iface := fmt.Sprintf("com.example.helm%04x.InventoryService", rand.IntN(1<<16))
	if _, err := dubbo.Register(conn, root, dubbo.Provider{IP: "10.7.0.1", Port: 20880, Interface: iface, Application: "inventory", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.SetACL("/"+root, zk.DigestACL(zk.PermAll, user, pass), -1); err != nil {
		t.Fatal(err)
	}
	requireZKDeniesAnonymous(t, env, "/"+root)

	for name, data := range map[string]map[string]string{
		"zk-credentials": {"username": user, "password": pass},
		"unrelated":      {"token": "not-for-meltemi"},
	} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: data}
		if _, err := c.kube.CoreV1().Secrets(c.namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// EnvoyFilters go to a namespace of their own, as to Istio's root namespace in a cluster;
	// traffic rules are read from the test's namespace only, so that this host never touches
	// the MetaRouters of other tests.
	efNamespace := extraNamespace(t, c, "ef")
	registry := fmt.Sprintf("zk-helm-%04x", rand.IntN(1<<16))
	dep := installChart(t, env, c, fmt.Sprintf(`registries:
  - name: %s
    kind: zookeeper
    address: %q
    options: {roots: %s}
    credentialsSecretRef: {name: zk-credentials}
traffic:
  envoyFilterNamespace: %s
  watchNamespace: %s
  proxy: metaprotocol-1.4.2 # every proxy runs the MetaProtocol image, so its EnvoyFilters are written
config:
  debounce: 20ms
`, registry, env.ZKAddr, root, efNamespace, c.namespace))
	saName := dep.Spec.Template.Spec.ServiceAccountName
	kubeconfig, saKube, saDyn := serviceAccountClients(t, env, c, saName)

	// Run the host as the Deployment would, with the chart's arguments; only addresses are
	// moved to free loopback ports and the plugins come from the test build.
	args := hostArgsFromChart(t, dep.Spec.Template.Spec.Containers[0].Args, hostFlags(t))
	t.Logf("meltemi run %s (as %s)", strings.Join(args, " "), saName)
	b := startBridgeAs(t, c, kubeconfig, args...)
	b.waitReady(t, env)

	host := strings.ToLower(iface)
	env.Eventually(t, 30*time.Second, func() error {
		se, err := c.getServiceEntry(host)
		if err != nil {
			return err
		}
		if got := addresses(se); !slices.Equal(got, []string{"10.7.0.1"}) {
			return fmt.Errorf("endpoints %v", got)
		}
		if se.GetLabels()["meltemi.io/registry"] != registry {
			return fmt.Errorf("labels %v", se.GetLabels())
		}
		return nil
	})
	env.Eventually(t, 30*time.Second, func() error {
		obj, err := c.dyn.Resource(serviceRegistry).Namespace(c.namespace).Get(ctx, registry, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st, _, _ := unstructured.NestedMap(obj.Object, "status")
		if st["connected"] != true || st["synced"] != true || st["services"] != int64(1) || st["instances"] != int64(1) {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	// Events on the ServiceRegistry (connection, sync, rejected items) go through the chart's
	// events rule.
	env.Eventually(t, 30*time.Second, func() error {
		evs, err := c.kube.CoreV1().Events(c.namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + registry})
		if err != nil {
			return err
		}
		if len(evs.Items) == 0 {
			return fmt.Errorf("no Events on ServiceRegistry %s", registry)
		}
		return nil
	})
	if slices.Contains(args, "--leader-elect=true") {
		lease, err := c.kube.CoordinationV1().Leases(c.namespace).Get(ctx, goldenRelease, metav1.GetOptions{})
		if err != nil {
			t.Errorf("leader-election Lease: %v", err)
		} else if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			t.Errorf("Lease %s has no holder", lease.Name)
		}
	}
	checkTrafficAsServiceAccount(t, c, efNamespace, host)
	if logs := b.logs.String(); regexp.MustCompile(`(?i)forbidden`).MatchString(logs) {
		t.Errorf("the host was refused something it needs:\n%s", logs)
	}

	// Anything beyond the chart's rules is denied to the same identity.
	requireForbidden(t, saKube, saDyn, c.namespace, efNamespace)
}

var envoyFilters = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1alpha3", Resource: "envoyfilters"}

const trafficOwners = "app.kubernetes.io/managed-by=meltemi,meltemi.io/component=traffic"

// checkTrafficAsServiceAccount adds a MetaRouter for host and waits for the host, running as
// the chart's ServiceAccount, to write its EnvoyFilter and the MetaRouter's status. (Another
// test's host reading all namespaces may write the same status first; the caller's check for
// refusals in the log still catches a status write this host was denied.)
func checkTrafficAsServiceAccount(t *testing.T, c *cluster, efNamespace, host string) {
	t.Helper()
	ctx := context.Background()
	var mr unstructured.Unstructured
	if err := yamlToObject(fmt.Sprintf(`apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: inventory, namespace: %s}
spec:
  hosts: [%s]
  routes:
  - name: all
    route:
    - destination: {host: %s}
`, c.namespace, host, host), &mr); err != nil {
		t.Fatal(err)
	}
	c.create(t, mpv1.MetaRouterResource, &mr)
	// Hosts of other tests may read MetaRouters cluster-wide; leave none behind.
	t.Cleanup(func() {
		_ = c.dyn.Resource(mpv1.MetaRouterResource).Namespace(c.namespace).Delete(context.Background(), "inventory", metav1.DeleteOptions{})
	})
	c.env.Eventually(t, 30*time.Second, func() error {
		list, err := c.dyn.Resource(envoyFilters).Namespace(efNamespace).List(ctx, metav1.ListOptions{LabelSelector: trafficOwners})
		if err != nil {
			return err
		}
		for _, ef := range list.Items {
			if strings.HasPrefix(ef.GetAnnotations()["meltemi.io/service"], host+":") {
				return nil
			}
		}
		return fmt.Errorf("no EnvoyFilter for %s in %s (%d owned)", host, efNamespace, len(list.Items))
	})
	c.env.Eventually(t, 30*time.Second, func() error {
		got, err := c.dyn.Resource(mpv1.MetaRouterResource).Namespace(c.namespace).Get(ctx, "inventory", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if conditionStatuses(got.Object)[mpv1.ConditionAccepted] != "True" {
			return fmt.Errorf("MetaRouter status %v", got.Object["status"])
		}
		return nil
	})
}

// extraNamespace creates the namespace <test namespace>-<suffix> for the test.
func extraNamespace(t *testing.T, c *cluster, suffix string) string {
	t.Helper()
	name := c.namespace + "-" + suffix
	if _, err := c.kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.kube.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// installChart installs the chart with values into the test's namespace as the admin, removes
// it when the test ends, and returns its Deployment.
func installChart(t *testing.T, env *harness.Env, c *cluster, values string) *appsv1.Deployment {
	t.Helper()
	file := writeFile(t, "values.yaml", values)
	out, err := helm(t, "install", goldenRelease, chartDir, "--namespace", c.namespace, "--kubeconfig", env.Kubeconfig, "-f", file)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("helm install:\n%s", out)
	t.Cleanup(func() {
		// Cluster-scoped RBAC outlives the namespace; uninstall removes it.
		if _, err := helm(t, "uninstall", goldenRelease, "--namespace", c.namespace, "--kubeconfig", env.Kubeconfig, "--wait"); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	dep, err := c.kube.AppsV1().Deployments(c.namespace).Get(context.Background(), goldenRelease, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the chart's Deployment: %v", err)
	}
	return dep
}

// TestHelmClusterWideTrafficRBAC installs the chart with its default cluster-wide traffic
// reads and asks the real API server, as the chart's ServiceAccount, what it may do: read
// rules everywhere and write MetaRouter status, but write EnvoyFilters in one namespace only.
// No host runs here: one reading every namespace would touch other tests' MetaRouters; the
// API server's authorizer answers before a dry run or a missing object would.
func TestHelmClusterWideTrafficRBAC(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	efNamespace := extraNamespace(t, c, "ef")
	dep := installChart(t, env, c, fmt.Sprintf("traffic: {envoyFilterNamespace: %s}\n", efNamespace))
	_, kube, dyn := serviceAccountClients(t, env, c, dep.Spec.Template.Spec.ServiceAccountName)
	ctx := context.Background()
	dryRun := []string{metav1.DryRunAll}
	list := func(gvr schema.GroupVersionResource) func() error {
		return func() error {
			_, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
			return err
		}
	}
	ef := func(ns string) func() error {
		return func() error {
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
				"metadata": map[string]any{"name": "probe"}, "spec": map[string]any{},
			}}
			_, err := dyn.Resource(envoyFilters).Namespace(ns).Create(ctx, u, metav1.CreateOptions{DryRun: dryRun})
			return err
		}
	}
	patchMetaRouter := func(subresources ...string) func() error {
		return func() error {
			_, err := dyn.Resource(mpv1.MetaRouterResource).Namespace("default").Patch(ctx, "absent", types.MergePatchType,
				[]byte(`{"status":{}}`), metav1.PatchOptions{DryRun: dryRun}, subresources...)
			return err
		}
	}
	allowed := func(err error) bool { return err == nil }
	for _, tc := range []struct {
		what string
		do   func() error
		want func(error) bool
	}{
		{"list MetaRouters in every namespace", list(mpv1.MetaRouterResource), allowed},
		{"list ApplicationProtocols in every namespace", list(mpv1.ApplicationProtocolResource), allowed},
		{"list DestinationRules in every namespace", list(schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}), allowed},
		{"list ServiceEntries in every namespace", list(serviceEntries), allowed},
		{"patch a MetaRouter's status in another namespace (passes authorization, then not found)", patchMetaRouter("status"), apierrors.IsNotFound},
		{"create an EnvoyFilter in its EnvoyFilter namespace (dry run)", ef(efNamespace), allowed},
		{"patch a MetaRouter's spec", patchMetaRouter(), apierrors.IsForbidden},
		{"create an EnvoyFilter elsewhere", ef("default"), apierrors.IsForbidden},
		{"list Secrets in every namespace", func() error {
			_, err := kube.CoreV1().Secrets("").List(ctx, metav1.ListOptions{Limit: 1})
			return err
		}, apierrors.IsForbidden},
		{"list ServiceRegistries in every namespace", list(serviceRegistry), apierrors.IsForbidden},
	} {
		if err := tc.do(); !tc.want(err) {
			t.Errorf("%s as the chart's ServiceAccount: got %v", tc.what, err)
		}
	}
}

// requireZKDeniesAnonymous proves the ACL bites: a client without credentials cannot list path.
func requireZKDeniesAnonymous(t *testing.T, env *harness.Env, path string) {
	t.Helper()
	anon, _, err := zk.Connect([]string{env.ZKAddr}, 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, _, err := anon.Children(path); err != zk.ErrNoAuth {
		t.Fatalf("anonymous listing of %s: %v, want %v", path, err, zk.ErrNoAuth)
	}
}

// serviceAccountClients requests a token for the ServiceAccount (TokenRequest API), writes a
// kubeconfig with it and returns clients acting as that account, after checking the API
// server sees them as the account and nothing more.
func serviceAccountClients(t *testing.T, env *harness.Env, c *cluster, sa string) (string, kubernetes.Interface, dynamic.Interface) {
	t.Helper()
	ctx := context.Background()
	expiry := int64(3600)
	tr, err := c.kube.CoreV1().ServiceAccounts(c.namespace).CreateToken(ctx, sa,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for ServiceAccount %s: %v", sa, err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = &clientcmdapi.Cluster{Server: env.KubeAPI, InsecureSkipTLSVerify: true}
	kc.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["sa"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: sa, Namespace: c.namespace}
	kc.CurrentContext = "sa"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	kube := kubernetes.NewForConfigOrDie(cfg)
	review, err := kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("who am I: %v", err)
	}
	want := "system:serviceaccount:" + c.namespace + ":" + sa
	if u := review.Status.UserInfo; u.Username != want || slices.Contains(u.Groups, "system:masters") {
		t.Fatalf("token authenticates as %s %v, want %s without system:masters", u.Username, u.Groups, want)
	}
	return path, kube, dynamic.NewForConfigOrDie(cfg)
}

// hostArgsFromChart turns the Deployment's container arguments into a local command line:
// the metrics address and the log format are left to startBridge, the xDS server gets a free
// port, and a flag the host does not know fails the test.
func hostArgsFromChart(t *testing.T, chartArgs []string, known func(string) bool) []string {
	t.Helper()
	if len(chartArgs) == 0 || chartArgs[0] != "run" {
		t.Fatalf("container args %v do not start with run", chartArgs)
	}
	var out []string
	for _, a := range chartArgs[1:] {
		flag, _, _ := strings.Cut(a, "=")
		switch {
		case flag == "--listen" || flag == "--log-format" || flag == "--log-level":
			// startBridge gives the host a free port of its own and a debug log in text.
		case !known(flag):
			t.Errorf("the chart passes %s, which `meltemi run` does not know", a)
		case flag == "--xds-listen":
			out = append(out, "--xds-listen="+freeAddr(t))
		default:
			out = append(out, a)
		}
	}
	return out
}

// requireForbidden tries writes and reads outside the chart's rules as the chart's account,
// whose release namespace is ns and whose EnvoyFilters go to efNamespace.
func requireForbidden(t *testing.T, kube kubernetes.Interface, dyn dynamic.Interface, ns, efNamespace string) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("denied-%04x", rand.IntN(1<<16))
	se := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{"hosts": []any{name + ".example.com"}, "resolution": "DNS",
			"ports": []any{map[string]any{"number": int64(80), "name": "http", "protocol": "HTTP"}}},
	}}
	labels := map[string]string{"app": name}
	deployment := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "busybox"}}},
			},
		},
	}
	for _, tc := range []struct {
		what string
		do   func() error
	}{
		{"create a Deployment in its namespace", func() error {
			_, err := kube.AppsV1().Deployments(ns).Create(ctx, deployment, metav1.CreateOptions{})
			return err
		}},
		{"create a ServiceEntry in another namespace", func() error {
			_, err := dyn.Resource(serviceEntries).Namespace("default").Create(ctx, se, metav1.CreateOptions{})
			if err == nil {
				_ = dyn.Resource(serviceEntries).Namespace("default").Delete(ctx, name, metav1.DeleteOptions{})
			}
			return err
		}},
		{"create a ServiceEntry in the EnvoyFilter namespace", func() error {
			_, err := dyn.Resource(serviceEntries).Namespace(efNamespace).Create(ctx, se, metav1.CreateOptions{})
			return err
		}},
		{"create an EnvoyFilter in its own namespace", func() error {
			ef := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
				"metadata": map[string]any{"name": name}, "spec": map[string]any{},
			}}
			_, err := dyn.Resource(envoyFilters).Namespace(ns).Create(ctx, ef, metav1.CreateOptions{})
			return err
		}},
		{"read a Secret no registry names", func() error {
			_, err := kube.CoreV1().Secrets(ns).Get(ctx, "unrelated", metav1.GetOptions{})
			return err
		}},
		{"list Secrets", func() error {
			_, err := kube.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"change a ServiceRegistry's spec", func() error {
			list, err := dyn.Resource(serviceRegistry).Namespace(ns).List(ctx, metav1.ListOptions{})
			if err != nil || len(list.Items) == 0 {
				return fmt.Errorf("listing ServiceRegistries, which is allowed: %v (%d)", err, len(list.Items))
			}
			sr := list.Items[0]
			_ = unstructured.SetNestedField(sr.Object, "other:2181", "spec", "address")
			_, err = dyn.Resource(serviceRegistry).Namespace(ns).Update(ctx, &sr, metav1.UpdateOptions{})
			return err
		}},
		{"create a ServiceRegistry", func() error {
			sr := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "meltemi.io/v1alpha1", "kind": "ServiceRegistry", "metadata": map[string]any{"name": name},
				"spec": map[string]any{"kind": "zookeeper", "address": "zk:2181"},
			}}
			_, err := dyn.Resource(serviceRegistry).Namespace(ns).Create(ctx, sr, metav1.CreateOptions{})
			return err
		}},
		{"create a Namespace", func() error {
			_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
			return err
		}},
		{"read a Lease other than its own", func() error {
			_, err := kube.CoordinationV1().Leases(ns).Get(ctx, "kube-controller-manager", metav1.GetOptions{})
			return err
		}},
		{"grant itself more rights", func() error {
			rb := &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "meltemi", Namespace: ns}},
			}
			_, err := kube.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{})
			return err
		}},
	} {
		if err := tc.do(); !apierrors.IsForbidden(err) {
			t.Errorf("%s as the chart's ServiceAccount: got %v, want 403 Forbidden", tc.what, err)
		}
	}
}
