package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
)

// syntheticRegistryYAML is a ServiceRegistry served by the synthetic plugin.
func syntheticRegistryYAML(name, namespace, checksum string, options map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: meltemi.io/v1alpha1\nkind: ServiceRegistry\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  kind: synthetic\n  address: none\n", name, namespace)
	if checksum != "" {
		fmt.Fprintf(&b, "  pluginSHA256: %q\n", checksum)
	}
	b.WriteString("  options:\n")
	for _, k := range slices.Sorted(maps.Keys(options)) {
		fmt.Fprintf(&b, "    %s: %q\n", k, options[k])
	}
	return b.String()
}

// uniqueName returns a registry name of the test's own (names are cluster-wide).
func uniqueName(prefix string) string { return fmt.Sprintf("%s-%04x", prefix, rand.IntN(1<<16)) }

// pluginChildren returns the PIDs of the registry plugin processes whose parent is pid.
func pluginChildren(t testing.TB, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, state, ok := procStat(child)
		if !ok || ppid != pid || state == "Z" {
			continue
		}
		if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", child)); bytes.Contains(cmdline, []byte("meltemi-registry-")) {
			out = append(out, child)
		}
	}
	return out
}

// procStat reads a process's parent PID and state.
func procStat(pid int) (ppid int, state string, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", false
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 2 {
		return 0, "", false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0], err == nil
}

// alive reports whether pid runs (a zombie has exited).
func alive(pid int) bool {
	_, state, ok := procStat(pid)
	return ok && state != "Z" && state != "X"
}

// waitPlugins waits until the host runs n plugin processes and returns their PIDs.
func waitPlugins(t *testing.T, env *harness.Env, b *bridge, n int) []int {
	t.Helper()
	var pids []int
	env.Eventually(t, 30*time.Second, func() error {
		if pids = pluginChildren(t, b.cmd.Process.Pid); len(pids) != n {
			return fmt.Errorf("%d plugin processes, want %d", len(pids), n)
		}
		return nil
	})
	return pids
}

func (c *cluster) registryStatus(t testing.TB, name string) map[string]any {
	t.Helper()
	obj, err := c.dyn.Resource(serviceRegistry).Namespace(c.namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting ServiceRegistry %s: %v", name, err)
	}
	st, _, _ := unstructured.NestedMap(obj.Object, "status")
	return st
}

// revisions maps each synthetic service host to the rev labels of its endpoints, sorted.
func revisions(ses map[string]*unstructured.Unstructured) map[string]string {
	out := map[string]string{}
	for _, se := range ses {
		hosts, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "hosts")
		var revs []string
		for _, ep := range endpointsOf(se) {
			revs = append(revs, ep.Address+"="+ep.Labels["rev"])
		}
		slices.Sort(revs)
		for _, h := range hosts {
			out[h] = strings.Join(revs, ",")
		}
	}
	return out
}

