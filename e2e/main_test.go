// Package e2e runs Meltemi end to end: real plugin processes, real registries and a real
// kube-apiserver with Istio's CRDs, all started by e2e/infra/up.sh.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binDir holds meltemi and its plugins, built once per test run (or given by the Makefile).
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	binDir = os.Getenv("MELTEMI_BIN_DIR")
	if binDir == "" {
		dir, err := os.MkdirTemp("", "meltemi-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if err := buildBinaries(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		binDir = dir
	}
	return m.Run()
}

// Plugins built for the tests, by kind.
var pluginPackages = map[string]string{
	"zookeeper": "./registries/zookeeper/cmd/meltemi-registry-zookeeper",
	"consul":    "./registries/consul/cmd/meltemi-registry-consul",
	"etcd":      "./registries/etcd/cmd/meltemi-registry-etcd",
	"synthetic": "./registries/synthetic/cmd/meltemi-registry-synthetic",
	"nacos":     "./registries/nacos/cmd/meltemi-registry-nacos",
}

func buildBinaries(dir string) error {
	pkgs := []string{"./cmd/meltemi"}
	for _, p := range pluginPackages {
		pkgs = append(pkgs, p)
	}
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = ".."
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building binaries: %w", err)
	}
	return nil
}
