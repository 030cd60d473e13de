package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
)

// TestHelmInstallUpgradeRollback installs the chart on the real API server with templated
// CRDs, upgrades it to a chart whose ServiceRegistry CRD gained a column and to values that
// swap a registry, add plugins from images of their own and a third replica, rolls back and
// uninstalls — checking after each step what the API server holds.
//
// The chart is a copy whose CRDs have API groups of their own, so this release can own its
// CRDs without touching those the other tests use.
func TestHelmInstallUpgradeRollback(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	ctx := context.Background()
	suffix := fmt.Sprintf("up%04x", rand.IntN(1<<16))
	release := "meltemi-" + suffix
	chart, crdNames := chartWithOwnCRDGroups(t, suffix)
	registryCRD := "serviceregistries." + suffix + ".meltemi.io"
	t.Cleanup(func() {
		for _, name := range crdNames {
			_ = c.dyn.Resource(crdResource).Delete(context.Background(), name, metav1.DeleteOptions{})
		}
	})
	kube := []string{"--namespace", c.namespace, "--kubeconfig", env.Kubeconfig}
	run := func(args ...string) {
		t.Helper()
		out, err := helm(t, append(args, kube...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("helm %s:\n%s", args[0], out)
	}
	registry := func(name string) string {
		return fmt.Sprintf("{name: %s-%s, kind: zookeeper, address: 'zk-%s:2181'}", name, suffix, name)
	}

	// 1. Install: templated CRDs are release objects (Helm's crds/ is skipped).
	v1 := writeFile(t, "v1.yaml", "crds: {templated: true}\nregistries: ["+registry("a")+"]\n")
	run("install", release, chart, "--skip-crds", "-f", v1)
	for _, name := range crdNames {
		crd, err := c.dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("CRD %s after install: %v", name, err)
		}
		if crd.GetLabels()["app.kubernetes.io/managed-by"] != "Helm" || crd.GetAnnotations()["meta.helm.sh/release-name"] != release ||
			crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s is not the release's, kept on uninstall: labels %v, annotations %v", name, crd.GetLabels(), crd.GetAnnotations())
		}
	}
	c.wantRegistries(t, suffix, "a-"+suffix)
	dep := c.deployment(t, release)
	if len(dep.Spec.Template.Spec.InitContainers) != 0 || slices.ContainsFunc(dep.Spec.Template.Spec.Containers[0].Args, isPluginDirArg) {
		t.Errorf("plugins.extra empty, yet the Deployment has init containers or --plugin-dir: %+v", dep.Spec.Template.Spec)
	}

	// 2. Upgrade to a newer chart (a CRD column added) and new values.
	addPrinterColumn(t, filepath.Join(chart, "crds", "meltemi.io_serviceregistries.yaml"), "Upgraded", ".spec.kind")
	v2 := writeFile(t, "v2.yaml", `crds: {templated: true}
replicaCount: 3
registries: [`+registry("b")+`]
plugins:
  extra:
    - {name: eureka, image: registry.example.com/meltemi-registry-eureka:1.2.0, binary: /meltemi-registry-eureka}
    - {name: etcd-v2, image: registry.example.com/meltemi-plugins-etcd:0.3.0, mode: imageVolume, subPath: plugins}
`)
	run("upgrade", release, chart, "-f", v2)
	if cols := printerColumns(t, c, registryCRD); !slices.Contains(cols, "Upgraded") {
		t.Errorf("the upgrade did not update the templated CRD: columns %v", cols)
	}
	c.wantRegistries(t, suffix, "b-"+suffix)
	dep = c.deployment(t, release)
	spec := dep.Spec.Template.Spec
	if *dep.Spec.Replicas != 3 {
		t.Errorf("replicas %d after the upgrade, want 3", *dep.Spec.Replicas)
	}
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != "plugin-eureka" ||
		!slices.Equal(spec.InitContainers[0].Command, []string{"/meltemi-registry-eureka", "install", "/var/lib/meltemi/plugins"}) {
		t.Errorf("init containers %+v, want plugin-eureka running the SDK's install", spec.InitContainers)
	}
	var imageVolume bool
	for _, v := range spec.Volumes {
		imageVolume = imageVolume || v.Name == "plugin-etcd-v2" && v.Image != nil && v.Image.Reference == "registry.example.com/meltemi-plugins-etcd:0.3.0"
	}
	if !imageVolume {
		t.Errorf("the API server does not keep the image volume: %+v", spec.Volumes)
	}
	if want := "--plugin-dir=/usr/local/bin:/var/lib/meltemi/plugins:/var/lib/meltemi/plugin-images/etcd-v2/plugins"; !slices.Contains(spec.Containers[0].Args, want) {
		t.Errorf("args %v lack %s", spec.Containers[0].Args, want)
	}

	// 3. Roll back to the first revision: values, objects and the templated CRDs with them.
	run("rollback", release, "1")
	c.wantRegistries(t, suffix, "a-"+suffix)
	if dep = c.deployment(t, release); len(dep.Spec.Template.Spec.InitContainers) != 0 || *dep.Spec.Replicas != 2 {
		t.Errorf("after rollback: replicas %d, init containers %+v", *dep.Spec.Replicas, dep.Spec.Template.Spec.InitContainers)
	}
	if cols := printerColumns(t, c, registryCRD); slices.Contains(cols, "Upgraded") {
		t.Errorf("rollback kept the newer CRD's column: %v", cols)
	}

	// 4. Uninstall: the release's objects go, its CRDs stay (with them every object of their kinds).
	run("uninstall", release, "--wait")
	if _, err := c.kube.AppsV1().Deployments(c.namespace).Get(ctx, release, metav1.GetOptions{}); !isNotFound(err) {
		t.Errorf("Deployment after uninstall: %v", err)
	}
	for _, name := range crdNames {
		if _, err := c.dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("CRD %s after uninstall: %v (resource-policy keep)", name, err)
		}
	}
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func isPluginDirArg(arg string) bool { return strings.HasPrefix(arg, "--plugin-dir") }