func TestPluginKilledMidStreamKeepsServiceEntries(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	name := uniqueName("syn-kill")
	opts := map[string]string{"services": "20", "instancesPerService": "2", "churnEvents": "1500", "churnPerSecond": "500", "domain": name + ".test"}
	var sr unstructured.Unstructured
	if err := yamlToObject(syntheticRegistryYAML(name, c.namespace, "", opts), &sr); err != nil {
		t.Fatal(err)
	}
	c.create(t, serviceRegistry, &sr)
	b := startBridge(t, c, "--registry-namespace", c.namespace)
	b.waitReady(t, env)
	env.Eventually(t, 20*time.Second, func() error {
		if n := len(c.serviceEntries(t)); n != 20 {
			return fmt.Errorf("%d ServiceEntries", n)
		}
		return nil
	})

	// Kill the plugin while it streams changes: the ServiceEntries stay while it is down.
	first := waitPlugins(t, env, b, 1)[0]
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 30*time.Second, func() error {
		if n := len(c.serviceEntries(t)); n != 20 {
			t.Fatalf("%d ServiceEntries while the plugin was down, want 20", n)
		}
		if pids := pluginChildren(t, b.cmd.Process.Pid); len(pids) != 1 || pids[0] == first {
			return fmt.Errorf("not restarted yet (plugins %v)", pids)
		}
		return nil
	})

	// The restarted plugin's snapshot and changes converge on its final state.
	want := syntheticRevisions(t, name, opts, 1500)
	env.Eventually(t, 60*time.Second, func() error {
		got := revisions(c.serviceEntries(t))
		for h, w := range want {
			if got[h] != w {
				return fmt.Errorf("%s: endpoints %s, want %s", h, got[h], w)
			}
		}
		return nil
	})
	env.Eventually(t, 20*time.Second, func() error {
		if st := c.registryStatus(t, name); st["restarts"] != int64(1) || st["synced"] != true {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	if m := b.metrics(t); !strings.Contains(m, `meltemi_plugin_restarts_total{reason="exited",registry="`+name+`"} 1`) {
		t.Errorf("restart metric missing:\n%s", grepLines(m, "meltemi_plugin_restarts_total"))
	}
}

func grepLines(text, substr string) string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// No plugin outlives its host, whether the host is stopped or killed.
func TestPluginsEndWithTheHost(t *testing.T) {
	env := harness.Load(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			c := newCluster(t, env)
			a, z := uniqueName("syn-a"), uniqueName("syn-b")
			cfg := writeFile(t, "registries.yaml", syntheticRegistryYAML(a, c.namespace, "", map[string]string{"services": "2", "domain": a + ".test"})+
				"---\n"+syntheticRegistryYAML(z, c.namespace, "", map[string]string{"services": "2", "domain": z + ".test"}))
			b := startBridge(t, c, "--config", cfg)
			b.waitReady(t, env)
			pids := waitPlugins(t, env, b, 2)

			// While it runs: the plugins' own log lines are in the host's log, with the registry.
			for _, reg := range []string{a, z} {
				if !hasLogLine(b.logs.String(), `msg="synthetic registry serving"`, "registry="+reg, "plugin=meltemi-registry-synthetic") {
					t.Errorf("plugin log of %s not in the host log", reg)
				}
			}
			if !hasLogLine(b.logs.String(), `msg="registry plugin started"`, "registry="+a, "autoMTLS=true") {
				t.Errorf("host log does not show the plugin started with AutoMTLS")
			}

			if err := b.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			<-b.stopped
			env.Eventually(t, 5*time.Second, func() error {
				for _, pid := range pids {
					if alive(pid) {
						return fmt.Errorf("plugin %d still running after the host got %s", pid, sig)
					}
				}
				return nil
			})
		})
	}
}

// hasLogLine reports whether one line of a text log contains every part.
func hasLogLine(log string, parts ...string) bool {
	for l := range strings.SplitSeq(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}

func TestChecksumMismatchIsRefused(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	name := uniqueName("syn-sum")
	wrong := strings.Repeat("0f", 32)
	cfg := writeFile(t, "registries.yaml", syntheticRegistryYAML(name, c.namespace, wrong, map[string]string{"services": "1", "domain": name + ".test"}))
	b := startBridge(t, c, "--config", cfg)
	env.Eventually(t, 30*time.Second, func() error {
		if !hasLogLine(b.logs.String(), "registry="+name, "refusing plugin", "meltemi-registry-synthetic", "checksum", wrong) {
			return fmt.Errorf("no refusal in the host log")
		}
		return nil
	})
	if pids := pluginChildren(t, b.cmd.Process.Pid); len(pids) != 0 {
		t.Errorf("a plugin runs despite its checksum: %v", pids)
	}
	if n := len(c.serviceEntries(t)); n != 0 {
		t.Errorf("%d ServiceEntries from a refused plugin", n)
	}
}

func TestProtocolVersionMismatchIsExplained(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	dir := t.TempDir()
	build := exec.Command("go", "build", "-ldflags", "-X github.com/meltemi-mesh/meltemi/plugins/protocol.servedVersion=2",
		"-o", dir+string(filepath.Separator), pluginPackages["synthetic"])
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building a protocol 2 plugin: %v\n%s", err, out)
	}
	name := uniqueName("syn-v2")
	cfg := writeFile(t, "registries.yaml", syntheticRegistryYAML(name, c.namespace, "", map[string]string{"services": "1", "domain": name + ".test"}))
	b := startBridge(t, c, "--config", cfg, "--plugin-dir", dir)
	env.Eventually(t, 30*time.Second, func() error {
		if !hasLogLine(b.logs.String(), "registry="+name, "another plugin protocol version", "speaks version 1", "Plugin version: 2") {
			return fmt.Errorf("no explanation in the host log")
		}
		return nil
	})
}

