// Command meltemi is the Meltemi host: it runs registry plugins and keeps Istio
// ServiceEntries in sync with the registries' services.
//
//	meltemi [run] [flags]            run the bridge (default)
//	meltemi version                  print the version
//	meltemi plugins list             list plugin binaries found
//	meltemi plugins describe KIND    show a plugin's options
//	meltemi convert --config FILE    print the ServiceEntries the registries in FILE would yield
//	meltemi routes explain --host H --port P --attr method=sayHello …
//	                                 print the route and cluster such a request takes
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// The host's memory is mostly long-lived caches (registry state, desired and current
	// objects) that grow with the mesh; Go's default GC headroom doubles that in RSS. Half the
	// headroom keeps 100,000 instances under 512 MiB (see BENCHMARKS.md) for a little GC CPU.
	// GOGC, when set, still wins.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(50)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, errHelp) {
			return // help was asked for and shown
		}
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "meltemi:", err)
		}
		os.Exit(1)
	}
}

// errUsage ends a command whose arguments were wrong (what was wrong is printed already);
// errHelp one whose help was asked for (-h, --help): shown, exit status 0.
var (
	errUsage = errors.New("usage")
	errHelp  = errors.New("help")
)

// flagError turns a flag parsing error into errHelp or errUsage; the flag package has printed
// the usage, and for a bad flag the error naming it.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return errHelp
	}
	return errUsage
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprint(stdout, usage)
		return nil
	}
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return run(ctx, args, stderr)
	case "version":
		fmt.Fprintf(stdout, "meltemi %s (plugin protocol %d)\n", version, pluginProtocol())
		return nil
	case "plugins":
		return pluginsCmd(ctx, args, stdout, stderr)
	case "convert":
		return convertCmd(ctx, args, stdout, stderr)
	case "routes":
		return routesCmd(ctx, args, stdout, stderr)
	case "migrate":
		return migrateCmd(ctx, args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
	return errUsage
}

const usage = `meltemi brings services of external registries into an Istio mesh.

Commands:
  run              run the bridge (default); see meltemi run -h
  version          print the version
  plugins list     list the registry plugins found in the plugin directory
  plugins describe show the options a registry plugin accepts
  convert          print the ServiceEntries that registries would yield, without a cluster
  routes explain   print the route and cluster a request with given attributes takes
  migrate check    report what stands in the way of moving from Aeraki and dubbo2istio
`

// defaultPluginDir is the directory of the meltemi executable: plugins ship beside it.
func defaultPluginDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "."
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return filepath.Dir(exe)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be json or text, not %q", format)
}
