// Command meltemi is the Meltemi host: it runs registry plugins and keeps Istio
// ServiceEntries in sync with the registries' services.
//
//	meltemi run [flags]              run the bridge
//	meltemi version                  print the version
//	meltemi plugins list             list plugin binaries found
//	meltemi plugins describe KIND    show a plugin's options
//	meltemi convert --config FILE    print the ServiceEntries the registries in FILE would yield
//	meltemi routes explain --host H --port P --attr method=sayHello …
//	                                 print the route and cluster such a request takes
//	meltemi migrate check            report what stands in the way of moving from Aeraki
//	meltemi completion SHELL         print a shell completion script
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meltemi-mesh/meltemi/internal/gctune"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// The host's memory is mostly long-lived caches (registry state, desired and current
	// objects) that grow with the mesh; Go's default GC headroom doubles that in RSS. Half the
	// headroom keeps 100,000 instances in 256 MiB (see BENCHMARKS.md). A small mesh under churn
	// would then collect several times a second, so the headroom is at least 48 MiB.
	// GOGC, when set, still wins.
	gctune.Keep(50, 48<<20)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := execute(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "meltemi:", err)
		os.Exit(1)
	}
}

// execute runs the command line args names. Help (-h, --help, help) exits 0; a usage error
// names the flag or argument that was wrong and shows the command's usage.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "meltemi",
		Short: "Brings services of external registries into an Istio mesh",
		Long: `meltemi brings services of external registries (ZooKeeper, Nacos, Consul, …) into an
Istio mesh as ServiceEntries, and translates MetaRouters and Aeraki's traffic rules into
proxy configuration served over xDS. "meltemi run" is the server.`,
		// Errors are printed once, by main; usage only for usage errors (flagErrorFunc, args).
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		// Without a subcommand: help, as kubectl and istioctl do.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(usageError)
	root.AddCommand(
		newRunCmd(),
		newVersionCmd(),
		newPluginsCmd(),
		newConvertCmd(),
		newRoutesCmd(),
		newMigrateCmd(),
	)
	wrapArgs(root)
	return root
}

// usageError prints the command's usage after a flag error, which names the flag.
func usageError(cmd *cobra.Command, err error) error {
	fmt.Fprintf(cmd.ErrOrStderr(), "%s\n\n", cmd.UsageString())
	return fmt.Errorf("%s: %w", cmd.CommandPath(), err)
}

// wrapArgs makes argument errors of c and its subcommands print usage, as flag errors do.
func wrapArgs(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError(cmd, err)
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
}

// requireFlags fails, showing usage, unless every named flag was set. (Cobra's own
// required-flag check returns its error without the usage.)
func requireFlags(names ...string) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		var missing []string
		for _, name := range names {
			if !cmd.Flags().Changed(name) {
				missing = append(missing, strconv.Quote(name))
			}
		}
		if len(missing) > 0 {
			return usageError(cmd, fmt.Errorf("required flag(s) %s not set", strings.Join(missing, ", ")))
		}
		return nil
	}
}

// groupCmd is a command that only holds subcommands: run bare, it shows its help; given an
// unknown subcommand, it says so.
func groupCmd(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs, // its error says "unknown command"
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(subs...)
	return c
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and the plugin protocol version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "meltemi %s (plugin protocol %d)\n", version, pluginProtocol())
			return err
		},
	}
}

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
