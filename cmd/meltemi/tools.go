package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
	"github.com/meltemi-mesh/meltemi/serviceentries"
	"github.com/meltemi-mesh/meltemi/serviceentries/convert"
	"github.com/meltemi-mesh/meltemi/serviceentries/serviceregistry"
	"github.com/meltemi-mesh/meltemi/serviceentries/store"
	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
)

var lookupEnv = os.LookupEnv

func newPluginsCmd() *cobra.Command {
	return groupCmd("plugins", "List registry plugins and show what they accept", newPluginsListCmd(), newPluginsDescribeCmd())
}

func pluginDirFlag(fs *pflag.FlagSet, dir *string) {
	fs.StringVar(dir, "plugin-dir", defaultPluginDir(), "directories holding meltemi-registry-<kind> binaries, separated by '"+string(os.PathListSeparator)+"'")
}

func newPluginsListCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the registry plugins found in the plugin directory, with version, checksum and capabilities",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return pluginsList(cmd.Context(), dir, cmd.OutOrStdout())
		},
	}
	pluginDirFlag(cmd.Flags(), &dir)
	return cmd
}

func pluginsList(ctx context.Context, dir string, stdout io.Writer) error {
	found, err := supervisor.Discover(dir)
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tVERSION\tSHA256\tCAPABILITIES\tPATH")
	for _, kind := range slices.Sorted(maps.Keys(found)) {
		path := found[kind]
		sum, err := supervisor.FileChecksum(path)
		if err != nil {
			sum = "error: " + err.Error()
		}
		version, caps := "", ""
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		desc, err := supervisor.Describe(dctx, path, "", quiet)
		cancel()
		if err != nil {
			version = "error: " + err.Error()
		} else {
			version, caps = desc.GetVersion(), strings.Join(desc.GetCapabilities(), ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", kind, version, sum, caps, path)
	}
	return tw.Flush()
}

func newPluginsDescribeCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "describe KIND",
		Short: "Show the options a ServiceRegistry of a kind accepts, from its plugin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return pluginsDescribe(cmd.Context(), dir, args[0], cmd.OutOrStdout())
		},
	}
	pluginDirFlag(cmd.Flags(), &dir)
	return cmd
}

