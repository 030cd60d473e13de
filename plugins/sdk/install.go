package sdk

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

// installCommand is the one thing a plugin binary does when a person (not the host) runs it:
//
//	meltemi-registry-<kind> install DIR
//
// copies the binary into DIR as meltemi-registry-<kind>, where a host whose --plugin-dir
// includes DIR finds it. It lets a plugin ship in an image of its own, even one holding
// nothing but the binary: the chart runs that image as an init container with this command
// and a volume shared with the host (charts/meltemi, plugins.extra).
const installCommand = "install"

// runInstall handles a run outside the host. It reports whether it did (the caller exits with
// the returned status).
func runInstall(args []string, kind string, stdout, stderr io.Writer) (handled bool, status int) {
	if os.Getenv(protocol.Handshake.MagicCookieKey) != "" || len(args) < 1 || args[0] != installCommand {
		return false, 0
	}
	if len(args) != 2 {
		fmt.Fprintf(stderr, "usage: %s install DIR\n", protocol.BinaryPrefix+kind)
		return true, 2
	}
	path, err := install(args[1], kind)
	if err != nil {
		fmt.Fprintf(stderr, "%s: install: %v\n", protocol.BinaryPrefix+kind, err)
		return true, 1
	}
	fmt.Fprintf(stdout, "installed %s\n", path)
	return true, 0
}

// install copies the running executable to dir, atomically (a host scanning dir never sees
// half a binary), executable by everyone.
func install(dir, kind string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding this binary: %w", err)
	}
	src, err := os.Open(self)
	if err != nil {
		return "", err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(dir, ".install-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return "", fmt.Errorf("copying %s: %w", self, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, protocol.BinaryPrefix+kind)
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	return dst, nil
}
