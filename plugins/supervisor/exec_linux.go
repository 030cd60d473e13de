package supervisor

import (
	"fmt"
	"os"
	"os/exec"
)

// pluginCommand returns the command that runs the plugin at path, and a function to call
// once it has started. On Linux the binary is opened first and run as /proc/self/fd/N: the
// checksum go-plugin verifies and the program that runs are the same file, even if someone
// replaces the path in between.
func pluginCommand(path string) (*exec.Cmd, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("opening plugin: %w", err)
	}
	fdPath := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	if _, err := os.Stat(fdPath); err != nil {
		// No /proc (an unusual sandbox): run by path.
		f.Close()
		return exec.Command(path), func() {}, nil
	}
	cmd := exec.Command(fdPath)
	cmd.Args[0] = path // what ps shows
	return cmd, func() { f.Close() }, nil
}
