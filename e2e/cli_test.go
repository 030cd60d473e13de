package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/e2e/dubbo"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
)

func meltemi(t *testing.T, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "meltemi"), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("meltemi %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), stderr.String()
}

func TestConvertPreviewsServiceEntriesWithoutACluster(t *testing.T) {
	env := harness.Load(t)
	conn := connectZK(t, env)
	root := zkRoot(t, conn)
	for _, p := range []dubbo.Provider{
		{IP: "10.7.0.1", Port: 20880, Interface: "com.example.cli.CliService", Application: "cli", Version: "1.0.0"},
		{IP: "10.7.0.2", Port: 20880, Interface: "com.example.cli.CliService", Application: "cli", Version: "2.0.0"},
		{IP: "10.7.0.3", Port: 50051, Protocol: "tri", Interface: "com.example.cli.OtherService", Application: "other"},
	} {
		if _, err := dubbo.Register(conn, root, p); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeFile(t, "registries.yaml", zkRegistryYAML("zk-preview", "default", env.ZKAddr, root))
	// No kubeconfig at all: convert must not need a cluster.
	out, _ := meltemi(t, "convert", "--config", cfg, "--plugin-dir", binDir, "--namespace", "preview")
	docs := strings.Split(out, "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("got %d documents, want 2:\n%s", len(docs), out)
	}
	var se struct {
		Kind     string
		Metadata struct{ Name, Namespace string }
		Spec     struct {
			Hosts     []string
			Ports     []struct{ Name string }
			Endpoints []struct{ Address string }
		}
	}
	if err := yaml.Unmarshal([]byte(docs[0]), &se); err != nil {
		t.Fatal(err)
	}
	if se.Kind != "ServiceEntry" || se.Metadata.Namespace != "preview" || se.Spec.Hosts[0] != "com.example.cli.cliservice" ||
		len(se.Spec.Endpoints) != 2 || se.Spec.Ports[0].Name != "tcp-metaprotocol-dubbo-20880" {
		t.Errorf("unexpected first ServiceEntry:\n%s", docs[0])
	}
	if !strings.Contains(docs[1], "grpc-tri-50051") {
		t.Errorf("Triple provider not mapped to a gRPC port:\n%s", docs[1])
	}
}

func TestPluginsListAndVersion(t *testing.T) {
	out, _ := meltemi(t, "plugins", "list", "--plugin-dir", binDir)
	for kind := range pluginPackages {
		path := filepath.Join(binDir, "meltemi-registry-"+kind)
		sum, err := supervisor.FileChecksum(path)
		if err != nil {
			t.Fatal(err)
		}
		var line string
		for l := range strings.SplitSeq(out, "\n") {
			if strings.HasPrefix(l, kind+" ") {
				line = l
			}
		}
		if line == "" || !strings.Contains(line, sum) || strings.Contains(line, "error") {
			t.Errorf("plugins list has no healthy line for %s with checksum %s:\n%s", kind, sum, out)
		}
	}
	v, _ := meltemi(t, "version")
	if !strings.HasPrefix(v, "meltemi ") || !strings.Contains(v, "plugin protocol 1") {
		t.Errorf("version output %q", v)
	}
}

// TestPluginsDescribe: the options a ServiceRegistry of a kind accepts come from the plugin
// binary itself, with types, defaults and which ones are secrets.
func TestPluginsDescribe(t *testing.T) {
	out, _ := meltemi(t, "plugins", "describe", "--plugin-dir", binDir, "zookeeper")
	fields := map[string][]string{}
	for l := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 {
			fields[f[0]] = f
		}
	}
	if f := fields["resyncInterval"]; len(f) < 3 || f[1] != "duration" || f[2] != "10m0s" {
		t.Errorf("resyncInterval line %q; output:\n%s", f, out)
	}
	if f := fields["password"]; len(f) < 4 || f[2] != "-" || f[3] != "secret" {
		t.Errorf("password is not shown as a secret without default: %q", f)
	}
	if !strings.Contains(out, "kind:         zookeeper") || !strings.Contains(out, "dubbo-application") {
		t.Errorf("describe output lacks the kind or capabilities:\n%s", out)
	}

	cmd := exec.Command(filepath.Join(binDir, "meltemi"), "plugins", "describe", "--plugin-dir", binDir, "no-such-kind")
	msg, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), `no plugin for kind "no-such-kind"`) || !strings.Contains(string(msg), "zookeeper") {
		t.Errorf("describing an unknown kind: err %v, output %q", err, msg)
	}
}