// chartWithOwnCRDGroups copies the chart, giving each CRD the API group <suffix>.<group>,
// and returns the copy's directory and the CRDs' names.
func chartWithOwnCRDGroups(t *testing.T, suffix string) (string, []string) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "meltemi")
	if err := os.CopyFS(dst, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dst, "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in the chart copy (%v)", err)
	}
	var names []string
	for _, f := range files {
		editYAML(t, f, func(crd map[string]any) {
			spec := crd["spec"].(map[string]any)
			spec["group"] = suffix + "." + spec["group"].(string)
			name := spec["names"].(map[string]any)["plural"].(string) + "." + spec["group"].(string)
			crd["metadata"].(map[string]any)["name"] = name
			names = append(names, name)
		})
	}
	return dst, names
}

func addPrinterColumn(t *testing.T, file, name, path string) {
	t.Helper()
	editYAML(t, file, func(crd map[string]any) {
		version := crd["spec"].(map[string]any)["versions"].([]any)[0].(map[string]any)
		cols, _ := version["additionalPrinterColumns"].([]any)
		version["additionalPrinterColumns"] = append(cols, map[string]any{"name": name, "type": "string", "jsonPath": path})
	})
}

func editYAML(t *testing.T, file string, edit func(map[string]any)) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(data, &obj); err != nil {
		t.Fatal(err)
	}
	edit(obj)
	if data, err = yaml.Marshal(obj); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func printerColumns(t *testing.T, c *cluster, crdName string) []string {
	t.Helper()
	crd, err := c.dyn.Resource(crdResource).Get(context.Background(), crdName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	var names []string
	for _, col := range versions[0].(map[string]any)["additionalPrinterColumns"].([]any) {
		names = append(names, col.(map[string]any)["name"].(string))
	}
	return names
}

// wantRegistries checks that the ServiceRegistries of the test's namespace whose names end in
// suffix are exactly names.
func (c *cluster) wantRegistries(t *testing.T, suffix string, names ...string) {
	t.Helper()
	list, err := c.dyn.Resource(serviceRegistry).Namespace(c.namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sr := range list.Items {
		if strings.HasSuffix(sr.GetName(), suffix) {
			got = append(got, sr.GetName())
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, names) {
		t.Errorf("ServiceRegistries %v, want %v", got, names)
	}
}

func (c *cluster) deployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	dep, err := c.kube.AppsV1().Deployments(c.namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Deployment %s: %v", name, err)
	}
	return dep
}
