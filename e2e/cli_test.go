package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	// -o json: one List document, as kubectl prints several objects.
	out, _ = meltemi(t, "convert", "--config", cfg, "--plugin-dir", binDir, "--namespace", "preview", "-o", "json")
	var list struct {
		Kind  string
		Items []struct{ Kind string }
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || list.Kind != "List" || len(list.Items) != 2 || list.Items[0].Kind != "ServiceEntry" {
		t.Errorf("-o json is not a List of 2 ServiceEntries (%v):\n%s", err, out)
	}
}

// TestCLIConventions: help on every level exits 0; a bad flag exits 1 naming it; convert
// fails at once on what retrying cannot fix and on an empty configuration.
func TestCLIConventions(t *testing.T) {
	empty := writeFile(t, "empty.yaml", "# nothing\n")
	badOption := writeFile(t, "bad.yaml", zkRegistryYAML("zk-bad", "default", "127.0.0.1:1", "dubbo")+"    noSuchOption: x\n")
	missingPlugin := writeFile(t, "nokind.yaml", strings.Replace(zkRegistryYAML("zk-none", "default", "127.0.0.1:1", "dubbo"), "kind: zookeeper", "kind: nosuchregistry", 1))
	for _, tc := range []struct {
		name   string
		args   []string
		exit   int
		output string // in stdout or stderr
	}{
		{"bare", nil, 0, "Available Commands:"},
		{"top-level -h", []string{"-h"}, 0, "Available Commands:"},
		{"top-level --help", []string{"--help"}, 0, "Available Commands:"},
		{"help", []string{"help"}, 0, "Available Commands:"},
		{"completion", []string{"completion", "bash"}, 0, "__start_meltemi"},
		{"run -h", []string{"run", "-h"}, 0, "-first-sync-timeout"},
		{"convert --help", []string{"convert", "--help"}, 0, "-kubeconfig"},
		{"plugins list -h", []string{"plugins", "list", "-h"}, 0, "-plugin-dir"},
		{"routes explain -h", []string{"routes", "explain", "-h"}, 0, "-host"},
		{"migrate check -h", []string{"migrate", "check", "-h"}, 0, "-kubeconfig"},
		{"unknown flag", []string{"run", "--no-such-flag"}, 1, "unknown flag: --no-such-flag"},
		{"unknown command", []string{"frobnicate"}, 1, `unknown command "frobnicate"`},
		{"convert without --config", []string{"convert"}, 1, `required flag(s) "config" not set`},
		{"convert of an empty file", []string{"convert", "--config", empty}, 1, "holds no ServiceRegistry"},
		{"convert with a bad option", []string{"convert", "--config", badOption, "--plugin-dir", binDir}, 1, "noSuchOption"},
		{"convert without the plugin", []string{"convert", "--config", missingPlugin, "--plugin-dir", binDir}, 1, "nosuchregistry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(binDir, "meltemi"), tc.args...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			err := cmd.Run()
			exit := 0
			if ee, ok := err.(*exec.ExitError); ok {
				exit = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if exit != tc.exit {
				t.Errorf("exit status %d, want %d\nstderr:\n%s", exit, tc.exit, stderr.String())
			}
			if all := stdout.String() + stderr.String(); !strings.Contains(all, tc.output) {
				t.Errorf("output does not say %q:\n%s", tc.output, all)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("took %v; an error that retrying cannot fix must end the command at once", took)
			}
		})
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
