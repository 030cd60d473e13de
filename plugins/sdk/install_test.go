package sdk

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

func TestInstallCopiesTheBinary(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	handled, status := runInstall([]string{"install", dir}, "eureka", &stdout, &stderr)
	if !handled || status != 0 {
		t.Fatalf("handled %v, status %d, stderr %s", handled, status, stderr.String())
	}
	dst := filepath.Join(dir, protocol.BinaryPrefix+"eureka")
	self, _ := os.Executable()
	want, _ := os.ReadFile(self)
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("installed file differs from the binary (err %v)", err)
	}
	if info, _ := os.Stat(dst); info.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755", info.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left %d files in the directory, want just the plugin", len(entries))
	}
	if !strings.Contains(stdout.String(), dst) {
		t.Errorf("stdout %q does not name %s", stdout.String(), dst)
	}
}

func TestInstallOnlyWhenRunByAPerson(t *testing.T) {
	var out bytes.Buffer
	if handled, _ := runInstall(nil, "eureka", &out, &out); handled {
		t.Error("no arguments: handled as install")
	}
	if handled, status := runInstall([]string{"install"}, "eureka", &out, &out); !handled || status != 2 || !strings.Contains(out.String(), "usage:") {
		t.Errorf("install without DIR: handled %v, status %d, output %q", handled, status, out.String())
	}
	if handled, status := runInstall([]string{"install", filepath.Join(t.TempDir(), "missing")}, "eureka", &out, &out); !handled || status != 1 {
		t.Errorf("install into a missing directory: handled %v, status %d", handled, status)
	}
	t.Setenv(protocol.Handshake.MagicCookieKey, protocol.Handshake.MagicCookieValue)
	if handled, _ := runInstall([]string{"install", t.TempDir()}, "eureka", &out, &out); handled {
		t.Error("started by the host (handshake cookie set): handled as install")
	}
}
