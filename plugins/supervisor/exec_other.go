//go:build !linux

package supervisor

import "os/exec"

// pluginCommand returns the command that runs the plugin at path.
func pluginCommand(path string) (*exec.Cmd, func(), error) {
	return exec.Command(path), func() {}, nil
}