// pluginsDescribe prints what a plugin says about itself, above all the options a
// ServiceRegistry of its kind accepts.
func pluginsDescribe(ctx context.Context, dir, kind string, stdout io.Writer) error {
	found, err := supervisor.Discover(dir)
	if err != nil {
		return err
	}
	path, ok := found[kind]
	if !ok {
		return fmt.Errorf("no plugin for kind %q in %s (found: %s)", kind, dir, strings.Join(slices.Sorted(maps.Keys(found)), ", "))
	}
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	desc, err := supervisor.Describe(dctx, path, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return fmt.Errorf("describing %s: %w", path, err)
	}
	fmt.Fprintf(stdout, "kind:         %s\nversion:      %s\ncapabilities: %s\npath:         %s\n\noptions:\n",
		desc.GetKind(), desc.GetVersion(), strings.Join(desc.GetCapabilities(), ","), path)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tTYPE\tDEFAULT\tNOTES\tDESCRIPTION")
	for _, o := range desc.GetOptions() {
		var notes []string
		if o.GetRequired() {
			notes = append(notes, "required")
		}
		if o.GetSecret() {
			notes = append(notes, "secret (from credentialsSecretRef)")
		}
		typ := strings.ToLower(strings.TrimPrefix(o.GetType().String(), "OPTION_TYPE_"))
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", o.GetName(), typ, orDash(o.GetDefaultValue()), orDash(strings.Join(notes, ", ")), o.GetDescription())
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// collector is a Writer that keeps desired objects in memory, as the reconciler would apply
// them, for convert.
type collector struct {
	mu     sync.Mutex
	groups map[string][]*unstructured.Unstructured
}

func (c *collector) SetGroup(group string, objs []*unstructured.Unstructured) []error {
	var errs []error
	desired := make([]*unstructured.Unstructured, 0, len(objs))
	for _, obj := range objs {
		d, err := synckube.Desired(obj, nil)
		if err != nil {
			errs = append(errs, &synckube.ObjectError{Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName(), Err: err})
			continue
		}
		desired = append(desired, d)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.groups[group] = desired
	return errs
}

func (c *collector) AllowDeletes() {}

// objects returns every object, ordered by kind and name.
func (c *collector) objects() []*unstructured.Unstructured {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*unstructured.Unstructured
	for _, objs := range c.groups {
		out = append(out, objs...)
	}
	slices.SortFunc(out, func(a, b *unstructured.Unstructured) int {
		return cmp.Or(cmp.Compare(a.GetKind(), b.GetKind()), cmp.Compare(a.GetName(), b.GetName()))
	})
	return out
}

type convertOptions struct {
	configFile, output, namespace, pluginDir, kubeconfig string
	timeout                                              time.Duration
}

func newConvertCmd() *cobra.Command {
	var o convertOptions
	cmd := &cobra.Command{
		Use:   "convert --config FILE",
		Short: "Print the ServiceEntries that registries would yield, without a cluster",
		Long: `Runs the plugins of the ServiceRegistries in FILE, waits for their first snapshot and prints
the ServiceEntries (and WorkloadEntries) "meltemi run" would write. Needs no cluster, except
to read credentials Secrets (--kubeconfig).`,
		Args:    cobra.NoArgs,
		PreRunE: requireFlags("config"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConvert(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.configFile, "config", "", "YAML file of ServiceRegistry objects (required)")
	fs.StringVarP(&o.output, "output", "o", "yaml", "output format: yaml or json")
	fs.StringVar(&o.namespace, "namespace", "meltemi-system", "namespace the ServiceEntries would be written to")
	pluginDirFlag(fs, &o.pluginDir)
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for every registry's first snapshot")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for reading the registries' credentials Secrets (credentialsSecretRef); without it such registries are refused")
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"yaml", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func runConvert(ctx context.Context, o convertOptions, stdout, stderr io.Writer) error {
	if o.output != "yaml" && o.output != "json" {
		return fmt.Errorf("--output must be yaml or json, not %q", o.output)
	}
	srs, err := serviceregistry.LoadFile(o.configFile)
	if err != nil {
		return err
	}
	if len(srs) == 0 {
		return fmt.Errorf("%s holds no ServiceRegistry", o.configFile)
	}
	var secrets kubernetes.Interface
	if o.kubeconfig != "" {
		cfg, err := restConfig(o.kubeconfig)
		if err != nil {
			return err
		}
		if secrets, err = kubernetes.NewForConfig(cfg); err != nil {
			return fmt.Errorf("creating client: %w", err)
		}
	}
	regs, err := serviceregistry.Resolve(ctx, secrets, srs)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	out := &collector{groups: map[string][]*unstructured.Unstructured{}}
	ctrl := serviceentries.New(serviceentries.Config{Convert: convert.Options{Namespace: o.namespace}, Logger: log}, store.New(), out)
	mgr := serviceregistry.NewManager(supervisor.Config{PluginDir: o.pluginDir, Logger: log}, ctrl)
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	go ctrl.Run(ctx)
	mgr.Apply(ctx, regs)
	defer mgr.Stop()
	for !ctrl.DeletesAllowed() {
		// A plugin that cannot start or refuses its options will not do better by retrying.
		for name, st := range mgr.Statuses() {
			if st.Failure == supervisor.ReasonStartFailed || st.Failure == supervisor.ReasonConfigureFailed {
				return fmt.Errorf("registry %s: %s", name, st.Message)
			}
		}
		select {
		case <-ctx.Done():
			var pending []string
			for name, st := range mgr.Statuses() {
				if !st.Synced {
					pending = append(pending, fmt.Sprintf("%s (%s)", name, st.Message))
				}
			}
			return fmt.Errorf("registries did not sync within %s: %s", o.timeout, strings.Join(pending, ", "))
		case <-time.After(50 * time.Millisecond):
		}
	}
	objs := out.objects()
	if o.output == "json" {
		// One document, as kubectl prints several objects.
		items := make([]any, len(objs))
		for i, obj := range objs {
			items[i] = obj.Object
		}
		return printObject(stdout, map[string]any{"apiVersion": "v1", "kind": "List", "items": items}, "json", 0)
	}
	for i, obj := range objs {
		if err := printObject(stdout, obj.Object, o.output, i); err != nil {
			return err
		}
	}
	return nil
}

func printObject(w io.Writer, obj map[string]any, format string, i int) error {
	if format == "json" {
		data, err := json.MarshalIndent(obj, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	}
	data, err := yaml.Marshal(obj)
	if err != nil {
		return err
	}
	if i > 0 {
		fmt.Fprintln(w, "---")
	}
	_, err = w.Write(data)
	return err
}