func TestGarbageIsRejectedItemByItem(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	name := uniqueName("syn-junk")
	domain := name + ".test"
	var sr unstructured.Unstructured
	if err := yamlToObject(syntheticRegistryYAML(name, c.namespace, "", map[string]string{"services": "6", "instancesPerService": "2", "garbageEvery": "2", "domain": domain}), &sr); err != nil {
		t.Fatal(err)
	}
	c.create(t, serviceRegistry, &sr)
	b := startBridge(t, c, "--registry-namespace", c.namespace)
	b.waitReady(t, env)

	// The good services and the good endpoints of the damaged one flow.
	env.Eventually(t, 20*time.Second, func() error {
		got := revisions(c.serviceEntries(t))
		want := map[string]string{
			"svc-00000." + domain: "10.0.0.1=0,10.0.0.2=0",
			"svc-00001." + domain: "10.0.0.3=0,10.0.0.4=0,10.255.255.254=",
			"svc-00002." + domain: "10.0.0.5=0,10.0.0.6=0",
			"svc-00004." + domain: "10.0.0.10=0,10.0.0.9=0",
		}
		for h, w := range want {
			if got[h] != w {
				return fmt.Errorf("%s: %q, want %q", h, got[h], w)
			}
		}
		if len(got) != len(want) {
			return fmt.Errorf("ServiceEntries for %v", got)
		}
		return nil
	})
	// Each bad item is listed in the registry's status with its reason.
	env.Eventually(t, 20*time.Second, func() error {
		items, _, _ := unstructured.NestedSlice(map[string]any{"s": c.registryStatus(t, name)}, "s", "rejectedItems")
		got := map[string]string{}
		for _, it := range items {
			m, _ := it.(map[string]any)
			item, _ := m["item"].(string)
			reason, _ := m["reason"].(string)
			got[item] = reason
		}
		for item, part := range map[string]string{
			"svc-00001/not-an-ip:20880":                      "not an IP address",
			"svc-00001/10.255.255.254:0":                     "out of range",
			"svc-00001/10.255.255.254:70000":                 "out of range",
			"svc-00001/10.255.255.254:20881 label oversized": "no more than 63",
			"svc-00003": "empty",
			"svc-00005": "not a DNS name",
		} {
			if !strings.Contains(got[item], part) {
				return fmt.Errorf("rejection of %s: %q (all: %v)", item, got[item], got)
			}
		}
		return nil
	})
}

// TestPluginAddedFromItsOwnDirectory does what the chart's plugins.extra does in a pod: the
// plugin binary copies itself into a directory of its own (`meltemi-registry-<kind> install
// DIR`, the init container's command), and a host whose --plugin-dir lists that directory
// after the built-in one runs it — pinned by checksum — while the built-in plugins stay found.
func TestPluginAddedFromItsOwnDirectory(t *testing.T) {
	builtin, added := t.TempDir(), t.TempDir()
	for _, kind := range []string{"zookeeper", "nacos"} {
		if err := os.Symlink(filepath.Join(binDir, "meltemi-registry-"+kind), filepath.Join(builtin, "meltemi-registry-"+kind)); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(filepath.Join(binDir, "meltemi-registry-synthetic"), "install", added).CombinedOutput()
	if err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	installed := filepath.Join(added, "meltemi-registry-synthetic")
	sum, err := supervisor.FileChecksum(installed)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := supervisor.FileChecksum(filepath.Join(binDir, "meltemi-registry-synthetic")); sum != want {
		t.Fatalf("installed copy's checksum %s differs from the binary's %s", sum, want)
	}
	dirs := builtin + string(os.PathListSeparator) + added

	list, _ := meltemi(t, "plugins", "list", "--plugin-dir", dirs)
	for _, want := range []string{"zookeeper ", "nacos ", "synthetic "} {
		if !strings.Contains(list, "\n"+want) {
			t.Errorf("plugins list lacks %q:\n%s", want, list)
		}
	}
	if !strings.Contains(list, installed) {
		t.Errorf("plugins list does not show the added plugin at %s:\n%s", installed, list)
	}

	name := uniqueName("syn-added")
	cfg := writeFile(t, "registries.yaml", syntheticRegistryYAML(name, "default", sum, map[string]string{"services": "2", "domain": name + ".test"}))
	preview, _ := meltemi(t, "convert", "--config", cfg, "--plugin-dir", dirs, "-o", "json")
	var objs struct {
		Items []struct{ Spec struct{ Hosts []string } }
	}
	if err := json.Unmarshal([]byte(preview), &objs); err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, it := range objs.Items {
		hosts = append(hosts, it.Spec.Hosts...)
	}
	slices.Sort(hosts)
	if want := []string{"svc-00000." + name + ".test", "svc-00001." + name + ".test"}; !slices.Equal(hosts, want) {
		t.Errorf("hosts from the added plugin %v, want %v", hosts, want)
	}
}
